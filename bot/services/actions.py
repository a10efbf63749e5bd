"""A click on an alert's button in Slack: decide, then act, and put both on the timeline.

Button values are never trusted: the alert is re-read here and access re-checked on every
click, whatever the button claimed.

    async with sessionmaker.begin() as session:
        result = await act(session, identity, AlertAction.ACKNOWLEDGE, alert_id, anonymous_default=False)
    if not result.applied:
        tell_the_person(result.text)
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from sqlalchemy.ext.asyncio import AsyncSession

from bot.ids import Intent
from bot.services import access, alerts, outbox, throttle, users
from bot.services.access import Decision, Reason
from bot.services.alerts import Actor, AlreadyDone, Forbidden
from bot.services.slack_links import SlackIdentity
from storage.models import Alert, AlertAction, LinkRequest, SlackLink, User


# --- what each action does once the gate allowed it -------------------------------------------
async def _acknowledge(
    session: AsyncSession, alert: Alert, actor: Actor, why: str, assignee_id: int | None, note: str | None
) -> str | None:
    await alerts.acknowledge(session, alert, actor, why=why)
    return None


async def _close(
    session: AsyncSession, alert: Alert, actor: Actor, why: str, assignee_id: int | None, note: str | None
) -> str | None:
    await alerts.close(session, alert, actor, why=why)
    return None


async def _assign(
    session: AsyncSession, alert: Alert, actor: Actor, why: str, assignee_id: int | None, note: str | None
) -> str | None:
    """None when assigned; the problem (a key of ``PROBLEMS``) when there is no such person."""
    owner = await users.user_by_id(session, assignee_id) if assignee_id is not None else None
    if owner is None:
        await alerts.record(session, alert, AlertAction.ASSIGN, "denied", actor, reason="unknown assignee")
        return "unknown_assignee"
    await alerts.assign(session, alert, actor, owner, why=why)
    return None


async def _note(
    session: AsyncSession, alert: Alert, actor: Actor, why: str, assignee_id: int | None, note: str | None
) -> str | None:
    if not note or not note.strip() or len(note) > alerts.LIMITS["note"]:
        return "bad_note"
    await alerts.add_note(session, alert, actor, note.strip())
    return None


async def _take(
    session: AsyncSession, alert: Alert, actor: Actor, why: str, assignee_id: int | None, note: str | None
) -> str | None:
    """ "I've got it" (OpsGenie's *take ownership*): the clicker becomes the assignee and the
    alert is acknowledged, so the escalation stops paging others — one click, two entries on the
    timeline (assign, acknowledge). Whatever is already so is left as it is; both already so:
    ``AlreadyDone``. A person who may act but cannot be assigned (an admin or a paged person not
    in the team) is refused by ``alerts.assign`` (``Forbidden``), and nothing is acknowledged."""
    if actor.user is None:  # an anonymous click: there is nobody to assign
        await alerts.record(session, alert, AlertAction.TAKE, "denied", actor, reason="anonymous")
        return "take_anonymous"
    why = f"{why}; I've got it"
    took = alert.owner_user_id != actor.user.id
    if took:
        await alerts.assign(session, alert, actor, actor.user, why=why)
    if not alert.acknowledged:
        await alerts.acknowledge(session, alert, actor, why=why)
    elif not took:
        text = f"Alert #{alert.id} is already yours and acknowledged."
        await alerts.record(session, alert, AlertAction.TAKE, "noop", actor, reason=text)
        raise AlreadyDone(text)
    return None


_Apply = Callable[[AsyncSession, Alert, Actor, str, "int | None", "str | None"], Awaitable["str | None"]]
#: What each action does once the gate allowed it.
APPLY: dict[AlertAction, _Apply] = {
    AlertAction.ACKNOWLEDGE: _acknowledge,
    AlertAction.CLOSE: _close,
    AlertAction.ASSIGN: _assign,
    AlertAction.NOTE: _note,
    AlertAction.TAKE: _take,
}
#: The actions a Slack button may ask for …
ACTIONS = (AlertAction.ACKNOWLEDGE, AlertAction.CLOSE, AlertAction.ASSIGN, AlertAction.TAKE)
#: … and what a person signed in to the web side may do on an alert's page (``/alerts/{id}``).
WEB_ACTIONS = (*ACTIONS, AlertAction.NOTE)
#: What the person is told when an allowed action could not be carried out.
PROBLEMS = {
    "unknown_assignee": "That person isn't a Genie user (any more).",
    "take_anonymous": "Connect your Slack account to Genie (`/genie connect`) to take ownership of an alert: "
    "Genie needs to know who you are to assign it to you.",
    "bad_note": f"A note needs some text (at most {alerts.LIMITS['note']:,} characters).",
}


@dataclass(frozen=True)
class ActionResult:
    applied: bool
    #: For the person, when nothing was applied: why (denied), or who got there first (noop).
    text: str | None = None
    decision: Decision | None = None
    alert_id: int | None = None
    #: What became of the click, for operators (``genie_gate_decisions``): applied, noop
    #: (someone got there first), denied, or invalid (no such alert, action or assignee) — or
    #: replayed (the signed body was taken in before: nothing done, nobody told, not counted) …
    outcome: str = "applied"
    #: … and why, as a short label: the gate's reason (member, not_linked …) or what was invalid.
    reason: str = ""
    #: The Slack channel whose message an applied action queued an update of.
    channel: str | None = None

    @property
    def needs_link(self) -> bool:
        return self.decision is not None and self.decision.reason is Reason.NOT_LINKED

    @property
    def linked_inactive_email(self) -> str | None:
        d = self.decision
        return d.user.email if d is not None and d.reason is Reason.INACTIVE and d.user else None


async def act(
    session: AsyncSession,
    identity: SlackIdentity,
    action: str,
    alert_id: int,
    *,
    anonymous_default: bool,
    assignee_id: int | None = None,
    after_link: bool = False,
    replay: str | None = None,
) -> ActionResult:
    """A click: the gate's facts read now, ``decide``, the transition, all on the timeline.
    ``replay``: the click's replay key (``slack_events.body_key``), taken in with the facts
    (``access.gate_facts``); a body taken in before changes nothing (outcome ``replayed``)."""
    if action not in ACTIONS:
        return ActionResult(False, "That action isn't one Genie knows.", outcome="invalid", reason="unknown_action")
    action = AlertAction(action)
    facts = await access.gate_facts(session, identity, alert_id, anonymous_default, replay=replay)
    if facts is access.REPLAYED:
        return ActionResult(False, outcome="replayed", reason="replayed")
    return await _decide_and_apply(
        session, facts, action, via="slack", identity=identity, assignee_id=assignee_id, after_link=after_link
    )


async def act_on_web(
    session: AsyncSession,
    user: User,
    action: str,
    alert_id: int,
    *,
    assignee_id: int | None = None,
    note: str | None = None,
    seen: str | None = None,
) -> ActionResult:
    """An action from the alert's web page, by the signed-in ``user``: the same gate (``decide``
    on facts read now) and the same transitions as a Slack click, recorded ``via web``.
    ``seen``: the alert's ``updated_at`` when the page was drawn; if it changed since, nothing
    is done and the person is told (they acted on a picture that is no longer true)."""
    if action not in WEB_ACTIONS:
        return ActionResult(False, "That action isn't one Genie knows.", outcome="invalid", reason="unknown_action")
    action = AlertAction(action)
    facts = await access.person_facts(session, user, alert_id)
    if facts is not None and seen is not None and action != AlertAction.NOTE and seen != version(facts.alert):
        return ActionResult(
            False,
            "This alert changed while you were looking at it (see its timeline below): "
            "nothing was done. Check it and try again if it still needs doing.",
            alert_id=facts.alert.id,
            outcome="noop",
            reason="changed",
        )
    return await _decide_and_apply(session, facts, action, via="web", identity=None, assignee_id=assignee_id, note=note)


def version(alert: Alert) -> str:
    """What an alert page remembers of the alert it showed (``act_on_web``'s ``seen``)."""
    return alert.updated_at.isoformat() if alert.updated_at else ""


async def _decide_and_apply(
    session: AsyncSession,
    facts: access.GateFacts | None,
    action: str,
    *,
    via: str,
    identity: SlackIdentity | None,
    assignee_id: int | None = None,
    after_link: bool = False,
    note: str | None = None,
) -> ActionResult:
    """The one path from facts to a change: ``decide``, then the transition, both on the timeline."""
    if facts is None:
        return ActionResult(
            False,
            "That alert doesn't exist (any more), so there is nothing to do.",
            outcome="invalid",
            reason="unknown_alert",
        )
    alert = facts.alert
    decision = await access.decide(session, facts, action)
    actor = Actor(via=via, user=decision.user, identity=identity, anonymous=decision.anonymous, after_link=after_link)
    reason = decision.reason.name.lower()
    if not decision.allowed:
        if identity is not None:
            wait = await throttle.take(session, "denied", identity)
            if wait is not None:  # refused again and again: no timeline row, no new link, just wait
                limit, window = throttle.LIMITS["denied"]
                text = (
                    f"You were refused {limit} times in the last {throttle.say(window)}, so Genie is ignoring your "
                    f"clicks for {throttle.say(wait)}; nothing was changed. "
                    "`/genie status` says how your Slack account is connected."
                )
                return ActionResult(False, text, alert_id=alert.id, outcome="denied", reason="rate_limited")
        await alerts.record(session, alert, action, "denied", actor, reason=decision.reason.value)
        return ActionResult(False, decision.text, decision, alert.id, outcome="denied", reason=reason)
    why = decision.why or decision.reason.value
    try:
        problem = await APPLY[action](session, alert, actor, why, assignee_id, note)
        if problem is not None:
            return ActionResult(False, PROBLEMS[problem], decision, alert.id, outcome="invalid", reason=problem)
    except AlreadyDone as err:
        return ActionResult(False, str(err), decision, alert.id, outcome="noop", reason=reason)
    except Forbidden as err:  # allowed to assign, but not to that person
        return ActionResult(False, str(err), decision, alert.id, outcome="denied", reason="assignee_not_member")
    return ActionResult(True, None, decision, alert.id, outcome="applied", reason=reason, channel=alert.slack_channel)


# --- the click remembered while the person connected --------------------------------------------
@dataclass(frozen=True)
class CarriedOut:
    """What became of a click remembered with a link request, once the link was confirmed."""

    action: str
    alert_id: int | None
    #: The alert's message ("" when the alert no longer exists).
    message: str
    result: ActionResult
    #: For the person: why it was refused, who got there first, or to whom it was assigned.
    detail: str | None


async def carry_out(
    session: AsyncSession, nonce: str, link: SlackLink, *, anonymous_default: bool
) -> CarriedOut | None:
    """In the confirm's own transaction, right after ``slack_links.redeem`` consumed the request:
    carry out the click it remembered (``slack_links.PendingClick``), if any, as the person just
    linked — through the same gate, read now (being linked is not being allowed) — recorded
    on the timeline "after linking", the alert's message updated through the outbox, and the
    person told the outcome in Slack (a DM, through the outbox). None: nothing was remembered.

    Only the request this confirm consumed counts: an expired, superseded or already used
    request never reaches here (``redeem`` refuses it, and a refused confirm changes nothing)."""
    request = await session.get(LinkRequest, nonce)
    if request is None or request.pending_action is None:
        return None
    action, alert_id = request.pending_action, request.pending_alert_id
    identity = SlackIdentity(link.slack_team_id, link.slack_user_id, link.enterprise_id)
    if alert_id is None:  # the alert was deleted meanwhile
        result = ActionResult(
            False,
            "That alert doesn't exist (any more), so there is nothing to do.",
            outcome="invalid",
            reason="unknown_alert",
        )
    else:
        result = await act(
            session,
            identity,
            action,
            alert_id,
            anonymous_default=anonymous_default,
            assignee_id=request.pending_assignee_id,
            after_link=True,
        )
    alert = await session.get(Alert, alert_id) if alert_id is not None and result.alert_id is not None else None
    detail = result.text
    if result.applied and action == AlertAction.ASSIGN and alert is not None and alert.owner_user_id is not None:
        owner = await users.user_by_id(session, alert.owner_user_id)
        detail = f"to {owner.name}" if owner is not None else None
    done = CarriedOut(action, alert.id if alert else alert_id, alert.message if alert else "", result, detail)
    outcome = result.outcome if result.outcome in ("applied", "denied") else "noop"
    values = {
        "action": action,
        "alert_id": done.alert_id or 0,
        "message": done.message,
        "outcome": outcome,
        "detail": detail,
    }
    await outbox.enqueue(
        session,
        link.slack_user_id,
        outbox.MESSAGE,
        payload=outbox.intent(Intent.AFTER_LINK, **values),
        slack_team_id=link.slack_team_id,
        enterprise_id=link.enterprise_id,
    )
    return done
