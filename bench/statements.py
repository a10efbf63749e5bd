"""Count what Genie asks the database per alert API ingest, per click and per outbox delivery.

    python bench/statements.py                         # SQLite
    python bench/statements.py --db postgres           # PostgreSQL (--pg-url, as bench/run.py)
    PYTHONPATH=/path/to/old/checkout python bench/statements.py   # an older checkout's Genie

Runs Genie in this process, as ``genie serve`` does (its runtime, its ASGI app under uvicorn on
a loopback port, every background loop started), against the tests' fake Slack and a scratch
database seeded by ``bench/seed.py`` (1,000 users and alerts). A SQLAlchemy
``before_cursor_execute`` listener counts every statement, and engine/pool events count
transactions (each begun), connections opened and pre-pings; on SQLite the
thread hops to aiosqlite's worker (each ``Connection._execute``, Genie's engine only: the
benchmark's own polling is not counted) and, with the inline connection
(``storage.sqlite_inline``), the milliseconds the event loop spends inside ``sqlite3`` calls
("loop ms": the loop blocks for them) are counted too. Each
statement is charged to the asyncio task that ran it: a request (the HTTP request, or the
click's listener Bolt runs after the ack), the writers its writes are handed to (group commit:
``ingest-writer`` for an API alert, ``click-writer`` for a click on SQLite), the outbox worker (its loop
and its deliveries), or one of the other background loops by name.

Requests are sent one at a time, each waited for (for a click: until its transition is
committed and its ``chat.update`` delivered), so the counts per request are exact. Then the
same loops are watched idle for ``--idle`` seconds.

Run as a script (not ``-m``) so that ``PYTHONPATH`` decides which checkout's ``bot`` and
``storage`` run; this file imports only what every checkout since ``a489927`` has.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import json
import os
import socket
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.append(str(HERE.parent))  # after PYTHONPATH: the checkout under test wins for bot/storage

SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
WORKSPACE = "T0GENIE01"


def _category() -> str:
    task = asyncio.current_task()
    name = task.get_name() if task is not None else ""
    if name.startswith("genie-outbox"):
        return "outbox"
    if name.startswith("genie-"):
        return name.removeprefix("genie-")
    return "request"


class Counter:
    def __init__(self) -> None:
        self.statements: collections.Counter[str] = collections.Counter()
        self.transactions: collections.Counter[str] = collections.Counter()
        self.hops: collections.Counter[str] = collections.Counter()
        self.loop_ms: collections.Counter[str] = collections.Counter()
        self.ignored: set[int] = set()  # aiosqlite connections of the benchmark's own engine
        self.pings = 0
        self.connects = 0
        self.trace: list[tuple[str, str]] = []
        self.tracing = False

    def snapshot(self) -> dict[str, collections.Counter]:
        return {
            "statements": collections.Counter(self.statements),
            "transactions": collections.Counter(self.transactions),
            "hops": collections.Counter(self.hops),
            "loop_ms": collections.Counter(self.loop_ms),
        }

    def since(self, before: dict[str, collections.Counter]) -> dict[str, dict[str, int]]:
        now = self.snapshot()
        return {k: dict(now[k] - before[k]) for k in now}

    def attach(self, engine) -> None:
        from sqlalchemy import event

        sync = engine.sync_engine

        @event.listens_for(sync, "before_cursor_execute")
        def _stmt(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
            cat = _category()
            self.statements[cat] += 1
            if self.tracing and cat in ("request", "ingest-writer", "click-writer"):
                self.trace.append((cat, " ".join(statement.split())[:110]))

        @event.listens_for(sync, "begin")
        def _begin(conn):  # noqa: ARG001
            self.transactions[_category()] += 1

        @event.listens_for(sync, "connect")
        def _connect(dbapi_connection, record):  # noqa: ARG001
            self.connects += 1

        dialect = sync.dialect
        ping = dialect.do_ping

        def counted_ping(dbapi_connection):
            self.pings += 1
            return ping(dbapi_connection)

        dialect.do_ping = counted_ping

        if sync.dialect.name == "sqlite":
            import aiosqlite.core

            original = aiosqlite.core.Connection._execute

            async def _execute(conn, fn, *args, **kwargs):
                if id(conn) not in self.ignored:
                    self.hops[_category()] += 1
                return await original(conn, fn, *args, **kwargs)

            aiosqlite.core.Connection._execute = _execute
            self._time_inline()

    def ignore(self, engine) -> None:
        """Leave out the hops of ``engine``'s connections (the benchmark's own reads)."""
        from sqlalchemy import event

        @event.listens_for(engine.sync_engine, "connect")
        def _connect(dbapi_connection, record):  # noqa: ARG001
            self.ignored.add(id(dbapi_connection.driver_connection))

    def _time_inline(self) -> None:
        """Time every call of the inline connection that runs ``sqlite3`` on the loop."""
        try:
            from storage import sqlite_inline
        except ImportError:  # a checkout before the inline connection: hops only
            return

        def timed(cls, name: str) -> None:
            original = getattr(cls, name)

            async def wrapper(*args, **kwargs):
                started = time.perf_counter()
                try:
                    return await original(*args, **kwargs)
                finally:
                    self.loop_ms[_category()] += (time.perf_counter() - started) * 1000

            setattr(cls, name, wrapper)

        for name in ("execute", "executemany", "fetchall", "fetchone", "fetchmany", "close"):
            timed(sqlite_inline.InlineCursor, name)
        for name in ("commit", "rollback"):
            timed(sqlite_inline.InlineConnection, name)


async def _scratch_db(backend: str, pg_url: str, work: Path) -> tuple[str, Any]:
    if backend == "sqlite":
        return f"sqlite+aiosqlite:///{work / 'genie.db'}", None
    from sqlalchemy import text
    from sqlalchemy.engine import make_url
    from sqlalchemy.ext.asyncio import create_async_engine

    name = f"genie_stmts_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    admin = create_async_engine(pg_url, isolation_level="AUTOCOMMIT")
    async with admin.connect() as conn:
        await conn.execute(text(f'CREATE DATABASE "{name}"'))

    async def drop() -> None:
        async with admin.connect() as conn:
            await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        await admin.dispose()

    return make_url(pg_url).set(database=name).render_as_string(hide_password=False), drop


async def _migrate(url: str) -> None:
    env = {**os.environ, "DATABASE_URL": url, "GENIE_SECRET_KEY": SECRET_KEY}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bot",
        "db",
        "upgrade",
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"migrations failed:\n{output.decode()}")


async def _poll(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise SystemExit("timed out waiting for Genie")
        await asyncio.sleep(0.005)


async def measure(backend: str, pg_url: str, n: int, idle: float, trace: bool) -> dict[str, Any]:
    import httpx
    import uvicorn
    from sqlalchemy import text
    from sqlalchemy.ext.asyncio import create_async_engine

    from bench import payloads
    from bench import seed as seeding
    from bot.config import Settings
    from bot.server import build_asgi_app, make_runtime
    from bot.services import alerts

    try:
        from bot.services.users import hash_password
    except ImportError:  # checkouts before the people services were renamed
        from bot.services.accounts import hash_password
    from storage.models import Team
    from storage.session import make_engine, make_sessionmaker
    from tests.fake_slack import FakeSlack

    work = Path(tempfile.mkdtemp(prefix="genie-stmts-"))
    url, drop = await _scratch_db(backend, pg_url, work)
    fake = FakeSlack().start()
    try:
        await _migrate(url)
        layout = await seeding.seed(url, 1000, hot=n, confirms=0, password_hash=hash_password("x" * 12))
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        base = f"http://127.0.0.1:{sock.getsockname()[1]}"
        settings = Settings.from_env(
            {
                "DATABASE_URL": url,
                "GENIE_SECRET_KEY": SECRET_KEY,
                "GENIE_BASE_URL": base,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_BOT_TOKEN": "xoxb-bench-token",
                "SLACK_API_URL": fake.api_url,
            }
        )
        engine = make_engine(settings.database_url)
        counter = Counter()
        counter.attach(engine)
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker.begin() as session:
            key = await alerts.team_key(session, await session.get(Team, 1))
        rt = await make_runtime(settings, sessionmaker)
        app = build_asgi_app(rt)
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        task = asyncio.create_task(server.serve(sockets=[sock]))
        await _poll(lambda: asyncio.sleep(0, server.started))
        watch = create_async_engine(url)  # the benchmark's own reads: not counted
        counter.ignore(watch)

        async def value(sql: str, **params) -> Any:
            async with watch.connect() as conn:
                return (await conn.execute(text(sql), params)).scalar()

        async def outbox_empty() -> bool:
            return not await value("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL")

        out: dict[str, Any] = {"backend": backend, "n": n, "genie": str(Path(sys.modules["bot"].__file__).parent)}
        http = httpx.AsyncClient(base_url=base, timeout=30)
        await asyncio.sleep(1.0)
        await _poll(outbox_empty)

        async def phase(name: str, send, settle) -> None:
            before, pings, connects = counter.snapshot(), counter.pings, counter.connects
            started = time.monotonic()
            counter.tracing, counter.trace = trace, []
            for i in range(n):
                await send(i)
                await settle(i)
                if i == 0:
                    counter.tracing = False
                    first = list(counter.trace)
            await _poll(outbox_empty)
            got = counter.since(before)
            out[name] = {
                "per_request": {k: {c: round(v / n, 3) for c, v in got[k].items()} for k in got},
                "pings_per_request": round((counter.pings - pings) / n, 2),
                "connects": counter.connects - connects,
                "seconds": round(time.monotonic() - started, 2),
                "first_request_statements": first if trace else [],
            }

        # 1. ingest: a new alert each (posted to Slack by the outbox)
        async def ingest(i: int) -> None:
            body, headers = payloads.create_alert(key, message=f"stmts {i}", alias=f"stmts-{i}")
            r = await http.post("/v2/alerts", content=body, headers=headers)
            assert r.status_code == 202, r.text

        async def delivered_post(i: int) -> bool:
            return bool(
                await value("SELECT count(*) FROM alert WHERE alias = :a AND slack_ts IS NOT NULL", a=f"stmts-{i}")
            )

        await phase("ingest", ingest, delivered_post)

        # 2. ingest de-duplicated against an open alert (its Slack message updated)
        async def dedupe(i: int) -> None:
            body, headers = payloads.create_alert(key, message="stmts 0", alias="stmts-0")
            r = await http.post("/v2/alerts", content=body, headers=headers)
            assert r.status_code == 202, r.text

        async def counted(i: int) -> bool:
            return await value("SELECT count FROM alert WHERE alias = 'stmts-0' AND status = 'open'") == i + 2

        async def drained(i: int) -> bool:
            return await outbox_empty()

        async def dedupe_settle(i: int) -> None:
            await _poll(lambda: counted(i))
            await _poll(lambda: drained(i))

        await phase("dedupe", dedupe, lambda i: dedupe_settle(i))

        # 3. click: Acknowledge on a different open alert each, by a linked member
        async def click(i: int) -> None:
            body, headers = layout.click(SIGNING_SECRET, i, response_url=f"{fake.url}/response", message=None)
            r = await http.post("/slack/events", content=body, headers=headers)
            assert r.status_code == 200, r.text

        async def acked(i: int) -> bool:
            return bool(
                await value("SELECT count(*) FROM alert WHERE id = :i AND acknowledged", i=layout.hot_alerts[i])
            )

        async def click_settle(i: int) -> None:
            await _poll(lambda: acked(i))
            await _poll(outbox_empty)

        await phase("click", click, click_settle)

        # 4. idle: nothing due anywhere
        before = counter.snapshot()
        await asyncio.sleep(idle)
        got = counter.since(before)
        out["idle_per_second"] = {k: {c: round(v / idle, 2) for c, v in got[k].items()} for k in got}
        out["server_version"] = (
            await value("SELECT sqlite_version()") if backend == "sqlite" else await value("SHOW server_version")
        )
        await http.aclose()
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        await engine.dispose()
        await watch.dispose()
        return out
    finally:
        fake.stop()
        if drop is not None:
            await drop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("GENIE_BENCH_POSTGRES_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"),
    )
    parser.add_argument("-n", type=int, default=30, help="requests of each kind (default 30)")
    parser.add_argument("--idle", type=float, default=10.0, help="seconds to watch the idle loops (default 10)")
    parser.add_argument("--trace", action="store_true", help="print the first request's statements of each kind")
    parser.add_argument("--json", type=Path, help="also write the figures to this file")
    args = parser.parse_args()
    out = asyncio.run(measure(args.db, args.pg_url, args.n, args.idle, args.trace))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))
    print(f"Genie from {out['genie']} on {out['backend']} {out['server_version']}, {args.n} of each, one at a time")
    for kind in ("ingest", "dedupe", "click"):
        got = out[kind]
        print(
            f"\n{kind} ({got['seconds']} s): per request, by task:"
            " statements / transactions / aiosqlite hops / loop ms in sqlite3"
        )
        for cat in sorted(got["per_request"]["statements"], key=lambda c: c != "request"):
            per = got["per_request"]
            print(
                f"  {cat:18} {per['statements'].get(cat, 0):6.1f} {per['transactions'].get(cat, 0):6.1f}"
                f" {per['hops'].get(cat, 0):7.1f} {per.get('loop_ms', {}).get(cat, 0):8.3f}"
            )
        print(f"  pre-pings per request {got['pings_per_request']}, connections opened {got['connects']}")
        for _, statement in got["first_request_statements"]:
            print(f"    | {statement}")
    idle = out["idle_per_second"]
    print(f"\nidle ({args.idle:.0f} s), per second: statements / transactions / aiosqlite hops / loop ms in sqlite3")
    for cat in sorted(set(idle["statements"]) | set(idle["hops"])):
        print(
            f"  {cat:18} {idle['statements'].get(cat, 0):6.1f} {idle['transactions'].get(cat, 0):6.1f}"
            f" {idle['hops'].get(cat, 0):7.1f} {idle.get('loop_ms', {}).get(cat, 0):8.3f}"
        )


if __name__ == "__main__":
    main()
