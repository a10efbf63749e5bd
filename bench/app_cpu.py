"""CPU per request through the whole ASGI app ``genie serve`` runs, in this process — its
middlewares, the route, the group-commit writers and their commits, and its background loops
(the outbox worker delivering what the requests queued) — without uvicorn and the sockets, whose
share moves with the machine more than Genie's code does.

    python -m bench.app_cpu ingest                  # SQLite, 1,000 API alerts, 8 clients (row 6c)
    python -m bench.app_cpu ingest postgres 2000    # PostgreSQL (a scratch database on 127.0.0.1:5432)
    python -m bench.app_cpu click sqlite 600 16     # 600 Acknowledge clicks, 16 clients (row 1a)
    PROFILE=1 python -m bench.app_cpu click         # and cProfile's top functions by own time
                                                    # (SORT=cumulative TOP=60: another order, more lines)
    NO_BG=1 python -m bench.app_cpu ingest          # without the background loops (what they cost
                                                    # is the difference; nothing is delivered)

- **ingest**: ``POST /v2/alerts``, every alert a new one for the seeded Payments team
  (``bench/seed.py``), whose channel Genie paces at Slack's 1 post/s: beyond the first few they
  are collapsed into the channel's digest, as in row 6 of ``bench.run``. Counted until the last
  is answered (202: committed).
- **click**: Acknowledge on a different open alert of Payments (already posted to Slack) by a
  linked member, each the signed ``block_actions`` body Slack sends (the whole message, 100
  Assign… options), as row 1a's load generator sends it. Counted until every click is
  committed and its ``chat.update`` delivered (the outbox empty), as row 1a counts.

``clients`` tasks each send their next request when the last one is answered (a closed loop,
as the load generator's). Prints the event loop thread's CPU per request (the fake Slack answers
from a thread of its own, not counted) and the process's, and the statements per request of each
task (``bench.statements``' names: the writers, ``outbox``, ``outbox-worker`` for the looks) —
those are exact where CPU is not. Used for "Issue 14, eighth round" in bench/RESULTS.md.
"""

from __future__ import annotations

import asyncio
import collections
import cProfile
import os
import pstats
import sys
import time

from sqlalchemy import event, text

from bench import payloads
from bench import seed as seedmod
from bench.statements import _category
from storage.session import make_engine, make_sessionmaker

PAYMENTS = 1
SECRET = "bench-signing-secret"


def _scope(path: str, body: bytes, headers: dict[str, str], i: int) -> dict:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", str(len(body)).encode())]
        + [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000 + i % 20000),
        "server": ("127.0.0.1", 8000),
    }


async def main(kind: str, backend: str, n: int, clients: int) -> None:
    from bench.run import alert_message_template
    from bot.cli.serve import freeze_start_up
    from bot.config import Settings
    from bot.server import build_asgi_app, make_runtime
    from bot.services import alerts
    from storage.models import Team
    from tests.fake_slack import FakeSlack
    from tests.processes import UNPACED

    warm = 40 if kind == "ingest" else 20
    with seedmod.scratch_database(backend, "app_cpu") as url:
        layout = await seedmod.seed(url, 1000, hot=n + warm if kind == "click" else 10, confirms=0, password_hash="x")
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
                "SLACK_SIGNING_SECRET": SECRET,
                "SLACK_BOT_TOKEN": "xoxb-bench",
                "SLACK_API_URL": fake.api_url,
            }
            | (UNPACED if kind == "click" else {})  # as bench.run's rows 1–3 (row 6, the storm, is paced)
        )
        counted: collections.Counter[str] = collections.Counter()
        counting = False

        @event.listens_for(engine.sync_engine, "before_cursor_execute")
        def _statement(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
            task = asyncio.current_task()
            if counting and not (task is not None and task.get_name().startswith("bench-")):
                counted[_category()] += 1

        rt = await make_runtime(settings, sessionmaker)
        app = build_asgi_app(rt, run_background=not os.environ.get("NO_BG"))
        freeze_start_up()  # as `genie serve` does once ready: start-up's objects out of the collector's reach
        statuses: collections.Counter[int] = collections.Counter()
        message = alert_message_template(layout) if kind == "click" else None

        def request(i: int) -> tuple[str, bytes, dict[str, str]]:
            if kind == "ingest":
                body, headers = payloads.create_alert(key, message=f"Storm alert {i}", alias=f"app-cpu-{i}")
                return "/v2/alerts", body, headers
            body, headers = layout.click(SECRET, i, response_url=f"{fake.url}/response/{i}", message=message)
            return "/slack/events", body, headers

        requests = [request(i) for i in range(warm + n)]  # signed before the clock starts

        async def send(i: int) -> None:
            path, body, headers = requests[i]
            sent = False

            async def receive():
                nonlocal sent
                if not sent:
                    sent = True
                    return {"type": "http.request", "body": body, "more_body": False}
                await asyncio.Event().wait()  # (a disconnect never comes)

            async def answer(message):
                if message["type"] == "http.response.start":
                    statuses[message["status"]] += 1

            await app(_scope(path, body, headers, i), receive, answer)

        async def client(indexes: range) -> None:
            for i in indexes:
                await send(i)

        async def settled(first: int, last: int) -> None:
            """Clicks: every one committed and its chat.update delivered (the outbox empty)."""
            if kind != "click":
                return
            ids = ",".join(str(a) for a in layout.hot_alerts[first:last])
            done = f"SELECT count(*) FROM alert WHERE acknowledged AND id IN ({ids})"
            pending = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"
            deadline = time.monotonic() + float(os.environ.get("SETTLE_S", "120"))
            while time.monotonic() < deadline:
                async with sessionmaker() as session:
                    if await session.scalar(text(done)) == last - first and not await session.scalar(text(pending)):
                        return
                await asyncio.sleep(0.05)
            async with sessionmaker() as session:
                seen = (await session.scalar(text(done)), await session.scalar(text(pending)))
            raise SystemExit(f"the clicks were not all committed and delivered in 120 s: {seen} {dict(statuses)}")

        ok = 202 if kind == "ingest" else 200
        async with app.router.lifespan_context(app):
            await asyncio.gather(*(client(range(c, warm, clients)) for c in range(clients)))
            await settled(0, warm)
            statuses.clear()
            profile = cProfile.Profile() if os.environ.get("PROFILE") else None
            counting = True
            cpu, thread, wall = time.process_time(), time.thread_time(), time.perf_counter()
            if profile:
                profile.enable()
            await asyncio.gather(*(client(range(warm + c, warm + n, clients)) for c in range(clients)))
            await asyncio.create_task(settled(warm, warm + n), name="bench-settled")  # (not counted)
            counting = False
            if profile:
                profile.disable()
            cpu, thread, wall = (
                time.process_time() - cpu,
                time.thread_time() - thread,
                time.perf_counter() - wall,
            )
        fake.stop()
        await engine.dispose()
        if statuses[ok] != n:
            raise SystemExit(f"only {statuses[ok]} of {n} requests were answered {ok}: {dict(statuses)}")
        per = "alert accepted" if kind == "ingest" else "click committed and delivered"
        print(
            f"{kind} {backend}: {thread / n * 1000:.3f} ms CPU of the event loop's thread ({cpu / n * 1000:.3f} ms the "
            f"process's) per {per}; {n / wall:,.0f}/s, {clients} clients; statements per request: "
            + ", ".join(f"{task} {count / n:.2f}" for task, count in sorted(counted.items()))
        )
        if profile:
            pstats.Stats(profile).sort_stats(os.environ.get("SORT", "tottime")).print_stats(
                int(os.environ.get("TOP", "25"))
            )


if __name__ == "__main__":
    kind = sys.argv[1] if len(sys.argv) > 1 else "ingest"
    if kind not in ("ingest", "click"):
        raise SystemExit("usage: python -m bench.app_cpu ingest|click [sqlite|postgres] [n] [clients]")
    asyncio.run(
        main(
            kind,
            sys.argv[2] if len(sys.argv) > 2 else "sqlite",
            int(sys.argv[3]) if len(sys.argv) > 3 else (1000 if kind == "ingest" else 600),
            int(sys.argv[4]) if len(sys.argv) > 4 else (8 if kind == "ingest" else 16),
        )
    )
