"""Shared query helpers: used by several services, owned by none. Each service owns the queries
of its own tables (``bot.services.users``: users and web sessions, ``teams``, ``slack_links``,
``external_accounts``, ``alerts`` …); only what several of them need lives here. Each takes an
``AsyncSession`` and never commits: the use case that opened the session owns the transaction."""

from __future__ import annotations

import functools
from typing import Any

from sqlalchemy import Table, func, insert, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.base import UTCDateTime
from storage.models import WorkspaceSetting


# --- conditional updates ---------------------------------------------------------------------
async def update_one(session: AsyncSession, statement, entity: type, ident: Any) -> Any | None:
    """Run a conditional ``UPDATE`` that matches at most one row of ``entity``: the row as now
    updated (the session's copy refreshed), or None when the condition matched nothing (of any
    number of concurrent callers exactly one gets the row). With ``UPDATE … RETURNING``
    (SQLite ≥ 3.35, PostgreSQL) that is one statement; otherwise the ``UPDATE`` and a read by
    primary key. ``ident``: that key, or an async callable that finds it (before the update)."""
    if session.get_bind().dialect.update_returning:
        return (
            await session.execute(
                statement.returning(entity),
                execution_options={"synchronize_session": False, "populate_existing": True},
            )
        ).scalar_one_or_none()
    key = await ident() if callable(ident) else ident
    if key is None:
        return None
    result = await session.execute(statement.execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return await session.get(entity, key, populate_existing=True)


# --- workspace settings ----------------------------------------------------------------------
def workspace_setting_value(workspace_id: str, key: str):
    """SQL for a setting as a workspace sees it: its own value, else the deployment-wide one
    (workspace ``'*'``), else NULL — each a primary-key lookup, usable inside a larger query."""

    def value(workspace: str):
        return (
            select(WorkspaceSetting.value)
            .where(WorkspaceSetting.workspace_id == workspace, WorkspaceSetting.key == key)
            .scalar_subquery()
        )

    return func.coalesce(value(workspace_id), value("*"))


async def workspace_setting(session: AsyncSession, workspace_id: str, key: str) -> str | None:
    return await session.scalar(select(workspace_setting_value(workspace_id, key)))


# --- loading many rows at once -------------------------------------------------------------------
async def by_key(session: AsyncSession, column, keys: set) -> dict:
    """The rows of ``column``'s table whose ``column`` is one of ``keys``, by that value (one
    query; none for no keys): ``await by_key(session, User.email, {"a@x.org"})``."""
    if not keys:
        return {}
    entity = column.class_
    return {getattr(row, column.key): row for row in await session.scalars(select(entity).where(column.in_(keys)))}


# --- Slack installations (the Bolt installation store's table) ------------------------------------
async def installations(session: AsyncSession) -> list[dict]:
    """Multi-workspace mode: the latest bot installation of each workspace / Grid org."""
    from storage.models import SLACK_BOTS

    rows = (
        (
            await session.execute(
                select(
                    SLACK_BOTS.c.team_id,
                    SLACK_BOTS.c.team_name,
                    SLACK_BOTS.c.enterprise_id,
                    SLACK_BOTS.c.enterprise_name,
                    SLACK_BOTS.c.is_enterprise_install,
                    func.max(SLACK_BOTS.c.installed_at).label("installed_at"),
                )
                .group_by(
                    SLACK_BOTS.c.team_id,
                    SLACK_BOTS.c.team_name,
                    SLACK_BOTS.c.enterprise_id,
                    SLACK_BOTS.c.enterprise_name,
                    SLACK_BOTS.c.is_enterprise_install,
                )
                .order_by(SLACK_BOTS.c.enterprise_id, SLACK_BOTS.c.team_id)
            )
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]


# --- inserts on the driver (SQLite) ----------------------------------------------------------
async def insert_rows(session: AsyncSession, table: Table, rows: list[dict[str, Any]]) -> None:
    """INSERT ``rows`` (each with the same keys) into ``table`` in the session's transaction. On
    SQLite the statement is compiled once per shape and run on the driver (``driver_statement``):
    building and binding a plain INSERT through SQLAlchemy cost more CPU than SQLite spent running
    it (bench/RESULTS.md, "Issue 14, eighth round"). Elsewhere SQLAlchemy's execute (PostgreSQL's
    hot batches have statements of their own). Like any Core statement it does not autoflush."""
    dialect = session.get_bind().dialect
    if dialect.name != "sqlite":
        await session.execute(insert(table), rows[0] if len(rows) == 1 else rows)
        return
    sql, columns = driver_statement(dialect, table, tuple(rows[0]))
    connection = await session.connection()
    if len(rows) == 1:
        await connection.exec_driver_sql(sql, driver_row(columns, rows[0]))
    else:
        await connection.exec_driver_sql(sql, [driver_row(columns, row) for row in rows])


@functools.lru_cache(maxsize=512)
def driver_statement(
    dialect: Any, table: Table, names: tuple[str, ...], statement: Any = None, rows: int = 1
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """SQLite: ``statement`` (default: a plain INSERT into ``table``) with the columns ``names``,
    as the driver runs it — compiled once per shape — and each column with the bind processor
    SQLAlchemy would apply to its values (its dialect's own: a datetime as SQLite's text, JSON as
    its text, a boolean as 0/1), in parameter order; run it with ``exec_driver_sql`` and
    ``driver_row``. ``rows``: that many rows in one multi-row VALUES (as SQLAlchemy renders an
    executemany with RETURNING), the parameters row after row. Every parameter must be a
    column's value (no other bound parameter in ``statement``)."""
    assert dialect.paramstyle == "qmark", dialect.paramstyle
    base = insert(table) if statement is None else statement
    compiled = base.values({n: None for n in names}).compile(dialect=dialect)
    order = tuple(compiled.positiontup)
    assert sorted(order) == sorted(names), (order, names)  # every parameter is a row's column
    sql = compiled.string
    if rows > 1:
        one = "(" + ", ".join("?" * len(order)) + ")"
        head, sep, tail = sql.partition(f" VALUES {one}")
        assert sep and one not in tail, sql
        sql = f"{head} VALUES {', '.join([one] * rows)}{tail}"
    columns = []
    for n in order:
        process = table.c[n].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None and isinstance(table.c[n].type, UTCDateTime):
            # A batch's rows share their moment: formatted once, not once per column and row.
            process = functools.lru_cache(maxsize=4)(process)
        columns.append((n, process))
    return sql, tuple(columns)


def driver_row(columns: tuple[tuple[str, Any], ...], row: dict[str, Any]) -> tuple[Any, ...]:
    """``row``'s values in ``driver_statement``'s order, each through its processor."""
    return tuple(row[n] if process is None else process(row[n]) for n, process in columns)
