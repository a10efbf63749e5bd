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
file still wait through the busy timeout. Never open a second session while holding one.
"""

from __future__ import annotations

import asyncio
from threading import Thread
from typing import Any

import aiosqlite
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SQLITE_BUSY_TIMEOUT_MS = 30_000


def make_engine(url: str, **kwargs) -> AsyncEngine:
    if url.startswith("sqlite"):
        if ":memory:" not in url and "mode=memory" not in url:
            kwargs.setdefault("pool_size", 1)
            kwargs.setdefault("max_overflow", 0)
        engine = create_async_engine(
            url, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "async_creator_fn": _open_sqlite}, **kwargs
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _sqlite_connect(dbapi_connection, _record):  # pragma: no cover - exercised by every test
            # Take transaction control from the driver so that BEGIN IMMEDIATE below is ours.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def _sqlite_begin(conn):  # pragma: no cover - exercised by every test
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    kwargs.setdefault("pool_pre_ping", True)
    return create_async_engine(url, **kwargs)


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
