"""CPU per click transaction, in this process: the gate's query, the transition, its timeline and
outbox rows, the commit — ``actions.act`` in its own transaction, as the click listener runs it
after the ack — without HTTP, Bolt or the delivery around it.

    python -m bench.click_cpu                 # SQLite, 400 clicks
    python -m bench.click_cpu postgres 400    # PostgreSQL (a scratch database on 127.0.0.1:5432)
    PROFILE=1 python -m bench.click_cpu       # and cProfile's top functions by own time

Each click is Acknowledge on a different open alert of Payments by a linked member (the layout
of ``bench/seed.py``, 1,000 rows of each kind), one after another. Prints CPU (the process's,
so on SQLite with ``GENIE_SQLITE_DRIVER=thread`` aiosqlite's thread is counted too) and wall
time per click. Used for "Clicks: statements built once" in bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import subprocess
import sys
import tempfile
import time
import uuid

from bench import seed as seedmod
from bot.services import actions
from bot.services.slack_links import SlackIdentity
from storage.session import make_engine, make_sessionmaker

PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True)


async def main(backend: str, n: int) -> None:
    work = tempfile.mkdtemp()
    name = f"click_cpu_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{work}/genie.db"
    else:
        _psql(f'CREATE DATABASE "{name}"')
        url = f"{PG}/{name}"
    try:
        env = {**os.environ, "DATABASE_URL": url, "GENIE_SECRET_KEY": "x" * 40}
        subprocess.run([sys.executable, "-m", "bot", "db", "upgrade"], env=env, check=True, capture_output=True)
        layout = await seedmod.seed(url, 1000, hot=n + 50, confirms=0, password_hash="x")
        engine = make_engine(url)
        sessionmaker = make_sessionmaker(engine)

        async def click(i: int) -> None:
            who = SlackIdentity(seedmod.WORKSPACE, layout.clickers[i % len(layout.clickers)])
            async with sessionmaker.begin() as session:
                result = await actions.act(session, who, "acknowledge", layout.hot_alerts[i], anonymous_default=False)
            if not result.applied:
                raise SystemExit(f"click {i} was not applied: {result}")

        warm = 20
        for i in range(warm):
            await click(i)
        profile = cProfile.Profile() if os.environ.get("PROFILE") else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        for i in range(warm, n):
            await click(i)
        if profile:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"{backend}: {cpu / (n - warm) * 1000:.2f} ms CPU, {wall / (n - warm) * 1000:.2f} ms wall per click transaction"
        )
        if profile:
            pstats.Stats(profile).sort_stats("tottime").print_stats(25)
        await engine.dispose()
    finally:
        if backend != "sqlite":
            _psql(f'DROP DATABASE IF EXISTS "{name}"')


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "sqlite", int(sys.argv[2]) if len(sys.argv) > 2 else 400))
