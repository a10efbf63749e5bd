"""CPU per delivered ``chat.update``, in this process: the outbox worker's claim, its read of the
alert, the render, slack-sdk's call to the fake Slack, and the settle — nothing else.

    python -m bench.delivery_cpu                        # SQLite, 300 updates each way
    python -m bench.delivery_cpu --db postgres -n 300   # PostgreSQL (a scratch database on 127.0.0.1:5432)
    PROFILE=1 python -m bench.delivery_cpu              # and cProfile's top functions by own CPU time
                                                        # (PROFILE=single / queued: of one way only;
                                                        # SORT=cumulative TOP=60: another order, more lines)
    python -m bench.delivery_cpu --db postgres --round-trips  # and the worker's round trips to
                                                        # PostgreSQL per update (asyncpg's calls counted)

The layout of ``bench/seed.py`` (1,000 rows of each kind): open alerts of Payments already
posted to Slack (``C0PAY``), 100 members in the Assign… select. Each is acknowledged by a
linked member (``actions.act``, as the click listener does after the ack), which queues its
``chat.update``; the real ``OutboxWorker`` (``bot.slack.delivery``, slack-sdk client with the
process's shared aiohttp session, as ``genie serve`` wires it) then delivers it. Two ways:

- **one at a time** — a click, then its update delivered alone (what a click's update costs
  on a worker that was idle: the look, the claim, the read, the call, the settle);
- **queued** — ``n`` clicks, then the worker drains their ``n`` updates (one lane: settling
  each claims the next, the path of a busy worker).

Only the worker's CPU is counted (``time.process_time`` while the worker runs, the clicks'
transactions outside it). The fake Slack runs in a subprocess, so its CPU is not this
process's. Pacing is off (the worker's token buckets unlimited) so the drain is not a wait.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import dataclasses
import os
import pstats
import subprocess
import sys
import time

from bench import seed as seedmod
from bot import metrics
from bot.config import Settings
from bot.server import make_runtime
from bot.services import actions
from bot.services.slack_links import SlackIdentity
from bot.slack.delivery import OutboxWorker, make_delivery_client
from storage.session import make_engine, make_sessionmaker

FAKE = (
    "import sys; from tests.fake_slack import FakeSlack; f = FakeSlack().start(); "
    "print(f.api_url, flush=True); sys.stdin.read(); f.stop()"
)


#: Round trips to PostgreSQL (``--round-trips``): asyncpg's calls that each wait for an answer.
ROUND_TRIPS = [0]


def _count_round_trips() -> None:
    """Count asyncpg's calls that are each one round trip (BEGIN / COMMIT / ROLLBACK go through
    ``Connection.execute``; a statement through ``PreparedStatement.fetch``, plus ``prepare``
    when it is not in the connection's statement cache yet; a ping through ``fetchrow``)."""
    import asyncpg
    from asyncpg.prepared_stmt import PreparedStatement

    def counted(cls, name):
        original = getattr(cls, name)

        async def call(*args, **kwargs):
            ROUND_TRIPS[0] += 1
            return await original(*args, **kwargs)

        setattr(cls, name, call)

    for cls, name in [
        (asyncpg.Connection, "execute"),
        (asyncpg.Connection, "prepare"),
        (asyncpg.Connection, "fetchrow"),
        (asyncpg.Connection, "fetch"),
        (PreparedStatement, "fetch"),
    ]:
        counted(cls, name)


def _delivered() -> float:
    """Updates the worker has delivered so far (its counter, read without a collection of the
    whole registry, which cost more than the look it replaced)."""
    return metrics.OUTBOX_DELIVERED.labels(kind="alert.update")._value.get()


async def main(backend: str, n: int, round_trips: bool = False) -> None:
    if round_trips:
        _count_round_trips()
    with seedmod.scratch_database(backend, "delivery_cpu") as url:
        await _measure(backend, url, n, round_trips)


async def _measure(backend: str, url: str, n: int, round_trips: bool = False) -> None:
    fake = subprocess.Popen(
        [sys.executable, "-c", FAKE], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=os.environ
    )
    try:
        api_url = fake.stdout.readline().strip()
        env = {
            "DATABASE_URL": url,
            "GENIE_SECRET_KEY": "x" * 40,
            "GENIE_BASE_URL": "http://127.0.0.1:1",
            "SLACK_SIGNING_SECRET": "s" * 32,
            "SLACK_BOT_TOKEN": "xoxb-bench-token",
            "SLACK_API_URL": api_url,
        }
        warm = 20
        layout = await seedmod.seed(url, 1000, hot=2 * warm + 2 * n + 10, confirms=0, password_hash="x")
        # No pacing (beyond what GENIE_SLACK_* allow): a delivery that waits for its token makes
        # the loop look for other heads, which is not what is measured here.
        settings = dataclasses.replace(
            Settings.from_env(env),
            slack_update_rate=1e6,
            slack_update_burst=10**6,
            slack_channel_rate=1e6,
            slack_channel_burst=10**6,
        )
        engine = make_engine(url)
        sessionmaker = make_sessionmaker(engine)
        rt = await make_runtime(settings, sessionmaker)
        rt.worker = OutboxWorker(rt, make_delivery_client(settings))
        await rt.clients.open(rt.slack, rt.worker.client)
        alerts = iter(layout.hot_alerts)

        async def click(i: int) -> None:
            who = SlackIdentity(seedmod.WORKSPACE, layout.clickers[i % len(layout.clickers)])
            async with sessionmaker.begin() as session:
                result = await actions.act(session, who, "acknowledge", next(alerts), anonymous_default=False)
            if not result.applied:
                raise SystemExit(f"click {i} was not applied: {result}")

        async def drained(target: float) -> None:
            while _delivered() < target:
                await asyncio.sleep(0.005)

        rt.worker.start()
        profile = cProfile.Profile(time.process_time) if os.environ.get("PROFILE") else None

        trips = {"single": 0, "queued": 0}

        async def one_at_a_time(count: int, measure: bool) -> float:
            cpu = 0.0
            measure = measure and os.environ.get("PROFILE") != "queued"
            for i in range(count):
                await click(i)
                target = _delivered() + 1
                start, before = time.process_time(), ROUND_TRIPS[0]
                if measure and profile:
                    profile.enable()
                rt.wake_outbox("C0PAY", paging=False)
                await drained(target)
                if measure and profile:
                    profile.disable()
                cpu += time.process_time() - start
                if measure:
                    trips["single"] += ROUND_TRIPS[0] - before
            return cpu

        async def queued(count: int, measure: bool) -> float:
            measure = measure and os.environ.get("PROFILE") != "single"
            await rt.worker.stop()
            for i in range(count):
                await click(i)
            target = _delivered() + count
            start, before = time.process_time(), ROUND_TRIPS[0]
            if measure and profile:
                profile.enable()
            rt.worker.start()
            rt.wake_outbox(paging=False)
            await drained(target)
            if measure and profile:
                profile.disable()
            if measure:
                trips["queued"] += ROUND_TRIPS[0] - before
            return time.process_time() - start

        await one_at_a_time(warm, False)
        single = await one_at_a_time(n, True)
        await queued(warm, False)
        busy = await queued(n, True)
        await rt.worker.stop()
        from sqlalchemy import text

        async with sessionmaker() as session:
            pending = await session.scalar(text("SELECT count(*) FROM outbox WHERE delivered_at IS NULL"))
        print(
            f"{backend}: {single / n * 1000:.2f} ms CPU per update delivered one at a time, "
            f"{busy / n * 1000:.2f} ms per update queued ({n} each; {pending} left pending)"
        )
        if round_trips:
            print(
                f"{backend}: {trips['single'] / n:.2f} round trips per update delivered one at a time, "
                f"{trips['queued'] / n:.2f} per update queued (the CPU figures above include counting them)"
            )
        if profile:
            profile.dump_stats(f"/tmp/delivery_cpu_{backend}.prof")  # for a closer look (pstats)
            pstats.Stats(profile).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
                int(os.environ.get("TOP", "30"))
            )
        await rt.clients.close()
        await engine.dispose()
    finally:
        fake.stdin.close()
        fake.wait(timeout=10)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("-n", type=int, default=300, help="updates measured each way")
    parser.add_argument(
        "--round-trips", action="store_true", help="count the worker's round trips to PostgreSQL per update"
    )
    args = parser.parse_args()
    asyncio.run(main(args.db, args.n, args.round_trips))
