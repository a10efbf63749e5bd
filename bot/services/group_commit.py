"""Group commit: the writes of one moment share one transaction.

A caller hands its item to the process's batcher (``await batcher.submit(item)``) and waits. The
batcher's one writer takes every item that arrived while its previous commit ran — no timer: at
low load a batch is the one item, written at once — runs them in order in one transaction
(``_transaction``, the subclass's), commits, and only then answers each caller: an answer still
means committed. Used by the alert API (``ingest_batch``) and by clicks (``click_batch``).

What it saves is each transaction's fixed cost — the session, BEGIN and COMMIT (two round trips
on PostgreSQL), SQLite's lock and WAL commit — paid once per batch instead of once per item
(bench/RESULTS.md).

**Failure.** A batch that fails as a whole (something only the database catches in one of its
items, a lost connection, a deadlock, a bug) is rolled back and its items are written one by
one, each in its own transaction: the bad one fails alone, with the error it would have had
alone, and the others are written. A subclass makes writing again safe (the alert API: the
request record's key; a click: its replay key, in the same transaction).

**Gathering under load.** Left to itself the writer falls into step with its callers: the ones a
commit answers come back while the next transaction, holding only the one item that arrived
meanwhile, is in flight — with 8 clients, batches of 1 and 7 in turn. So once a writer has just
committed a batch of several, it waits — at most ``GATHER_S`` (2 ms) — until as many items wait
as that batch and the ones queued behind it held. A writer that was idle still writes a lone
item at once; the wait is only ever between two batches of a busy writer. (PostgreSQL's
``commit_delay`` does the same for WAL flushes.)
"""

from __future__ import annotations

import abc
import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services.errors import GenieError

logger = logging.getLogger(__name__)

Item = TypeVar("Item")
Answer = TypeVar("Answer")

#: Under load, the longest a writer waits for a batch as large as its last one (see above).
GATHER_S = 0.002


@dataclass
class _Waiting(Generic[Item]):
    item: Item
    answer: asyncio.Future


class GroupCommit(abc.ABC, Generic[Item, Answer]):
    """One writer per process for one kind of write. Subclasses set ``name`` (the writer task's
    name), ``what`` (the items, in a log line) and ``max_batch``, and write a batch in
    ``_transaction``: one answer (or the exception that caller gets) per item, in order."""

    name = "genie-group-commit"
    what = "items"
    #: The most items one transaction writes; more waiting go in the next.
    max_batch = 200

    def __init__(self, sessionmaker: Callable[[], async_sessionmaker[AsyncSession]]) -> None:
        self._sessionmaker = sessionmaker
        self._waiting: list[_Waiting[Item]] = []
        self._writer: asyncio.Task | None = None
        #: Items taken into a transaction, batches committed and the items in them (tests read them).
        self.taken = 0
        self.batches = 0
        self.written = 0
        #: Set when ``_gather_for`` items wait (the writer is gathering a batch: ``_gather``).
        self._gathered: asyncio.Event | None = None
        self._gather_for = 0

    @property
    def waiting(self) -> int:
        """Items waiting for the next transaction (the writer is busy with the previous)."""
        return len(self._waiting)

    async def submit(self, item: Item) -> Answer:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(item, loop.create_future())
        self._waiting.append(waiting)
        if self._gathered is not None and len(self._waiting) >= self._gather_for:
            self._gathered.set()
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all(), name=self.name)
        return await waiting.answer

    @abc.abstractmethod
    async def _transaction(self, batch: list[Item]) -> list[Answer | Exception]:
        """Write ``batch`` in one transaction: one answer (or the exception its caller gets) per item."""

    async def _write_all(self) -> None:
        last, target = 0, 0  # the previous batch's size (0: none yet), and the next one's goal
        try:
            while True:
                if last > 1 and len(self._waiting) < target:
                    await self._gather(target)
                if not self._waiting:
                    break
                batch, self._waiting = self._waiting[: self.max_batch], self._waiting[self.max_batch :]
                self.taken += len(batch)
                await self._write(batch)
                last, target = len(batch), min(self.max_batch, len(batch) + len(self._waiting))
        except BaseException:  # cancelled (shutdown): nobody is left waiting forever
            for waiting in self._waiting:
                _fail(waiting, GenieError("Genie is shutting down; please retry."))
            self._waiting = []
            raise

    async def _gather(self, count: int) -> None:
        """Wait, at most ``GATHER_S``, until ``count`` items wait: the callers the last commit
        answered send their next ones now (see the module's docstring)."""
        self._gathered, self._gather_for = asyncio.Event(), count
        try:
            async with asyncio.timeout(GATHER_S):
                await self._gathered.wait()
        except TimeoutError:
            pass
        finally:
            self._gathered = None

    async def _write(self, batch: list[_Waiting[Item]]) -> None:
        try:
            outcomes = await self._transaction([waiting.item for waiting in batch])
        except Exception as err:
            if len(batch) == 1:
                _fail(batch[0], err)
                return
            logger.warning(
                "a batch of %d %s failed (%s); writing them one by one", len(batch), self.what, type(err).__name__
            )
            for waiting in batch:
                await self._write([waiting])
            return
        except BaseException:  # cancelled (shutdown): its callers are answered, not left waiting
            for waiting in batch:
                _fail(waiting, GenieError("Genie is shutting down; please retry."))
            raise
        self.batches += 1
        self.written += len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                _fail(waiting, outcome)
            elif not waiting.answer.done():  # (its caller may have gone: the write is in anyway)
                waiting.answer.set_result(outcome)


def _fail(waiting: _Waiting[Any], err: BaseException) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(err)
