"""What every listener reads from Bolt's context — the runtime, the person who acted — and
``tell``, the one way a listener answers that person."""

from __future__ import annotations

import logging

from slack_bolt.context.async_context import AsyncBoltContext

from bot.ids import Action
from bot.runtime import Runtime
from bot.services.slack_links import SlackIdentity
from bot.slack.clients import SLACK_FAILURES

logger = logging.getLogger(__name__)


#: Where ``middleware.replay_key`` leaves the replay key of an alert click for the click's own
#: transaction to take in (``slack_events.first_delivery``), after the ack.
REPLAY_KEY = "genie_replay_key"
ALERT_CLICKS = frozenset({Action.ALERT_ACKNOWLEDGE, Action.ALERT_CLOSE, Action.ALERT_ASSIGN, Action.ALERT_TAKE})


def is_alert_click(body: dict) -> bool:
    """A click on an alert message's button (its listener takes the replay check in itself)."""
    actions = body.get("actions") if body.get("type") == "block_actions" else None
    first = actions[0] if isinstance(actions, list) and actions and isinstance(actions[0], dict) else {}
    return first.get("action_id") in ALERT_CLICKS


def runtime(context: AsyncBoltContext) -> Runtime:
    return context["genie"]


def identity_from(context: AsyncBoltContext) -> SlackIdentity:
    """The person who acted. In shared (Slack Connect) channels Bolt's ``actor_*`` ids name the
    clicker's own organization; otherwise they equal the installation's ids. For clicks Bolt
    names the host workspace: ``external_clicker`` corrects that first."""
    if isinstance(context.get("genie_actor"), SlackIdentity):
        return context["genie_actor"]
    team_id = context.actor_team_id or context.team_id or ""
    user_id = context.actor_user_id or context.user_id or ""
    enterprise_id = context.actor_enterprise_id or context.enterprise_id
    return SlackIdentity(team_id=team_id, user_id=user_id, enterprise_id=enterprise_id or None)


async def tell(respond, who: str, what: str, **message) -> bool:
    """Answer the person who clicked or typed, through Slack's ``response_url``. Slack may refuse
    or be unreachable; the state change (or the refusal) is committed and on the timeline
    already, so that is logged — with ``what`` the person missed — and not raised."""
    if not getattr(respond, "response_url", None):  # e.g. a click in App Home: nowhere to answer
        logger.info("could not tell Slack user %s %s: the request came without a response_url", who, what)
        return False
    try:
        answer = await respond(**message)
    except SLACK_FAILURES as err:
        logger.warning("could not tell Slack user %s %s: response_url failed (%s)", who, what, type(err).__name__)
        return False
    status = getattr(answer, "status_code", 200)
    if status != 200:
        logger.warning("could not tell Slack user %s %s: response_url answered HTTP %s", who, what, status)
        return False
    return True


def external_clicker(body: dict) -> SlackIdentity | None:
    """A ``block_actions`` clicker from another organization (Slack Connect), or None.

    Bolt names a clicker by the payload's ``team`` (the workspace whose channel holds the
    message) and ``user.id``; the clicker's own workspace is ``user.team_id``. When the two
    differ outside Enterprise Grid, the clicker belongs to another organization: they are
    identified as ``(their workspace, their user id)``, flagged external, and never taken for
    this workspace's linked user. (On Grid, ``user.team_id`` may be another workspace of the
    same org, which the payload cannot tell from a foreign one; there the org id keys the
    identity as before.)"""
    if body.get("type") != "block_actions" or body.get("enterprise") or body.get("is_enterprise_install") is True:
        return None
    user, team = body.get("user"), body.get("team")
    if not isinstance(user, dict) or not isinstance(team, dict):
        return None
    own, host = user.get("team_id"), team.get("id")
    if isinstance(own, str) and own and isinstance(host, str) and own != host and isinstance(user.get("id"), str):
        return SlackIdentity(team_id=own, user_id=user["id"], external=True)
    return None
