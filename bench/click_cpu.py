"""CPU per click transaction, in this process: the gate's query, the transition, its timeline and
outbox rows, the commit — ``actions.act`` in its own transaction, as the click listener runs it
after the ack — without HTTP, Bolt or the delivery around it.

    python -m bench.click_cpu                 # SQLite, 400 clicks
    python -m bench.click_cpu postgres 400    # PostgreSQL (a scratch database on 127.0.0.1:5432)
    PROFILE=1 python -m bench.click_cpu       # and cProfile's top functions by own time
                                              # (SORT=cumulative TOP=60: another order, more lines)
    python -m bench.click_cpu sqlite 400 request   # the whole request, in process (below)
    python -m bench.click_cpu postgres 400 transaction 4   # 4 clicks per transaction, handed to
                                              # the click writer together (group commit)

``request``: each click is the signed HTTP body the load generator sends (the whole alert
message, 100 Assign… options), through what ``bot.server`` does with it — the screen
(signature, parse), Bolt's dispatch (its middlewares, Genie's, the listener, the ack) — and the
listener's work after the ack, its transaction included; no HTTP server, no outbox worker (the
``chat.update`` each click queues is not delivered). The fake Slack answers Bolt's ``auth.test``.

Each click is Acknowledge on a different open alert of Payments by a linked member (the layout
of ``bench/seed.py``, 1,000 rows of each kind), one after another. Prints CPU (the process's,
so on SQLite with ``GENIE_SQLITE_DRIVER=thread`` aiosqlite's thread is counted too) and wall
time per click. Used for "Clicks: statements built once" in bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import cProfile
import json
import os
import pstats
import sys
import time

from sqlalchemy import text

from bench import seed as seedmod
from bot.services import actions
from bot.services.click_batch import Click, ClickBatcher
from bot.services.slack_links import SlackIdentity
from storage.session import make_engine, make_sessionmaker


async def _request_clicks(url: str, sessionmaker, layout):
    """A click as ``bot.server``'s ``/slack/events`` route takes it, minus HTTP (see above)."""
    from bench.run import alert_message_template
    from bot.config import Settings
    from bot.server import build_bolt_app, make_runtime
    from bot.slack.screening import screen
    from tests.fake_slack import FakeSlack

    fake = FakeSlack().start()
    secret = "bench-signing-secret"
    settings = Settings.from_env(
        {
            "DATABASE_URL": url,
            "GENIE_SECRET_KEY": "x" * 40,
            "SLACK_SIGNING_SECRET": secret,
            "SLACK_BOT_TOKEN": "xoxb-bench",
            "SLACK_API_URL": fake.api_url,
        }
    )
    rt = await make_runtime(settings, sessionmaker)
    bolt = build_bolt_app(rt)
    message = alert_message_template(layout)

    def body(i: int) -> tuple[bytes, dict]:
        raw, headers = layout.click(secret, i, response_url=f"{fake.url}/response/{i}", message=message)
        return raw, {k.lower(): v for k, v in headers.items()}

    bodies = [body(i) for i in range(len(layout.hot_alerts))]  # signed before the clock starts

    async def click(i: int) -> None:
        raw, headers = bodies[i]
        request = screen(raw, headers, secret)
        if isinstance(request, tuple):
            raise SystemExit(f"click {i} was refused: {request}")
        answer = await bolt.async_dispatch(request)
        if answer.status != 200:
            raise SystemExit(f"click {i} was answered {answer.status}")
        pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        while pending:  # Bolt runs the listener after the ack, in a task of its own
            await asyncio.wait(pending)
            pending = [t for t in asyncio.all_tasks() if t is not asyncio.current_task() and not t.done()]

    return click


async def main(backend: str, n: int, mode: str = "transaction", per: int = 1) -> None:
    with seedmod.scratch_database(backend, "click_cpu") as url:
        layout = await seedmod.seed(url, 1000, hot=n + 50 + per, confirms=0, password_hash="x")
        engine = make_engine(url)
        sessionmaker = make_sessionmaker(engine)

        async def one(i: int) -> None:
            who = SlackIdentity(seedmod.WORKSPACE, layout.clickers[i % len(layout.clickers)])
            async with sessionmaker.begin() as session:
                result = await actions.act(session, who, "acknowledge", layout.hot_alerts[i], anonymous_default=False)
            if not result.applied:
                raise SystemExit(f"click {i} was not applied: {result}")

        writer = ClickBatcher(lambda: sessionmaker)

        async def together(i: int) -> None:
            """Clicks ``i`` … ``i + per - 1`` handed to the click writer at once: one transaction."""
            clicks = [
                Click(
                    SlackIdentity(seedmod.WORKSPACE, layout.clickers[k % len(layout.clickers)]),
                    "acknowledge",
                    layout.hot_alerts[k],
                    anonymous_default=False,
                    replay=f"bench-{k}",
                )
                for k in range(i, i + per)
            ]
            for k, acted in zip(range(i, i + per), await asyncio.gather(*(writer.act(c) for c in clicks))):
                if not acted.result.applied:
                    raise SystemExit(f"click {k} was not applied: {acted.result}")

        click = one if per == 1 else together

        if mode == "request":
            click = await _request_clicks(url, sessionmaker, layout)
        warm = 20 if per == 1 else per * (20 // per + 1)
        n = warm + (n - warm) // per * per
        for i in range(0, warm, per):
            await click(i)
        profile = cProfile.Profile() if os.environ.get("PROFILE") else None
        cpu, wall = time.process_time(), time.perf_counter()
        if profile:
            profile.enable()
        for i in range(warm, n, per):
            await click(i)
        if profile:
            profile.disable()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
        print(
            f"{backend}: {cpu / (n - warm) * 1000:.2f} ms CPU, {wall / (n - warm) * 1000:.2f} ms wall per click transaction"
        )
        if mode == "request":
            async with sessionmaker() as session:
                done = await session.scalar(
                    text("SELECT COUNT(*) FROM alert WHERE acknowledged AND id IN (SELECT value FROM json_each(:ids))")
                    if backend == "sqlite"
                    else text("SELECT COUNT(*) FROM alert WHERE acknowledged AND id = ANY(:ids)"),
                    {"ids": json.dumps(layout.hot_alerts[:n]) if backend == "sqlite" else layout.hot_alerts[:n]},
                )
            if done != n:
                raise SystemExit(f"{n - done} of the {n} clicks were not applied")
        if profile:
            pstats.Stats(profile).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
                int(os.environ.get("TOP", "25"))
            )
        await engine.dispose()


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "sqlite",
            int(sys.argv[2]) if len(sys.argv) > 2 else 400,
            sys.argv[3] if len(sys.argv) > 3 else "transaction",
            int(sys.argv[4]) if len(sys.argv) > 4 else 1,
        )
    )
