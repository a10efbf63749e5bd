"""Slack's Events API retries: an event Slack thinks failed (no 200 within 3 seconds, a 5xx)
is sent again with ``X-Slack-Retry-Num``, up to three times over some minutes. Each delivery of
one event carries the same ``event_id``; the first one in wins and the others do nothing.

    async with sessionmaker.begin() as session:
        if not await first_delivery(session, body["event_id"]):
            return   # a retry of an event already taken in

Clicks and slash commands have no event id; ``body_key`` names one by a digest of its signed
body, so a replayed body is taken in once too.

Rows older than ``KEEP`` are pruned by the periodic cleanup (``bot.services.cleanup``): Slack
gives up retrying well before that, and a signature is good for 5 minutes. Taking an event in
is one statement (``INSERT … ON CONFLICT DO NOTHING``), so it can share the transaction of the
work it guards (a click's, ``bot.listeners.actions.alerts``) without lengthening it much.
"""

from __future__ import annotations

import base64
import functools
import hashlib
from datetime import datetime, timedelta

from sqlalchemy import bindparam
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession

from storage import repositories as repo
from storage.base import utcnow
from storage.models import SlackEvent

KEEP = timedelta(hours=1)
MAX_EVENT_ID = 64


def body_key(raw_body: str) -> str:
    """``body:`` and the SHA-256 of the body (base64url, 43 characters): an event id for a
    request Slack gives none. Event ids are ``Ev…``, so the two never meet."""
    digest = hashlib.sha256(raw_body.encode("utf-8", "surrogatepass")).digest()
    return "body:" + base64.urlsafe_b64encode(digest).decode().rstrip("=")


async def first_delivery(session: AsyncSession, event_id: str, now: datetime | None = None) -> bool:
    """Record ``event_id``; False when it was recorded before (by this or another process).
    Concurrent deliveries of one event race on the primary key: exactly one insert wins, the
    others insert nothing (and wait for the winner's transaction to end first, on PostgreSQL)."""
    statement = _take_in(session.get_bind().dialect.name)
    result = await repo.run(session, statement, {"event_id": event_id, "received_at": now or utcnow()})
    return result.rowcount == 1


@functools.cache
def _take_in(dialect: str):
    """``first_delivery``'s ``INSERT … ON CONFLICT DO NOTHING``, built once per dialect with bind
    parameters (it is in every click's transaction; building it per call cost as much CPU as
    running it)."""
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    table = SlackEvent.__table__
    return (
        insert(table)
        .values(
            event_id=bindparam("event_id", type_=table.c.event_id.type),
            received_at=bindparam("received_at", type_=table.c.received_at.type),
        )
        .on_conflict_do_nothing(index_elements=["event_id"])
    )


def taken_in():
    """PostgreSQL: ``first_delivery``'s INSERT as a data-modifying CTE returning the id it took in
    (no row: it was taken in before), for a statement that reads what the request needs in the
    same round trip (``access.gate_facts``: a click's gate). Its parameters are
    ``first_delivery``'s: ``event_id`` and ``received_at``."""
    return _take_in("postgresql").returning(SlackEvent.__table__.c.event_id).cte("taken_in")
