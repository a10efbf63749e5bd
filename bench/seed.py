"""Bulk data for the benchmark, written straight with SQL (``INSERT … SELECT`` over a generated
series: a recursive CTE on SQLite, ``generate_series`` on PostgreSQL — a million rows a table in
seconds, in one transaction).

The world at size ``n``:

- ``n`` users, each linked to a Slack user (``UB{i}`` in workspace ``T0GENIE01``), each a
  member of one of ``max(20, n/100)`` teams (round-robin; team 1 is Payments, channel
  ``C0PAY``); ``n`` used link requests;
- ``n`` closed alerts of the past spread over the teams, each with its ``create`` timeline row
  and its delivered Slack post in the outbox;
- the rows the benchmark acts on: ``hot`` open alerts of Payments already in Slack (one click
  each), one open alert for the 200-click race, a web user who can sign in, fresh link
  requests to confirm, and a team API key for each team the ingest rows post to.

    layout = await seed(url, n=100_000, hot=20_000, confirms=3_000, password_hash=h)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy import insert, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from storage.models import LinkRequest

#: Where in-process measurements (``bench.click_cpu``, ``bench.delivery_cpu``) make their
#: PostgreSQL scratch databases.
SCRATCH_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432"


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-q", "-h", "127.0.0.1", "-U", "postgres", "-c", sql], check=True)


@contextlib.contextmanager
def scratch_database(backend: str, prefix: str) -> Iterator[str]:
    """The URL of an empty database of its own, migrated to head (``genie db upgrade``), for an
    in-process measurement: a SQLite file in a temporary directory, or a PostgreSQL database;
    removed afterwards."""
    work = tempfile.mkdtemp()
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    if backend == "sqlite":
        url = f"sqlite+aiosqlite:///{work}/genie.db"
    else:
        _psql(f'CREATE DATABASE "{name}"')
        url = f"{SCRATCH_PG}/{name}"
    try:
        upgrade = subprocess.run(
            [sys.executable, "-m", "bot", "db", "upgrade"],
            env={**os.environ, "DATABASE_URL": url, "GENIE_SECRET_KEY": "x" * 40},
            capture_output=True,
            text=True,
        )
        if upgrade.returncode:
            raise SystemExit(upgrade.stderr)
        yield url
    finally:
        shutil.rmtree(work, ignore_errors=True)
        if backend != "sqlite":
            _psql(f'DROP DATABASE IF EXISTS "{name}"')


WORKSPACE = "T0GENIE01"  # tests.fake_slack.TEAM_ID: the workspace the fake Slack says it is
PAYMENTS_CHANNEL = "C0PAY"
MEMBERS_PER_TEAM = 100
MIN_TEAMS = 20
WEB_EMAIL = "web@bench.example"


@dataclass
class Layout:
    n: int
    teams: int
    #: Slack user ids of linked members of Payments (who click).
    clickers: list[str]
    #: Open alerts of Payments, each clicked once.
    hot_alerts: list[int]
    race_alert: int
    web_email: str = WEB_EMAIL
    #: ``(nonce, Slack user id)`` of fresh link requests to confirm, and the nonce the 500 race on.
    confirm_nonces: list[tuple[str, str]] = field(default_factory=list)
    race_nonce: str = ""

    def team_of_user(self, i: int) -> int:
        return (i - 1) % self.teams + 1

    def click(self, secret: str, i: int, *, response_url: str, message: dict | None) -> tuple[bytes, dict]:
        """The ``i``-th click of the layout, signed: Acknowledge on the ``i``-th open alert of
        Payments by a linked member (``bench.payloads.click``)."""
        from bench import payloads

        return payloads.click(
            secret,
            user_id=self.clickers[i % len(self.clickers)],
            team_id=WORKSPACE,
            team_domain="acme",
            channel=PAYMENTS_CHANNEL,
            alert_id=self.hot_alerts[i],
            response_url=response_url,
            message=message,
        )


def _engine(url: str) -> AsyncEngine:
    """A plain engine: no BEGIN IMMEDIATE hook (bench reads never block Genie's writers)."""
    return create_async_engine(url)


class _Sql:
    def __init__(self, dialect: str) -> None:
        self.pg = dialect == "postgresql"

    def true(self, value: bool) -> str:
        return ("true" if value else "false") if self.pg else ("1" if value else "0")

    def ts(self, when: datetime) -> str:
        when = when.astimezone(UTC)
        if self.pg:
            return f"TIMESTAMPTZ '{when.strftime('%Y-%m-%d %H:%M:%S.%f')}+00'"
        return f"'{when.strftime('%Y-%m-%d %H:%M:%S.%f')}'"

    def json(self, literal: str) -> str:
        return f"'{literal}'::json" if self.pg else f"'{literal}'"

    def pad12(self, expr: str) -> str:
        return f"lpad(({expr})::text, 12, '0')" if self.pg else f"printf('%012d', {expr})"

    def insert(self, table: str, columns: str, select: str, first: int, last: int) -> str:
        """``INSERT INTO table (columns) SELECT select FROM <i = first..last>``."""
        if self.pg:
            return f'INSERT INTO "{table}" ({columns}) SELECT {select} FROM generate_series({first}, {last}) AS s(i)'
        return (
            f'INSERT INTO "{table}" ({columns}) WITH RECURSIVE s(i) AS '
            f"(SELECT {first} UNION ALL SELECT i + 1 FROM s WHERE i < {last}) SELECT {select} FROM s"
        )


async def seed(url: str, n: int, *, hot: int, confirms: int, password_hash: str) -> Layout:
    engine = _engine(url)
    try:
        async with engine.begin() as conn:
            sql = _Sql(conn.dialect.name)
            if not sql.pg:
                await conn.exec_driver_sql("PRAGMA synchronous=OFF")
            layout = await _seed(conn, sql, n, hot, password_hash)
            layout.confirm_nonces = await _link_requests(conn, confirms)
            layout.race_nonce = (await _link_requests(conn, 1, prefix="UR"))[0][0]
        async with engine.connect() as conn:
            if sql.pg:
                for table in ("user", "team", "alert", "alert_event", "outbox", "slack_link"):
                    await conn.exec_driver_sql(
                        f"SELECT setval(pg_get_serial_sequence('\"{table}\"', 'id'), (SELECT max(id) FROM \"{table}\"))"
                    )
                await conn.commit()
                # What autovacuum does within a minute of a bulk load; the planner needs it.
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.exec_driver_sql("ANALYZE")
            else:
                await conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        await engine.dispose()
    return layout


async def _seed(conn, sql: _Sql, n: int, hot: int, password_hash: str) -> Layout:
    teams = max(MIN_TEAMS, -(-n // MEMBERS_PER_TEAM))
    past = datetime.now(UTC) - timedelta(days=30)
    now = datetime.now(UTC)
    t_past, t_later, t_now = sql.ts(past), sql.ts(past + timedelta(minutes=10)), sql.ts(now)
    f, t = sql.true(False), sql.true(True)
    team_expr = f"((i - 1) % {teams}) + 1"

    async def run(statement: str) -> None:
        await conn.exec_driver_sql(statement)

    # Teams: 1 is Payments (C0PAY), the others Team {i} (C0T{i}).
    await run(
        sql.insert(
            "team",
            "id, name, slack_channel_id, created_at",
            f"i, CASE WHEN i = 1 THEN 'Payments' ELSE 'Team ' || i END, "
            f"CASE WHEN i = 1 THEN '{PAYMENTS_CHANNEL}' ELSE 'C0T' || i END, {t_past}",
            1,
            teams,
        )
    )
    await run(
        sql.insert(
            "user",
            "id, email, name, password_hash, is_admin, is_active, created_at",
            f"i, 'u' || i || '@bench.example', 'Bench User ' || i, NULL, {f}, {t}, {t_past}",
            1,
            n,
        )
    )
    await run(sql.insert("team_member", "team_id, user_id, added_at", f"{team_expr}, i, {t_past}", 1, n))
    await run(
        sql.insert(
            "slack_link",
            "id, user_id, workspace_id, slack_user_id, slack_team_id, enterprise_id, "
            "workspace_name, slack_name, slack_email, created_at",
            f"i, i, '{WORKSPACE}', 'UB' || i, '{WORKSPACE}', NULL, 'acme', 'Bench User ' || i, "
            f"'u' || i || '@bench.example', {t_past}",
            1,
            n,
        )
    )
    await run(
        sql.insert(
            "link_request",
            "nonce, workspace_id, slack_user_id, slack_team_id, enterprise_id, "
            "workspace_name, slack_name, slack_email, created_at, expires_at, consumed_at, "
            "consumed_by_user_id, superseded_at",
            f"'seed-nonce-' || i, '{WORKSPACE}', 'UB' || i, '{WORKSPACE}', NULL, 'acme', NULL, NULL, "
            f"{t_past}, {t_later}, {t_past}, i, NULL",
            1,
            n,
        )
    )
    alert_cols = (
        "id, uid, team_id, message, alias, description, tags, details, responders, entity, source, "
        "priority, reported_by, status, acknowledged, acknowledged_at, acknowledged_by, closed_at, "
        "closed_by, owner_user_id, count, created_at, updated_at, last_occurred_at, slack_channel, slack_ts"
    )
    channel_expr = f"CASE WHEN {team_expr} = 1 THEN '{PAYMENTS_CHANNEL}' ELSE 'C0T' || ({team_expr}) END"
    await run(
        sql.insert(
            "alert",
            alert_cols,
            f"i, '00000000-0000-4000-8000-' || {sql.pad12('i')}, {team_expr}, 'Past alert ' || i, "
            f"'past-' || i, 'Something broke, then was fixed.', {sql.json('[]')}, {sql.json('{}')}, "
            f"{sql.json('[]')}, NULL, 'bench', 'P3', NULL, 'closed', {t}, {t_past}, 'Bench User 1', "
            f"{t_later}, 'Bench User 1', NULL, 1, {t_past}, {t_later}, {t_past}, {channel_expr}, "
            f"'1600000000.' || {sql.pad12('i')}",
            1,
            n,
        )
    )
    await run(
        sql.insert(
            "alert_event",
            "id, alert_id, at, action, outcome, reason, via, actor_user_id, actor_name, "
            "slack_workspace_id, slack_user_id, anonymous, note, request_id",
            f"i, i, {t_past}, 'create', 'applied', NULL, 'api', NULL, 'API (bench)', NULL, NULL, {f}, NULL, NULL",
            1,
            n,
        )
    )
    await run(
        sql.insert(
            "outbox",
            "id, channel, kind, alert_id, payload, created_at, next_attempt_at, attempts, "
            "locked_until, first_attempt_at, delivered_at, failed_at, last_error",
            f"i, {channel_expr}, 'alert.post', i, NULL, {t_past}, {t_past}, 1, NULL, {t_past}, {t_past}, NULL, NULL",
            1,
            n,
        )
    )

    # The rows the benchmark acts on.
    web, admin = n + 1, n + 2
    await conn.execute(
        text(
            'INSERT INTO "user" (id, email, name, password_hash, is_admin, is_active, created_at) VALUES '
            f"({web}, '{WEB_EMAIL}', 'Web Bench', :hash, {f}, {t}, {t_now}), "
            f"({admin}, 'admin@bench.example', 'Ada Admin', NULL, {t}, {t}, {t_now})"
        ),
        {"hash": password_hash},
    )
    await run(f"INSERT INTO team_member (team_id, user_id, added_at) VALUES (1, {web}, {t_now})")
    first_hot, last_hot = n + 1, n + hot + 1  # the last one is the race's
    tags, details, empty = sql.json('["checkout", "p1"]'), sql.json('{"host": "web-1"}'), sql.json("[]")
    await run(
        sql.insert(
            "alert",
            alert_cols,
            f"i, '00000000-0000-4000-9000-' || {sql.pad12('i')}, 1, 'Checkout error rate above 5% (' || i "
            f"|| ')', 'hot-' || i, 'Error rate on checkout is above 5% for 5 minutes.', "
            f"{tags}, {details}, {empty}, "
            f"'web-1', 'bench', 'P2', NULL, 'open', {f}, NULL, NULL, NULL, NULL, NULL, 1, {t_now}, "
            f"{t_now}, {t_now}, '{PAYMENTS_CHANNEL}', '1700000000.' || {sql.pad12('i')}",
            first_hot,
            last_hot,
        )
    )
    clickers = [f"UB{i}" for i in range(1, n + 1, teams)][:MEMBERS_PER_TEAM]
    return Layout(n=n, teams=teams, clickers=clickers, hot_alerts=list(range(first_hot, last_hot)), race_alert=last_hot)


async def _link_requests(conn, count: int, prefix: str = "UW") -> list[tuple[str, str]]:
    """Fresh link requests, each for a new Slack identity in its own workspace (so confirming
    them one after another never replaces an earlier link): what ``/genie connect`` leaves."""
    if count <= 0:
        return []
    now = datetime.now(UTC)
    rows, nonces = [], []
    for j in range(count):
        nonce = secrets.token_urlsafe(32)
        tag = secrets.token_hex(4).upper()
        nonces.append((nonce, f"{prefix}{tag}{j}"))
        rows.append(
            dict(
                nonce=nonce,
                workspace_id=f"T{prefix}{tag}{j}",
                slack_user_id=f"{prefix}{tag}{j}",
                slack_team_id=f"T{prefix}{tag}{j}",
                enterprise_id=None,
                workspace_name="bench",
                slack_name=f"Bench Slack {j}",
                slack_email=WEB_EMAIL,
                created_at=now,
                expires_at=now + timedelta(hours=2),
                consumed_at=None,
                consumed_by_user_id=None,
                superseded_at=None,
            )
        )
    await conn.execute(insert(LinkRequest.__table__), rows)
    return nonces


async def add_link_requests(url: str, count: int, prefix: str = "UW") -> list[tuple[str, str]]:
    engine = _engine(url)
    try:
        async with engine.begin() as conn:
            return await _link_requests(conn, count, prefix)
    finally:
        await engine.dispose()
