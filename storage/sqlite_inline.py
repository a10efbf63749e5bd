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
  off; a daemon thread with a connection of its own (``Checkpointer``) checkpoints instead. It
  starts with the connection and stops (joined) when the connection closes — an engine's
  ``dispose()``.

A PASSIVE checkpoint alone does not keep the WAL file bounded under steady writes: SQLite
starts the WAL over only when a write transaction begins after a checkpoint has copied every
frame back, and this connection begins its next transaction the moment the last one commits
(measured: 5.5 MB and growing after 160 alerts under load). So once the WAL holds
``RESTART_AT_FRAMES`` frames the thread asks the loop to start no transaction for a moment
(``InlineConnection.pausing``: statements outside a transaction wait in ``asyncio.sleep``, like
for a lock), takes the write lock as soon as the transaction in progress commits, and runs a
RESTART checkpoint — most frames are already copied by the PASSIVE ones, so the pause is about
one fsync. When no frame has been added since its last look and the file is larger than
``TRUNCATE_WAL_OVER_BYTES``, it truncates the file the same way.

Everything else a statement does runs on the loop, and a session's statements run one after
the other without suspending (none of them waits). Two bounds keep a long one from freezing the
server: a read (SELECT, or a WITH that writes nothing) still running after
``OFFLOAD_READS_AFTER_S`` is interrupted by SQLite's progress callback and run again on a
worker thread, same connection and transaction, the loop awaiting it (a write is never
interrupted: SQLite would roll back its whole transaction); and a statement that ends
``YIELD_AFTER_S`` after the connection last let the loop go ends with ``asyncio.sleep(0)``.
Measured: an admin's 30-day report at 100k alerts held the loop ~800 ms without them; with
them an admin's 7- or 30-day report held it 17–41 ms at a time (bench/RESULTS.md). ``GENIE_SQLITE_DRIVER=thread`` gives aiosqlite's thread
back (``storage.session``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import re
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
#: The checkpoint thread's pace; the WAL size (frames, one page each) at which it starts the
#: WAL over (SQLite's automatic checkpoint ran at 1,000 pages, ~4 MB); the file size over which
#: it truncates an idle WAL; how long it waits for the write lock (the loop's connection begins
#: nothing meanwhile; another process's transactions may take it first: then the next look).
CHECKPOINT_EVERY_S = 0.25
RESTART_AT_FRAMES = 1000
TRUNCATE_WAL_OVER_BYTES = 4 * 1024 * 1024
CHECKPOINT_LOCK_WAIT_MS = 200

#: A read (SELECT, or WITH … SELECT) still running after this long on the loop is interrupted
#: and run again on a worker thread, the loop awaiting it: a report over a large table does not
#: freeze the server. SQLite calls back every ``PROGRESS_EVERY`` virtual-machine steps to check.
OFFLOAD_READS_AFTER_S = 0.02
PROGRESS_EVERY = 5000
#: A statement that ends this long after the connection last let the loop go (a session's
#: statements, and its Python between them, run without suspending: none of them waits) ends
#: with ``asyncio.sleep(0)``, so that other tasks get the loop between a long session's statements.
YIELD_AFTER_S = 0.01

_SQLITE_BUSY = 5
_SQLITE_INTERRUPT = 9
_WRITES = re.compile(r"\b(INSERT|UPDATE|DELETE|REPLACE)\b", re.IGNORECASE)


@functools.lru_cache(maxsize=1024)
def reads_only(sql: str) -> bool:
    """A statement that cannot write, so may be interrupted and run again: SQLite rolls back
    the whole transaction when an INSERT, UPDATE or DELETE in it is interrupted, a SELECT's
    interruption changes nothing. A WITH that names no write anywhere counts as a SELECT.
    Remembered per statement text (SQLAlchemy hands the same compiled strings again and again;
    the search over a long WITH was a measurable part of a delivery's render read)."""
    head = sql.lstrip()[:6].upper()
    return head == "SELECT" or (head[:4] == "WITH" and _WRITES.search(sql) is None)


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
        #: Set by the checkpoint thread while it wants, or holds, the write lock: statements
        #: outside a transaction wait for it in ``asyncio.sleep``.
        self.pausing = False
        #: When the read running on the loop is to be interrupted (``OFFLOAD_READS_AFTER_S``).
        self._deadline: float | None = None
        self._interrupted = False
        #: When this connection last let the loop run other tasks (``time.perf_counter``).
        self.resumed = time.perf_counter()
        #: Reads moved to a worker thread (for the benchmark and the tests).
        self.offloaded = 0
        conn.set_progress_handler(self._progress, PROGRESS_EVERY)
        # Rows stay tuples (SQLAlchemy's own processing); no per-row factory.
        conn.execute("PRAGMA busy_timeout=0")
        path = _main_file(conn)
        if path:
            # Checkpoints run off the loop; the thread's own connection is opened here so that,
            # if it cannot be, this one keeps SQLite's automatic checkpoint.
            try:
                self.checkpointer = Checkpointer(path, self)
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

    # --- long reads ----------------------------------------------------------------------------
    def _progress(self) -> int:
        deadline = self._deadline
        if deadline is not None and time.perf_counter() > deadline:
            self._interrupted = True
            return 1  # SQLite stops the statement: SQLITE_INTERRUPT
        return 0

    def read_inline(self, cursor: sqlite3.Cursor, sql: str, parameters: Iterable[Any]) -> list[Any]:
        """Run a read and fetch its rows here, interrupted at ``OFFLOAD_READS_AFTER_S``."""
        self._interrupted = False
        self._deadline = time.perf_counter() + OFFLOAD_READS_AFTER_S
        try:
            cursor.execute(sql, parameters)
            return cursor.fetchall()
        finally:
            self._deadline = None

    async def read(self, cursor: sqlite3.Cursor, sql: str, parameters: Iterable[Any]) -> list[Any]:
        try:
            return self.read_inline(cursor, sql, parameters)
        except sqlite3.OperationalError as error:
            if self._interrupted and getattr(error, "sqlite_errorcode", _SQLITE_INTERRUPT) == _SQLITE_INTERRUPT:
                return await self._offload(cursor, sql, parameters)
            if not is_locked(error) or self._conn.in_transaction:
                raise
            return await self.retry_while_locked(lambda: self.read_inline(cursor, sql, parameters), error)

    async def _offload(self, cursor: sqlite3.Cursor, sql: str, parameters: Iterable[Any]) -> list[Any]:
        """The read again, on a worker thread: same connection, same transaction (this session
        holds it, so nothing else uses it meanwhile); the loop serves other tasks."""
        self.offloaded += 1

        def read() -> list[Any]:
            cursor.execute(sql, parameters)
            return cursor.fetchall()

        # No progress callback meanwhile: each would take the GIL from the loop's thread.
        self._conn.set_progress_handler(None, 0)
        future = asyncio.get_running_loop().run_in_executor(None, read)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            # The connection is the thread's until its statement ends: stop it, wait for it.
            self._conn.interrupt()
            while not future.done():
                try:
                    await asyncio.wait({future})
                except asyncio.CancelledError:
                    continue
            raise
        finally:
            self.resumed = time.perf_counter()
            if future.done():
                self._conn.set_progress_handler(self._progress, PROGRESS_EVERY)

    # --- the lock ----------------------------------------------------------------------------
    async def wait_for_checkpoint(self) -> None:
        """While the checkpoint thread takes the write lock to start the WAL over (about one
        fsync), begin nothing: wait in ``asyncio.sleep``, at most the lock deadline."""
        deadline = time.monotonic() + self.busy_deadline_s
        delay = FIRST_RETRY_S
        while self.pausing and time.monotonic() < deadline:
            await asyncio.sleep(delay)
            delay = min(delay * 2, MAX_RETRY_S)

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

    __slots__ = ("_owner", "_cursor", "_rows")

    def __init__(self, owner: InlineConnection) -> None:
        self._owner = owner
        self._cursor = owner._conn.cursor()
        self._rows: list[Any] | None = None  # a read's rows, fetched with it

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
        owner, cursor = self._owner, self._cursor
        if owner.pausing and not owner._conn.in_transaction:
            await owner.wait_for_checkpoint()
        if reads_only(sql):
            self._rows = await owner.read(cursor, sql, parameters)
        else:
            self._rows = None
            try:
                cursor.execute(sql, parameters)
            except sqlite3.OperationalError as error:
                # Outside a transaction a locked database changed nothing: wait for it off the loop.
                if not is_locked(error) or owner._conn.in_transaction:
                    raise
                await owner.retry_while_locked(lambda: cursor.execute(sql, parameters), error)
        if time.perf_counter() - owner.resumed > YIELD_AFTER_S:
            await asyncio.sleep(0)
            owner.resumed = time.perf_counter()
        return self

    async def executemany(self, sql: str, seq_of_parameters: Iterable[Iterable[Any]]) -> InlineCursor:
        seq = list(seq_of_parameters)
        cursor = self._cursor
        if self._owner.pausing and not self._owner._conn.in_transaction:
            await self._owner.wait_for_checkpoint()
        try:
            cursor.executemany(sql, seq)
        except sqlite3.OperationalError as error:
            if not is_locked(error) or self._owner._conn.in_transaction:
                raise
            await self._owner.retry_while_locked(lambda: cursor.executemany(sql, seq), error)
        return self

    async def fetchone(self) -> Any:
        if self._rows is not None:
            return self._rows.pop(0) if self._rows else None
        return self._cursor.fetchone()

    async def fetchmany(self, size: int | None = None) -> list[Any]:
        size = self._cursor.arraysize if size is None else size
        if self._rows is not None:
            rows, self._rows = self._rows[:size], self._rows[size:]
            return rows
        return self._cursor.fetchmany(size)

    async def fetchall(self) -> list[Any]:
        if self._rows is not None:
            rows, self._rows = self._rows, []
            return rows
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
        row = await self.fetchone()
        if row is None:
            raise StopAsyncIteration
        return row


def begin_at_once(connection: Any) -> bool:
    """``BEGIN IMMEDIATE`` on SQLAlchemy's ``connection`` (its ``begin`` event), run on the
    inline connection directly when it can be at once: True if it was. SQLAlchemy's
    ``exec_driver_sql`` for it cost ~100 µs of CPU, SQLite ~5 µs, and every transaction begins
    so (bench/RESULTS.md, "Issue 14, ninth round"). False — nothing done; the caller runs it
    through SQLAlchemy, which waits off the loop — when another connection holds the write lock
    or the checkpoint thread is taking it (``pausing``). SQLAlchemy's cursor events are fired for
    it as for any statement, once it has run (so a BEGIN that waited is never counted twice)."""
    inline = connection.connection.driver_connection
    if not isinstance(inline, InlineConnection) or inline.pausing:
        return False
    cursor = inline._conn.cursor()
    try:
        cursor.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as error:
        if not is_locked(error) or inline._conn.in_transaction:
            raise
        return False
    finally:
        cursor.close()
    dispatch = connection.dispatch
    for listener in dispatch.before_cursor_execute:
        listener(connection, cursor, "BEGIN IMMEDIATE", (), None, False)
    for listener in dispatch.after_cursor_execute:
        listener(connection, cursor, "BEGIN IMMEDIATE", (), None, False)
    return True


def _main_file(conn: sqlite3.Connection) -> str:
    """The main database's file, or "" for an in-memory or temporary database."""
    for _seq, name, file in conn.execute("PRAGMA database_list").fetchall():
        if name == "main":
            return file or ""
    return ""


class Checkpointer(threading.Thread):
    """Checkpoints a WAL database from a daemon thread with a connection of its own, so that
    the fsync a checkpoint ends with never runs on the event loop. Every ``CHECKPOINT_EVERY_S``:
    a PASSIVE checkpoint (it takes no lock a writer needs); then, when the WAL holds
    ``RESTART_AT_FRAMES`` frames, a RESTART one, or, when no frame came in since the last look
    and the file is over ``TRUNCATE_WAL_OVER_BYTES``, a TRUNCATE one. Those two take the write
    lock: ``owner.pausing`` keeps the loop's connection from beginning a transaction meanwhile,
    and SQLite's busy handler, on this thread, waits for the one in progress."""

    def __init__(self, path: str, owner: InlineConnection) -> None:
        super().__init__(name="genie-sqlite-checkpoint", daemon=True)
        self.path = path
        self.owner = owner
        self._conn = sqlite3.connect(
            path, timeout=CHECKPOINT_LOCK_WAIT_MS / 1000, isolation_level=None, check_same_thread=False
        )
        self._stopping = threading.Event()
        #: (frames in the WAL, frames copied back) at the last look, and after the last restart.
        self.last: tuple[int, int] | None = None
        self.restarted: tuple[int, int] | None = None
        self.restarts = 0
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
                except sqlite3.Error as error:  # a busy or locked file: the next look tries again
                    log.debug("SQLite checkpoint skipped: %s", error)
        finally:
            conn.close()

    def checkpoint(self, conn: sqlite3.Connection) -> None:
        _busy, frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
        quiet = (frames, done) == self.last and frames == done
        self.last = (frames, done)
        if frames >= RESTART_AT_FRAMES and (frames, done) != self.restarted:
            if self.exclusive(conn, "RESTART"):
                self.restarts += 1
                self.restarted = (frames, done)
        elif quiet and self.wal_bytes() > TRUNCATE_WAL_OVER_BYTES:
            if self.exclusive(conn, "TRUNCATE"):
                self.truncations += 1
                self.last = self.restarted = None

    def exclusive(self, conn: sqlite3.Connection, mode: str) -> bool:
        """A checkpoint that takes the write lock, the loop's connection holding back meanwhile."""
        self.owner.pausing = True
        try:
            busy, _, _ = conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        finally:
            self.owner.pausing = False
        return not busy
