"""Shared query helpers: used by several services, owned by none. Each service owns the queries
of its own tables (``bot.services.users``: users and web sessions, ``teams``, ``slack_links``,
``external_accounts``, ``alerts`` …); only what several of them need lives here. Each takes an
``AsyncSession`` and never commits: the use case that opened the session owns the transaction."""

from __future__ import annotations

import collections
import functools
import re
import sqlite3
from collections.abc import Iterator, Mapping
from typing import Any

from sqlalchemy import Table, exc, func, insert, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.util import identity_key

from storage.base import UTCDateTime
from storage.models import WorkspaceSetting
from storage.sqlite_inline import InlineConnection, InlineCursor


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


async def get(session: AsyncSession, entity: type, ident: Any) -> Any | None:
    """``session.get(entity, ident)``: the session's own copy when it has one loaded and not
    expired — as ``session.get`` answers it, without its trip through the async session's
    greenlet (a click asks for the alert's team that its gate's read just loaded: ~100 µs of CPU
    for a dictionary lookup) — else ``session.get``, which reads it."""
    known = session.identity_map.get(identity_key(entity, ident))
    if known is not None and not inspect(known).expired:
        return known
    return await session.get(entity, ident)


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
    it (bench/RESULTS.md, "Issue 14, eighth round"; ``driver_execute``). Elsewhere SQLAlchemy's
    execute (PostgreSQL's hot batches have statements of their own). Like any Core statement it
    does not autoflush."""
    dialect = session.get_bind().dialect
    if dialect.name != "sqlite":
        await session.execute(insert(table), rows[0] if len(rows) == 1 else rows)
        return
    sql, columns = driver_statement(dialect, table, tuple(rows[0]))
    if len(rows) == 1:
        await driver_execute(session, sql, driver_row(columns, rows[0]))
    else:
        await driver_execute(session, sql, [driver_row(columns, row) for row in rows], many=True)


@functools.lru_cache(maxsize=512)
def driver_statement(
    dialect: Any, table: Table, names: tuple[str, ...], statement: Any = None, rows: int = 1
) -> tuple[str, tuple[tuple[str, Any], ...]]:
    """SQLite: ``statement`` (default: a plain INSERT into ``table``) with the columns ``names``,
    as the driver runs it — compiled once per shape — and each column with the bind processor
    SQLAlchemy would apply to its values (its dialect's own: a datetime as SQLite's text, JSON as
    its text, a boolean as 0/1), in parameter order; run it with ``driver_execute`` and
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


# --- statements on the driver (SQLite) --------------------------------------------------------
#
# SQLAlchemy's execution of one statement — its execution context, parameters, cursor result,
# the greenlet its async session runs the sync session in — cost ~130 µs of CPU on SQLite, where
# ``sqlite3`` runs an indexed statement in ~10 µs (bench/RESULTS.md, "Issue 14, ninth round").
# A click and its delivery are ~10 such statements. On the process's inline SQLite connection
# (``storage.sqlite_inline``) the hot statements below run on it directly, in the session's
# transaction (begun as SQLAlchemy begins it: ``BEGIN IMMEDIATE``), through the same
# ``InlineCursor`` SQLAlchemy's adapter uses (so a long read still leaves the loop, a locked
# database is still waited for off it), with what SQLAlchemy does around a statement done here:
# its bind and result processors (the dialect's own), its ``before_cursor_execute`` and
# ``after_cursor_execute`` events (which the suite's statement counts and ``bench/statements.py``
# read), and its exceptions (a driver error raised as SQLAlchemy's ``DBAPIError`` subclass).
# Anywhere else — PostgreSQL, aiosqlite's thread (``GENIE_SQLITE_DRIVER=thread``), a statement
# with Python-side defaults to compute — SQLAlchemy's own execute runs it.


class Ran:
    """What ``run`` returns: the statement's rows (named tuples of its columns, each value as
    SQLAlchemy's result would give it) and its rowcount."""

    __slots__ = ("rows", "rowcount")

    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self.rows = rows
        self.rowcount = rowcount

    def first(self) -> Any | None:
        return self.rows[0] if self.rows else None

    def all(self) -> list[Any]:
        return self.rows

    def __iter__(self) -> Iterator[Any]:
        return iter(self.rows)


_DRIVER = "genie.driver"


async def _driver(session: AsyncSession) -> tuple[Any, InlineConnection | None]:
    """SQLite: the session's connection (SQLAlchemy's, sync) and, when it is the inline
    connection, that connection (else None); elsewhere ``(None, None)``. For the session's
    transaction, begun now if it was not: ``session.connection()`` is ~35 µs per call, so it is
    asked once per transaction, the answer kept in ``session.info`` for as long as that
    transaction is the session's and active."""
    sync_session = session.sync_session
    held = session.info.get(_DRIVER)
    if held is not None:
        transaction = sync_session.get_transaction()
        if held[0] is transaction and transaction is not None and transaction.is_active:
            return held[1], held[2]
    bind = session.bind
    if bind is None or bind.dialect.name != "sqlite":
        return None, None
    connection = (await session.connection()).sync_connection
    driver = connection.connection.driver_connection
    inline = driver if isinstance(driver, InlineConnection) else None
    session.info[_DRIVER] = (sync_session.get_transaction(), connection, inline)
    return connection, inline


async def driver_execute(
    session: AsyncSession, sql: str, values: Any, *, many: bool = False, named: bool = True
) -> tuple[list[Any], int]:
    """Run ``sql`` (the driver's text, ``?`` parameters) with ``values`` (a tuple; with ``many``,
    a list of them) in the session's transaction: ``(the driver's rows, rowcount)``, each row a
    named tuple of the driver's values (``named``; else a plain tuple), as ``exec_driver_sql``'s
    rows are. On the inline SQLite connection directly (see above), elsewhere through
    ``exec_driver_sql``."""
    connection, inline = await _driver(session)
    if inline is None:
        result = await (await session.connection()).exec_driver_sql(sql, values)
        return (result.all() if result.returns_rows else []), result.rowcount
    dispatch = connection.dispatch
    cursor = InlineCursor(inline)
    for listener in dispatch.before_cursor_execute:
        listener(connection, cursor, sql, values, None, many)
    try:
        if many:
            await cursor.executemany(sql, values)
            rows: list[Any] = []
        else:
            await cursor.execute(sql, values)
            description = cursor.description
            rows = await cursor.fetchall() if description is not None else []
            if rows and named:
                make = _named(tuple(column[0] for column in description))
                rows = [make(row) for row in rows]
    except sqlite3.Error as error:
        raise exc.DBAPIError.instance(
            sql, values, error, sqlite3.Error, dialect=connection.dialect, ismulti=many
        ) from error
    finally:
        rowcount = cursor.rowcount
        await cursor.close()
    for listener in dispatch.after_cursor_execute:
        listener(connection, cursor, sql, values, None, many)
    return rows, rowcount


async def run(session: AsyncSession, statement: Any, params: Mapping[str, Any]) -> Ran:
    """Execute the Core ``statement`` (INSERT, UPDATE, DELETE or SELECT, built once: prepared
    once per statement object) with ``params`` in the session's transaction, as
    ``session.execute`` would, and return its rows and rowcount (``Ran``). On the inline SQLite
    connection it runs on the driver (``prepared``: SQLAlchemy's compiled text, its bind and
    result processors); elsewhere, or for a statement that is not ``prepared``, through
    ``session.execute``. Like any Core statement it does not autoflush."""
    connection, inline = await _driver(session)
    plan = _plan(connection.dialect, statement) if inline is not None else None
    if plan is None:
        result = await session.execute(statement, params)
        return Ran(result.all() if result.returns_rows else [], result.rowcount)
    sql, values = plan.bind(connection.dialect, params)
    rows, rowcount = await driver_execute(session, sql, values, named=False)
    return Ran(plan.rows(rows), rowcount)


class Plan:
    """A statement as the driver runs it (``prepared``)."""

    __slots__ = ("sql", "binds", "expanding", "_expanded", "row", "processors", "statement")

    def __init__(self, statement: Any, dialect: Any, compiled: Any) -> None:
        self.statement = statement
        self.sql = compiled.string
        #: Each positional parameter: (its name, its processor, its value when not given).
        self.binds = _binds(compiled, compiled.positiontup, dialect)
        #: The names of expanding parameters (``IN`` lists): the text is rendered per length.
        self.expanding = tuple(sorted(b.key for b in compiled.post_compile_params))
        self._expanded: dict[tuple[int, ...], tuple[str, tuple]] = {}
        columns = compiled._result_columns
        self.row = _named(tuple(c.keyname for c in columns)) if columns else None
        processors = tuple(c.type.dialect_impl(dialect).result_processor(dialect, None) for c in columns)
        self.processors = processors if any(p is not None for p in processors) else None

    def bind(self, dialect: Any, params: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The text and positional values for ``params``."""
        sql, binds = self.sql, self.binds
        if self.expanding:
            lengths = tuple(len(params[name]) for name in self.expanding)
            expanded = self._expanded.get(lengths)
            if expanded is None:
                expanded = self._expanded[lengths] = _expand(self.statement, dialect, self.expanding, params)
            sql, binds = expanded
        values = []
        for name, process, default, index in binds:
            value = params[name] if name in params else default
            if value is _REQUIRED:
                raise exc.InvalidRequestError(f"A value is required for bind parameter {name!r}")
            if index is not None:
                value = value[index]
            values.append(value if process is None else process(value))
        return sql, tuple(values)

    def rows(self, raw: list[Any]) -> list[Any]:
        make, processors = self.row, self.processors
        if make is None:
            return []
        if processors is None:
            return [make(row) for row in raw]
        return [make([v if p is None else p(v) for p, v in zip(processors, row, strict=True)]) for row in raw]


@functools.lru_cache(maxsize=256)
def _named(names: tuple[str, ...]) -> Any:
    """A row's maker: a named tuple of ``names`` (a name that is not an identifier, or repeated,
    only by position — SQLAlchemy's row refuses those by name too)."""
    return collections.namedtuple("Row", names, rename=True)._make


_REQUIRED = object()
_EXPANDED = re.compile(r"^(.*)_(\d+)$")


def _binds(compiled: Any, names: Any, dialect: Any, expanding: tuple[str, ...] = ()) -> tuple:
    binds = []
    for name in names:
        index = None
        bind = compiled.binds.get(name)
        if bind is None:  # an expanded list's element: ``{key}_{n}``
            match = _EXPANDED.match(name)
            assert match is not None and match.group(1) in expanding, name
            name, index = match.group(1), int(match.group(2)) - 1
            bind = compiled.binds[name]
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if bind.callable is None and bind.value is None and bind.required:
            default = _REQUIRED
        else:
            default = bind.effective_value
        binds.append((name, process, default, index))
    return tuple(binds)


def _expand(statement: Any, dialect: Any, expanding: tuple[str, ...], params: Mapping[str, Any]) -> tuple[str, tuple]:
    """The text of ``statement`` with its ``IN`` lists rendered for these lengths, and its binds."""
    compiled = statement.compile(dialect=dialect)
    state = compiled.construct_expanded_state(dict(params))
    return state.statement, _binds(compiled, state.positiontup, dialect, expanding)


_PLANS: dict[int, tuple[Any, Plan | None]] = {}


def _plan(dialect: Any, statement: Any) -> Plan | None:
    """``prepared``, remembered per statement object (hot statements are built once:
    ``functools.cache``), the answer None included. Not per engine: every SQLite engine here is
    made by ``storage.session.make_engine`` with the same dialect options, so a statement's text
    and processors are the same for each."""
    held = _PLANS.get(id(statement))
    if held is not None and held[0] is statement:
        return held[1]
    if len(_PLANS) >= 512:  # only statements built once belong here; a stray one is not kept for ever
        _PLANS.clear()
    plan = prepared(dialect, statement)
    _PLANS[id(statement)] = (statement, plan)
    return plan


def prepared(dialect: Any, statement: Any) -> Plan | None:
    """``statement`` as the driver runs it, or None when SQLAlchemy must run it: on another
    dialect than SQLite's, a statement with Python-side defaults or on-update values to compute
    (SQLAlchemy's execution adds them), or with parameters rendered as literals."""
    if dialect.name != "sqlite" or dialect.paramstyle != "qmark":
        return None
    compiled = statement.compile(dialect=dialect)
    if compiled.insert_prefetch or compiled.update_prefetch or compiled.literal_execute_params:
        return None
    return Plan(statement, dialect, compiled)


# --- a statement on the driver (PostgreSQL) ----------------------------------------------------
#
# The alert API's batch on PostgreSQL is one statement in autocommit (``alerts.
# create_alerts_at_once``): through SQLAlchemy's execution — its execution context, the async
# adapter's lock and prepared-statement cache, the greenlet its async session runs in, the
# cursor result — it cost ~60–90 µs of CPU per alert more than the same statement on asyncpg
# (bench/RESULTS.md, "Issue 14, tenth round"). ``driver_fetch`` runs it on the session's asyncpg
# connection directly, with what SQLAlchemy does around a statement: its ``before_cursor_execute``
# and ``after_cursor_execute`` events, its exceptions (a driver error raised as the DBAPIError
# subclass SQLAlchemy raises), and a lost connection invalidated, so the pool never hands it out
# again.


@functools.lru_cache(maxsize=32)
def _pg_plan(dialect: Any, statement: Any) -> Plan:
    """``statement`` as asyncpg runs it (``$n`` parameters): a ``Plan``, as SQLite's are."""
    return Plan(statement, dialect, statement.compile(dialect=dialect))


async def driver_fetch(session: AsyncSession, statement: Any, params: Mapping[str, Any]) -> list[Any]:
    """PostgreSQL, the session's connection in autocommit: run ``statement`` (built once) with
    ``params`` on the asyncpg connection itself and return its rows (each indexable by column
    position: asyncpg's records, or SQLAlchemy's rows where it runs the statement); see
    above. In a transaction, or on another database, through ``session.execute`` (the adapter
    begins the transaction there)."""
    connection = await session.connection()
    sync = connection.sync_connection
    dialect = sync.dialect
    adapter = sync.connection.dbapi_connection
    if dialect.driver != "asyncpg" or not getattr(adapter, "autocommit", False):
        return list(await session.execute(statement, params))
    sql, values = _pg_plan(dialect, statement).bind(dialect, params)
    dispatch = sync.dispatch
    for listener in dispatch.before_cursor_execute:
        listener(sync, None, sql, values, None, False)
    try:
        rows = await sync.connection.driver_connection.fetch(sql, *values)
    except Exception as error:
        dbapi = dialect.loaded_dbapi
        try:
            adapter._handle_exception(error)  # raises what SQLAlchemy's adapter raises for it
        except dbapi.Error as translated:
            lost = dialect.is_disconnect(translated, adapter, None)
            if lost:
                await connection.invalidate(translated)
            raise exc.DBAPIError.instance(
                sql, values, translated, dbapi.Error, dialect=dialect, connection_invalidated=lost
            ) from error
        raise
    for listener in dispatch.after_cursor_execute:
        listener(sync, None, sql, values, None, False)
    return rows
