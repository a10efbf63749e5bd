"""The web side's alert list and report at size (issue 17): seed N alerts, serve Genie as an
operator runs it, and time the pages a person opens; print the EXPLAIN of the list's query.

    .venv/bin/python -m bench.web_pages                          # 100k alerts, SQLite
    .venv/bin/python -m bench.web_pages --alerts 1000000         # 1M
    .venv/bin/python -m bench.web_pages --db postgresql --pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

The world: 20 teams, N alerts spread over the last 90 days round-robin over the teams (40 %
closed, over 500 aliases; the open ones each their own alias; status, acknowledgement and
priority drawn independently of the team, half acknowledged, each acknowledgement and close on the timeline by one of 50
responders; one refused click of an unlinked Slack user per 1,000 alerts), written with
``INSERT … SELECT`` over a generated series (``bench.seed``). Two people sign in: a member of
two teams (a tenth of the alerts) and an admin (all). Each page is fetched ``--requests`` times
in a row over one keep-alive connection (httpx), after two warm-up fetches; p50 / p99 in ms.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from bench.fake import RateLimitedFakeSlack
from bench.run import PASSWORD, start_genie, stop_all
from bench.seed import _engine, _Sql

TEAMS = 20
RESPONDERS = 50
DAYS = 90
MEMBER, ADMIN = "member@bench.example", "admin@bench.example"


async def seed(url: str, n: int) -> None:
    from bot.services import users

    engine = _engine(url)
    now = datetime.now(UTC).replace(microsecond=0)
    start = now - timedelta(days=DAYS)
    step = DAYS * 86400 / n
    async with engine.begin() as conn:
        sql = _Sql(conn.dialect.name)
        if not sql.pg:
            await conn.exec_driver_sql("PRAGMA synchronous=OFF")
        t, f = sql.true(True), sql.true(False)

        def at(offset: str) -> str:
            """``start`` plus ``offset`` seconds (an SQL expression of ``i``), stored as Genie stores it."""
            if sql.pg:
                return f"({sql.ts(start)} + ({offset}) * interval '1 second')"
            return f"(strftime('%Y-%m-%d %H:%M:%S', '{start:%Y-%m-%d %H:%M:%S}', '+' || CAST({offset} AS INTEGER) || ' seconds') || '.000000')"

        async def run(statement: str) -> None:
            await conn.exec_driver_sql(statement)

        await run(
            sql.insert(
                "team", "id, name, slack_channel_id, created_at", f"i, 'Team ' || i, NULL, {sql.ts(start)}", 1, TEAMS
            )
        )
        hashed = users.hash_password(PASSWORD)
        await run(
            f'INSERT INTO "user" (id, email, name, password_hash, is_admin, is_active, created_at) VALUES '
            f"(1, '{ADMIN}', 'Bench Admin', '{hashed}', {t}, {t}, {sql.ts(start)}), "
            f"(2, '{MEMBER}', 'Bench Member', '{hashed}', {f}, {t}, {sql.ts(start)})"
        )
        await run(
            sql.insert(
                "user",
                "id, email, name, password_hash, is_admin, is_active, created_at",
                f"i, 'r' || i || '@bench.example', 'Responder ' || i, NULL, {f}, {t}, {sql.ts(start)}",
                3,
                RESPONDERS + 2,
            )
        )
        await run(
            f"INSERT INTO team_member (team_id, user_id, added_at) VALUES (1, 2, {sql.ts(start)}), "
            f"(2, 2, {sql.ts(start)})"
        )
        await run(
            sql.insert(
                "team_member",
                "team_id, user_id, added_at",
                f"((i - 3) % {TEAMS}) + 1, i, {sql.ts(start)}",
                3,
                RESPONDERS + 2,
            )
        )
        tags, empty_obj, empty_list = sql.json('["bench"]'), sql.json("{}"), sql.json("[]")
        created = at(f"i * {step}")
        acked = at(f"i * {step} + (i % 600) + 5")
        closed = at(f"i * {step} + (i % 7200) + 60")
        await run(
            sql.insert(
                "alert",
                "id, uid, team_id, message, alias, description, tags, details, responders, source, priority, status, "
                "acknowledged, acknowledged_at, acknowledged_by, closed_at, closed_by, count, created_at, updated_at, "
                "last_occurred_at",
                f"i, 'bench-' || i, ((i - 1) % {TEAMS}) + 1, 'Bench alert ' || i, "
                f"CASE WHEN (i / 20) % 10 < 4 THEN 'alias-' || (i % 500) ELSE 'open-' || i END, NULL, "
                f"{tags}, {empty_obj}, {empty_list}, 'src-' || (i % 17), "
                f"'P' || (((i / 7) % 5) + 1), CASE WHEN (i / 20) % 10 < 4 THEN 'closed' ELSE 'open' END, "
                f"CASE WHEN (i / 3) % 2 = 0 THEN {t} ELSE {f} END, CASE WHEN (i / 3) % 2 = 0 THEN {acked} END, "
                f"CASE WHEN (i / 3) % 2 = 0 THEN 'Responder' END, CASE WHEN (i / 20) % 10 < 4 THEN {closed} END, "
                f"CASE WHEN (i / 20) % 10 < 4 THEN 'Responder' END, 1, {created}, {created}, {created}",
                1,
                n,
            )
        )
        # Timeline: each acknowledgement and close, by a responder of the alert's team.
        await run(
            sql.insert(
                "alert_event",
                "alert_id, at, action, outcome, reason, via, actor_user_id, actor_name, anonymous",
                f"i, {acked}, 'acknowledge', 'applied', 'member of the owning team', 'slack', "
                f"3 + (i % {RESPONDERS}), 'Responder', {f}",
                1,
                n,
            )
            + " WHERE (i / 3) % 2 = 0"
        )
        await run(
            sql.insert(
                "alert_event",
                "alert_id, at, action, outcome, reason, via, actor_user_id, actor_name, anonymous",
                f"i, {closed}, 'close', 'applied', 'member of the owning team', 'slack', "
                f"3 + (i % {RESPONDERS}), 'Responder', {f}",
                1,
                n,
            )
            + " WHERE (i / 20) % 10 < 4"
        )
        await run(
            sql.insert(
                "alert_event",
                "alert_id, at, action, outcome, reason, via, actor_name, slack_workspace_id, slack_user_id, anonymous",
                f"i, {created}, 'acknowledge', 'denied', 'Slack account not linked', 'slack', "
                f"'Slack user UX' || (i % 37), 'T0GENIE01', 'UX' || (i % 37), {f}",
                1,
                n,
            )
            + " WHERE i % 1000 = 0"
        )
    async with engine.connect() as conn:
        if sql.pg:
            for table in ("user", "team", "alert", "alert_event"):
                await conn.exec_driver_sql(
                    f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), (SELECT max(id) FROM \"{table}\"))"
                )
            await conn.commit()
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.exec_driver_sql("ANALYZE")
        else:
            await conn.exec_driver_sql("ANALYZE")
            await conn.commit()
    await engine.dispose()


async def _alert_count(url: str) -> int:
    engine = _engine(url)
    async with engine.connect() as conn:
        n = (await conn.exec_driver_sql("SELECT count(*) FROM alert")).scalar()
    await engine.dispose()
    return int(n)


async def explain(url: str) -> dict[str, list[str]]:
    """The plan of the list's query (the member's first page, and a filtered later page)."""
    from sqlalchemy import select

    from bot.services.alert_views import ListFilters, list_query
    from storage.models import User

    engine = _engine(url)
    plans: dict[str, list[str]] = {}
    async with engine.connect() as conn:
        pg = conn.dialect.name == "postgresql"
        member = (await conn.execute(select(User).where(User.email == MEMBER))).first()
        user = User(id=member.id, is_admin=False, is_active=True)
        for name, query in [
            ("list, member, first page", list_query(user, ListFilters())),
            (
                "list, member, status=open priority=P1, a later page",
                list_query(user, ListFilters(status="open", priority="P1"), before=10**9 // 2),
            ),
        ]:
            compiled = query.compile(dialect=conn.dialect, compile_kwargs={"literal_binds": True})
            statement = ("EXPLAIN " if pg else "EXPLAIN QUERY PLAN ") + str(compiled)
            rows = (await conn.exec_driver_sql(statement)).all()
            plans[name] = [str(r[0]) if pg else str(r[-1]) for r in rows]
    await engine.dispose()
    return plans


async def _signed_in(base: str, email: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(base_url=base, timeout=60)
    page = await client.get("/login")
    token = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
    r = await client.post("/login", data={"email": email, "password": PASSWORD, "next": "/alerts", "csrf_token": token})
    assert r.status_code == 303, r.text[:300]
    return client


async def _time(client: httpx.AsyncClient, path: str, requests: int) -> tuple[float, float, int]:
    for _ in range(2):
        r = await client.get(path)
        assert r.status_code == 200, (path, r.status_code, r.text[:300])
    took = []
    for _ in range(requests):
        t0 = time.perf_counter()
        r = await client.get(path)
        took.append((time.perf_counter() - t0) * 1000)
        assert r.status_code == 200
    took.sort()
    return took[len(took) // 2], took[min(len(took) - 1, int(len(took) * 0.99))], len(r.content)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--alerts", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=50)
    parser.add_argument("--db", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument(
        "--keep",
        metavar="URL",
        help="use (and keep) this database: seeded on the first run, reused as it is by later runs "
        "(migrations still applied) — seeding 1M alerts takes minutes",
    )
    parser.add_argument("--seed-only", action="store_true", help="seed (with --keep) and stop")
    args = parser.parse_args(argv)

    from migrations.apply import upgrade

    work = Path(tempfile.mkdtemp(prefix="genie-web-bench-"))
    drop = None
    if args.keep:
        url = args.keep
    elif args.db == "sqlite":
        url = f"sqlite+aiosqlite:///{work / 'genie.db'}"
    else:
        from tests.conftest import _pg_create, _pg_drop

        url = await _pg_create(args.pg_url, f"genie_webbench_{int(time.time())}")
        drop = (_pg_drop, args.pg_url, url.rsplit("/", 1)[1])
    engine = _engine(url)
    await upgrade(engine)
    await engine.dispose()
    t0 = time.perf_counter()
    seeded = await _alert_count(url) if args.keep else 0
    if seeded:
        print(f"reusing {seeded:,} alerts seeded before in {url}", flush=True)
        args.alerts = seeded
    else:
        await seed(url, args.alerts)
        print(f"seeded {args.alerts:,} alerts in {time.perf_counter() - t0:.1f} s ({args.db})", flush=True)
    if args.seed_only:
        return 0
    plans = await explain(url)
    fake = RateLimitedFakeSlack().start()
    server = await start_genie("genie-web", url, fake, work)
    rows = []
    try:
        base = f"http://127.0.0.1:{server.port}"
        member, admin = await _signed_in(base, MEMBER), await _signed_in(base, ADMIN)
        first = await member.get("/alerts")
        older = re.search(r'href="([^"]+)" rel="next"', first.text).group(1).replace("&amp;", "&")
        today = datetime.now(UTC).date()
        pages = [
            ("member", "/alerts", member),
            ("member", "/alerts?status=open&priority=P1", member),
            ("member", older, member),
            ("member", "/alerts?q=alias-42", member),
            ("member", "/alerts?tag=nothing-has-it", member),  # matches nothing: walks her whole history
            ("admin", "/alerts", admin),
            ("admin", "/alerts?team=Team+7&status=closed", admin),
            ("member", "/reports", member),
            ("admin", "/reports", admin),
            ("admin", f"/reports?from={today - timedelta(days=30)}&to={today}", admin),
            ("admin", "/reports.csv?table=teams", admin),
        ]
        for who, path, client in pages:
            p50, p99, size = await _time(client, path, args.requests)
            shown = path if len(path) < 60 else path[:57] + "…"
            rows.append((who, shown, p50, p99, size))
            print(f"{who:7} {shown:62} p50 {p50:7.1f} ms   p99 {p99:7.1f} ms   {size:,} B", flush=True)
        await member.aclose()
        await admin.aclose()
    finally:
        stop_all([server])
        fake.stop()
        if drop:
            await drop[0](drop[1], drop[2])
    print("\nEXPLAIN of the list's query:")
    for name, lines in plans.items():
        print(f"-- {name}")
        for line in lines:
            print(f"   {line}")
    print(json.dumps({"alerts": args.alerts, "db": args.db, "rows": rows}, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
