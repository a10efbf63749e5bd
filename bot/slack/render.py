"""Turn a stored alert into the plain ``AlertView`` the Block Kit builders draw (and a Slack
link into its ``LinkView``).

Read at delivery time (and on every click), so a Slack message always shows the alert's
current state, including the current members in the Assign… select."""

from __future__ import annotations

from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.blocks.alerts import AlertView, PersonRef
from bot.blocks.digest import GROUPS, TOP, DigestAlert, DigestView
from bot.blocks.linking import LinkView
from bot.services import alerts
from storage.base import utcnow
from storage.models import Alert, SlackDigest, SlackLink, Team


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
    team, owner = await alerts.team_and_owner(session, alert)
    members = await alerts.assignable_names(session, alert.team_id) if with_members else []
    return _view(
        alert,
        team.name if team else None,
        owner.id if owner else None,
        owner.name if owner else None,
        members,
        await alerts.owner_slack_user(session, owner.id if owner else None, team),
    )


async def current_view(session: AsyncSession, alert_id: int) -> tuple[Alert, AlertView] | None:
    """The alert and its view as they are now, in two queries (the alert with its team's and
    owner's names, then the team's assignable members): what the outbox worker renders for
    every post and update. None when the alert no longer exists."""
    found = await alerts.with_team_and_owner(session, alert_id)
    if found is None:
        return None
    alert, team, owner_id, owner_name = found
    return alert, _view(
        alert,
        team.name if team else None,
        owner_id,
        owner_name,
        await alerts.assignable_names(session, alert.team_id),
        await alerts.owner_slack_user(session, owner_id, team),
    )


def _view(
    alert: Alert,
    team_name: str | None,
    owner_id: int | None,
    owner_name: str | None,
    members: list[tuple[int, str]],
    owner_slack: str | None = None,
) -> AlertView:
    reporter, responders, detail_people = people_refs(alert)
    return AlertView(
        id=alert.id,
        message=alert.message,
        priority=alert.priority,
        status=alert.status,
        created_at=alert.created_at,
        team_name=team_name,
        description=alert.description,
        tags=tuple(alert.tags or ()),
        details=dict(alert.details or {}),
        source=alert.source,
        entity=alert.entity,
        count=alert.count,
        acknowledged=alert.acknowledged,
        acknowledged_by=alert.acknowledged_by,
        acknowledged_at=alert.acknowledged_at,
        closed_by=alert.closed_by,
        closed_at=alert.closed_at,
        acknowledged_by_slack=alert.acknowledged_by_slack,
        closed_by_slack=alert.closed_by_slack,
        snoozed_until=alert.snoozed_until if alert.snoozed_until and alert.snoozed_until > utcnow() else None,
        owner_name=owner_name,
        owner_id=owner_id,
        owner_slack=owner_slack,
        members=members,
        reported_by=reporter,
        responders=responders,
        detail_people=detail_people,
    )


def link_view(link: SlackLink) -> LinkView:
    return LinkView(
        user_name=link.user.name, user_email=link.user.email, since=link.created_at, user_active=link.user.is_active
    )


def _state(status: str, acknowledged: bool) -> str:
    return "closed" if status == "closed" else "acknowledged" if acknowledged else "open"


async def digest_view(session: AsyncSession, digest_id: int) -> DigestView | None:
    """A storm digest as it is now (what its message shows): the alerts delivered in it counted
    by state, priority, source and alias, and the most urgent still open. None: no such digest."""
    digest = await session.get(SlackDigest, digest_id)
    if digest is None:
        return None
    team = await session.get(Team, digest.team_id) if digest.team_id is not None else None
    mine = Alert.slack_digest_id == digest_id
    state = case(
        (Alert.status == "closed", "closed"), (Alert.acknowledged.is_(True), "acknowledged"), else_="open"
    ).label("state")
    by_state_priority = (
        await session.execute(select(state, Alert.priority, func.count()).where(mine).group_by(state, Alert.priority))
    ).all()
    states = {"open": 0, "acknowledged": 0, "closed": 0}
    priorities: dict[str, int] = {}
    for name, priority, count in by_state_priority:
        states[name] += count
        priorities[priority] = priorities.get(priority, 0) + count

    async def grouped(column) -> tuple[tuple[str, int], ...]:
        rows = await session.execute(
            select(column, func.count())
            .where(mine)
            .group_by(column)
            .order_by(func.count().desc(), column)
            .limit(GROUPS)
        )
        return tuple(("(none)" if name is None else str(name), int(n)) for name, n in rows)

    top = await session.execute(
        select(Alert.id, Alert.priority, Alert.message, Alert.status, Alert.acknowledged)
        .where(mine, Alert.status != "closed")
        .order_by(Alert.priority, Alert.acknowledged, Alert.id)
        .limit(TOP)
    )
    return DigestView(
        id=digest.id,
        team_name=team.name if team is not None else None,
        storm_priority=digest.storm_priority,
        opened_at=digest.opened_at,
        closed_at=digest.closed_at,
        total=sum(states.values()),
        open=states["open"],
        acknowledged=states["acknowledged"],
        closed=states["closed"],
        by_priority=tuple(sorted(priorities.items())),
        by_source=await grouped(Alert.source),
        by_alias=await grouped(Alert.alias),
        top=tuple(DigestAlert(i, p, m, _state(st, ack)) for i, p, m, st, ack in top),
    )
