"""A team's escalation policy, stored and checked. The engine that pages people by it is
``bot.services.paging``.

One policy per team: ordered steps, each "``delay_minutes`` after the alert was created, notify
the target", the target being the on-call person of one of the team's schedules, a member of the
team, everyone in the team, or the team's Slack channel; then the whole policy again up to
``repeat`` more times, each repeat beginning ``repeat_after`` minutes after the last step of the
round before. Delays count from the alert's creation (as OpsGenie's do) and so may not
go down from one step to the next.

``set_policy`` checks every step before it writes anything and raises ``InvalidInput`` naming
the step (``step 2: …``). A policy's targets are the team's own — a step cannot page another
team's schedule or people — and a policy names no other policy, so there are no cycles::

    await set_policy(session, "Payments", "default", [
        StepSpec(0, "schedule", "payments"), StepSpec(10, "user", "lead@example.com"),
        StepSpec(20, "team"), StepSpec(30, "channel", "C0PAYMENTS")], repeat=2)
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import teams
from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from bot.services.schedules import active_member, check_name
from storage.base import utcnow
from storage.models import EscalationPolicy, EscalationStep, OncallSchedule, Team, User

KINDS = ("schedule", "user", "team", "channel")
MAX_STEPS = 20
MAX_REPEAT = 10
#: The default pause between the last step of a round and the repeat (OpsGenie's "repeat after").
REPEAT_AFTER = 10
#: A step's delay: at most a week after the alert was created.
MAX_DELAY_MINUTES = 7 * 24 * 60
_WANTED = {"schedule": "schedule's name", "user": "person's email", "channel": "Slack channel id"}


@dataclass
class StepSpec:
    """A step as given by a person: ``target`` is the schedule's name, the person's email, the
    team's name (or nothing: the policy's team) or the Slack channel id."""

    delay_minutes: int
    kind: str
    target: str | None = None


@dataclass
class Step:
    """A stored step, its target resolved for reading."""

    position: int
    delay_minutes: int
    kind: str
    schedule: OncallSchedule | None = None
    user: User | None = None
    team: Team | None = None
    channel: str | None = None

    def describe(self) -> str:
        what = {
            "schedule": lambda: f"the on-call person of schedule {self.schedule.name}",  # type: ignore[union-attr]
            "user": lambda: self.user.email,  # type: ignore[union-attr]
            "team": lambda: f"everyone in team {self.team.name}",  # type: ignore[union-attr]
            "channel": lambda: f"the channel {self.channel}",
        }[self.kind]()
        return f"after {self.delay_minutes} min, notify {what}"


async def _check_step(
    session: AsyncSession, team: Team, n: int, spec: StepSpec, previous: int | None
) -> EscalationStep:
    item = f"step {n}"
    delay = spec.delay_minutes
    if not isinstance(delay, int) or isinstance(delay, bool) or not 0 <= delay <= MAX_DELAY_MINUTES:
        raise InvalidInput(
            f"{item}: the delay must be a whole number of minutes from 0 to {MAX_DELAY_MINUTES}, not {delay!r}"
        )
    if previous is not None and delay < previous:
        raise InvalidInput(
            f"{item}: its delay ({delay} min) comes before step {n - 1}'s ({previous} min); "
            "delays count from the alert's creation"
        )
    if spec.kind not in KINDS:
        raise InvalidInput(f"{item}: {spec.kind!r} is not a target kind (one of {', '.join(KINDS)})")
    target = (spec.target or "").strip()
    if not target and spec.kind != "team":
        raise InvalidInput(f"{item}: no target (give the {_WANTED[spec.kind]})")
    step = EscalationStep(position=n - 1, delay_minutes=delay, target_kind=spec.kind)
    if spec.kind == "schedule":
        found = (
            await session.execute(
                select(OncallSchedule, Team.name)
                .join(Team, Team.id == OncallSchedule.team_id)
                .where(OncallSchedule.name == target)
            )
        ).all()
        own = [s for s, _ in found if s.team_id == team.id]
        if own:
            step.target_schedule_id = own[0].id
        elif found:
            raise InvalidInput(f"{item}: schedule {target} belongs to team {found[0][1]}, not {team.name}")
        else:
            raise InvalidInput(f"{item}: team {team.name} has no schedule named {target}")
    elif spec.kind == "user":
        step.target_user_id = (await active_member(session, team, target, item)).id
    elif spec.kind == "team":
        if target and target != team.name:
            if not await session.scalar(select(Team.id).where(Team.name == target)):
                raise InvalidInput(f"{item}: there is no team named {target}")
            raise InvalidInput(f"{item}: team {target} is not {team.name} (a policy notifies only its own team)")
        step.target_team_id = team.id
    else:
        try:
            step.target_channel = teams.check_channel(target)
        except InvalidInput as err:
            raise InvalidInput(f"{item}: {err}") from None
    return step


async def set_policy(
    session: AsyncSession,
    team_name: str,
    name: str,
    steps: list[StepSpec],
    repeat: int = 0,
    description: str | None = None,
    repeat_after: int = REPEAT_AFTER,
) -> EscalationPolicy:
    """Create the team's policy or replace it (all steps) with this one."""
    team = await teams.require_team(session, team_name)
    name = check_name(name, "policy")
    if not steps:
        raise InvalidInput(f"policy {name}: give at least one step")
    if len(steps) > MAX_STEPS:
        raise InvalidInput(f"policy {name}: at most {MAX_STEPS} steps")
    if not isinstance(repeat, int) or isinstance(repeat, bool) or not 0 <= repeat <= MAX_REPEAT:
        raise InvalidInput(f"policy {name}: repeat must be a whole number from 0 to {MAX_REPEAT}, not {repeat!r}")
    if (
        not isinstance(repeat_after, int)
        or isinstance(repeat_after, bool)
        or not 1 <= repeat_after <= MAX_DELAY_MINUTES
    ):
        raise InvalidInput(
            f"policy {name}: repeat_after must be a whole number of minutes from 1 to "
            f"{MAX_DELAY_MINUTES}, not {repeat_after!r}"
        )
    rows, previous = [], None
    for n, spec in enumerate(steps, 1):
        rows.append(await _check_step(session, team, n, spec, previous))
        previous = spec.delay_minutes
    policy = await session.scalar(select(EscalationPolicy).where(EscalationPolicy.team_id == team.id))
    if policy is None:
        policy = EscalationPolicy(team_id=team.id, name=name)
        session.add(policy)
    policy.name, policy.repeat, policy.updated_at = name, repeat, utcnow()
    policy.repeat_after_minutes = repeat_after
    if description is not None:
        policy.description = description or None
    raced = AlreadyExists(f"team {team.name}'s escalation policy was just set by someone else; try again")
    try:
        await session.flush()
    except IntegrityError:  # another request made the team's policy at the same moment
        raise raced from None
    await session.execute(delete(EscalationStep).where(EscalationStep.policy_id == policy.id))
    for row in rows:
        row.policy_id = policy.id
    session.add_all(rows)
    await session.flush()
    return policy


async def require_policy(session: AsyncSession, team_name: str) -> tuple[Team, EscalationPolicy]:
    team = await teams.require_team(session, team_name)
    policy = await session.scalar(select(EscalationPolicy).where(EscalationPolicy.team_id == team.id))
    if policy is None:
        raise NotFound(f"team {team.name} has no escalation policy")
    return team, policy


async def delete_policy(session: AsyncSession, team_name: str) -> None:
    _, policy = await require_policy(session, team_name)
    await session.delete(policy)
    await session.flush()


async def policy_steps(session: AsyncSession, policy: EscalationPolicy) -> list[Step]:
    """The policy's steps in order, targets resolved."""
    rows = (
        await session.execute(
            select(EscalationStep, OncallSchedule, User, Team)
            .outerjoin(OncallSchedule, OncallSchedule.id == EscalationStep.target_schedule_id)
            .outerjoin(User, User.id == EscalationStep.target_user_id)
            .outerjoin(Team, Team.id == EscalationStep.target_team_id)
            .where(EscalationStep.policy_id == policy.id)
            .order_by(EscalationStep.position)
        )
    ).all()
    return [
        Step(s.position, s.delay_minutes, s.target_kind, schedule, user, team, s.target_channel)
        for s, schedule, user, team in rows
    ]
