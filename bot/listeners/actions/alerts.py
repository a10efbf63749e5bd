"""Acknowledge / I've got it / Close / Assign… on an alert message. Ack first (Slack's 3 seconds), then one
use case decides and acts; a refusal or a lost race is told to the clicker alone."""

from __future__ import annotations

import logging

from slack_bolt.context.async_context import AsyncBoltContext

from bot import metrics
from bot.blocks.alerts import ButtonValue, refusal_message
from bot.listeners.context import REPLAY_KEY, identity_from, runtime, tell
from bot.services import slack_events, slack_links
from bot.services.click_batch import Click
from bot.services.slack_links import SlackProfile
from storage.models import AlertAction

logger = logging.getLogger(__name__)


async def acknowledge(ack, body: dict, context: AsyncBoltContext, respond) -> None:
    await ack()
    await _act(body, context, respond, AlertAction.ACKNOWLEDGE)


async def close(ack, body: dict, context: AsyncBoltContext, respond) -> None:
    await ack()
    await _act(body, context, respond, AlertAction.CLOSE)


async def assign(ack, body: dict, context: AsyncBoltContext, respond) -> None:
    await ack()
    await _act(body, context, respond, AlertAction.ASSIGN)


async def take(ack, body: dict, context: AsyncBoltContext, respond) -> None:
    """ "I've got it": assign to the clicker and acknowledge (``actions._take``)."""
    await ack()
    await _act(body, context, respond, AlertAction.TAKE)


def _raw_value(body: dict) -> str | None:
    actions_ = body.get("actions")
    if not isinstance(actions_, list) or not actions_ or not isinstance(actions_[0], dict):
        return None
    action = actions_[0]
    selected = action.get("selected_option")
    if isinstance(selected, dict):
        return selected.get("value") if isinstance(selected.get("value"), str) else None
    return action.get("value") if isinstance(action.get("value"), str) else None


async def _act(body: dict, context: AsyncBoltContext, respond, action: AlertAction) -> None:
    async with runtime(context).after_ack():
        await _decide(body, context, respond, action)


async def _decide(body: dict, context: AsyncBoltContext, respond, action: AlertAction) -> None:
    rt, identity = runtime(context), identity_from(context)
    replay = context.get(REPLAY_KEY)  # None in Socket Mode (nothing signed to replay)
    value = ButtonValue.parse(_raw_value(body))
    if value is None or (action == AlertAction.ASSIGN and value.user is None):
        if replay is not None:
            async with rt.sessionmaker.begin() as session:
                if not await slack_events.first_delivery(session, replay):
                    return _replayed(replay)
        metrics.count_decision(action, "invalid", "bad_value")
        await tell(
            respond,
            identity.user_id,
            "that the button was not Genie's",
            text="That button doesn't belong to a Genie alert I know, so nothing was changed.",
            response_type="ephemeral",
            replace_original=False,
        )
        return
    # In a transaction shared with the other clicks of the moment (``click_batch``); answered
    # once committed.
    acted = await rt.clicks.act(
        Click(
            identity,
            action,
            value.alert,
            anonymous_default=rt.settings.allow_anonymous_actions,
            assignee_id=value.user,
            replay=replay,  # taken in with the gate's facts (one round trip on PostgreSQL)
        )
    )
    result = acted.result
    if result.outcome == "replayed":
        return _replayed(replay)
    metrics.count_decision(action, result.outcome, result.reason)  # committed: it is on the timeline
    if result.applied:
        for channel, lane in (acted.channels or {result.channel: None}).items():
            rt.wake_outbox(channel, paging=False, lane=lane)  # a click never starts an escalation
        return
    connect_url = then = None
    if result.needs_link:
        # The click is remembered with the link: once it is confirmed, Genie carries it out
        # through the gate (actions.carry_out) — the person need not find the alert again.
        pending = slack_links.PendingClick(action, result.alert_id, value.user, *_where(body))
        async with rt.sessionmaker.begin() as session:
            request = await slack_links.issue_link(
                session, identity, SlackProfile(workspace_name=_domain(body)), rt.settings.link_ttl, pending=pending
            )
        connect_url = rt.link_url(rt.tokens.dump(request.nonce))
        then = f"{action} alert #{result.alert_id}"
    text, blocks = refusal_message(
        result.text or "Nothing was changed.",
        connect_url=connect_url,
        offer_disconnect_for=result.linked_inactive_email,
        then=then,
    )
    await tell(
        respond,
        identity.user_id,
        f"why {action} changed nothing on alert #{result.alert_id or '?'}",
        text=text,
        response_type="ephemeral",
        replace_original=False,
        blocks=blocks,
    )


def _replayed(key: str) -> None:
    """A signed click body taken in before (a replay within the signature's 5 minutes): acked,
    and nothing else — nothing written, nobody told."""
    logger.info("Slack request %s was already taken in; ignoring this delivery", key)


def _where(body: dict) -> tuple[str | None, str | None]:
    """The channel and ts of the message clicked (for the record; never trusted for access)."""
    container = body.get("container") if isinstance(body.get("container"), dict) else {}
    channel, ts = container.get("channel_id"), container.get("message_ts")
    return (
        channel if isinstance(channel, str) and len(channel) <= 32 else None,
        ts if isinstance(ts, str) and len(ts) <= 32 else None,
    )


def _domain(body: dict) -> str | None:
    team = body.get("team")
    return team.get("domain") if isinstance(team, dict) and isinstance(team.get("domain"), str) else None
