"""Slack's Events API retries: an event Slack thinks failed (no 200 within 3 seconds, a 5xx)
is sent again with ``X-Slack-Retry-Num``, up to three times over some minutes. Each delivery of
one event carries the same ``event_id``; the first one in wins and the others do nothing.

    async with sessionmaker.begin() as session:
        if not await first_delivery(session, body["event_id"]):
            return   # a retry of an event already taken in

Clicks and slash commands have no event id; ``body_key`` names one by a digest of its signed
body, so a replayed body is taken in once too.

Rows older than ``KEEP`` are pruned by the periodic cleanup (``bot.services.cleanup``): Slack
gives up retrying well before that, and a signature is good for 5 minutes, so an old row left a
while longer refuses nothing a fresh request could be (it is the same event, or the same body).
"""

from __future__ import annotations

import base64
import hashlib
from datetime import datetime, timedelta

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

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
    Concurrent deliveries of one event race on the primary key: exactly one wins. One statement
    (``INSERT … ON CONFLICT DO NOTHING RETURNING``, SQLite ≥ 3.35 and PostgreSQL): it runs on
    every click and command, in a transaction of its own."""
    now = now or utcnow()
    dialect = session.get_bind().dialect.name
    insert = {"postgresql": pg_insert, "sqlite": sqlite_insert}.get(dialect)
    if insert is None:  # pragma: no cover - Genie runs on SQLite and PostgreSQL
        if await session.scalar(select(SlackEvent.event_id).where(SlackEvent.event_id == event_id)) is not None:
            return False
        try:
            async with session.begin_nested():
                session.add(SlackEvent(event_id=event_id, received_at=now))
        except IntegrityError:  # another delivery of the same event committed first
            return False
        return True
    statement = (
        insert(SlackEvent)
        .values(event_id=event_id, received_at=now)
        .on_conflict_do_nothing(index_elements=[SlackEvent.event_id])
        .returning(SlackEvent.event_id)
    )
    return (await session.execute(statement)).first() is not None
