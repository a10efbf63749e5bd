"""On call on the web side (``/teams/{name}/oncall``, ``/teams/{name}/escalation``): what a
team's member (or an admin) sees of its schedules — the next two weeks as shifts placed on a
timeline, overrides, gaps — and the overrides they make and delete. Another team's schedules
are "not found" (None / ``NotFound``), as its alerts are (``access.visible_alerts``).

    page = await team_oncall(session, user, "Payments", now)       # None: not found
    await add_override_as(session, user, "Payments", "primary", "carol@example.com", start, end)
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import access, escalation, handoffs, schedules, teams, users
from bot.services.alerts import Forbidden
from bot.services.errors import InvalidInput, NotFound
from bot.services.oncall import schedule as maths
from storage.models import Team, User

SPAN = timedelta(days=14)


@dataclass(frozen=True)
class Bar:
    """A shift on the timeline: ``left`` and ``width`` in percent of the span."""

    start: datetime
    end: datetime
    who: str | None
    override: bool
    left: float
    width: float


@dataclass(frozen=True)
class OverrideRow:
    id: int
    who: str
    start: datetime
    end: datetime
    created_by: str | None


@dataclass(frozen=True)
class ScheduleView:
    id: int
    name: str
    time_zone: str
    now: str | None
    bars: list[Bar]
    gaps: list[Bar]
    overrides: list[OverrideRow]
    usergroup: str | None


@dataclass(frozen=True)
class OncallPage:
    team: Team
    start: datetime
    end: datetime
    #: Day marks on the timeline: (left %, label in UTC).
    days: list[tuple[float, str]]
    schedules: list[ScheduleView]
    #: (email, name) of the active members: who may cover an override.
    members: list[tuple[str, str]]


async def visible_team(session: AsyncSession, user: User, name: str) -> Team | None:
    """The team if ``user`` may see it (a member, or an admin); None otherwise."""
    if "\x00" in name:
        return None
    return await session.scalar(select(Team).where(Team.name == name[:100], access.visible_alerts(user, Team.id)))


async def _require(session: AsyncSession, user: User, name: str) -> Team:
    team = await visible_team(session, user, name)
    if team is None:
        raise NotFound("There is no such team, or it is one you are not in.")
    return team


def _bar(shift, start: datetime, span: float) -> Bar:
    left = (shift.start - start).total_seconds() / span * 100
    width = (shift.end - shift.start).total_seconds() / span * 100
    return Bar(
        shift.start,
        shift.end,
        shift.who.name if shift.who is not None else None,
        shift.override,
        round(left, 3),
        round(width, 3),
    )


async def team_oncall(session: AsyncSession, user: User, name: str, now: datetime) -> OncallPage | None:
    team = await visible_team(session, user, name)
    if team is None:
        return None
    start = now.replace(minute=0, second=0, microsecond=0)
    end = start + SPAN
    span = SPAN.total_seconds()
    views = []
    for schedule in await schedules.schedules_of_team(session, team):
        found = await schedules.shifts(session, schedule, start, end)
        made = await schedules.overrides(session, schedule, now, end + timedelta(days=366))
        names = await users.users_by_id(session, {o.user_id for o in made})
        current = next((s for s in found if s.start <= now < s.end), None)
        views.append(
            ScheduleView(
                schedule.id,
                schedule.name,
                schedule.time_zone,
                current.who.name if current is not None and current.who is not None else None,
                [_bar(s, start, span) for s in found if s.who is not None],
                [_bar(s, start, span) for s in found if s.who is None],
                [OverrideRow(o.id, names[o.user_id].name, o.starts_at, o.ends_at, o.created_by) for o in made],
                schedule.slack_usergroup,
            )
        )
    days = [((d * 86400) / span * 100, f"{start + timedelta(days=d):%a %d %b}") for d in range(SPAN.days)]
    members = [
        (u.email, u.name)
        for t, people in await teams.all_teams_with_members(session)
        if t.id == team.id
        for u in people
        if u.is_active
    ]
    return OncallPage(team, start, end, days, views, members)


def local_instant(value: str, time_zone: str, item: str) -> datetime:
    """A ``datetime-local`` form value (``2026-11-27T18:00``) read in ``time_zone``."""
    try:
        naive = datetime.fromisoformat((value or "").strip())
    except ValueError:
        raise InvalidInput(f"{item}: give a date and time, like 2026-11-27T18:00") from None
    if naive.tzinfo is not None:
        raise InvalidInput(f"{item}: give a local date and time, without an offset")
    tz: ZoneInfo = maths.zone(time_zone, item)
    return maths.instant(naive.replace(tzinfo=tz), item)


async def add_override_as(
    session: AsyncSession, user: User, team_name: str, schedule_name: str, email: str, start: str, end: str
):
    """An override made from the web by ``user`` (a member or an admin): the covering person
    must be an active member of the team (``schedules.add_override`` checks)."""
    team = await _require(session, user, team_name)
    _, schedule = await schedules.require_schedule(session, team.name, schedule_name)
    a = local_instant(start, schedule.time_zone, "start")
    b = local_instant(end, schedule.time_zone, "end")
    return await schedules.add_override(session, team.name, schedule.name, email, a, b, created_by=user.email)


async def delete_override_as(
    session: AsyncSession, user: User, team_name: str, schedule_name: str, override_id: int
) -> None:
    team = await _require(session, user, team_name)
    await schedules.delete_override(session, team.name, schedule_name, override_id)


async def set_usergroup_as(
    session: AsyncSession, user: User, team_name: str, schedule_name: str, usergroup: str
) -> None:
    """Only a Genie admin names a schedule's Slack user group: Genie then changes who is in it."""
    team = await _require(session, user, team_name)
    if not user.is_admin:
        raise Forbidden("Only a Genie admin can name a schedule's Slack user group.")
    await handoffs.set_usergroup(session, team.name, schedule_name, usergroup or None)


async def team_policy(session: AsyncSession, user: User, name: str) -> tuple[Team, list[str], int, int] | None:
    """The team's escalation policy as read on its page: (team, each step described, repeat,
    repeat_after); steps [] when it has none. None: not found."""
    team = await visible_team(session, user, name)
    if team is None:
        return None
    try:
        _, policy = await escalation.require_policy(session, team.name)
    except NotFound:
        return team, [], 0, 0
    steps = [s.describe() for s in await escalation.policy_steps(session, policy)]
    return team, steps, policy.repeat, policy.repeat_after_minutes
