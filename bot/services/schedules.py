"""A team's on-call schedules, stored: create, change and delete them and their overrides, and
answer who is on call — by loading the rows and handing them to the pure maths in
``bot.services.oncall.schedule``.

Every change is checked in full before anything is written (and raises ``InvalidInput`` — a
``ScheduleError`` for the schedule's own shape — with one sentence naming the item), so a
refused change leaves the database as it was::

    rotation = RotationSpec("primary", ["alice@example.com", "bob@example.com"], 1, "weeks",
                            start=datetime(2026, 3, 2, 8, tzinfo=timezone.utc), time_zone="Europe/Berlin")
    sched = await create_schedule(session, "Payments", "payments", "Europe/Berlin", [rotation])
    await add_override(session, "Payments", "payments", "carol@example.com", friday_18h, monday_9h)
    for schedule, shift in await who_is_on_call(session, team, now):
        shift.who            # a User, or None: nobody on call
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, time, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import teams, users
from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from bot.services.oncall import schedule as maths
from bot.services.oncall.schedule import Override, Rotation, Schedule, ScheduleError, Shift, Window
from storage.base import utcnow
from storage.models import (
    EscalationPolicy,
    EscalationStep,
    OncallOverride,
    OncallParticipant,
    OncallRestriction,
    OncallRotation,
    OncallSchedule,
    Team,
    User,
)

MAX_NAME = 100
MAX_ROTATIONS = 20
MAX_PARTICIPANTS = 100
MAX_RESTRICTIONS = 20
#: How many ids go into one ``IN (...)`` (the drivers' bound-parameter limits are ~32,000).
CHUNK = 5_000


def _chunks(ids: list[int]) -> list[list[int]]:
    return [ids[i : i + CHUNK] for i in range(0, len(ids), CHUNK)]


@dataclass
class RotationSpec:
    """A rotation as given by a person: participants by email, in hand-off order (None: a
    "nobody" slot, when the layer below takes over)."""

    name: str
    participants: list[str | None]
    length: int
    unit: str
    start: datetime
    time_zone: str
    end: datetime | None = None
    restrictions: list[Window] = field(default_factory=list)


def check_name(value: str, what: str) -> str:
    value = (value or "").strip()
    if not value or len(value) > MAX_NAME:
        raise InvalidInput(f"a {what} name of 1 to {MAX_NAME} characters is required")
    return value


async def active_member(session: AsyncSession, team: Team, email: str, item: str) -> User:
    """The active team member with ``email``, or ``InvalidInput`` naming ``item``."""
    try:
        user = await users.user_by_email(session, users.normalize_email(email))
    except InvalidInput:
        raise InvalidInput(f"{item}: {email!r} is not an email address") from None
    if user is None:
        raise InvalidInput(f"{item}: nobody has the email {email.strip().lower()}")
    if not user.is_active:
        raise InvalidInput(f"{item}: {user.email} is deactivated")
    if await teams.membership(session, team.id, user.id) is None:
        raise InvalidInput(f"{item}: {user.email} is not a member of team {team.name}")
    return user


async def _checked_rotations(
    session: AsyncSession, team: Team, specs: list[RotationSpec]
) -> list[tuple[RotationSpec, list[User | None]]]:
    if len(specs) > MAX_ROTATIONS:
        raise InvalidInput(f"a schedule has at most {MAX_ROTATIONS} rotations")
    out = []
    for spec in specs:
        name = check_name(spec.name, "rotation")
        item = f"rotation {name!r}"
        if len(spec.participants) > MAX_PARTICIPANTS:
            raise InvalidInput(f"{item}: at most {MAX_PARTICIPANTS} participants")
        if len(spec.restrictions) > MAX_RESTRICTIONS:
            raise InvalidInput(f"{item}: at most {MAX_RESTRICTIONS} restrictions")
        members = [
            None if email is None else await active_member(session, team, email, item) for email in spec.participants
        ]
        rotation = Rotation(
            name,
            tuple(u and u.id for u in members),
            spec.length,
            spec.unit,
            spec.start,
            spec.time_zone,
            spec.end,
            tuple(spec.restrictions),
        )
        rotation.validate()
        for n, window in enumerate(spec.restrictions, 1):
            if window.start.second or window.start.microsecond or window.end.second or window.end.microsecond:
                raise ScheduleError(f"{item}, restriction {n}: give whole minutes")
        if any(name == seen.name for seen, _ in out):
            raise ScheduleError(f"{item} appears twice in the schedule")
        out.append((replace(spec, name=name), members))
    return out


async def check_rotations(session: AsyncSession, team: Team, specs: list[RotationSpec]) -> None:
    """Check rotations as ``create_schedule`` would, writing nothing (``genie apply`` checks each
    one alone, so that an error names the rotation's own line)."""
    await _checked_rotations(session, team, specs)


async def _write_rotations(
    session: AsyncSession, schedule: OncallSchedule, checked: list[tuple[RotationSpec, list[User | None]]]
) -> None:
    """Replace the schedule's rotations with ``checked`` (old rows deleted first, so the
    per-schedule unique names and layers never meet)."""
    await session.execute(delete(OncallRotation).where(OncallRotation.schedule_id == schedule.id))
    for layer, (spec, members) in enumerate(checked):
        rotation = OncallRotation(
            schedule_id=schedule.id,
            name=spec.name,
            layer=layer,
            length=spec.length,
            length_unit=spec.unit,
            time_zone=spec.time_zone,
            starts_at=spec.start,
            ends_at=spec.end,
        )
        session.add(rotation)
        await session.flush()
        session.add_all(
            OncallParticipant(rotation_id=rotation.id, position=n, user_id=u and u.id) for n, u in enumerate(members)
        )
        session.add_all(
            OncallRestriction(
                rotation_id=rotation.id,
                start_day=w.start_day,
                start_minute=w.start.hour * 60 + w.start.minute,
                end_day=w.end_day,
                end_minute=w.end.hour * 60 + w.end.minute,
            )
            for w in spec.restrictions
        )
    await session.flush()


# --- schedules -------------------------------------------------------------------------------
async def require_schedule(session: AsyncSession, team_name: str, name: str) -> tuple[Team, OncallSchedule]:
    team = await teams.require_team(session, team_name)
    schedule = await session.scalar(
        select(OncallSchedule).where(OncallSchedule.team_id == team.id, OncallSchedule.name == (name or "").strip())
    )
    if schedule is None:
        raise NotFound(f"team {team.name} has no schedule named {(name or '').strip()}")
    return team, schedule


async def schedule_of_team(session: AsyncSession, team: Team, name: str) -> OncallSchedule | None:
    return await session.scalar(
        select(OncallSchedule).where(OncallSchedule.team_id == team.id, OncallSchedule.name == (name or "").strip())
    )


async def schedules_of_team(session: AsyncSession, team: Team) -> list[OncallSchedule]:
    return list(
        await session.scalars(
            select(OncallSchedule).where(OncallSchedule.team_id == team.id).order_by(OncallSchedule.name)
        )
    )


async def schedules_of_teams(session: AsyncSession, found: list[Team]) -> dict[int, list[OncallSchedule]]:
    """``schedules_of_team`` of many teams in one query: by team id."""
    out: dict[int, list[OncallSchedule]] = {t.id: [] for t in found}
    for chunk in _chunks(list(out)):
        for schedule in await session.scalars(
            select(OncallSchedule).where(OncallSchedule.team_id.in_(chunk)).order_by(OncallSchedule.name)
        ):
            out[schedule.team_id].append(schedule)
    return out


async def create_schedule(
    session: AsyncSession,
    team_name: str,
    name: str,
    time_zone: str,
    rotations: list[RotationSpec],
    description: str | None = None,
) -> OncallSchedule:
    team = await teams.require_team(session, team_name)
    name = check_name(name, "schedule")
    maths.zone(time_zone, f"schedule {name!r}")
    if await session.scalar(
        select(OncallSchedule.id).where(OncallSchedule.team_id == team.id, OncallSchedule.name == name)
    ):
        raise AlreadyExists(f"team {team.name} already has a schedule named {name}")
    checked = await _checked_rotations(session, team, rotations)
    schedule = OncallSchedule(team_id=team.id, name=name, time_zone=time_zone, description=description)
    session.add(schedule)
    taken = AlreadyExists(f"team {team.name} already has a schedule named {name}")  # rows expire on rollback
    try:
        await session.flush()
    except IntegrityError:  # made at the same moment by another request
        raise taken from None
    await _write_rotations(session, schedule, checked)
    return schedule


async def update_schedule(
    session: AsyncSession,
    team_name: str,
    name: str,
    *,
    new_name: str | None = None,
    time_zone: str | None = None,
    rotations: list[RotationSpec] | None = None,
    description: str | None = None,
) -> OncallSchedule:
    """Change what is given; ``rotations`` replaces all of them (overrides stay)."""
    team, schedule = await require_schedule(session, team_name, name)
    if new_name is not None:
        new_name = check_name(new_name, "schedule")
        if new_name != schedule.name and await session.scalar(
            select(OncallSchedule.id).where(OncallSchedule.team_id == team.id, OncallSchedule.name == new_name)
        ):
            raise AlreadyExists(f"team {team.name} already has a schedule named {new_name}")
    if time_zone is not None:
        maths.zone(time_zone, f"schedule {schedule.name!r}")
    checked = await _checked_rotations(session, team, rotations) if rotations is not None else None
    if time_zone is not None:
        schedule.time_zone = time_zone
    if description is not None:
        schedule.description = description or None
    schedule.updated_at = utcnow()
    if new_name is not None:
        taken = AlreadyExists(f"team {team.name} already has a schedule named {new_name}")
        schedule.name = new_name
        try:
            await session.flush()
        except IntegrityError:  # renamed to a name another request took at the same moment
            raise taken from None
    if checked is not None:
        await _write_rotations(session, schedule, checked)
    await session.flush()
    return schedule


async def delete_schedule(session: AsyncSession, team_name: str, name: str) -> None:
    """Delete it with its rotations and overrides — unless an escalation step names it."""
    team, schedule = await require_schedule(session, team_name, name)
    used = (
        await session.execute(
            select(Team.name, EscalationStep.position)
            .join(EscalationPolicy, EscalationPolicy.id == EscalationStep.policy_id)
            .join(Team, Team.id == EscalationPolicy.team_id)
            .where(EscalationStep.target_schedule_id == schedule.id)
            .order_by(EscalationStep.position)
            .limit(1)
        )
    ).first()
    if used:
        raise InvalidInput(
            f"schedule {schedule.name} is step {used.position + 1} of team {used.name}'s escalation "
            "policy; change the policy first"
        )
    await session.delete(schedule)
    await session.flush()


# --- overrides -------------------------------------------------------------------------------
async def add_override(
    session: AsyncSession,
    team_name: str,
    schedule_name: str,
    email: str,
    start: datetime,
    end: datetime,
    created_by: str | None = None,
) -> OncallOverride:
    team, schedule = await require_schedule(session, team_name, schedule_name)
    user = await active_member(session, team, email, "override")
    Override(user.id, start, end, f"override for {user.email}").validate()
    override = OncallOverride(
        schedule_id=schedule.id, user_id=user.id, starts_at=start, ends_at=end, created_by=created_by
    )
    session.add(override)
    await session.flush()
    return override


async def delete_override(session: AsyncSession, team_name: str, schedule_name: str, override_id: int) -> None:
    _, schedule = await require_schedule(session, team_name, schedule_name)
    override = await session.get(OncallOverride, override_id)
    if override is None or override.schedule_id != schedule.id:
        raise NotFound(f"schedule {schedule.name} has no override {override_id}")
    await session.delete(override)
    await session.flush()


async def overrides(
    session: AsyncSession, schedule: OncallSchedule, start: datetime, end: datetime
) -> list[OncallOverride]:
    """The overrides meeting [start, end), in the order they were made."""
    return (await overrides_many(session, [schedule.id], start, end))[schedule.id]


async def overrides_many(
    session: AsyncSession, schedule_ids: list[int], start: datetime, end: datetime
) -> dict[int, list[OncallOverride]]:
    """``overrides`` of many schedules in one query (per ``CHUNK``): by schedule id."""
    found: dict[int, list[OncallOverride]] = {i: [] for i in schedule_ids}
    for chunk in _chunks(list(found)):
        for o in await session.scalars(
            select(OncallOverride)
            .where(
                OncallOverride.schedule_id.in_(chunk),
                OncallOverride.ends_at > start,
                OncallOverride.starts_at < end,
            )
            .order_by(OncallOverride.id)
        ):
            found[o.schedule_id].append(o)
    return found


# --- reading ---------------------------------------------------------------------------------
LoadedRotation = tuple[OncallRotation, list[User | None], list[Window]]


async def rotations(session: AsyncSession, schedule: OncallSchedule) -> list[LoadedRotation]:
    """The schedule's rotations, lowest layer first, with participants (in order; None: a
    "nobody" slot) and windows."""
    return (await rotations_many(session, [schedule.id]))[schedule.id]


async def rotations_many(session: AsyncSession, schedule_ids: list[int]) -> dict[int, list[LoadedRotation]]:
    """``rotations`` of many schedules, one query per table (per ``CHUNK``): by schedule id."""
    rows: list[OncallRotation] = []
    for chunk in _chunks(list(dict.fromkeys(schedule_ids))):
        rows += await session.scalars(
            select(OncallRotation)
            .where(OncallRotation.schedule_id.in_(chunk))
            .order_by(OncallRotation.schedule_id, OncallRotation.layer)
        )
    ids = [r.id for r in rows]
    people: dict[int, list[User | None]] = {i: [] for i in ids}
    windows: dict[int, list[Window]] = {i: [] for i in ids}
    for chunk in _chunks(ids):
        for rotation_id, user in await session.execute(
            select(OncallParticipant.rotation_id, User)
            .outerjoin(User, User.id == OncallParticipant.user_id)
            .where(OncallParticipant.rotation_id.in_(chunk))
            .order_by(OncallParticipant.rotation_id, OncallParticipant.position)
        ):
            people[rotation_id].append(user)
        for r in await session.scalars(
            select(OncallRestriction).where(OncallRestriction.rotation_id.in_(chunk)).order_by(OncallRestriction.id)
        ):
            windows[r.rotation_id].append(
                Window(
                    time(r.start_minute // 60, r.start_minute % 60),
                    time(r.end_minute // 60, r.end_minute % 60),
                    r.start_day,
                    r.end_day,
                )
            )
    found: dict[int, list[LoadedRotation]] = {i: [] for i in schedule_ids}
    for r in rows:
        found[r.schedule_id].append((r, people[r.id], windows[r.id]))
    return found


async def load(session: AsyncSession, schedule: OncallSchedule, start: datetime, end: datetime) -> Schedule:
    """The schedule as the maths takes it, with ``User`` rows as the people (overrides: those
    meeting [start, end))."""
    return (await load_many(session, [schedule], start, end))[schedule.id]


async def load_many(
    session: AsyncSession, found: list[OncallSchedule], start: datetime, end: datetime
) -> dict[int, Schedule]:
    """``load`` of many schedules in five queries in all (per ``CHUNK``), not five each: by id."""
    ids = [s.id for s in found]
    layers = await rotations_many(session, ids)
    made = await overrides_many(session, ids, start, end)
    by_id = await users.users_by_id(session, {o.user_id for os in made.values() for o in os})
    return {
        i: Schedule(
            tuple(
                Rotation(
                    r.name, tuple(members), r.length, r.length_unit, r.starts_at, r.time_zone, r.ends_at, tuple(ws)
                )
                for r, members, ws in layers[i]
            ),
            tuple(Override(by_id[o.user_id], o.starts_at, o.ends_at, f"override {o.id}") for o in made[i]),
        )
        for i in ids
    }


async def shifts(session: AsyncSession, schedule: OncallSchedule, start: datetime, end: datetime) -> list[Shift]:
    """Who is on call over [start, end): contiguous shifts, ``who`` a ``User`` or None (a gap)."""
    start, end = maths.instant(start, "start"), maths.instant(end, "end")
    return maths.shifts(await load(session, schedule, start, end), start, end)


async def who_is_on_call(
    session: AsyncSession, team: Team, at: datetime, horizon: timedelta = timedelta(days=8)
) -> list[tuple[OncallSchedule, Shift]]:
    """For each of the team's schedules (by name), the shift at ``at`` (``who`` None: nobody)."""
    return (await who_is_on_call_many(session, [team], at, horizon))[team.id]


async def who_is_on_call_many(
    session: AsyncSession, found: list[Team], at: datetime, horizon: timedelta = timedelta(days=8)
) -> dict[int, list[tuple[OncallSchedule, Shift]]]:
    """``who_is_on_call`` for many teams, their schedules loaded together: by team id."""
    by_team = await schedules_of_teams(session, found)
    shift = await on_call_many(session, [s for listed in by_team.values() for s in listed], at, horizon)
    return {team_id: [(s, shift[s.id]) for s in listed] for team_id, listed in by_team.items()}


async def on_call_in(
    session: AsyncSession, schedule: OncallSchedule, at: datetime, horizon: timedelta = timedelta(days=8)
) -> Shift:
    """The shift of one schedule at ``at`` (``who`` None: nobody): what an escalation step asks."""
    return (await on_call_many(session, [schedule], at, horizon))[schedule.id]


async def on_call_many(
    session: AsyncSession, found: list[OncallSchedule], at: datetime, horizon: timedelta = timedelta(days=8)
) -> dict[int, Shift]:
    """``on_call_in`` of many schedules, loaded together: by schedule id."""
    at = maths.instant(at, "at")
    loaded = await load_many(session, found, at - horizon, at + horizon)
    return {i: maths.who_is_on_call(schedule, at, horizon) for i, schedule in loaded.items()}


async def now_and_ahead(
    session: AsyncSession,
    found: list[OncallSchedule],
    now: datetime,
    ahead: timedelta,
    horizon: timedelta = timedelta(days=8),
) -> dict[int, tuple[Shift, list[Shift]]]:
    """For many schedules loaded together, by id: the shift at ``now`` (``on_call_in``) and the
    shifts over [now, now + ahead) (``shifts``)."""
    now = maths.instant(now, "now")
    loaded = await load_many(session, found, now - horizon, now + max(ahead, horizon))
    return {
        i: (maths.who_is_on_call(schedule, now, horizon), maths.shifts(schedule, now, now + ahead))
        for i, schedule in loaded.items()
    }
