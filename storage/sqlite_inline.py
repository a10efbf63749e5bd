"""SQLite on the event loop's own thread: a connection SQLAlchemy's ``sqlite+aiosqlite`` dialect
takes in place of an aiosqlite connection, whose async methods call the stdlib ``sqlite3``
inline — no worker thread, no hop per call.

aiosqlite runs each call on a thread of its own and hands the answer back to the loop: through
SQLAlchemy's adapter that was 3–4 hops per statement (cursor, execute, fetchall, close) plus
BEGIN and COMMIT, 40–130 per click, while SQLite itself answers an indexed statement in
microseconds — less than one hop costs. With a single connection per process
(``storage.session``), the loop sat idle half the time waiting for hops (bench/RESULTS.md).

Two things may not block the loop, and are kept off it:

- **another process's write lock** (``genie worker``, the CLI, a second ``genie serve``): the
  connection's busy timeout is 0, and a statement that finds the database locked outside a
  transaction — ``BEGIN IMMEDIATE`` above all — is retried after an ``asyncio.sleep`` that grows
  from 1 ms to 25 ms, until the deadline SQLite's busy timeout had (``timeout``, 30 s); then
  the same ``sqlite3.OperationalError('database is locked')`` as before is raised. Inside a
  transaction begun with ``BEGIN IMMEDIATE`` WAL gives no "locked"; if one comes anyway it is
  raised (only ``COMMIT``, which SQLite documents as retryable, is retried);
- **fsync**: WAL checkpoints sync the database file. The connection's automatic checkpoint is
  off; a daemon thread with a connection of its own (``Checkpointer``) runs a PASSIVE checkpoint
  every ``CHECKPOINT_EVERY_S`` and, once the WAL file is larger than ``TRUNCATE_WAL_OVER_BYTES``
  and no write came in since its last look, a TRUNCATE one. It starts with the connection and
  stops (joined) when the connection closes — an engine's ``dispose()``.

Everything else a statement does runs on the loop: a report that scans a large table blocks
the loop for its duration (bench/RESULTS.md has a figure). ``GENIE_SQLITE_DRIVER=thread``
gives aiosqlite's thread back (``storage.session``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger(__name__)

#: Sleeps between attempts on a locked database: 1 ms, doubling to at most 25 ms (SQLite's own
#: busy handler waits 1, 2, 5, 10, 15, 20, 25 ms … 100 ms between attempts).
FIRST_RETRY_S = 0.001
MAX_RETRY_S = 0.025
#: The checkpoint thread's pace and when it truncates the WAL file (SQLite's automatic
#: checkpoint ran at 1,000 pages, ~4 MB).
CHECKPOINT_EVERY_S = 0.25
TRUNCATE_WAL_OVER_BYTES = 4 * 1024 * 1024

_SQLITE_BUSY = 5


def is_locked(error: sqlite3.OperationalError) -> bool:
    """SQLITE_BUSY (any extended code): another connection holds the lock we asked for."""
    code = getattr(error, "sqlite_errorcode", None)
    if code is not None:
        return code & 0xFF == _SQLITE_BUSY
    return "database is locked" in str(error)


def connect(database: str, *, timeout: float = 5.0, **kwargs: Any) -> Callable[[], Any]:
    """The ``async_creator_fn`` SQLAlchemy's aiosqlite dialect calls with the pysqlite connect
    arguments: opens the file here, on the loop (opening reads nothing yet), with SQLite's busy
    timeout at 0 and ``timeout`` kept as the deadline for the loop's own retries."""
    kwargs.pop("check_same_thread", None)
    conn = sqlite3.connect(database, timeout=0, check_same_thread=False, **kwargs)
    try:
        inline = InlineConnection(conn, busy_deadline_s=timeout)
    except BaseException:
        conn.close()
        raise

    async def opened() -> InlineConnection:
        return inline

    return opened()


class _Immediate:
    """Stands for aiosqlite's request queue (``Connection._tx``): SQLAlchemy's adapter puts
    ``(future, function)`` there to set ``isolation_level``; run it now."""

    __slots__ = ()

    @staticmethod
    def put_nowait(item: tuple[asyncio.Future, Callable[[], Any]]) -> None:
        future, function = item
        try:
            result = function()
        except BaseException as error:  # handed to the adapter through the future
            future.set_exception(error)
        else:
            future.set_result(result)


class InlineConnection:
    """What SQLAlchemy's aiosqlite adapter uses of ``aiosqlite.Connection``, run inline."""

    def __init__(self, conn: sqlite3.Connection, *, busy_deadline_s: float) -> None:
        self._conn = conn
        self._connection: sqlite3.Connection | None = conn  # aiosqlite's name; None once closed
        self._tx = _Immediate()
        self.busy_deadline_s = busy_deadline_s
        self.checkpointer: Checkpointer | None = None
        # Rows stay tuples (SQLAlchemy's own processing); no per-row factory.
        conn.execute("PRAGMA busy_timeout=0")
        path = _main_file(conn)
        if path:
            # Checkpoints run off the loop; the thread's own connection is opened here so that,
            # if it cannot be, this one keeps SQLite's automatic checkpoint.
            try:
                self.checkpointer = Checkpointer(path)
            except sqlite3.Error as error:
                log.warning("SQLite checkpoint thread not started (%s); checkpoints stay on the loop", error)
            else:
                conn.execute("PRAGMA wal_autocheckpoint=0")
                self.checkpointer.start()

    # --- what the adapter reads and sets -----------------------------------------------------
    @property
    def isolation_level(self) -> str | None:
        return self._conn.isolation_level

    @property
    def in_transaction(self) -> bool:
        return self._conn.in_transaction

    @property
    def row_factory(self) -> Any:
        return self._conn.row_factory

    @property
    def total_changes(self) -> int:
        return self._conn.total_changes

    def cursor(self) -> InlineCursor:
        return InlineCursor(self)

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> InlineCursor:
        cursor = InlineCursor(self)
        await cursor.execute(sql, parameters)
        return cursor

    async def commit(self) -> None:
        conn = self._conn
        try:
            conn.commit()
        except sqlite3.OperationalError as error:
            # "If COMMIT fails with SQLITE_BUSY the transaction stays active and COMMIT can be
            # retried" (not in WAL with BEGIN IMMEDIATE; a rollback journal's readers can).
            if not (is_locked(error) and conn.in_transaction):
                raise
            await self.retry_while_locked(conn.commit, error)

    async def rollback(self) -> None:
        self._conn.rollback()

    async def create_function(self, *args: Any, **kwargs: Any) -> None:
        self._conn.create_function(*args, **kwargs)

    async def close(self) -> None:
        if self._connection is None:
            return
        self._connection = None
        try:
            self._conn.close()
        finally:
            checkpointer, self.checkpointer = self.checkpointer, None
            if checkpointer is not None:
                checkpointer.stop()
                deadline = time.monotonic() + 5
                while checkpointer.is_alive() and time.monotonic() < deadline:  # noqa: ASYNC110 - a thread, a few ms
                    await asyncio.sleep(0.002)

    def stop(self) -> None:
        """aiosqlite's hard stop (SQLAlchemy's terminate, when it cannot await a close)."""
        if self._connection is None:
            return
        self._connection = None
        try:
            self._conn.close()
        finally:
            if self.checkpointer is not None:
                self.checkpointer.stop()
                self.checkpointer = None

    # --- the lock ----------------------------------------------------------------------------
    async def retry_while_locked(self, attempt: Callable[[], Any], error: sqlite3.OperationalError) -> Any:
        """``attempt`` again after growing sleeps until it gets the lock, or raise ``error``
        (SQLite's own "database is locked") once ``busy_deadline_s`` has passed."""
        deadline = time.monotonic() + self.busy_deadline_s
        delay = FIRST_RETRY_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise error
            await asyncio.sleep(min(delay, remaining))
            delay = min(delay * 2, MAX_RETRY_S)
            try:
                return attempt()
            except sqlite3.OperationalError as again:
                if not is_locked(again) or self._conn.in_transaction:
                    raise
                error = again


class InlineCursor:
    """``aiosqlite.Cursor`` as the adapter uses it, over a ``sqlite3.Cursor``."""

    __slots__ = ("_owner", "_cursor")

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner._conn.cursor()

    async def __aenter__(self) -> InlineCursor:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._cursor.close()

    @property
    def description(self) -> Any:
        return self._cursor.description

    @property
    def rowcount(self) -> int:
        return self._cursor.rowcount

    @property
    def lastrowid(self) -> int | None:
        return self._cursor.lastrowid

    @property
    def arraysize(self) -> int:
        return self._cursor.arraysize

    @arraysize.setter
    def arraysize(self, value: int) -> None:
        self._cursor.arraysize = value

    async def execute(self, sql: str, parameters: Iterable[Any] = ()) -> InlineCursor:
        cursor = self._cursor
        try:
            cursor.execute(sql, parameters)
        except sqlite3.OperationalError as error:
            # Outside a transaction a locked database changed nothing: wait for it off the loop.
            if not is_locked(error) or self._owner._conn.in_transaction:
                raise
            await self._owner.retry_while_locked(lambda: cursor.execute(sql, parameters), error)
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Iterable[Any]]) -> InlineCursor:
        seq = list(seq_of_parameters)
        cursor = self._cursor
        try:
            cursor.executemany(sql, seq)
        except sqlite3.OperationalError as error:
            if not is_locked(error) or self._owner._conn.in_transaction:
                raise
            await self._owner.retry_while_locked(lambda: cursor.executemany(sql, seq), error)
        return self

    async def fetchone(self) -> Any:
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        return self._cursor.fetchmany(self._cursor.arraysize if size is None else size)

    async def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    async def close(self) -> None:
        self._cursor.close()

    async def nextset(self) -> None:
        return None

    async def setinputsizes(self, *sizes: Any) -> None:
        return None

    def __aiter__(self) -> InlineCursor:
        return self

    async def __anext__(self) -> Any:
        row = self._cursor.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


def _main_file(conn: sqlite3.Connection) -> str:
    """The main database's file, or "" for an in-memory or temporary database."""
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or ""
    return ""


class Checkpointer(threading.Thread):
    """Checkpoints a WAL database from a daemon thread of its own, with a connection of its
    own, so that the fsync a checkpoint ends with never runs on the event loop. PASSIVE (it
    takes no lock a writer needs) every ``CHECKPOINT_EVERY_S``; TRUNCATE (it takes the write
    lock for a moment; the loop's ``BEGIN IMMEDIATE`` meanwhile waits in ``asyncio.sleep``)
    when the WAL file is over ``TRUNCATE_WAL_OVER_BYTES`` and no frame was added since the
    previous look. Its busy timeout is 0: a checkpoint that would wait is tried again later."""

    def __init__(self, path: str) -> None:
        super().__init__(name="genie-sqlite-checkpoint", daemon=True)
        self.path = path
        self._conn = sqlite3.connect(path, timeout=0, isolation_level=None, check_same_thread=False)
        self._stopping = threading.Event()
        #: (frames in the WAL, frames checkpointed) at the last look; checkpoints done.
        self.last: tuple[int, int] | None = None
        self.truncations = 0

    def stop(self) -> None:
        self._stopping.set()

    def wal_bytes(self) -> int:
        try:
            return os.stat(self.path + "-wal").st_size
        except OSError:
            return 0

    def run(self) -> None:
        conn = self._conn
        try:
            while not self._stopping.wait(CHECKPOINT_EVERY_S):
                try:
                    self.checkpoint(conn)
                except sqlite3.Error as error:  # a locked or busy file: the next look tries again
                    log.debug("SQLite checkpoint skipped: %s", error)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        _busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        quiet = self.last is not None and (frames, done) == self.last and frames == done
        self.last = (frames, done)
        if quiet and self.wal_bytes() > TRUNCATE_WAL_OVER_BYTES:
            busy, _, _ = conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                self.truncations += 1
                self.last = (0, 0)
