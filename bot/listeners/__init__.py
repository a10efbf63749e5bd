"""Slack glue. Each folder exposes ``register(app)``; listeners ack first, call one service,
hand the result to a builder and make one Slack call."""

from __future__ import annotations

import logging

from typing import Mapping

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.request.payload_utils import (
    to_action,
    to_command,
    to_event,
    to_message,
    to_options,
    to_shortcut,
    to_step,
    to_view,
)
from slack_bolt.response import BoltResponse
from slack_sdk.signature import SignatureVerifier

from bot.blocks.mrkdwn import escape
from bot.runtime import Runtime
from bot.services import slack_events
from bot.services.errors import GenieError
from bot.services.linking import SlackIdentity

logger = logging.getLogger(__name__)


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
    from bot.slack.notify import SLACK_FAILURES

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


#: Request types Genie's listeners take (slash commands have no type); Bolt itself answers
#: url_verification and ssl_check.
HANDLED_TYPES = {"block_actions", "event_callback"}


def _text(value, *, required: bool = True) -> bool:
    return isinstance(value, str) and (bool(value) or not required) and len(value) <= 4000


def malformed(body: dict) -> str | None:
    """What is wrong with a (correctly signed) request that no real Slack would send, or None.

    Bolt's listener matchers index into the payload (``action["action_id"]``,
    ``body["event"]["type"]`` …) and would raise, and an identity without its ids would be
    judged as somebody: so the shape is checked once, here, before any listener sees it."""
    if "event" in body and not isinstance(body["event"], dict):  # Bolt reads event.bot_id of any request
        return "an event that is not an object"
    if "command" in body:
        if not (_text(body.get("command")) and _text(body.get("user_id")) and _text(body.get("team_id"))
                and _text(body.get("text", ""), required=False)):
            return "a slash command without its command, user_id, team_id or text"
        return None
    kind = body.get("type")
    if kind == "block_actions":
        actions = body.get("actions")
        if not isinstance(actions, list) or not actions or not all(
                isinstance(a, dict) and _text(a.get("action_id")) and _text(a.get("block_id", ""), required=False)
                for a in actions):
            return "block_actions without a list of actions, each with an action_id"
        user, team, enterprise = body.get("user"), body.get("team"), body.get("enterprise")
        if not isinstance(user, dict) or not _text(user.get("id")):
            return "block_actions without the user's id"
        if not (isinstance(team, dict) and _text(team.get("id"))) and not (
                team is None and isinstance(enterprise, dict) and _text(enterprise.get("id"))):
            return "block_actions without the workspace's id"
        if not _text(body.get("response_url", ""), required=False):
            return "block_actions with a response_url that is not text"
        return None
    if kind == "event_callback":
        event = body.get("event")
        if not isinstance(event, dict) or not _text(event.get("type")) or not _text(body.get("event_id")):
            return "an event_callback without an event (with a type) and an event_id"
        if not (_text(body.get("team_id")) or _text(body.get("enterprise_id"))):
            return "an event_callback without the workspace's id"
        return None
    return None


def screen(raw: bytes, headers: Mapping[str, str], signing_secret: str | None,
           query: Mapping[str, str] | None = None) -> tuple[int, str] | AsyncBoltRequest:
    """``(status, text)`` to answer a POST to /slack/events with instead of handing it to Bolt,
    or the ``AsyncBoltRequest`` to hand it (``app.async_dispatch``) — built once, as Bolt's
    Starlette adapter builds it: parsing a click's body (the whole alert message, form-encoded
    JSON) is a good part of a click's cost, and was done twice.

    Bolt parses the body and digs into it (``to_action``, ``to_view`` … for every middleware
    and listener call) before its error handling is in place: a body it cannot parse, or a
    payload of an odd shape (``"actions": []``, ``"user": "x"``), is a 500 there. So the
    signature is checked first (401, as Bolt would), then the body is parsed exactly as Bolt
    parses it and looked at as Bolt will look at it: what fails is a 400. A well-formed request
    of a kind Genie has no listener for is acknowledged (200) and ignored."""
    try:
        text = raw.decode("utf-8")
        signed = signing_secret is not None and SignatureVerifier(signing_secret).is_valid(
            body=text, timestamp=headers.get("x-slack-request-timestamp"), signature=headers.get("x-slack-signature"))
    except (UnicodeDecodeError, ValueError):  # not UTF-8; a timestamp that is not a number
        signed = False
    if not signed:
        return 401, '{"error": "invalid request"}'
    try:
        request = AsyncBoltRequest(body=text, query=query, headers=headers)  # type: ignore[arg-type]
        body = request.body
        if not isinstance(body, dict):
            raise TypeError("not an object")
        for look in (to_options, to_shortcut, to_action, to_view, to_command, to_event, to_message, to_step):
            look(body)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as err:
        logger.warning("refused a Slack request Genie cannot read (%s)", type(err).__name__)
        return 400, "Malformed Slack request: it cannot be read."
    problem = malformed(body)
    if problem is not None:
        logger.warning("refused a malformed Slack request: %s", problem)
        return 400, f"Malformed Slack request: {problem}."
    kind = body.get("type")
    if "command" not in body and (not isinstance(kind, str) or kind not in HANDLED_TYPES | {"url_verification"}):
        logger.info("ignored a Slack request of type %r: Genie has no listener for it", str(kind)[:40])
        return 200, ""
    return request


def register_listeners(app: AsyncApp, rt: Runtime) -> None:
    from bot.listeners import actions, commands, events

    async def inject_runtime(context: AsyncBoltContext, next):  # noqa: A002 - Bolt's name
        context["genie"] = rt
        await next()

    async def drop_event_retries(body: dict, req: AsyncBoltRequest, next, logger: logging.Logger):  # noqa: A002
        """Slack re-sends an event it thinks failed (``X-Slack-Retry-Num``); a delivery whose
        ``event_id`` was taken in before is answered 200 and does nothing. Clicks and slash
        commands carry no such id, but each real one is a body Slack never sends twice (its
        ``trigger_id``, ``action_ts``, ``response_url`` are new every time): a signed body seen
        before is a replay within the signature's 5 minutes, and is dropped the same way, by a
        digest of the body (``slack_events.body_key``). Runs after Bolt has verified the
        signature, so a forged request cannot burn a real event's id or body."""
        if body.get("type") == "event_callback":
            event_id = body.get("event_id")
            key = event_id if isinstance(event_id, str) and 0 < len(event_id) <= slack_events.MAX_EVENT_ID else None
        elif ("command" in body or body.get("type") == "block_actions") and req.mode == "http" and req.raw_body:
            key = slack_events.body_key(req.raw_body)  # (Socket Mode: nothing signed to replay)
        else:
            key = None
        if key is not None:
            async with rt.sessionmaker.begin() as session:
                first = await slack_events.first_delivery(session, key)
            if not first:
                logger.info("Slack request %s was already taken in; ignoring this delivery", key)
                return BoltResponse(status=200, body="")
        await next()

    async def mark_external_clickers(body: dict, context: AsyncBoltContext, next):  # noqa: A002 - Bolt's name
        if (outsider := external_clicker(body)) is not None:
            context["genie_actor"] = outsider
        await next()

    app.middleware(inject_runtime)
    app.middleware(mark_external_clickers)
    app.middleware(drop_event_retries)
    commands.register(app)
    actions.register(app)
    events.register(app)
    app.error(on_error)


async def on_error(error: Exception, body: dict, respond, logger: logging.Logger) -> None:
    """One error path: domain errors become an ephemeral message; the unexpected is logged."""
    if isinstance(error, GenieError):
        text = str(error)
    else:
        logger.exception("unhandled error in a Slack listener", exc_info=error)
        text = "Something went wrong on Genie's side. Please try again in a moment."
    if body.get("response_url"):
        who = (body.get("user") or {}).get("id") if isinstance(body.get("user"), dict) else body.get("user_id")
        await tell(respond, str(who), "about the error", text=escape(text), response_type="ephemeral",
                   replace_original=False)
