"""Waking a background process after a commit made in another one.

In one process (``genie serve``, the default) a handler that commits outbox rows calls
``rt.wake_outbox(channel)`` and the outbox worker beside it looks at once. Split in two
(``genie serve --no-worker`` + ``genie worker``), the web process has no worker to wake; without a
signal the worker would find the rows only at its next poll (``POLL_INTERVAL``, 2 s). So:

- **PostgreSQL**: ``NOTIFY genie_wake, 'channel'`` on a connection of its own (the sender
  coalesces the wakes of one moment into one NOTIFY, one round trip), and the worker
  ``LISTEN``s on a connection of its own (asyncpg). Any number of web and worker processes.
- **SQLite** (processes on one host, one file): a datagram on a Unix socket in Linux's abstract
  namespace named after the database file; the worker binds it, the web process sends one
  ``sendto`` per wake (nothing is sent anywhere if no worker listens). One worker per file binds
  it; another process that cannot (a second worker) relies on polling.

A lost wake costs only latency: the worker still polls every ``POLL_INTERVAL``, and a listener
that (re)connects wakes everything once. The payload is the channel (or empty: "look at
everything"); it is a hint, never trusted for anything but which queue to look at first.

    sender = wakeup.sender(database_url)            # web process: rt.wakeup = sender
    sender.send("C0123")                            # after a commit (rt.wake_outbox does it)
    listener = wakeup.listener(database_url, rt.wake_outbox)   # worker process
    await listener.start(); … ; await listener.stop()
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
import sys
from collections.abc import Callable
from contextlib import suppress
from typing import Any

from sqlalchemy.engine import make_url

logger = logging.getLogger(__name__)

#: The PostgreSQL notification channel.
PG_CHANNEL = "genie_wake"
#: A NOTIFY payload must stay under 8,000 bytes; more channels than fit wake everything.
PG_PAYLOAD_MAX = 7000
#: Seconds between checks that the LISTEN connection is alive (and reconnect attempts).
RECONNECT_INTERVAL = 2.0
#: Seconds a connection attempt may take (asyncpg's default is 60).
CONNECT_TIMEOUT = 5.0

Wake = Callable[[str | None], None]


def _sqlite_address(url: str) -> bytes | None:
    """The abstract Unix socket address for a SQLite file (None: not Linux, or in memory)."""
    if not sys.platform.startswith("linux"):
        return None
    database = make_url(url).database
    if not database or database == ":memory:" or "mode=memory" in url:
        return None
    path = os.path.realpath(os.path.abspath(database))
    return b"\0genie-wake-" + hashlib.sha256(path.encode()).hexdigest()[:24].encode()


def _pg_connect_args(url: str) -> dict[str, Any]:
    from sqlalchemy.dialects.postgresql.asyncpg import PGDialect_asyncpg

    _, kwargs = PGDialect_asyncpg().create_connect_args(make_url(url))
    return kwargs


# --- sending -------------------------------------------------------------------------------------
class SqliteSender:
    def __init__(self, address: bytes) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setblocking(False)

    def send(self, channel: str | None) -> None:
        # No worker listening (refused), or its queue is full (it has wakes to read anyway).
        with suppress(OSError):
            self.sock.sendto((channel or "").encode(), self.address)

    async def close(self) -> None:
        self.sock.close()


class PostgresSender:
    """Coalesces: wakes that arrive while a NOTIFY is in flight go out together in the next."""

    def __init__(self, url: str) -> None:
        self.connect_args = _pg_connect_args(url)
        self._conn: Any = None
        self._pending: set[str] = set()
        self._everything = False
        self._task: asyncio.Task | None = None
        self._closed = False

    def send(self, channel: str | None) -> None:
        if self._closed:
            return
        if channel:
            self._pending.add(channel)
        else:
            self._everything = True
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._flush(), name="genie-wake-notify")

    async def _flush(self) -> None:
        import asyncpg

        while self._pending or self._everything:
            channels, everything = self._pending, self._everything
            self._pending, self._everything = set(), False
            payload = "" if everything else ",".join(sorted(channels))
            if len(payload) > PG_PAYLOAD_MAX:
                payload = ""
            try:
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(**self.connect_args, timeout=CONNECT_TIMEOUT)
                await self._conn.execute("SELECT pg_notify($1, $2)", PG_CHANNEL, payload, timeout=CONNECT_TIMEOUT)
            except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
                # The worker polls anyway: a lost wake is a late delivery, never a lost one.
                logger.warning("Could not wake the worker (NOTIFY): %s", type(err).__name__)
                self._conn = None
                return

    async def close(self) -> None:
        self._closed = True
        if self._task is not None:
            with suppress(Exception):
                await self._task
        if self._conn is not None:
            with suppress(Exception):
                await self._conn.close()
            self._conn = None


def sender(url: str) -> SqliteSender | PostgresSender | None:
    """What a process without a worker of its own uses to wake the worker(s) of its database."""
    if url.startswith("postgresql"):
        return PostgresSender(url)
    if url.startswith("sqlite"):
        address = _sqlite_address(url)
        return SqliteSender(address) if address is not None else None
    return None


# --- listening -----------------------------------------------------------------------------------
def _split(payload: str) -> list[str | None]:
    return [c for c in payload.split(",") if c] or [None]


class SqliteListener:
    def __init__(self, address: bytes, wake: Wake) -> None:
        self.address, self.wake = address, wake
        self.sock: socket.socket | None = None

    async def start(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        try:
            sock.bind(self.address)
        except OSError:  # another worker on this file has it: that one is woken, this one polls
            sock.close()
            logger.info("Another worker listens for wake-ups on this database; this one polls")
            return
        sock.setblocking(False)
        self.sock = sock
        asyncio.get_running_loop().add_reader(sock.fileno(), self._readable)

    def _readable(self) -> None:
        assert self.sock is not None
        channels: set[str | None] = set()
        while True:
            try:
                data = self.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            channels.update(_split(data.decode(errors="replace")))
        for channel in channels:
            self.wake(channel)

    async def stop(self) -> None:
        if self.sock is not None:
            asyncio.get_running_loop().remove_reader(self.sock.fileno())
            self.sock.close()
            self.sock = None


class PostgresListener:
    def __init__(self, url: str, wake: Wake) -> None:
        self.connect_args = _pg_connect_args(url)
        self.wake = wake
        self._conn: Any = None
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        await self._connect()
        self._task = asyncio.get_running_loop().create_task(self._keep(), name="genie-wake-listen")

    async def _connect(self) -> bool:
        import asyncpg

        try:
            conn = await asyncpg.connect(**self.connect_args, timeout=CONNECT_TIMEOUT)
            await conn.add_listener(PG_CHANNEL, self._notified)
        except (OSError, TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError) as err:
            logger.warning("Cannot LISTEN for wake-ups (%s); polling until it can", type(err).__name__)
            return False
        self._conn = conn
        self.wake(None)  # what was committed while nobody listened
        return True

    def _notified(self, _conn: Any, _pid: int, _channel: str, payload: str) -> None:
        for channel in _split(payload):
            self.wake(channel)

    async def _keep(self) -> None:
        while True:
            await asyncio.sleep(RECONNECT_INTERVAL)
            if self._conn is None or self._conn.is_closed():
                self._conn = None
                await self._connect()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._conn is not None:
            with suppress(Exception):
                await self._conn.close()
            self._conn = None


def listener(url: str, wake: Wake) -> SqliteListener | PostgresListener | None:
    """What a process with background loops uses to hear the wakes of web processes."""
    if url.startswith("postgresql"):
        return PostgresListener(url, wake)
    if url.startswith("sqlite"):
        address = _sqlite_address(url)
        return SqliteListener(address, wake) if address is not None else None
    return None
