"""CPU per alert accepted by the alert API, in this process: ``POST /v2/alerts`` through the
whole ASGI app ``genie serve`` runs (its middlewares, the route, the body's checks, the ingest
writer's batches and their commits) with its background loops on (the outbox worker collapsing
a storm into its digest, as row 6c's Genie does) — without uvicorn and the sockets.

    python -m bench.ingest_cpu                    # SQLite, 1,000 alerts, 8 clients
    python -m bench.ingest_cpu postgres 2000      # PostgreSQL (a scratch database on 127.0.0.1:5432)
    PROFILE=1 python -m bench.ingest_cpu          # and cProfile's top functions by own time
                                                  # (SORT=cumulative TOP=60: another order, more lines)

Every alert is a new one for the seeded Payments team (``bench/seed.py``), whose channel Genie
paces at Slack's 1 post/s: beyond the first few, they are collapsed into the channel's digest
(row 6 of ``bench.run``). ``clients`` tasks each send their next request when the last one is
answered (a closed loop, as the load generator's). Prints the event loop thread's CPU per
accepted alert (the fake Slack answers from a thread of its own, not counted) and the process's.
Used for "Issue 14, eighth round" in bench/RESULTS.md: row 6c's rate is this CPU's inverse on a
machine whose speed holds still for the minute it takes.
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import os
import pstats
import sys
import time

from sqlalchemy import event

from bench import payloads
from bench import seed as seedmod
from bench.statements import _category
from storage.session import make_engine, make_sessionmaker

PAYMENTS = 1


async def main(backend: str, n: int, clients: int) -> None:
    from bot.config import Settings
    from bot.server import build_asgi_app, make_runtime
    from bot.services import alerts
    from storage.models import Team
    from tests.fake_slack import FakeSlack

    with seedmod.scratch_database(backend, "ingest_cpu") as url:
        await seedmod.seed(url, 1000, hot=10, confirms=0, password_hash="x")
        engine = make_engine(url)
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker.begin() as session:
            key = await alerts.team_key(session, await session.get(Team, PAYMENTS))
        fake = FakeSlack().start()
        settings = Settings.from_env(
            {
                "DATABASE_URL": url,
                "GENIE_SECRET_KEY": "x" * 40,
                "GENIE_BASE_URL": "http://127.0.0.1:8000",
                "SLACK_SIGNING_SECRET": "bench-signing-secret",
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_API_URL": fake.api_url,
            }
        )
        counted: collections.Counter[str] = collections.Counter()

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _statement(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
            if counting:
                counted[_category()] += 1

        counting = False
        rt = await make_runtime(settings, sessionmaker)
        app = build_asgi_app(rt, run_background=not os.environ.get("NO_BG"))
        statuses: dict[int, int] = {}

        async def post(i: int) -> None:
            body, headers = payloads.create_alert(key, message=f"Storm alert {i}", alias=f"ingest-cpu-{i}")
            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/v2/alerts",
                "raw_path": b"/v2/alerts",
                "query_string": b"",
                "root_path": "",
                "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
                + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
                "client": ("127.0.0.1", 40000 + i % 20000),
                "server": ("127.0.0.1", 8000),
            }
            sent = False

            async def receive():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()  # (a disconnect never comes)

            async def send(message):
                if message["type"] == "http.response.start":
                    statuses[message["status"]] = statuses.get(message["status"], 0) + 1

            await app(scope, receive, send)

        async def client(indexes: range) -> None:
            for i in indexes:
                await post(i)

        async with app.router.lifespan_context(app):
            warm = 40
            await asyncio.gather(*(client(range(c, warm, clients)) for c in range(clients)))
            statuses.clear()
            counting = True
            profile = cProfile.Profile() if os.environ.get("PROFILE") else None
            cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
            if profile:
                profile.enable()
            await asyncio.gather(*(client(range(warm + c, warm + n, clients)) for c in range(clients)))
            if profile:
                profile.disable()
            counting = False
            cpu, thread, wall = (
                time.process_time() - cpu,
                time.thread_time() - thread,
                time.perf_counter() - wall,
            )
        fake.stop()
        await engine.dispose()
        accepted = statuses.get(202, 0)
        if accepted != n:
            raise SystemExit(f"only {accepted} of {n} alerts were accepted: {statuses}")
        print(
            f"{backend}: {thread / n * 1000:.3f} ms CPU of the event loop's thread ({cpu / n * 1000:.3f} ms the "
            f"process's) per alert accepted; {n / wall:,.0f} alerts/s, {clients} clients; statements per alert: "
            + ", ".join(f"{task} {count / n:.2f}" for task, count in sorted(counted.items()))
        )
        if profile:
            pstats.Stats(profile).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
                int(os.environ.get("TOP", "25"))
            )


if __name__ == "__main__":
    asyncio.run(
        main(
            sys.argv[1] if len(sys.argv) > 1 else "sqlite",
            int(sys.argv[2]) if len(sys.argv) > 2 else 1000,
            int(sys.argv[3]) if len(sys.argv) > 3 else 8,
        )
    )
