"""Durable delivery of Slack messages: the database side.

A change and the Slack message that reports it are committed together (``enqueue`` takes the
caller's session). The worker (``bot.delivery``) then claims due messages and delivers them:

- **per-channel order**: only the oldest pending message of a channel is ever due;
- **one deliverer**: a claim is a conditional UPDATE that takes a lease (``locked_until``), so
  any number of workers and processes can share the outbox; a worker that dies leaves a lease
  that expires and the message is taken over;
- **retries**: failures reschedule with exponential backoff (or Slack's ``Retry-After``), and
  a channel waits while its head message waits; permanent errors mark the message failed
  (visible to operators) and the channel moves on.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, exists, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from storage.base import utcnow
from storage.models import OutboxMessage

LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(minutes=5)
MAX_ATTEMPTS = 12

POST_ALERT = "alert.post"
UPDATE_ALERT = "alert.update"
MESSAGE = "message"


def _pending():
    return and_(OutboxMessage.delivered_at.is_(None), OutboxMessage.failed_at.is_(None))


async def enqueue(
    session: AsyncSession, channel: str, kind: str, *, alert_id: int | None = None,
    payload: dict[str, Any] | None = None, now: datetime | None = None,
) -> OutboxMessage:
    now = now or utcnow()
    message = OutboxMessage(channel=channel, kind=kind, alert_id=alert_id, payload=payload, created_at=now,
                            next_attempt_at=now, attempts=0)
    session.add(message)
    await session.flush()
    return message


async def due_heads(session: AsyncSession, now: datetime, limit: int = 20) -> list[OutboxMessage]:
    """The oldest pending message of each channel, where that message is due and not leased."""
    older = aliased(OutboxMessage)
    query = (
        select(OutboxMessage)
        .where(
            _pending(),
            OutboxMessage.next_attempt_at <= now,
            (OutboxMessage.locked_until.is_(None)) | (OutboxMessage.locked_until < now),
            ~exists().where(older.channel == OutboxMessage.channel, older.id < OutboxMessage.id,
                            older.delivered_at.is_(None), older.failed_at.is_(None)),
        )
        .order_by(OutboxMessage.next_attempt_at, OutboxMessage.id)
        .limit(limit)
    )
    return list(await session.scalars(query))


async def claim(session: AsyncSession, message: OutboxMessage, now: datetime) -> bool:
    """Take the lease; exactly one worker wins. Returns whether this one did."""
    result = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message.id, _pending(),
            (OutboxMessage.locked_until.is_(None)) | (OutboxMessage.locked_until < now),
        )
        .values(locked_until=now + LEASE, attempts=OutboxMessage.attempts + 1,
                first_attempt_at=func.coalesce(OutboxMessage.first_attempt_at, now))
        .execution_options(synchronize_session=False)
    )
    return result.rowcount == 1


async def mark_delivered(session: AsyncSession, message_id: int, now: datetime) -> None:
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id)
        .values(delivered_at=now, locked_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )


def backoff(attempts: int) -> timedelta:
    return min(MAX_BACKOFF, timedelta(seconds=2 ** min(attempts, 10)))


async def mark_retry(session: AsyncSession, message_id: int, attempts: int, error: str, now: datetime,
                     retry_after: float | None = None) -> bool:
    """Reschedule; returns False (and marks it failed) when it has run out of attempts."""
    if attempts >= MAX_ATTEMPTS:
        await mark_failed(session, message_id, f"gave up after {attempts} attempts: {error}", now)
        return False
    delay = timedelta(seconds=retry_after) if retry_after is not None else backoff(attempts)
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id)
        .values(next_attempt_at=now + delay, locked_until=None, last_error=error[:300])
        .execution_options(synchronize_session=False)
    )
    return True


async def mark_failed(session: AsyncSession, message_id: int, error: str, now: datetime) -> None:
    await session.execute(
        update(OutboxMessage).where(OutboxMessage.id == message_id)
        .values(failed_at=now, locked_until=None, last_error=error[:300])
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    oldest_pending_age: float
    failed: int


async def stats(session: AsyncSession, now: datetime | None = None) -> OutboxStats:
    now = now or utcnow()
    pending, oldest = (await session.execute(
        select(func.count(), func.min(OutboxMessage.created_at)).where(_pending())
    )).one()
    failed = await session.scalar(select(func.count()).where(OutboxMessage.failed_at.is_not(None)))
    age = (now - oldest).total_seconds() if oldest else 0.0
    return OutboxStats(pending=pending, oldest_pending_age=age, failed=failed or 0)


async def next_due_at(session: AsyncSession) -> datetime | None:
    return await session.scalar(select(func.min(OutboxMessage.next_attempt_at)).where(_pending()))
