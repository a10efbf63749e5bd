"""Slack glue. Each folder exposes ``register(app)``; listeners ack first, call one service,
hand the result to a builder and make one Slack call."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.response import BoltResponse

from bot.runtime import Runtime
from bot.services import slack_events
from bot.services.errors import GenieError
from bot.services.linking import SlackIdentity

logger = logging.getLogger(__name__)


def runtime(context: AsyncBoltContext) -> Runtime:
    return context["genie"]


def identity_from(context: AsyncBoltContext) -> SlackIdentity:
    """The person who acted. In shared (Slack Connect) channels Bolt's ``actor_*`` ids name the
    clicker's own organization; otherwise they equal the installation's ids."""
    team_id = context.actor_team_id or context.team_id or ""
    user_id = context.actor_user_id or context.user_id or ""
    enterprise_id = context.actor_enterprise_id or context.enterprise_id
    return SlackIdentity(team_id=team_id, user_id=user_id, enterprise_id=enterprise_id or None)


async def tell(respond, who: str, what: str, **message) -> bool:
    """Answer the person who clicked or typed, through Slack's ``response_url``. Slack may refuse
    or be unreachable; the state change (or the refusal) is committed and on the timeline
    already, so that is logged — with ``what`` the person missed — and not raised."""
    from bot.notify import SLACK_FAILURES

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


def register_listeners(app: AsyncApp, rt: Runtime) -> None:
    from bot.listeners import actions, commands, events

    async def inject_runtime(context: AsyncBoltContext, next):  # noqa: A002 - Bolt's name
        context["genie"] = rt
        await next()

    async def drop_event_retries(body: dict, next, logger: logging.Logger):  # noqa: A002 - Bolt's name
        """Slack re-sends an event it thinks failed (``X-Slack-Retry-Num``); a delivery whose
        ``event_id`` was taken in before is answered 200 and does nothing. Runs after Bolt has
        verified the signature, so a forged request cannot burn a real event's id."""
        event_id = body.get("event_id") if body.get("type") == "event_callback" else None
        if isinstance(event_id, str) and 0 < len(event_id) <= slack_events.MAX_EVENT_ID:
            async with rt.sessionmaker.begin() as session:
                first = await slack_events.first_delivery(session, event_id)
            if not first:
                logger.info("Slack event %s was already taken in; ignoring this delivery", event_id)
                return BoltResponse(status=200, body="")
        await next()

    app.middleware(inject_runtime)
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
        await tell(respond, str(who), "about the error", text=text, response_type="ephemeral", replace_original=False)
