"""The periodic cleanup: rows that only matter for a while are deleted once they cannot matter
any more, so no table grows with traffic alone. Every ``genie serve`` process runs it (the
deletes are idempotent, so several at once are harmless) every ``GENIE_CLEANUP_INTERVAL``
seconds, and once at start.

| table | deleted when |
|---|---|
| ``link_request`` | expired more than ``LINK_REQUEST_KEEP`` ago (used, replaced or not: its token's signature has expired too) |
| ``slack_event`` | seen Slack event ids and replayed-body hashes older than ``slack_events.KEEP`` |
| ``slack_throttle`` | older than the longest rate-limit window (``throttle.KEEP``) |
| ``signin_failure`` | older than ``SIGNIN_FAILURE_KEEP`` |
| ``web_session`` | expired |
| ``slack_oauth_states`` | expired more than an hour ago (slack-sdk's OAuth state) |
| ``api_request`` | older than ``API_REQUEST_KEEP`` (``GET /v2/alerts/requests/{id}`` is then 404) |
| ``outbox`` | delivered more than ``OUTBOX_DELIVERED_KEEP`` ago (failed messages stay for operators) |

The alert timeline and the audit log are history and are kept; what reads them is paged.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from datetime import datetime, timedelta

from sqlalchemy import delete
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services import slack_events, throttle
from storage.base import utcnow
from storage.models import (
    SLACK_OAUTH_STATES,
    ApiRequest,
    LinkRequest,
    OutboxMessage,
    SigninFailure,
    SlackEvent,
    WebSession,
)

logger = logging.getLogger(__name__)

LINK_REQUEST_KEEP = timedelta(hours=1)
SIGNIN_FAILURE_KEEP = timedelta(days=1)
API_REQUEST_KEEP = timedelta(days=7)
OUTBOX_DELIVERED_KEEP = timedelta(days=7)


async def prune(session: AsyncSession, now: datetime | None = None) -> dict[str, int]:
    """Delete what can no longer matter; returns how many rows of each table went."""
    now = now or utcnow()
    statements = {
        "link_request": delete(LinkRequest).where(LinkRequest.expires_at < now - LINK_REQUEST_KEEP),
        "slack_event": delete(SlackEvent).where(SlackEvent.received_at < now - slack_events.KEEP),
        "signin_failure": delete(SigninFailure).where(SigninFailure.at < now - SIGNIN_FAILURE_KEEP),
        "web_session": delete(WebSession).where(WebSession.expires_at < now),
        "slack_oauth_states": delete(SLACK_OAUTH_STATES).where(
            SLACK_OAUTH_STATES.c.expire_at < (now - timedelta(hours=1)).replace(tzinfo=None)
        ),
        "api_request": delete(ApiRequest).where(ApiRequest.processed_at < now - API_REQUEST_KEEP),
        "outbox": delete(OutboxMessage).where(OutboxMessage.delivered_at < now - OUTBOX_DELIVERED_KEEP),
    }
    counts = {table: (await session.execute(statement)).rowcount or 0 for table, statement in statements.items()}
    counts["slack_throttle"] = await throttle.prune(session, now)
    return counts


class Cleanup:
    """Runs ``prune`` now and then, in the server's lifespan (``bot.server``)."""

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], interval: float) -> None:
        self.sessionmaker = sessionmaker
        self.interval = interval
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._loop(), name="genie-cleanup")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run_once(self) -> dict[str, int]:
        async with self.sessionmaker.begin() as session:
            counts = await prune(session)
        if any(counts.values()):
            logger.info("cleanup removed %s", ", ".join(f"{n} {t}" for t, n in counts.items() if n))
        return counts

    async def _loop(self) -> None:
        while True:
            try:
                await self.run_once()
            except Exception:  # a database outage: try again next time, never stop the loop
                logger.warning("cleanup failed; it runs again in %s seconds", self.interval, exc_info=True)
            await asyncio.sleep(self.interval)
