"""Who is on call, as people read it in Slack (``/genie oncall``, the App Home tab): for each
schedule of a team, the shift now, the next hand-off and the gaps ahead; and one person's own
shifts over the coming days. Plain values out (names, instants); the builders in
``bot/blocks/oncall.py`` word them in the reader's time zone.

    roster = await team_rosters(session, ["Payments"], None, now)   # NotFound: no such team
    mine = await my_shifts(session, user_id, now)                   # [MyShift(team, schedule, start, end)]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import schedules, teams
from bot.services.errors import InvalidInput, NotFound

#: How far ahead the roster looks for the next hand-off and for gaps, and a person for shifts.
AHEAD = timedelta(days=7)
#: How far either side of now the current shift is looked for (``schedules.on_call_in``).
LOOK = timedelta(days=8)


@dataclass(frozen=True)
class Slot:
    """A stretch of a schedule: ``who`` a person's name (None: nobody on call)."""

    start: datetime
    end: datetime
    who: str | None
    override: bool = False
    #: The end is only where the look ahead stopped: no hand-off seen within it.
    open_end: bool = False


@dataclass(frozen=True)
class ScheduleRoster:
    name: str
    now: Slot
    #: The shift after the current one (None: the current one lasts past the horizon).
    next: Slot | None
    #: Stretches with nobody on call between now and the horizon (the current one included).
    gaps: list[Slot] = field(default_factory=list)


@dataclass(frozen=True)
class TeamRoster:
    team: str
    schedules: list[ScheduleRoster]


@dataclass(frozen=True)
class MyShift:
    team: str
    schedule: str
    start: datetime
    end: datetime
    override: bool = False
    open_end: bool = False


def _slot(shift, horizon: datetime | None = None) -> Slot:
    return Slot(
        shift.start,
        shift.end,
        shift.who.name if shift.who is not None else None,
        shift.override,
        horizon is not None and shift.end >= horizon,
    )


def _roster(name: str, now: datetime, current, found) -> ScheduleRoster:
    later = [s for s in found if s.start > now]
    return ScheduleRoster(
        name,
        _slot(current, now + LOOK),
        _slot(later[0]) if later else None,
        [_slot(s) for s in found if s.who is None],
    )


async def team_rosters(
    session: AsyncSession, team_names: list[str] | None, user_id: int | None, now: datetime, ahead: timedelta = AHEAD
) -> list[TeamRoster]:
    """The named teams' rosters (``NotFound`` naming an unknown team), or with no names those of
    the person's teams (``InvalidInput`` when nobody is named and the person is in no team)."""
    if team_names:
        found = []
        for name in team_names:
            team = await teams.team_by_name(session, name)
            if team is None:
                raise NotFound(f"There is no team called {name.strip()!r}.")
            found.append(team)
    else:
        found = await teams.teams_of_user(session, user_id) if user_id is not None else []
        if not found:
            raise InvalidInput("You are not in any team; name one, e.g. `/genie oncall Payments`.")
    by_team = await schedules.schedules_of_teams(session, found)
    seen = await schedules.now_and_ahead(session, [s for listed in by_team.values() for s in listed], now, ahead)
    return [TeamRoster(t.name, [_roster(s.name, now, *seen[s.id]) for s in by_team[t.id]]) for t in found]


async def my_shifts(session: AsyncSession, user_id: int, now: datetime, ahead: timedelta = AHEAD) -> list[MyShift]:
    """The person's shifts (current and upcoming) over [now, now + ahead) in every schedule of
    their teams, soonest first; a current shift keeps its real start."""
    out: list[MyShift] = []
    mine = await teams.teams_of_user(session, user_id)
    by_team = await schedules.schedules_of_teams(session, mine)
    seen = await schedules.now_and_ahead(session, [s for listed in by_team.values() for s in listed], now, ahead)
    for team in mine:
        for schedule in by_team[team.id]:
            current, found = seen[schedule.id]
            for s in found:
                if s.who is not None and s.who.id == user_id:
                    start = current.start if s.start == now and current.who is not None else s.start
                    end = current.end if s.start == now and current.end > s.end else s.end
                    open_end = s.start == now and current.end >= now + LOOK
                    out.append(MyShift(team.name, schedule.name, start, end, s.override, open_end))
    return sorted(out, key=lambda m: (m.start, m.team, m.schedule))
