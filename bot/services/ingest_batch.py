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

**PostgreSQL** writes most of a batch as one statement before that transaction
(``alerts.create_alerts_at_once``, the session in autocommit: PostgreSQL runs the statement as
its own transaction, one round trip, no BEGIN and COMMIT). The statement checks each key itself
— as the transaction's read would, against every commit before it — and writes each alert with
its timeline row, Slack post and request record. What it leaves (a wrong key, a bad body, an
alert that names a team or people, a team with an escalation policy, a repeat of an alert
collapsed into a digest, a second one with one alias) goes through the transaction above. The
alerts it wrote are committed whatever becomes of that transaction: if it fails, only its own
requests are written again one by one.

One writer per process, on SQLite (one connection) as on PostgreSQL: the batch grows with the
load, so one transaction (or statement) carries it all. The writer, its gathering under load and its fallback
are ``group_commit.GroupCommit``'s (shared with clicks).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import alerts
from bot.services.alerts import Created, NewAlert
from bot.services.errors import GenieError
from bot.services.group_commit import GroupCommit


class UnknownKey(GenieError):
    """The presented key is no team's current key (the API answers 401)."""


@dataclass(frozen=True)
class _Ingest:
    key: str
    #: The validated body, or why it is not valid (raised once the key is known to be good:
    #: a bad key is a 401 whatever the body).
    data: alerts.CreateAlert | Exception
    request_id: str


class IngestBatcher(GroupCommit[_Ingest, Created]):
    """``await batcher.create(key, data, request_id)`` → ``Created`` once committed; raises
    ``UnknownKey``, the body's error, ``Forbidden``, or the database's error."""

    name = "genie-ingest-writer"
    what = "alerts"
    max_batch = 200

    async def create(self, key: str, data: alerts.CreateAlert | Exception, request_id: str) -> Created:
        return await self.submit(_Ingest(key, data, request_id))

    async def _transaction(self, batch: list[_Ingest]) -> list[Created | Exception]:
        sessionmaker = self._sessionmaker()
        bind = getattr(sessionmaker, "kw", {}).get("bind")
        if bind is None or bind.dialect.name != "postgresql":
            return await self._in_transaction(batch)
        # PostgreSQL: one statement in no transaction of its own (autocommit) for every alert
        # that can go at once, keys checked in it (``alerts.create_alerts_at_once``); the rest
        # (a wrong key, a bad body, rare kinds of alert) in a transaction after, as on SQLite.
        outcomes: list[Created | Exception | None] = [None] * len(batch)
        fit = [i for i, waiting in enumerate(batch) if not isinstance(waiting.data, Exception)]
        if fit:
            async with sessionmaker() as session:
                await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
                at_once = await alerts.create_alerts_at_once(
                    session,
                    [(batch[i].key, batch[i].data, batch[i].request_id) for i in fit],
                )
            for i, outcome in zip(fit, at_once, strict=True):
                outcomes[i] = outcome
        # The ones written are committed: whatever happens to the rest, they are answered so.
        # A failure of the rest is theirs alone (each written alone, as a failed batch is).
        rest = [i for i, outcome in enumerate(outcomes) if outcome is None]
        if rest:
            try:
                written = await self._in_transaction([batch[i] for i in rest])
            except Exception as err:
                written = [err] if len(rest) == 1 else [await self._alone(batch[i]) for i in rest]
            for i, outcome in zip(rest, written, strict=True):
                outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    async def _alone(self, item: _Ingest) -> Created | Exception:
        try:
            [outcome] = await self._in_transaction([item])
        except Exception as err:
            return err
        return outcome

    async def _in_transaction(self, batch: list[_Ingest]) -> list[Created | Exception]:
        async with self._sessionmaker().begin() as session:
            outcomes, todo = await self._keyed(session, batch)
            if todo:
                written = await alerts.create_alerts(session, [item for _, item in todo])
                for (i, _), outcome in zip(todo, written, strict=True):
                    outcomes[i] = outcome
        return [o for o in outcomes if o is not None]

    @staticmethod
    async def _keyed(
        session: AsyncSession, batch: list[_Ingest]
    ) -> tuple[list[Created | Exception | None], list[tuple[int, NewAlert]]]:
        """The teams of the batch's keys, read in one statement: each refused one's outcome
        (401, or its body's error), and the others to write."""
        outcomes: list[Created | Exception | None] = [None] * len(batch)
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
        return outcomes, todo
