"""Turn a stored alert into the plain ``AlertView`` the Block Kit builders draw.

Read at delivery time (and on every click), so a Slack message always shows the alert's
current state, including the current members in the Assign… select."""

from __future__ import annotations

from sqlalchemy.ext.asyncio import AsyncSession

from typing import Any

from bot.blocks.alerts import AlertView, PersonRef
from bot.services import alerts as alert_service
from storage.models import Alert, Team, User


def _ref(entry: Any) -> PersonRef | None:
    """An ``Alert.people`` entry as the builders take it (None if it is not one)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("as"), str):
        return None
    resolved = entry.get("user_id") is not None and isinstance(entry.get("name"), str)
    slack = entry.get("slack") if resolved and isinstance(entry.get("slack"), str) else None
    return PersonRef(given=entry["as"], slack_user_id=slack, name=entry["name"] if resolved else None)


def people_refs(alert: Alert) -> tuple[PersonRef | None, tuple[PersonRef, ...], dict[str, PersonRef]]:
    """``(reporter, responders, detail people)`` as resolved at create time — pure, no
    re-resolution: the message shows the same people on every render. A reporter that named
    nobody is shown as the display name it is ("Alertmanager")."""
    people = alert.people if isinstance(alert.people, dict) else {}
    reporter = _ref(people.get("reporter"))
    if reporter is None and alert.reported_by:
        reporter = PersonRef(given=alert.reported_by)
    responders = tuple(r for r in map(_ref, people.get("responders") or []) if r is not None)
    details = people.get("details") if isinstance(people.get("details"), dict) else {}
    in_details = {k: r for k, r in ((k, _ref(v)) for k, v in details.items()) if r is not None}
    return reporter, responders, in_details


async def alert_view(session: AsyncSession, alert: Alert, *, with_members: bool = True) -> AlertView:
    """``with_members=False`` for lists that show no Assign… select (App Home): the team's
    members are the costliest part to read."""
    team = await session.get(Team, alert.team_id) if alert.team_id is not None else None
    owner = await session.get(User, alert.owner_user_id) if alert.owner_user_id is not None else None
    members = [(u.id, u.name) for u in await alert_service.assignable(session, alert)] if with_members else []
    reporter, responders, detail_people = people_refs(alert)
    return AlertView(
        id=alert.id, message=alert.message, priority=alert.priority, status=alert.status,
        created_at=alert.created_at, team_name=team.name if team else None, description=alert.description,
        tags=tuple(alert.tags or ()), details=dict(alert.details or {}), source=alert.source, entity=alert.entity,
        count=alert.count, acknowledged=alert.acknowledged, acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at, closed_by=alert.closed_by, closed_at=alert.closed_at,
        owner_name=owner.name if owner else None, owner_id=owner.id if owner else None, members=members,
        reported_by=reporter, responders=responders, detail_people=detail_people,
    )
