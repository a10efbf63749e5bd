"""Turn a stored alert into the plain ``AlertView`` the Block Kit builders draw.

Read at delivery time (and on every click), so a Slack message always shows the alert's
current state, including the current members in the Assign… select."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from bot.blocks.alerts import AlertView
from bot.services import alerts as alert_service
from storage.models import Alert, Team, User


async def alert_view(session: AsyncSession, alert: Alert, *, with_members: bool = True) -> AlertView:
    """``with_members=False`` for lists that show no Assign… select (App Home): the team's
    members are the costliest part to read."""
    team = await session.get(Team, alert.team_id) if alert.team_id is not None else None
    owner = await session.get(User, alert.owner_user_id) if alert.owner_user_id is not None else None
    members = [(u.id, u.name) for u in await alert_service.assignable(session, alert)] if with_members else []
    return AlertView(
        id=alert.id, message=alert.message, priority=alert.priority, status=alert.status,
        created_at=alert.created_at, team_name=team.name if team else None, description=alert.description,
        tags=tuple(alert.tags or ()), details=dict(alert.details or {}), source=alert.source, entity=alert.entity,
        count=alert.count, acknowledged=alert.acknowledged, acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at, closed_by=alert.closed_by, closed_at=alert.closed_at,
        owner_name=owner.name if owner else None, owner_id=owner.id if owner else None, members=members,
    )
