"""Rate limits per Slack identity, kept in the database so that every Genie process counts the
same events: ``/genie connect`` (each makes a link request) and refused clicks on alert buttons
(each writes a timeline row, and an unconnected clicker is given a fresh link).

    async with sessionmaker.begin() as session:
        wait = await throttle.take(session, "connect", identity)
    if wait is not None:
        tell(f"… try again in {throttle.say(wait)}")

``take`` counts the identity's events in the window and, under the limit, records one more. The
count and the insert are not one atomic step, so requests racing on several processes at the
very same moment can pass a few over the limit: the bound is the limit plus the requests in
flight at once, which is what keeps the tables and the timeline small.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.slack_links import SlackIdentity
from storage.base import utcnow
from storage.models import SlackThrottle

#: kind → (events allowed, per window)
LIMITS: dict[str, tuple[int, timedelta]] = {
    "connect": (5, timedelta(minutes=10)),
    "denied": (10, timedelta(minutes=1)),
    #: An admin's reminder DM to link (``/reports``' linking health): one per Slack user a day.
    "link_reminder": (1, timedelta(hours=24)),
}
#: Rows older than the longest window are of no use (``bot.services.cleanup`` prunes them).
KEEP = max(window for _, window in LIMITS.values())


async def take(
    session: AsyncSession, kind: str, identity: SlackIdentity, now: datetime | None = None
) -> timedelta | None:
    """None, having counted one more ``kind`` for ``identity``; or how long until the oldest
    event in the window leaves it (nothing recorded)."""
    limit, window = LIMITS[kind]
    now = now or utcnow()
    workspace_id, user_id = identity.workspace_id[:32], identity.user_id[:32]  # the columns' size
    recent = list(
        await session.scalars(
            select(SlackThrottle.at)
            .where(
                SlackThrottle.workspace_id == workspace_id,
                SlackThrottle.slack_user_id == user_id,
                SlackThrottle.kind == kind,
                SlackThrottle.at > now - window,
            )
            .order_by(SlackThrottle.at.desc())
            .limit(limit)
        )
    )
    if len(recent) >= limit:
        return max(recent[-1] + window - now, timedelta(seconds=1))
    session.add(SlackThrottle(kind=kind, workspace_id=workspace_id, slack_user_id=user_id, at=now))
    await session.flush()
    return None


def say(wait: timedelta) -> str:
    """ "3 minutes", "40 seconds", "24 hours": how a person is told to wait."""
    seconds = max(1, math.ceil(wait.total_seconds()))
    if seconds > 5400:
        hours = math.ceil(seconds / 3600)
        return f"{hours} hours"
    if seconds >= 60:
        minutes = math.ceil(seconds / 60)
        return f"{minutes} minute{'s' if minutes != 1 else ''}"
    return f"{seconds} second{'s' if seconds != 1 else ''}"


async def prune(session: AsyncSession, now: datetime | None = None) -> int:
    now = now or utcnow()
    result = await session.execute(delete(SlackThrottle).where(SlackThrottle.at <= now - KEEP))
    return result.rowcount or 0
