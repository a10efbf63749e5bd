"""Bolt middlewares, in the order ``install`` adds them: the runtime into the context, the
clicker from another organization, and the drop of Slack's retries and replays."""

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
    async def inject_runtime(context: AsyncBoltContext, next):  # noqa: A002 - Bolt's name
        context["genie"] = rt
        await next()

    async def drop_event_retries(
        body: dict,
        req: AsyncBoltRequest,
        context: AsyncBoltContext,
        next,  # noqa: A002 - Bolt's name
        logger: logging.Logger,
    ):
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
            if is_alert_click(body):
                # Taken in inside the click's own transaction, after the ack (``alerts._act``):
                # the ack then never waits for the database, and the click is one transaction.
                context[REPLAY_KEY], key = key, None
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
