"""The escalation engine: pages people for an alert by its team's escalation policy
(``bot.services.escalation``) until someone acknowledges or closes it.

    start(session, alert, team, now)        # alerts.create_alert: the alert's timer, if the team has a policy
    stop(session, alert, actor, now, why)   # alerts.acknowledge / close: the timer goes, nobody else is paged
    escalate_now(session, alert, actor, …)  # OpsGenie's escalate: the next step fires at once
    PagingEngine(...).start()               # every ``genie serve``: fires due steps

**Timers are rows.** An alert being escalated has one ``alert_escalation`` row: the next step,
the repeat round, when the round began and when the step is due. The engine claims due rows —
``SELECT … FOR UPDATE SKIP LOCKED`` on PostgreSQL (a row another process holds is skipped, not
waited for); on SQLite every transaction is ``BEGIN IMMEDIATE``, the single writer — and in
that one transaction fires the step and moves the row on (or deletes it): two processes never
fire a step twice, and a process that dies mid-step rolls back, so the step fires after a
restart. Acknowledging or closing deletes the row in the same transaction.

**A step** resolves its target *now*: the person on call in the schedule at this moment
(``schedules.on_call_in``), a person, every active member of the team, or the team's
channel. Each person gets one ``page`` row and a Slack DM through the outbox (kind ``page``; the
DM is drawn from the alert's state when it is delivered, with the channel message's buttons). A
person who is deactivated or has no Slack link in the workspace of the team's channel, or a
schedule with nobody on call, or a person no longer in the team, is recorded (``skipped``, and why, on the timeline): nobody is
skipped silently. A step that reaches nobody falls through to the next step at once.

**Notification rules** (``bot.services.notification_rules``): each person is paged by their
own rules — a ``page`` row per rule (``slack_dm``, ``email``, ``webhook``), due at the step's
time plus the rule's delay; a person with none gets a Slack DM at once. A DM due now goes to the
outbox at once; later ones wait (status ``waiting``) and are released by the engine's tick
(``release_due_dms``); e-mail and webhook pages are claimed and sent by the channel worker
(``bot.channels.worker``: ``claim_channel_pages``, ``settle_channel_page``,
``retry_channel_page``). A channel that cannot reach the person (no Slack link, an unverified
address, Slack refusing the DM, a permanent send failure) makes their next channel due at once
(``fall_through``); acknowledging or closing cancels what still waits (``stop``).

**Repeats.** After the last step, the policy runs again ``repeat`` more times, each round
beginning ``repeat_after_minutes`` after the last step of the round before; a snoozed alert's
step waits until the snooze ends. Times come from the caller: the engine uses
``Runtime.now``, which tests move.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.services import alert_people, alerts, escalation, notification_rules, outbox, schedules
from bot.services.alerts import Actor, AlreadyDone
from bot.services.errors import InvalidInput
from bot.services.loop import BackgroundLoop
from storage.base import constant, utcnow
from storage.models import (
    Alert,
    AlertEscalation,
    AlertStatus,
    EscalationPolicy,
    NotificationRule,
    Page,
    Team,
    TeamMember,
    User,
)

logger = logging.getLogger(__name__)

#: The outbox kind of a page (``bot.page_delivery``): payload ``{"page": id}``, alert_id set.
PAGE = "page"
SLACK_DM = "slack_dm"
SLACK_CHANNEL = "slack_channel"
EMAIL, WEBHOOK = notification_rules.EMAIL, notification_rules.WEBHOOK
#: Page statuses. ``waiting``: due later (a rule's delay, an e-mail or webhook retry).
QUEUED, SENT, FAILED, SKIPPED, CANCELLED = "queued", "sent", "failed", "skipped", "cancelled"
WAITING = "waiting"
#: Pages that let their person act on the alert (``bot.services.access``).
REACHED = (QUEUED, SENT)
POLL_INTERVAL = 5.0
#: Due timers claimed and fired in one transaction.
BATCH = 100
#: Due timers one tick fires at most (then it looks again at once).
MAX_PER_TICK = 2_000


def engine_actor(policy_name: str | None) -> Actor:
    return Actor(via="paging", label=f"Escalation policy {policy_name}"[:200] if policy_name else "Escalation")


def step_label(step: int, repeat_round: int) -> str:
    """ "step 2", "step 2 (repeat 1)" — ``step`` counted from 0 as stored."""
    return f"step {step + 1}" + (f" (repeat {repeat_round})" if repeat_round else "")


def _due(row: AlertEscalation, steps: list[escalation.Step]) -> datetime:
    return row.round_started_at + timedelta(minutes=steps[row.step].delay_minutes)


async def _policy_of(session: AsyncSession, team_id: int | None) -> EscalationPolicy | None:
    if team_id is None:
        return None
    return await session.scalar(select(EscalationPolicy).where(EscalationPolicy.team_id == team_id))


async def start(
    session: AsyncSession, alert: Alert, team: Team, now: datetime, *, policy_id: int | None = None
) -> AlertEscalation | None:
    """A new alert of ``team``: its escalation's first timer, when the team has a policy
    (``policy_id``, when the caller read it already). The engine is woken after the commit
    (``Runtime.wake_outbox``, ``started_in``)."""
    if policy_id is not None:
        policy = await session.get(EscalationPolicy, policy_id)
    else:
        policy = await _policy_of(session, team.id)
    if policy is None:
        return None
    steps = await escalation.policy_steps(session, policy)
    if not steps:
        return None
    row = AlertEscalation(
        alert_id=alert.id,
        policy_id=policy.id,
        step=0,
        repeat_round=0,
        round_started_at=now,
        due_at=now + timedelta(minutes=steps[0].delay_minutes),
    )
    session.add(row)
    session.info[_STARTED] = True
    await alerts.record(
        session,
        alert,
        "page",
        "applied",
        engine_actor(policy.name),
        now=now,
        flush=False,
        reason=f"escalation policy {policy.name} started: {len(steps)} step(s)"
        + (f", repeated up to {policy.repeat} time(s)" if policy.repeat else ""),
    )
    return row


_STARTED = "genie.paging.started"


def started_in(session: AsyncSession) -> bool:
    """Whether ``start`` set an escalation timer in this session's transaction: then, after the
    commit, the engine is woken (``Runtime.wake_outbox(paging=True)``); otherwise it need not look."""
    return bool(session.info.get(_STARTED))


async def stop(session: AsyncSession, alert: Alert, actor: Actor, now: datetime, why: str) -> bool:
    """The alert was acknowledged or closed (``why``): its timer goes, in the caller's
    transaction, and the pages already sent are redrawn (through the outbox, after them). True
    when there was a timer (the timeline then says so)."""
    result = await session.execute(
        delete(AlertEscalation).where(AlertEscalation.alert_id == alert.id).execution_options(synchronize_session=False)
    )
    sent = list(
        await session.scalars(
            select(Page).where(Page.alert_id == alert.id, Page.status == constant(SENT), Page.slack_ts.is_not(None))
        )
    )
    waiting = await session.execute(
        update(Page)
        .where(Page.alert_id == alert.id, Page.status == constant(WAITING))
        .values(status=CANCELLED, settled_at=now, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if waiting.rowcount:
        await alerts.record(
            session,
            alert,
            "page",
            "applied",
            actor,
            reason=f"{waiting.rowcount} waiting notification(s) cancelled: {why}"[:500],
            now=now,
            flush=False,
        )
    await _redraw(session, alert, sent)
    if result.rowcount:
        await alerts.record(
            session, alert, "page", "applied", actor, reason=f"escalation stopped: {why}", now=now, flush=False
        )
    return bool(result.rowcount)


async def _redraw(session: AsyncSession, alert: Alert, pages: list[Page]) -> None:
    """Queue the redraw of pages already in Slack (after them: the same outbox channel), so that
    a page DM stops offering Acknowledge once the alert is acknowledged or closed."""
    team = await session.get(Team, alert.team_id) if pages and alert.team_id is not None else None
    for page in pages:
        await outbox.enqueue(
            session,
            page.target or page.slack_channel,
            PAGE,
            alert_id=alert.id,
            payload={"page": page.id, "update": True},
            flush=False,
            slack_team_id=team.slack_team_id if team else None,
            enterprise_id=team.enterprise_id if team else None,
        )


# --- one step ------------------------------------------------------------------------------------
async def _people(
    session: AsyncSession, team: Team, step: escalation.Step, now: datetime, cache: dict
) -> tuple[list[User], str | None, str | None]:
    """``(people, why they are paged, why nobody)`` for a person-step, resolved now (the
    on-call person of a schedule once per tick: ``cache``)."""
    if step.kind == "user":
        return ([step.user] if step.user is not None else []), "named in the policy", "the person no longer exists"
    if step.kind == "team":
        members = list(
            await session.scalars(
                select(User)
                .join(TeamMember, TeamMember.user_id == User.id)
                .where(TeamMember.team_id == team.id)
                .order_by(User.name, User.id)
            )
        )
        return members, f"member of {team.name}", f"team {team.name} has no members"
    assert step.schedule is not None
    key = ("on call", step.schedule.id)
    if key not in cache:
        cache[key] = await schedules.on_call_in(session, step.schedule, now)
    shift = cache[key]
    if shift.who is None:
        return [], None, f"nobody is on call in schedule {step.schedule.name} now"
    return [shift.who], f"on call in schedule {step.schedule.name}", None


#: In ``cache``: the outbox messages of pages not flushed yet (``fire_claimed`` writes them at once).
DEFERRED = "deferred outbox messages"


async def _enqueue(
    session: AsyncSession,
    cache: dict,
    row: Page,
    channel: str,
    alert_id: int,
    slack_team_id: str | None,
    enterprise_id: str | None,
) -> None:
    """The page's outbox message (it names the page's id): now, or with the batch's (``DEFERRED``)."""
    args = (channel, alert_id, slack_team_id, enterprise_id)
    if DEFERRED in cache:
        cache[DEFERRED].append((row, args))
        return
    await session.flush()
    await _write_outbox(session, row, *args)


async def _write_outbox(
    session: AsyncSession, row: Page, channel: str, alert_id: int, slack_team_id: str | None, enterprise_id: str | None
) -> None:
    await outbox.enqueue(
        session,
        channel,
        PAGE,
        alert_id=alert_id,
        payload={"page": row.id},
        slack_team_id=slack_team_id,
        enterprise_id=enterprise_id,
        flush=False,
    )


async def _fire_step(
    session: AsyncSession,
    alert: Alert,
    team: Team,
    policy: EscalationPolicy,
    step: escalation.Step,
    repeat_round: int,
    now: datetime,
    cache: dict,
) -> int:
    """Notify the step's target; how many notifications were queued (0: it reached nobody).
    The outbox keeps its own (real) clock: a page is due for delivery as soon as it is queued."""
    label = step_label(step.position, repeat_round)
    actor = engine_actor(policy.name)

    async def note(outcome: str, text: str) -> None:
        await alerts.record(
            session, alert, "page", outcome, actor, reason=f"{label}: {text}"[:500], now=now, flush=False
        )

    def page(**values) -> Page:
        row = Page(alert_id=alert.id, step=step.position, repeat_round=repeat_round, created_at=now, **values)
        session.add(row)
        return row

    if step.kind == "channel":
        row = page(channel=SLACK_CHANNEL, target=step.channel, status=QUEUED, reason="the team's channel")
        await _enqueue(session, cache, row, step.channel, alert.id, team.slack_team_id, team.enterprise_id)
        await note("applied", f"paged the channel {step.channel} (queued)")
        return 1
    people, why, nobody = await _people(session, team, step, now, cache)
    if not people:
        await note("skipped", f"{nobody}; nobody paged")
        return 0
    key = ("people", team.id, tuple(sorted({p.id for p in people})))  # read once a tick
    if key not in cache:
        cache[key] = (
            await alert_people.slack_links(session, {p.id for p in people if p.is_active}, team),
            set(
                await session.scalars(
                    select(TeamMember.user_id).where(
                        TeamMember.team_id == team.id, TeamMember.user_id.in_([p.id for p in people])
                    )
                )
            ),
            await notification_rules.rules_by_person(session, {p.id for p in people}),
        )
    links, members, rules = cache[key]
    queued = 0
    for person in dict.fromkeys(people):  # once each, in order
        who = f"{person.name} ({person.email})"
        if not person.is_active:
            page(user_id=person.id, channel=SLACK_DM, status=SKIPPED, reason=f"{why}; deactivated")
            await note("skipped", f"{who} not paged: their Genie account is deactivated")
            continue
        if person.id not in members:  # removed from the team since the schedule or policy named them
            page(user_id=person.id, channel=SLACK_DM, status=SKIPPED, reason=f"{why}; not a member")
            await note("skipped", f"{who} not paged: no longer a member of {team.name}")
            continue
        link = links.get(person.id)
        fall_due: datetime | None = None  # a rule that could not be used: the next one is due then
        reached = False
        mine = rules[person.id]
        for index, rule in enumerate(mine):
            due = now + timedelta(minutes=rule.delay_minutes)
            if fall_due is not None:
                due, fall_due = min(due, fall_due), None
            how = notification_rules.describe(rule.channel)
            later = "" if due <= now else f" in {math.ceil((due - now).total_seconds() / 60)} minute(s)"
            onward = (
                f"; falls through to {notification_rules.describe(mine[index + 1].channel)}"
                if index + 1 < len(mine)
                else ""
            )
            if rule.channel == SLACK_DM and link is None:
                page(
                    user_id=person.id, channel=SLACK_DM, status=SKIPPED, reason=f"{why}; no Slack link", rule_id=rule.id
                )
                await note(
                    "skipped",
                    f"{who} not paged: no Slack account is linked in the workspace of {team.name}'s channel" + onward,
                )
                fall_due = due
                continue
            if rule.channel == EMAIL and not notification_rules.email_verified(person):
                page(
                    user_id=person.id,
                    channel=EMAIL,
                    status=SKIPPED,
                    reason=f"{why}; e-mail not verified",
                    rule_id=rule.id,
                )
                await note("skipped", f"{who} not paged by e-mail: their address is not verified{onward}")
                fall_due = due
                continue
            if rule.channel == SLACK_DM and due <= now:
                assert link is not None
                row = page(
                    user_id=person.id,
                    channel=SLACK_DM,
                    target=link.slack_user_id,
                    status=QUEUED,
                    reason=why,
                    rule_id=rule.id,
                )
                await _enqueue(
                    session, cache, row, link.slack_user_id, alert.id, link.slack_team_id, link.enterprise_id
                )
                await note("applied", f"paged {who}, {why}, by Slack DM (queued)")
            else:
                page(
                    user_id=person.id,
                    channel=rule.channel,
                    target=link.slack_user_id if rule.channel == SLACK_DM and link is not None else None,
                    status=WAITING,
                    reason=why,
                    rule_id=rule.id,
                    due_at=due,
                )
                await note("applied", f"paging {who}, {why}, by {how}{later} (waiting)")
            reached = True
        queued += reached
    return queued


async def _steps(session: AsyncSession, policy: EscalationPolicy, cache: dict) -> list[escalation.Step]:
    """The policy's steps, read once a tick (``cache``)."""
    key = ("steps", policy.id, policy.updated_at)
    if key not in cache:
        cache[key] = await escalation.policy_steps(session, policy)
    return cache[key]


async def fire(
    session: AsyncSession,
    row: AlertEscalation,
    alert: Alert,
    now: datetime,
    forced: bool = False,
    cache: dict | None = None,
) -> int:
    """Fire the row's step (claimed by the caller) and move the row on, or delete it when the
    alert needs no more paging or the policy has run its course. A step that reaches nobody
    falls through to the next one at once (never past the end of a round). Returns how many
    notifications were queued. ``forced`` (an explicit escalation) does not wait for a snooze.
    ``cache``: what one tick of the engine reads once for all the alerts it fires (a policy's
    steps, a schedule's on-call person at ``now``)."""
    cache = {} if cache is None else cache
    policy = await session.get(EscalationPolicy, row.policy_id)
    team = await session.get(Team, alert.team_id) if alert.team_id is not None else None
    if alert.status != "open" or alert.acknowledged or policy is None or team is None or policy.team_id != team.id:
        await session.delete(row)  # acknowledged or closed meanwhile, or the policy is gone
        return 0
    if not forced and alert.snoozed_until is not None and alert.snoozed_until > now:
        row.due_at = alert.snoozed_until  # snoozed: this step waits for the snooze to end
        return 0
    steps = await _steps(session, policy, cache)
    queued = 0
    while True:
        if row.step >= len(steps):  # the policy changed under it: this round is over
            break
        reached = await _fire_step(session, alert, team, policy, steps[row.step], row.repeat_round, now, cache)
        queued += reached
        if row.step + 1 >= len(steps):
            break
        row.step += 1
        row.due_at = _due(row, steps)
        if reached:
            return queued
        await alerts.record(
            session,
            alert,
            "page",
            "applied",
            engine_actor(policy.name),
            now=now,
            flush=False,
            reason=f"{step_label(row.step - 1, row.repeat_round)} reached nobody: "
            f"{step_label(row.step, row.repeat_round)} fires now",
        )
    # The round is over: repeat, or stop.
    if row.repeat_round >= policy.repeat or not steps:
        await session.delete(row)
        rounds = policy.repeat + 1
        await alerts.record(
            session,
            alert,
            "page",
            "applied",
            engine_actor(policy.name),
            now=now,
            flush=False,
            reason=f"escalation policy {policy.name} has run its course ({rounds} round(s)); "
            "nobody more will be paged unless it is escalated",
        )
        return queued
    last = steps[-1].delay_minutes
    row.round_started_at = max(now, row.round_started_at + timedelta(minutes=last + policy.repeat_after_minutes))
    row.repeat_round += 1
    row.step = 0
    row.due_at = _due(row, steps)
    return queued


async def escalate_now(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    now: datetime,
    *,
    named: dict | None = None,
    note: str | None = None,
    request_id: str | None = None,
) -> str:
    """OpsGenie's escalate: the next step of the alert's escalation fires now (a finished
    escalation starts again from step 1). ``named``: the request's ``escalation``
    (``{"name": …}`` or ``{"id": …}``), which must be the team's policy. Returns the step fired;
    ``InvalidInput`` (nothing changed) when the team has no policy or another one is named."""
    policy = await _policy_of(session, alert.team_id)
    team = await session.get(Team, alert.team_id) if alert.team_id is not None else None
    if policy is None or team is None:
        owner = f"team {team.name}" if team is not None else "no team"
        raise InvalidInput(
            f"this alert belongs to {owner}, which has no escalation policy, so it can't be "
            "escalated; assign it or add a responder instead"
        )
    if named is not None:
        if not isinstance(named, dict) or not any(isinstance(named.get(k), str) for k in ("id", "name")):
            raise InvalidInput('escalation must be an object: {"name": "…"} or {"id": "…"}')
        if named.get("name") not in (None, policy.name) or named.get("id") not in (None, str(policy.id)):
            given = named.get("name") or named.get("id")
            raise InvalidInput(
                f"escalation {given!r} is not the policy of team {team.name} ({policy.name}, id {policy.id})"
            )
    if alert.status != "open":
        await alerts.record(
            session, alert, "escalate", "noop", actor, reason="the alert is closed", now=now, request_id=request_id
        )
        raise AlreadyDone(f"Alert #{alert.id} is closed: nothing to escalate.", "Alert is already closed")
    if alert.acknowledged:
        await alerts.record(
            session,
            alert,
            "escalate",
            "noop",
            actor,
            request_id=request_id,
            now=now,
            reason="the alert is acknowledged: its escalation stopped",
        )
        raise AlreadyDone(
            f"Alert #{alert.id} is acknowledged: its escalation stopped.", "Alert is already acknowledged"
        )
    row = await session.scalar(
        select(AlertEscalation)
        .where(AlertEscalation.alert_id == alert.id)
        .with_for_update()
        .execution_options(populate_existing=True)
    )
    if row is None or row.policy_id != policy.id:
        if row is not None:
            await session.delete(row)
            await session.flush()
        row = AlertEscalation(
            alert_id=alert.id, policy_id=policy.id, step=0, repeat_round=0, round_started_at=now, due_at=now
        )
        session.add(row)
    fired = step_label(row.step, row.repeat_round)
    await alerts.record(
        session,
        alert,
        "escalate",
        "applied",
        actor,
        reason=f"{fired} of {policy.name} fires now",
        note=note,
        request_id=request_id,
        now=now,
        flush=False,
    )
    await fire(session, row, alert, now, forced=True)
    await session.flush()
    return fired


# --- the engine ----------------------------------------------------------------------------------
async def claim_and_fire(session: AsyncSession, alert_id: int, now: datetime, cache: dict | None = None) -> int | None:
    """Claim the alert's due timer and fire it, in the caller's transaction; None when it is
    not due any more or another process holds it (``SKIP LOCKED``)."""
    row = await session.scalar(
        select(AlertEscalation)
        .where(AlertEscalation.alert_id == alert_id, AlertEscalation.due_at <= now)
        .with_for_update(skip_locked=True)
        .execution_options(populate_existing=True)
    )
    if row is None:
        return None
    alert = await session.get(Alert, alert_id, populate_existing=True)
    if alert is None:  # pragma: no cover - the row is deleted with its alert
        return None
    return await fire(session, row, alert, now, cache=cache)


async def claim_due(
    session: AsyncSession, now: datetime, limit: int = BATCH, skip: Collection[int] = ()
) -> list[AlertEscalation]:
    """Claim up to ``limit`` due timers (earliest first; not those of the alerts in ``skip``), in
    the caller's transaction: rows another process holds are passed over (``SKIP LOCKED``)."""
    query = select(AlertEscalation).where(AlertEscalation.due_at <= now)
    if skip:
        query = query.where(AlertEscalation.alert_id.not_in(list(skip)))
    return list(
        await session.scalars(
            query.order_by(AlertEscalation.due_at, AlertEscalation.alert_id)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )


async def has_due(session: AsyncSession, now: datetime, skip: Collection[int] = ()) -> bool:
    query = select(AlertEscalation.alert_id).where(AlertEscalation.due_at <= now)
    if skip:
        query = query.where(AlertEscalation.alert_id.not_in(list(skip)))
    return await session.scalar(query.limit(1)) is not None


async def fire_claimed(session: AsyncSession, rows: list[AlertEscalation], now: datetime, cache: dict) -> int:
    """Fire the claimed timers (``claim_due``) in the caller's transaction, their alerts, teams,
    policies and the on-call people of their schedules read together; notifications queued."""
    if not rows:
        return 0
    found = {
        a.id: a
        for a in await session.scalars(
            select(Alert).where(Alert.id.in_([r.alert_id for r in rows])).execution_options(populate_existing=True)
        )
    }
    team_ids = {a.team_id for a in found.values() if a.team_id is not None}
    if team_ids:
        list(await session.scalars(select(Team).where(Team.id.in_(team_ids))))  # into the identity map
    missing = [
        schedule
        for policy in await session.scalars(
            select(EscalationPolicy).where(EscalationPolicy.id.in_({r.policy_id for r in rows}))
        )
        for step in await _steps(session, policy, cache)
        if step.kind == "schedule" and step.schedule is not None and ("on call", step.schedule.id) not in cache
        for schedule in [step.schedule]
    ]
    if missing:
        for schedule_id, shift in (await schedules.on_call_many(session, missing, now)).items():
            cache[("on call", schedule_id)] = shift
    queued = 0
    cache[DEFERRED] = []  # the pages' rows are written together, then their outbox messages
    try:
        for row in rows:
            alert = found.get(row.alert_id)
            if alert is not None:  # the row is deleted with its alert
                queued += await fire(session, row, alert, now, cache=cache)
        deferred = cache[DEFERRED]
    finally:
        del cache[DEFERRED]
    if deferred:
        await session.flush()
        for page, args in deferred:
            await _write_outbox(session, page, *args)
    return queued


async def next_due(session: AsyncSession) -> datetime | None:
    """The next escalation step or delayed Slack DM due."""
    times = [
        await session.scalar(select(AlertEscalation.due_at).order_by(AlertEscalation.due_at).limit(1)),
        await session.scalar(
            select(Page.due_at)
            .where(Page.status == constant(WAITING), Page.channel == SLACK_DM)
            .order_by(Page.due_at)
            .limit(1)
        ),
    ]
    return min((t for t in times if t is not None), default=None)


async def release_due_dms(session: AsyncSession, now: datetime, limit: int = 100) -> int:
    """Delayed Slack DMs (a rule's delay, or a fall-through) that are due go to the outbox, in
    the caller's transaction; rows another process holds are skipped (``SKIP LOCKED``), so each
    is queued once. An alert acknowledged or closed meanwhile cancels them (``stop`` does too)."""
    rows = list(
        await session.scalars(
            select(Page)
            .where(Page.status == constant(WAITING), Page.channel == SLACK_DM, Page.due_at <= now)
            .order_by(Page.due_at)
            .limit(limit)
            .with_for_update(skip_locked=True)
            .execution_options(populate_existing=True)
        )
    )
    queued = 0
    for row in rows:
        alert = await session.get(Alert, row.alert_id)
        team = await session.get(Team, alert.team_id) if alert is not None and alert.team_id is not None else None
        if alert is None or team is None or alert.status != "open" or alert.acknowledged or not row.target:
            row.status, row.settled_at = CANCELLED, now
            continue
        row.status = QUEUED
        await outbox.enqueue(
            session,
            row.target,
            PAGE,
            alert_id=alert.id,
            payload={"page": row.id},
            slack_team_id=team.slack_team_id,
            enterprise_id=team.enterprise_id,
            flush=False,
        )
        await alerts.record(
            session,
            alert,
            "page",
            "applied",
            engine_actor(None),
            now=now,
            flush=False,
            reason=f"{step_label(row.step, row.repeat_round)}: Slack DM due now (queued)",
        )
        queued += 1
    return queued


async def fall_through(session: AsyncSession, page: Page, now: datetime, what: str) -> None:
    """``page`` could not reach its person (``what`` says why): their next waiting channel for
    the same step is due now, and the timeline says so — or that none is left."""
    alert = await session.get(Alert, page.alert_id)
    nxt = None
    if page.user_id is not None:
        nxt = await session.scalar(
            select(Page)
            .where(
                Page.alert_id == page.alert_id,
                Page.user_id == page.user_id,
                Page.step == page.step,
                Page.repeat_round == page.repeat_round,
                Page.status == constant(WAITING),
                Page.id != page.id,
            )
            .order_by(Page.due_at, Page.id)
            .limit(1)
        )
    if nxt is not None and (nxt.due_at is None or nxt.due_at > now):
        nxt.due_at = now
    onward = f"; falls through to {notification_rules.describe(nxt.channel)} at once" if nxt is not None else ""
    if alert is not None:
        await alerts.record(
            session,
            alert,
            "page",
            "failed",
            engine_actor(None),
            now=now,
            flush=False,
            reason=f"{step_label(page.step, page.repeat_round)}: {what}{onward}"[:500],
        )


# --- e-mail and webhook pages: what the channel worker (``bot.channels.worker``) claims -------
#: How long a claim holds an e-mail or webhook page; a worker that died leaves it to another.
CHANNEL_LEASE = timedelta(seconds=60)
#: Attempts before an e-mail or webhook page is given up (backoff 10 s doubling, at most 10 min:
#: about two hours), and the person's next channel tried.
CHANNEL_MAX_ATTEMPTS = 15


def channel_backoff(attempts: int) -> timedelta:
    return timedelta(seconds=min(600, 10 * 2 ** max(attempts - 1, 0)))


async def claim_channel_pages(
    session: AsyncSession, now: datetime, lease: timedelta = CHANNEL_LEASE, limit: int = 20
) -> list[tuple[int, datetime]]:
    """Claim due e-mail and webhook pages: a conditional UPDATE per page that one worker wins
    (status still waiting, no live lease). ``[(page id, lease held until)]``."""
    ids = list(
        await session.scalars(
            select(Page.id)
            .where(
                Page.status == constant(WAITING),
                Page.channel.in_([EMAIL, WEBHOOK]),
                Page.due_at <= now,
                (Page.locked_until.is_(None)) | (Page.locked_until < now),
            )
            .order_by(Page.due_at)
            .limit(limit)
        )
    )
    held = now + lease
    claimed = []
    for page_id in ids:
        won = await session.execute(
            update(Page)
            .where(
                Page.id == page_id,
                Page.status == constant(WAITING),
                (Page.locked_until.is_(None)) | (Page.locked_until < now),
            )
            .values(locked_until=held, attempts=Page.attempts + 1)
            .execution_options(synchronize_session=False)
        )
        if won.rowcount == 1:
            claimed.append((page_id, held))
    return claimed


async def next_channel_due(session: AsyncSession) -> datetime | None:
    return await session.scalar(
        select(Page.due_at)
        .where(Page.status == constant(WAITING), Page.channel.in_([EMAIL, WEBHOOK]))
        .order_by(Page.due_at)
        .limit(1)
    )


@dataclass(frozen=True)
class ChannelPage:
    """What a claimed e-mail or webhook page needs to be sent, read in one short transaction."""

    page: Page
    alert: Alert
    person: User | None
    team: Team | None
    rule: NotificationRule | None


async def channel_page(session: AsyncSession, page_id: int) -> ChannelPage | None:
    page = await session.get(Page, page_id)
    alert = await session.get(Alert, page.alert_id) if page is not None else None
    if page is None or alert is None:
        return None
    person = await session.get(User, page.user_id) if page.user_id is not None else None
    team = await session.get(Team, alert.team_id) if alert.team_id is not None else None
    rule = await notification_rules.rule(session, page.rule_id)
    return ChannelPage(page, alert, person, team, rule)


async def settle_channel_page(
    session: AsyncSession, page_id: int, held: datetime, status: str, text: str, now: datetime
) -> bool:
    """Record what became of a claimed page (sent, failed, cancelled) on its row and the alert's
    timeline, if this worker still holds it; a failed one falls through to the person's next
    channel. False when the lease was lost (another worker took it over)."""
    page = await session.get(Page, page_id, populate_existing=True)
    if page is None:
        return False
    changed = await session.execute(
        update(Page)
        .where(Page.id == page_id, Page.status == constant(WAITING), Page.locked_until == held)
        .values(status=status, settled_at=now, locked_until=None, reason=f"{page.reason or ''}; {text}"[:300])
        .execution_options(synchronize_session=False)
    )
    if not changed.rowcount:
        return False
    label = step_label(page.step, page.repeat_round)
    if status == FAILED:
        await fall_through(session, page, now, text)
        return True
    alert = await session.get(Alert, page.alert_id)
    if alert is not None:
        outcome = {SENT: "applied", FAILED: "failed"}.get(status, "skipped")
        await alerts.record(
            session, alert, "page", outcome, engine_actor(None), now=now, flush=False, reason=f"{label}: {text}"[:500]
        )
    return True


async def retry_channel_page(
    session: AsyncSession, page_id: int, held: datetime, attempts: int, error: str, now: datetime
) -> bool:
    """A temporary failure (SMTP unreachable, the webhook's 5xx or timeout): due again after a
    backoff, and the timeline says so — or, out of attempts, failed (and falls through)."""
    page = await session.get(Page, page_id, populate_existing=True)
    if page is None:
        return False
    what = error
    if attempts >= CHANNEL_MAX_ATTEMPTS:
        return await settle_channel_page(
            session, page_id, held, FAILED, f"{what}, gave up after {attempts} attempts", now
        )
    delay = channel_backoff(attempts)
    changed = await session.execute(
        update(Page)
        .where(Page.id == page_id, Page.status == constant(WAITING), Page.locked_until == held)
        .values(due_at=now + delay, locked_until=None, last_error=error[:300])
        .execution_options(synchronize_session=False)
    )
    alert = await session.get(Alert, page.alert_id)
    if changed.rowcount and alert is not None:
        await alerts.record(
            session,
            alert,
            "page",
            "failed",
            engine_actor(None),
            now=now,
            flush=False,
            reason=f"{step_label(page.step, page.repeat_round)}: {what}; "
            f"retrying in {int(delay.total_seconds())} s (attempt {attempts})"[:500],
        )
    return bool(changed.rowcount)


_UNREAD = object()


class PagingEngine(BackgroundLoop):
    """Runs in every ``genie serve``: fires every due step, up to ``BATCH`` alerts a transaction
    (claimed with ``SKIP LOCKED``, so processes share a burst), then
    sleeps until the next timer is due (by ``now``), ``wake()`` or ``poll_interval``.
    ``on_paged(channel)`` is called after each commit that queued pages (the outbox is woken)."""

    name = "genie-paging-engine"
    doing = "fire due escalation steps"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        now: Callable[[], datetime] = utcnow,
        on_paged: Callable[[str | None], None] | None = None,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        super().__init__(poll_interval)
        self.sessionmaker = sessionmaker
        self.now = now
        self.on_paged = on_paged
        #: The next due time as the last idle tick read it (``_UNREAD``: read again).
        self._next_due: object = _UNREAD

    async def run_once(self) -> int:
        """Fire every step due now; how many notifications this process queued. One read first:
        an idle tick (no timer and no delayed DM due) writes nothing and ends there."""
        queued = 0
        now = self.now()
        async with self.sessionmaker() as session:
            due = await next_due(session)
        if due is None or due > now:
            self._next_due = due  # what next_delay sleeps on (a local first: turns may overlap)
            return 0
        self._next_due = _UNREAD
        cache: dict = {}  # read once a tick: a policy's steps, who is on call in a schedule now
        fired: set[int] = set()  # each alert's timer fires once a tick (a next step due at once: next tick)
        while not self.stopping and len(fired) < MAX_PER_TICK:
            async with self.sessionmaker() as session:  # a read first: an idle tick writes nothing
                if not await has_due(session, now, fired):
                    break
            async with self.sessionmaker.begin() as session:
                rows = await claim_due(session, now, BATCH, fired)
                ids = [r.alert_id for r in rows]
                try:
                    async with session.begin_nested():
                        done = await fire_claimed(session, rows, now, cache)
                except Exception:  # one alert's step is broken: fire the batch alert by alert
                    logger.exception(
                        "Paging engine could not fire a batch of %d steps; firing them one by one", len(ids)
                    )
                    done = None
            if done is None:
                done = await self._one_by_one(ids, now)
            fired.update(ids)
            if done:
                queued += done
                if self.on_paged is not None:
                    self.on_paged(None)
            if len(ids) < BATCH:
                break
        async with self.sessionmaker.begin() as session:
            released = await release_due_dms(session, now)
        if released and self.on_paged is not None:
            self.on_paged(None)
        return queued

    async def _one_by_one(self, ids: list[int], now: datetime) -> int:
        """A batch that failed, alert by alert (a fresh cache): the broken step fails alone."""
        queued, cache = 0, {}
        for alert_id in ids:
            try:
                async with self.sessionmaker.begin() as session:
                    queued += await claim_and_fire(session, alert_id, now, cache) or 0
            except Exception:
                logger.exception("Paging engine could not fire the escalation step of alert #%s", alert_id)
        return queued

    async def next_delay(self) -> float:
        due, self._next_due = self._next_due, _UNREAD
        if due is _UNREAD:  # the tick fired or released something: look again
            async with self.sessionmaker() as session:
                due = await next_due(session)
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.05, (due - self.now()).total_seconds()))


# --- what the outbox worker learns when it delivers a page (``bot.slack.paging``) --------------
async def page_and_person(session: AsyncSession, page_id: object) -> tuple[Page | None, User | None]:
    """The page a ``page`` outbox message names, and the person it pages (None for a channel)."""
    page = await session.get(Page, page_id) if isinstance(page_id, int) else None
    person = await session.get(User, page.user_id) if page is not None and page.user_id is not None else None
    return page, person


async def record_delivery(
    session: AsyncSession, page: Page, status: str, text: str, now: datetime, where: tuple[str, str] | None = None
) -> None:
    """What became of a queued page (and ``where`` Slack put it), on its row and the alert's
    timeline — once: a page already settled is left as it is."""
    placed = {"slack_channel": where[0], "slack_ts": where[1] or None} if where else {}
    if status == FAILED and page.channel == SLACK_DM and page.user_id is not None:
        changed = await session.execute(
            update(Page)
            .where(Page.id == page.id, Page.status == constant(QUEUED))
            .values(status=status, settled_at=now, reason=f"{page.reason or ''}; {text}"[:300])
            .execution_options(synchronize_session=False)
        )
        if changed.rowcount:  # Slack refused the DM: the person's next channel, at once
            await fall_through(session, page, now, text)
        return
    changed = await session.execute(
        update(Page)
        .where(Page.id == page.id, Page.status == constant(QUEUED))
        .values(status=status, settled_at=now, reason=f"{page.reason or ''}; {text}"[:300], **placed)
        .execution_options(synchronize_session=False)
    )
    # Read under the alert's row lock (PostgreSQL; SQLite's transactions are serial anyway): an
    # acknowledgement committed while Slack was taking this page found no page in Slack to redraw
    # (``stop`` redraws SENT pages with a ts, and this one was QUEUED); it is redrawn here instead.
    # With the lock, either that acknowledgement commits first and is seen here, or it waits for
    # this commit and its ``stop`` sees the page SENT: never neither (both is a harmless repeat).
    alert = await session.get(Alert, page.alert_id, with_for_update=True, populate_existing=True)
    if changed.rowcount and alert is not None and status == SENT and placed.get("slack_ts"):
        if alert.status == AlertStatus.CLOSED or alert.acknowledged:
            await _redraw(session, alert, [page])
    if changed.rowcount and alert is not None:
        outcome = {SENT: "applied", FAILED: "failed"}.get(status, "skipped")
        await alerts.record(
            session,
            alert,
            "page",
            outcome,
            engine_actor(None),
            now=now,
            reason=f"{step_label(page.step, page.repeat_round)}: {text}"[:500],
        )
