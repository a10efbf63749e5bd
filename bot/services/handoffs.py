"""Hand-offs of on-call schedules, noticed on ``Runtime.now`` by the loop in
``bot.slack.handoffs``: the DM reminding a person that their shift starts soon (queued through
the outbox, intent ``oncall.reminder``) and the Slack user group set to the person on call.

Each is done once per schedule and shift start: a row of ``oncall_handoff`` (unique on
schedule, kind and shift start) is the claim. The reminder's row and its outbox message are
written in one transaction, so two processes never remind twice and a committed reminder is
never lost; the user-group sync is recorded after Slack said yes (setting a group's members is
idempotent, so a process that dies between the two only makes the next one set it again).

    queued = await queue_reminders(session, now, timedelta(minutes=60))
    for sync in await pending_syncs(session, now):  # who the group should hold now
        ...  # usergroups.users.update, then:
        await record(session, sync.schedule_id, USERGROUP, sync.start, sync.user_id, "done", "…")
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ids import Intent
from bot.services import alert_people, outbox, schedules, teams
from bot.services.errors import InvalidInput
from storage.models import OncallHandoff, OncallSchedule

REMINDER, USERGROUP = "reminder", "usergroup"
DONE, SKIPPED = "done", "skipped"


@dataclass(frozen=True)
class Sync:
    """The user group ``usergroup`` of schedule ``schedule_id`` should hold ``slack_user``
    (None: nobody can be put there — ``why``) from ``start``."""

    schedule_id: int
    usergroup: str
    start: datetime
    user_id: int | None
    slack_user: str | None
    slack_team_id: str | None
    enterprise_id: str | None
    why: str


async def done(session: AsyncSession, schedule_id: int, kind: str, start: datetime) -> bool:
    return (
        await session.scalar(
            select(OncallHandoff.id).where(
                OncallHandoff.schedule_id == schedule_id,
                OncallHandoff.kind == kind,
                OncallHandoff.shift_start == start,
            )
        )
        is not None
    )


async def record(
    session: AsyncSession,
    schedule_id: int,
    kind: str,
    start: datetime,
    user_id: int | None,
    status: str,
    detail: str | None = None,
) -> bool:
    """Claim (schedule, kind, start): False when another process already did; the caller's
    transaction holds it until commit."""
    try:
        async with session.begin_nested():
            session.add(
                OncallHandoff(
                    schedule_id=schedule_id,
                    kind=kind,
                    shift_start=start,
                    user_id=user_id,
                    status=status,
                    detail=(detail or "")[:300] or None,
                )
            )
    except IntegrityError:
        return False
    return True


async def set_usergroup(session: AsyncSession, team_name: str, schedule_name: str, usergroup: str | None) -> None:
    """Name the Slack user group (``S…``) kept to the schedule's person on call; None: none."""
    _, schedule = await schedules.require_schedule(session, team_name, schedule_name)
    group = (usergroup or "").strip() or None
    if group is not None and not (group[:1] == "S" and group.isalnum() and group.isupper() and len(group) <= 32):
        raise InvalidInput(f"{group!r} is not a Slack user group id (like S0123ABCD)")
    if group != schedule.slack_usergroup:  # a new group is set at the next look, whoever is on call
        await session.execute(
            delete(OncallHandoff).where(OncallHandoff.schedule_id == schedule.id, OncallHandoff.kind == USERGROUP)
        )
    schedule.slack_usergroup = group
    await session.flush()


async def _people(session: AsyncSession, schedule: OncallSchedule, user_ids: set[int]):
    team = await teams.team_by_id(session, schedule.team_id)
    return team, await alert_people.slack_links(session, user_ids, team)


async def queue_reminders(session: AsyncSession, now: datetime, ahead: timedelta) -> int:
    """For every shift starting in (now, now + ahead], a DM to its person (once); how many
    this call queued. A person with no Slack link in the team's workspace is recorded as
    skipped."""
    queued = 0
    for schedule in list(await session.scalars(select(OncallSchedule).order_by(OncallSchedule.id))):
        coming = [
            s
            for s in await schedules.shifts(session, schedule, now, now + ahead + timedelta(seconds=1))
            if now < s.start <= now + ahead and s.who is not None
        ]
        if not coming:
            continue
        team, links = await _people(session, schedule, {s.who.id for s in coming})
        for shift in coming:
            if await done(session, schedule.id, REMINDER, shift.start):
                continue
            link = links.get(shift.who.id) if shift.who.is_active else None
            status, detail = (DONE, "DM queued") if link else (SKIPPED, "no Slack link in the team's workspace")
            if not await record(session, schedule.id, REMINDER, shift.start, shift.who.id, status, detail):
                continue
            if link is None:
                continue
            await outbox.enqueue(
                session,
                link.slack_user_id,
                outbox.MESSAGE,
                payload=outbox.intent(
                    Intent.ONCALL_REMINDER,
                    team=team.name,
                    schedule=schedule.name,
                    start=int(shift.start.timestamp()),
                    end=int(shift.end.timestamp()),
                    override=shift.override,
                ),
                slack_team_id=link.slack_team_id,
                enterprise_id=link.enterprise_id,
            )
            queued += 1
    return queued


async def pending_syncs(session: AsyncSession, now: datetime) -> list[Sync]:
    """The schedules with a user group whose current shift's sync is not recorded yet."""
    out = []
    for schedule in list(
        await session.scalars(
            select(OncallSchedule).where(OncallSchedule.slack_usergroup.is_not(None)).order_by(OncallSchedule.id)
        )
    ):
        shift = await schedules.on_call_in(session, schedule, now)
        who = shift.who
        # A hand-off is a change of person: a shift longer than the look-around (one person
        # alone in a rotation) is seen with a start that moves with ``now``, so the start alone
        # would make every look a new hand-off.
        last = await session.scalar(
            select(OncallHandoff)
            .where(OncallHandoff.schedule_id == schedule.id, OncallHandoff.kind == USERGROUP)
            .order_by(OncallHandoff.id.desc())
            .limit(1)
        )
        if last is not None and last.user_id == (who.id if who is not None else None):
            continue
        if await done(session, schedule.id, USERGROUP, shift.start):
            continue
        team, links = await _people(session, schedule, {who.id} if who is not None else set())
        link = links.get(who.id) if who is not None and who.is_active else None
        why = (
            "nobody is on call"
            if who is None
            else f"{who.name} is deactivated"
            if not who.is_active
            else f"{who.name} has no Slack link in the team's workspace"
            if link is None
            else f"set to {who.name}"
        )
        out.append(
            Sync(
                schedule.id,
                schedule.slack_usergroup,
                shift.start,
                who.id if who is not None else None,
                link.slack_user_id if link else None,
                link.slack_team_id if link else team.slack_team_id,
                link.enterprise_id if link else team.enterprise_id,
                why,
            )
        )
    return out
