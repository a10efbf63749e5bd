"""``app_home_opened``: publish the Home tab with the person's link state."""

from __future__ import annotations

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.listeners.context import identity_from, runtime
from bot.slack.home import publish_home


async def app_home_opened(ack, event: dict, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    await ack()
    if event.get("tab", "home") != "home":
        return
    # The Home tab is published directly, not through the outbox: it is a snapshot redrawn on every
    # open, so a lost publish loses nothing (see bot.slack.home.publish_home).
    await publish_home(runtime(context), client, identity_from(context))
