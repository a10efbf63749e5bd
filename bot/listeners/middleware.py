"""Genie's one Bolt middleware (``install``), in this order: the runtime into the context, the
clicker from another organization, and the drop of Slack's retries and replays. One middleware
rather than three: Bolt builds each middleware's arguments and wraps its ``next`` on every
request, and a click is the request Genie takes most."""

from __future__ import annotations

import logging

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse

from bot.listeners.context import REPLAY_KEY, external_clicker, is_alert_click
from bot.runtime import Runtime
from bot.services import slack_events


def install(app: AsyncApp, rt: Runtime) -> None:
    async def genie_context(
        body: dict,
        req: AsyncBoltRequest,
        context: AsyncBoltContext,
        next,  # noqa: A002 - Bolt's name
        logger: logging.Logger,
    ):
        context["genie"] = rt
        if (outsider := external_clicker(body)) is not None:
            context["genie_actor"] = outsider
        key = replay_key(body, req, context)
        if key is not None:
            async with rt.sessionmaker.begin() as session:
                first = await slack_events.first_delivery(session, key)
            if not first:
                logger.info("Slack request %s was already taken in; ignoring this delivery", key)
                return BoltResponse(status=200, body="")
        await next()

    app.middleware(genie_context)


def replay_key(body: dict, req: AsyncBoltRequest, context: AsyncBoltContext) -> str | None:
    """The drop of Slack's retries and replays: the key to take the request in by before any
    listener runs, or None.

    Slack re-sends an event it thinks failed (``X-Slack-Retry-Num``); a delivery whose
    ``event_id`` was taken in before is answered 200 and does nothing. Clicks and slash
    commands carry no such id, but each real one is a body Slack never sends twice (its
    ``trigger_id``, ``action_ts``, ``response_url`` are new every time): a signed body seen
    before is a replay within the signature's 5 minutes, and is dropped the same way, by a
    digest of the body (``slack_events.body_key``). Runs after Bolt has verified the
    signature, so a forged request cannot burn a real event's id or body. An alert click's key
    is left in the context instead (``REPLAY_KEY``), for the click's own transaction to take in
    after the ack (``alerts._act``): the ack then never waits for the database, and the click
    is one transaction."""
    if body.get("type") == "event_callback":
        event_id = body.get("event_id")
        return event_id if isinstance(event_id, str) and 0 < len(event_id) <= slack_events.MAX_EVENT_ID else None
    if ("command" in body or body.get("type") == "block_actions") and req.mode == "http" and req.raw_body:
        key = slack_events.body_key(req.raw_body)  # (Socket Mode: nothing signed to replay)
        if is_alert_click(body):
            context[REPLAY_KEY] = key
            return None
        return key
    return None
