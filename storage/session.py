"""Engine and session factories.

On SQLite every transaction starts with ``BEGIN IMMEDIATE`` (WAL, busy timeout): a
transaction that reads and then writes can otherwise fail with "database is locked" when
another connection or process got there first. With it, writers queue instead, and the
conditional updates that make tokens one-time behave on SQLite as on PostgreSQL.

Because every transaction takes SQLite's one write lock, a process keeps a single connection
(``pool_size=1``): its transactions queue in order for that connection, in asyncio, and each
starts the moment the previous one ends. With a pool of several, they queued inside SQLite's
busy handler instead, which sleeps and retries (up to 100 ms a time): under load most of the
time went to sleeping while the lock sat free (bench/RESULTS.md). Other processes on the same
file still wait for the lock (polling, up to ``SQLITE_BUSY_TIMEOUT_MS``). Never open a second
session while holding one.

On PostgreSQL each process keeps a pool of ``GENIE_DB_POOL_SIZE`` connections (default 20)
and may open ``POOL_OVERFLOW`` (10) more for a moment. SQLAlchemy's default, 5 + 10, was smaller
than a busy process's concurrency: connections beyond 5 were opened and closed again per
transaction (825 alerts taken in opened 120 connections; bench/RESULTS.md). Connections are
pinged only after sitting idle (``_ping_when_idle``), not on every checkout.

SQLite's connection runs on the event loop's thread (``storage.sqlite_inline``): the URL stays
``sqlite+aiosqlite://`` and SQLAlchemy's aiosqlite dialect, but the connection it is handed
calls ``sqlite3`` inline instead of hopping to aiosqlite's thread for every call. Another
process's write lock is waited for in ``asyncio.sleep`` (busy timeout 0 on this connection, the
same 30 s deadline) and checkpoints run on a thread of their own. ``GENIE_SQLITE_DRIVER=thread``
gives aiosqlite's thread back.

Every engine's compiled-statement cache looks a statement up by identity first
(``CompiledCache``): SQLAlchemy's cache hashes the statement's whole cache key on every
execution, and Genie's hot statements (the click's gate, the outbox worker's claiming read) are
built once, with keys of 1,300–3,000 parts — 8–21 µs of hashing per execution.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine
from sqlalchemy.util import LRUCache

from storage import sqlite_inline

SQLITE_BUSY_TIMEOUT_MS = 30_000
#: ``GENIE_SQLITE_DRIVER``: ``inline`` (default: ``sqlite3`` on the event loop's thread) or
#: ``thread`` (aiosqlite's worker thread, a hop per call).
SQLITE_DRIVERS = ("inline", "thread")


def sqlite_driver(environ: Mapping[str, str] | None = None) -> str:
    """``GENIE_SQLITE_DRIVER`` (``bot.config`` refuses anything else at start)."""
    raw = (os.environ if environ is None else environ).get("GENIE_SQLITE_DRIVER", "").strip().lower()
    if not raw:
        return "inline"
    if raw not in SQLITE_DRIVERS:
        raise ValueError(f"GENIE_SQLITE_DRIVER must be one of {', '.join(SQLITE_DRIVERS)}, got {raw!r}")
    return raw


class CompiledCache:
    """An engine's cache of compiled statements (SQLAlchemy's ``compiled_cache`` execution
    option: a mapping with ``get`` and item assignment), found by identity before by value.

    SQLAlchemy looks a statement's compiled form up by a key made of the dialect, the
    statement's cache key — a nested tuple describing the whole statement, which the statement
    memoizes — and how it is executed (parameter names, executemany). CPython does not remember
    a tuple's hash, so every execution hashed the whole nested tuple again: 8 µs for the click's
    gate query, 17–21 µs for the outbox worker's claiming reads (``python -m bench.click_cpu``,
    bench/RESULTS.md "Issue 14, sixth round"). Genie builds its hot statements once, so their
    cache key is the same tuple object every time: found by that identity (and the rest of the
    key, short) first, hashed only when it is new. A key is held while its entry is, so its
    ``id`` cannot be another live tuple's; whatever misses goes to SQLAlchemy's own LRU cache,
    as before (same size)."""

    #: Entries looked up by identity; past this many they are all forgotten (found again by value).
    IDENTITY_ENTRIES = 2_000

    def __init__(self, size: int = 500) -> None:
        self._by_value: LRUCache = LRUCache(size)
        self._by_identity: dict[tuple, tuple[tuple, Any]] = {}

    def get(self, key: tuple, default: Any = None) -> Any:
        dialect, cache_key, *rest = key
        place = (id(dialect), id(cache_key), *rest)
        found = self._by_identity.get(place)
        if found is not None:  # (its key, held by the entry, is that very object: no other has its id)
            return found[1]
        compiled = self._by_value.get(key)
        if compiled is None:
            return default
        self._remember(place, key, compiled)
        return compiled

    def __setitem__(self, key: tuple, compiled: Any) -> None:
        self._by_value[key] = compiled
        dialect, cache_key, *rest = key
        self._remember((id(dialect), id(cache_key), *rest), key, compiled)

    def _remember(self, place: tuple, key: tuple, compiled: Any) -> None:
        if len(self._by_identity) >= self.IDENTITY_ENTRIES:
            self._by_identity.clear()
        self._by_identity[place] = (key, compiled)


def make_engine(url: str, **kwargs) -> AsyncEngine:
    kwargs.setdefault("execution_options", {"compiled_cache": CompiledCache(kwargs.get("query_cache_size", 500))})
    if url.startswith("sqlite"):
        if ":memory:" not in url and "mode=memory" not in url:
            kwargs.setdefault("pool_size", 1)
            kwargs.setdefault("max_overflow", 0)
        inline = sqlite_driver() == "inline"
        creator = sqlite_inline.connect if inline else _open_sqlite
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "async_creator_fn": creator}, **kwargs
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
            # Take transaction control from the driver so that BEGIN IMMEDIATE below is ours.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            if not inline:  # inline: 0, and the loop waits in asyncio.sleep (storage.sqlite_inline)
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - exercised by every test
            if not (inline and sqlite_inline.begin_at_once(conn)):
                conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_size", pool_size())
    kwargs.setdefault("max_overflow", POOL_OVERFLOW)
    kwargs.setdefault("pool_recycle", POOL_RECYCLE_S)
    engine = create_async_engine(url, **kwargs)
    _ping_when_idle(engine)
    return engine


#: PostgreSQL: connections each process keeps (``GENIE_DB_POOL_SIZE``), and how many more it
#: may open for a moment beyond them (closed again when returned).
DEFAULT_POOL_SIZE = 20
POOL_OVERFLOW = 10
#: A pooled connection older than this is replaced when next taken (a server-side idle timeout,
#: a proxy's, a failover: none sees a connection older than half an hour).
POOL_RECYCLE_S = 1800
#: A connection unused this long is pinged before it is handed out (see ``_ping_when_idle``).
PING_AFTER_IDLE_S = 2.0


def pool_size(environ: Mapping[str, str] | None = None) -> int:
    """``GENIE_DB_POOL_SIZE`` (1–1000, default 20; ``bot.config`` refuses anything else at start)."""
    raw = (os.environ if environ is None else environ).get("GENIE_DB_POOL_SIZE", "").strip()
    if not raw:
        return DEFAULT_POOL_SIZE
    value = int(raw)
    if not 1 <= value <= 1000:
        raise ValueError(f"GENIE_DB_POOL_SIZE must be between 1 and 1000, got {value}")
    return value


def _ping_when_idle(engine: AsyncEngine) -> None:
    """Ping a pooled connection before handing it out only when it sat unused for
    ``PING_AFTER_IDLE_S``: SQLAlchemy's ``pool_pre_ping`` pings on every checkout — a round trip
    to PostgreSQL per transaction, ~2 per alert the API takes in. A connection in steady use
    needs none (a broken one fails its statement; SQLAlchemy then invalidates every connection
    of the pool opened before, so the next transactions get fresh ones); one that sat idle
    across a database restart or a failover is caught here and replaced before anyone uses it
    (``DisconnectionError``: the pool opens a new one)."""
    dialect = engine.sync_engine.dialect

    @event.listens_for(engine.sync_engine, "checkin")
    def _checked_in(dbapi_connection, record):  # pragma: no cover - exercised by every PostgreSQL test
        record.info["genie_idle_since"] = time.monotonic()

    @event.listens_for(engine.sync_engine, "checkout")
    def _checked_out(dbapi_connection, record, proxy):  # pragma: no cover - exercised by every PostgreSQL test
        since = record.info.pop("genie_idle_since", None)
        if since is None or time.monotonic() - since < PING_AFTER_IDLE_S:
            return
        try:
            alive = dialect.do_ping(dbapi_connection)
        except Exception as err:
            raise DisconnectionError(f"pooled connection lost while idle: {type(err).__name__}") from err
        if alive is False:
            raise DisconnectionError("pooled connection lost while idle")


def _open_sqlite(*args: Any, **kwargs: Any):
    """``aiosqlite.connect`` as SQLAlchemy calls it, except when the file cannot be opened:
    aiosqlite then queues its worker thread's stop without waiting for it, and if the event loop
    closes first (a command that fails at once) the thread's answer meets a closed loop and
    prints a traceback after Genie's one-line error. Wait for the thread before raising."""
    connection = aiosqlite.connect(*args, **kwargs)
    thread = connection if isinstance(connection, Thread) else connection._thread  # aiosqlite < 0.22 / ≥ 0.22
    thread.daemon = True  # as SQLAlchemy's own aiosqlite connect does

    async def opened():
        try:
            return await connection
        except BaseException:
            if thread.is_alive():
                await asyncio.to_thread(thread.join, 5)
            raise

    return opened()


def make_sessionmaker(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False)
