"""Group commit for the alert API: the ``POST /v2/alerts`` of one moment share one transaction.

Each request parses and validates its body on its own, then hands ``(key, alert)`` to the
process's ``IngestBatcher`` and waits. The batcher's one writer takes every request that arrived
while its previous commit ran — no timer: at low load a batch is the one request, written at
once — and, in one transaction:

- reads the teams of all the batch's keys in one statement (``alerts.teams_for_keys``): a key
  is checked in the transaction that writes its alert, as before, so a key rotated or revoked by
  any process's commit is refused by every process from the next batch on (nothing remembered);
- writes the alerts (``alerts.create_alerts``: one upsert for the batch, the timeline and API
  request rows and the Slack posts as executemany);
- commits, and only then answers each request: 202 still means committed.

A request that is refused (no such key: 401; a body found bad once the key is known: 422; a team
it may not post for: 403) writes nothing and is answered with the others. A batch that fails as
a whole (something only the database catches in one of its alerts, a lost connection, a
deadlock) is rolled back and its requests are written one by one, each in its own transaction:
the bad one fails alone (503, as before), the others are accepted. Writing again is safe even
when the failure was the COMMIT's answer lost after the database had committed it: each alert's
request record (``api_request``, keyed by the request id) is in the same transaction, so its
second write fails on that key and writes nothing.

One writer per process, on SQLite (one connection) as on PostgreSQL: the batch grows with the
load, so one transaction carries it all.

**Gathering under load.** Left to itself the writer falls into step with its clients: the
requests a commit answers come back while the next transaction, holding only the one request
that arrived meanwhile, is in flight — with 8 clients, batches of 1 and 7 in turn (or two
cohorts of 4), so every alert paid for half a transaction more than it had to. So once a
writer has just committed a batch of several, it waits — at most ``GATHER_S`` (2 ms) — until
as many requests wait as that batch and the ones queued behind it held, then writes them in
one transaction: with 8 clients, batches of 8 (bench/RESULTS.md, "Round three"). A writer that
was idle still writes a lone alert at once; the wait is only ever between two batches of a busy
writer, and a 202 still comes only after its commit. (PostgreSQL's ``commit_delay`` does the
same for WAL flushes.)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services import alerts
from bot.services.alerts import Created, NewAlert
from bot.services.errors import GenieError

logger = logging.getLogger(__name__)

#: The most alerts one transaction writes; more waiting go in the next.
MAX_BATCH = 200
#: Under load, the longest the writer waits for a batch as large as its last one (see above).
GATHER_S = 0.002


class UnknownKey(GenieError):
    """The presented key is no team's current key (the API answers 401)."""


@dataclass
class _Waiting:
    key: str
    #: The validated body, or why it is not valid (raised once the key is known to be good:
    #: a bad key is a 401 whatever the body).
    data: alerts.CreateAlert | Exception
    request_id: str
    answer: asyncio.Future


class IngestBatcher:
    """``await batcher.create(key, data, request_id)`` → ``Created`` once committed; raises
    ``UnknownKey``, the body's error, ``Forbidden``, or the database's error."""

    def __init__(self, sessionmaker: Callable[[], async_sessionmaker[AsyncSession]]) -> None:
        self._sessionmaker = sessionmaker
        self._waiting: list[_Waiting] = []
        self._writer: asyncio.Task | None = None
        #: Alerts taken into a transaction, batches committed and the alerts in them (tests read them).
        self.taken = 0
        self.batches = 0
        self.written = 0
        #: Set when ``_gather_for`` requests wait (the writer is gathering a batch: ``_gather``).
        self._gathered: asyncio.Event | None = None
        self._gather_for = 0

    @property
    def waiting(self) -> int:
        """Requests waiting for the next transaction (the writer is busy with the previous)."""
        return len(self._waiting)

    async def create(self, key: str, data: alerts.CreateAlert | Exception, request_id: str) -> Created:
        loop = asyncio.get_running_loop()
        waiting = _Waiting(key, data, request_id, loop.create_future())
        self._waiting.append(waiting)
        if self._gathered is not None and len(self._waiting) >= self._gather_for:
            self._gathered.set()
        if self._writer is None or self._writer.done():
            self._writer = loop.create_task(self._write_all(), name="genie-ingest-writer")
        return await waiting.answer

    async def _write_all(self) -> None:
        last, target = 0, 0  # the previous batch's size (0: none yet), and the next one's goal
        try:
            while True:
                if last > 1 and len(self._waiting) < target:
                    await self._gather(target)
                if not self._waiting:
                    break
                batch, self._waiting = self._waiting[:MAX_BATCH], self._waiting[MAX_BATCH:]
                self.taken += len(batch)
                await self._write(batch)
                last, target = len(batch), min(MAX_BATCH, len(batch) + len(self._waiting))
        except BaseException:  # cancelled (shutdown): nobody is left waiting forever
            for waiting in self._waiting:
                _fail(waiting, GenieError("Genie is shutting down; please retry."))
            self._waiting = []
            raise

    async def _gather(self, count: int) -> None:
        """Wait, at most ``GATHER_S``, until ``count`` requests wait: the clients the last commit
        answered send their next alerts now (see the module's docstring)."""
        self._gathered, self._gather_for = asyncio.Event(), count
        try:
            async with asyncio.timeout(GATHER_S):
                await self._gathered.wait()
        except TimeoutError:
            pass
        finally:
            self._gathered = None

    async def _write(self, batch: list[_Waiting]) -> None:
        try:
            outcomes = await self._transaction(batch)
        except Exception as err:
            if len(batch) == 1:
                _fail(batch[0], err)
                return
            logger.warning("a batch of %d alerts failed (%s); writing them one by one", len(batch), type(err).__name__)
            for waiting in batch:
                await self._write([waiting])
            return
        except BaseException:  # cancelled (shutdown): its requests are answered, not left waiting
            for waiting in batch:
                _fail(waiting, GenieError("Genie is shutting down; please retry."))
            raise
        self.batches += 1
        self.written += len(batch)
        for waiting, outcome in zip(batch, outcomes, strict=True):
            if isinstance(outcome, Exception):
                _fail(waiting, outcome)
            elif not waiting.answer.done():  # (its client may have gone: the alert is in anyway)
                waiting.answer.set_result(outcome)

    async def _transaction(self, batch: list[_Waiting]) -> list[Created | Exception]:
        outcomes: list[Created | Exception | None] = [None] * len(batch)
        async with self._sessionmaker().begin() as session:
            teams = await alerts.teams_for_keys(session, list({w.key for w in batch}))
            todo: list[tuple[int, NewAlert]] = []
            for i, waiting in enumerate(batch):
                team = teams.get(waiting.key)
                if team is None:
                    outcomes[i] = UnknownKey("Could not authenticate")
                elif isinstance(waiting.data, Exception):
                    outcomes[i] = waiting.data
                else:
                    todo.append((i, NewAlert(team, waiting.data, waiting.request_id)))
            if todo:
                written = await alerts.create_alerts(session, [item for _, item in todo])
                for (i, _), outcome in zip(todo, written, strict=True):
                    outcomes[i] = outcome
        return [o for o in outcomes if o is not None]


def _fail(waiting: _Waiting, err: BaseException) -> None:
    if not waiting.answer.done():
        waiting.answer.set_exception(err)
