"""Buttons about the link itself: the Connect URL button and Disconnect."""

from __future__ import annotations

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.linking import disconnected_text
from bot.listeners.context import identity_from, runtime, tell
from bot.services import slack_links
from bot.slack.home import publish_home
from bot.slack.render import link_view


async def ack_only(ack) -> None:
    """A URL button opens the browser; Slack still sends block_actions, which must be acked."""
    await ack()


async def disconnect(ack, body: dict, context: AsyncBoltContext, client: AsyncWebClient, respond) -> None:
    """Disconnect from App Home or from a ``/genie`` answer (after Slack's confirm dialog)."""
    await ack()
    rt, identity = runtime(context), identity_from(context)
    async with rt.sessionmaker.begin() as session:
        link = await slack_links.unlink(session, identity)
        view = link_view(link) if link else None
    if body.get("response_url"):
        await tell(
            respond,
            identity.user_id,
            "that the link was removed",
            text=disconnected_text(view),
            replace_original=True,
            response_type="ephemeral",
        )
    # The Home tab is published directly, not through the outbox: it is a snapshot redrawn on every
    # open, so a lost publish loses nothing (see bot.slack.home.publish_home).
    await publish_home(rt, client, identity)
