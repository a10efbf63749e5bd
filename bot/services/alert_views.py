"""What the web side shows of alerts (``/alerts``, ``/alerts/{id}``, ``/teams/{name}``): read
only, and only what the person may see (``access.visible_alerts``, the one rule for reading).

The list is newest first and keyset-paged on ``alert.id`` (``id < cursor``), so page 1,000 costs
what page 1 does: the indexes ``(team_id, id)`` and the primary key serve it (migration 0014).

    filters = ListFilters.parse(request.query_params)      # raises InvalidInput, with the reason
    page = await alert_list(session, user, filters, before=cursor_id)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import String, cast, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import access, actions, alerts
from bot.services.alerts import assignable_names
from bot.services.errors import InvalidInput
from storage.base import constant
from storage.models import (
    Alert,
    AlertEvent,
    OutboxMessage,
    SlackLink,
    Team,
    TeamApiKey,
    TeamMember,
    TeamPostGrant,
    User,
)

PER_PAGE = 50
STATUSES = ("open", "acknowledged", "closed")
MAX_SEARCH = 200
MAX_TAG = alerts.MAX_TAG
TIMELINE_LIMIT = 300


def _day(value: str | None, name: str) -> date | None:
    if not value:
        return None
    if len(value) > 10:
        raise InvalidInput(f"“{name}” must be a date like 2026-11-26.")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise InvalidInput(f"“{name}” must be a date like 2026-11-26.") from None


@dataclass(frozen=True)
class ListFilters:
    status: str = ""
    team: str = ""
    priority: str = ""
    tag: str = ""
    since: date | None = None
    until: date | None = None
    q: str = ""
    #: The alerts a storm digest stands for (``?digest=N``, the digest message links here).
    digest: int | None = None

    @classmethod
    def parse(cls, params: Mapping[str, str]) -> ListFilters:
        """From a query string; ``InvalidInput`` saying what is wrong (the page shows it)."""
        if any("\x00" in (params.get(k) or "") for k in ("status", "priority", "team", "tag", "q", "from", "to")):
            raise InvalidInput("A filter holds a NUL character, which no alert has.")
        status = (params.get("status") or "").strip().lower()
        if status and status not in STATUSES:
            raise InvalidInput(f"Unknown status “{status[:30]}”: choose open, acknowledged or closed.")
        priority = (params.get("priority") or "").strip().upper()
        if priority and priority not in alerts.PRIORITIES:
            raise InvalidInput(f"Unknown priority “{priority[:30]}”: choose one of {', '.join(alerts.PRIORITIES)}.")
        team = (params.get("team") or "").strip()
        if len(team) > 100:
            raise InvalidInput("That team name is too long to be a team's.")
        tag = (params.get("tag") or "").strip()
        if len(tag) > MAX_TAG:
            raise InvalidInput(f"A tag is at most {MAX_TAG} characters.")
        q = (params.get("q") or "").strip()
        if len(q) > MAX_SEARCH:
            raise InvalidInput(f"The search is too long ({len(q):,} characters): at most {MAX_SEARCH}.")
        since, until = _day(params.get("from"), "from"), _day(params.get("to"), "to")
        if since and until and until < since:
            raise InvalidInput(f"The time range ends ({until}) before it starts ({since}).")
        raw_digest = (params.get("digest") or "").strip()
        if raw_digest and not (raw_digest.isdigit() and len(raw_digest) <= 10):
            raise InvalidInput("“digest” must be a digest's number, as in the Slack message's link.")
        digest = int(raw_digest) if raw_digest else None
        return cls(status=status, team=team, priority=priority, tag=tag, since=since, until=until, q=q, digest=digest)

    def params(self, **changes: Any) -> dict[str, str]:
        f = replace(self, **changes)
        values = {
            "status": f.status,
            "team": f.team,
            "priority": f.priority,
            "tag": f.tag,
            "from": f.since.isoformat() if f.since else "",
            "to": f.until.isoformat() if f.until else "",
            "q": f.q,
            "digest": str(f.digest) if f.digest is not None else "",
        }
        return {k: v for k, v in values.items() if v}

    @property
    def any(self) -> bool:
        return bool(self.params())


def _like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _where(user: User | None, f: ListFilters, team_id: int | None = None) -> list:
    """``user`` None: every alert (the operator's CLI, ``genie alert list``)."""
    clauses = [access.visible_alerts(user)] if user is not None else []
    if f.status == "open":
        clauses += [Alert.status == constant("open"), Alert.acknowledged.is_(False)]
    elif f.status == "acknowledged":
        clauses += [Alert.status == constant("open"), Alert.acknowledged.is_(True)]
    elif f.status == "closed":
        clauses.append(Alert.status == "closed")
    if f.team:  # the id looked up first: a literal lets the planner use (team_id, …) indexes
        clauses.append(
            Alert.team_id == team_id
            if team_id is not None
            else Alert.team_id == select(Team.id).where(Team.name == f.team).scalar_subquery()
        )
    if f.priority:
        clauses.append(Alert.priority == f.priority)
    if f.digest is not None:
        clauses.append(Alert.slack_digest_id == f.digest)
    if f.tag:  # tags are a JSON list of strings: match the JSON string itself, quotes included
        clauses.append(cast(Alert.tags, String).like(f"%{_like(json.dumps(f.tag))}%", escape="\\"))
    if f.since:
        clauses.append(Alert.created_at >= datetime.combine(f.since, time(), UTC))
    if f.until:
        clauses.append(Alert.created_at < datetime.combine(f.until + timedelta(days=1), time(), UTC))
    if f.q:
        pattern = f"%{_like(f.q.lower())}%"
        matches = [
            func.lower(Alert.message).like(pattern, escape="\\"),
            func.lower(Alert.alias).like(pattern, escape="\\"),
        ]
        number = f.q.lstrip("#")
        if number.isascii() and number.isdigit() and len(number) <= 9:
            matches.append(Alert.id == int(number))
        clauses.append(or_(*matches))
    return clauses


@dataclass(frozen=True)
class AlertRow:
    id: int
    message: str
    priority: str
    status: str
    acknowledged: bool
    acknowledged_by: str | None
    closed_by: str | None
    created_at: datetime
    team_name: str | None
    tags: list
    count: int

    @property
    def state(self) -> str:
        return "closed" if self.status == "closed" else "acknowledged" if self.acknowledged else "open"


@dataclass(frozen=True)
class AlertPage:
    rows: list[AlertRow]
    #: The id to continue below (the next page's cursor), None on the last page.
    next_before: int | None


def list_query(
    user: User | None, f: ListFilters, before: int | None = None, limit: int = PER_PAGE, team_id: int | None = None
):
    """The list's SELECT (the benchmark prints its EXPLAIN); ``team_id``: ``f.team``'s id."""
    query = (
        select(
            Alert.id,
            Alert.message,
            Alert.priority,
            Alert.status,
            Alert.acknowledged,
            Alert.acknowledged_by,
            Alert.closed_by,
            Alert.created_at,
            Team.name,
            Alert.tags,
            Alert.count,
        )
        .select_from(Alert)
        .outerjoin(Team, Team.id == Alert.team_id)
        .where(*_where(user, f, team_id))
    )
    if before is not None:
        query = query.where(Alert.id < before)
    return query.order_by(Alert.id.desc()).limit(limit + 1)


async def alert_list(
    session: AsyncSession, user: User | None, f: ListFilters, *, before: int | None = None, limit: int = PER_PAGE
) -> AlertPage:
    """A page of the alerts ``user`` may see (None: every alert, for operators), newest first."""
    team_id = None
    if f.team:
        team_id = await session.scalar(select(Team.id).where(Team.name == f.team))
        if team_id is None:
            return AlertPage([], None)
    rows = [AlertRow(*r) for r in (await session.execute(list_query(user, f, before, limit, team_id))).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    return AlertPage(rows, rows[-1].id if more and rows else None)


async def visible_teams(session: AsyncSession, user: User) -> list[Team]:
    """The teams ``user`` may see (filters, reports): their own, or every team for an admin."""
    teams = access.visible_team_ids(user)
    query = select(Team).order_by(Team.name)
    if teams is not None:
        query = query.where(Team.id.in_(teams))
    return list(await session.scalars(query)) if user.is_active else []


# --- one alert ---------------------------------------------------------------------------------
@dataclass
class TimelineEntry:
    event: AlertEvent
    #: The acting Genie person's email, when the actor was one.
    email: str | None = None


@dataclass
class AlertDetail:
    alert: Alert
    team: Team | None
    owner: User | None
    timeline: list[TimelineEntry]
    timeline_more: bool
    deliveries: list[OutboxMessage]
    members: list[tuple[int, str]]
    version: str
    #: People the alert named (``Alert.people``), as ``(role, entry)``.
    named: list[tuple[str, dict]] = field(default_factory=list)


def _named(people: dict | None) -> list[tuple[str, dict]]:
    people = people or {}
    found: list[tuple[str, dict]] = []
    if isinstance(people.get("reporter"), dict):
        found.append(("reported by", people["reporter"]))
    for entry in people.get("responders") or []:
        if isinstance(entry, dict):
            found.append(("responder", entry))
    for key, entry in (people.get("details") or {}).items():
        if isinstance(entry, dict):
            found.append((f"details: {key}", entry))
    return found


async def can_see(session: AsyncSession, user: User, alert_id: int) -> bool:
    """Whether the alert exists and ``user`` may see it (``access.visible_alerts``)."""
    return (
        0 < alert_id < 2**31
        and await session.scalar(select(Alert.id).where(Alert.id == alert_id, access.visible_alerts(user))) is not None
    )


async def alert_detail(session: AsyncSession, user: User, alert_id: int) -> AlertDetail | None:
    """The alert if ``user`` may see it, with its timeline and its deliveries to Slack; None
    when there is no such alert *or* it is another team's (the page says "not found" for both)."""
    if not 0 < alert_id < 2**31:
        return None
    row = (
        await session.execute(
            select(Alert, Team)
            .outerjoin(Team, Team.id == Alert.team_id)
            .where(Alert.id == alert_id, access.visible_alerts(user))
        )
    ).first()
    if row is None:
        return None
    alert, team = row
    owner = await session.get(User, alert.owner_user_id) if alert.owner_user_id else None
    events, more = await alerts.timeline_page(session, alert.id, limit=TIMELINE_LIMIT)
    actor_ids = {e.actor_user_id for e in events if e.actor_user_id}
    emails = (
        dict((await session.execute(select(User.id, User.email).where(User.id.in_(actor_ids)))).all())
        if actor_ids
        else {}
    )
    deliveries = list(
        await session.scalars(
            select(OutboxMessage).where(OutboxMessage.alert_id == alert.id).order_by(OutboxMessage.id).limit(100)
        )
    )
    return AlertDetail(
        alert=alert,
        team=team,
        owner=owner,
        timeline=[TimelineEntry(e, emails.get(e.actor_user_id)) for e in events],
        timeline_more=more,
        deliveries=deliveries,
        members=await assignable_names(session, alert.team_id),
        version=actions.version(alert),
        named=_named(alert.people),
    )


# --- a team ------------------------------------------------------------------------------------
@dataclass
class MemberRow:
    user: User
    links: list[SlackLink]


@dataclass
class TeamDetail:
    team: Team
    members: list[MemberRow]
    key: TeamApiKey | None
    recent: list[AlertRow]
    granted_by: list[str]


async def team_detail(session: AsyncSession, user: User, name: str) -> TeamDetail | None:
    """The team if ``user`` may see it (a member, or an admin); None otherwise — "not found"."""
    if "\x00" in name:
        return None
    team = await session.scalar(select(Team).where(Team.name == name[:100], access.visible_alerts(user, Team.id)))
    if team is None:
        return None
    users = list(
        await session.scalars(
            select(User)
            .join(TeamMember, TeamMember.user_id == User.id)
            .where(TeamMember.team_id == team.id)
            .order_by(User.name)
        )
    )
    links: dict[int, list[SlackLink]] = {}
    if users:
        for link in await session.scalars(
            select(SlackLink).where(SlackLink.user_id.in_([u.id for u in users])).order_by(SlackLink.id)
        ):
            links.setdefault(link.user_id, []).append(link)
    key = await session.scalar(select(TeamApiKey).where(TeamApiKey.team_id == team.id))
    recent = await alert_list(session, user, ListFilters(team=team.name), limit=10)

    granted = list(
        await session.scalars(
            select(Team.name)
            .join(TeamPostGrant, TeamPostGrant.team_id == Team.id)
            .where(TeamPostGrant.for_team_id == team.id)
            .order_by(Team.name)
        )
    )
    return TeamDetail(
        team=team,
        members=[MemberRow(u, links.get(u.id, [])) for u in users],
        key=key,
        recent=recent.rows,
        granted_by=granted,
    )


async def rotate_team_key(session: AsyncSession, admin: User, name: str) -> str:
    """An admin replaces the team's API key (the old one stops working at once); the new key,
    to be shown once."""
    from bot.services.errors import NotFound

    if not (admin.is_admin and admin.is_active):
        raise alerts.Forbidden("Only Genie admins rotate a team's API key.")
    team = await session.scalar(select(Team).where(Team.name == name[:100])) if "\x00" not in name else None
    if team is None:
        raise NotFound(f"No team named {name[:100]!r}.")
    return await alerts.team_key(session, team, rotate=True)
