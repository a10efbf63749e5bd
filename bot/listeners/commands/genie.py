"""``/genie connect | status | disconnect | oncall [team] | help``."""

from __future__ import annotations

import logging

from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.linking import connect_message, disconnected_text, help_blocks, linked_message, status_text
from bot.blocks.mrkdwn import escape
from bot.blocks.oncall import oncall_message
from bot.listeners.context import identity_from, runtime
from bot.services import heartbeats, rosters, slack_links, throttle
from bot.services.errors import GenieError
from bot.services.slack_links import SlackProfile
from bot.slack.home import publish_home
from bot.slack.profiles import fetch_profile, time_zone
from bot.slack.render import link_view

logger = logging.getLogger(__name__)


async def genie_command(ack, body: dict, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    words = (body.get("text") or "").strip().split()
    sub = words[0].lower() if words else "help"
    if sub == "connect":
        await connect(ack, body, context, client)
    elif sub == "status":
        await status(ack, context)
    elif sub == "disconnect":
        await disconnect(ack, context, client)
    elif sub == "oncall":
        await oncall(ack, " ".join(words[1:]), context, client)
    else:
        await ack(response_type="ephemeral", text="Genie help", blocks=help_blocks(None if sub == "help" else words[0]))


async def connect(ack, body: dict, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    rt, identity = runtime(context), identity_from(context)
    workspace_name = body.get("team_domain")
    async with rt.sessionmaker.begin() as session:
        wait = await throttle.take(session, "connect", identity)
    if wait is not None:
        limit, window = throttle.LIMITS["connect"]
        await ack(
            response_type="ephemeral",
            text=f"You asked for {limit} connect links in the last {throttle.say(window)}, so Genie is not "
            f"making another one now. Try again in {throttle.say(wait)}; the last link you got still works "
            "until it expires.",
        )
        return
    async with rt.sessionmaker.begin() as session:
        link = await slack_links.current_link(session, identity)
        view = link_view(link) if link else None
        request = await slack_links.issue_link(
            session, identity, SlackProfile(workspace_name=workspace_name), rt.settings.link_ttl
        )
    url = rt.link_url(rt.tokens.dump(request.nonce))
    if view is None:
        await ack(
            response_type="ephemeral",
            text="Connect your Genie account",
            blocks=connect_message(identity.user_id, url, rt.settings.link_ttl, workspace_name),
        )
    else:
        await ack(
            response_type="ephemeral",
            text=f"You're connected to Genie as {escape(view.user_email)}",
            blocks=linked_message(identity.user_id, view, relink_url=url),
        )
    # After the ack (Slack's 3 seconds): who this is, for the confirm page's anti-phishing check.
    profile = await fetch_profile(client, identity, workspace_name)
    if profile is not None:
        async with rt.sessionmaker.begin() as session:
            await slack_links.record_profile(session, request.nonce, profile)


async def status(ack, context: AsyncBoltContext) -> None:
    rt, identity = runtime(context), identity_from(context)
    async with rt.sessionmaker() as session:
        link = await slack_links.current_link(session, identity)
        view = link_view(link) if link else None
        late = (
            [
                heartbeats.late_line(h, team)
                for h, team in await heartbeats.late_for_user(session, link.user_id, rt.now())
            ]
            if link is not None
            else []
        )
    await ack(response_type="ephemeral", text=status_text(identity.user_id, view, late))


async def disconnect(ack, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    rt, identity = runtime(context), identity_from(context)
    async with rt.sessionmaker.begin() as session:
        link = await slack_links.unlink(session, identity)
        view = link_view(link) if link else None
    await ack(response_type="ephemeral", text=disconnected_text(view))
    if link is not None:
        # The Home tab is published directly, not through the outbox: it is a snapshot redrawn on every
        # open, so a lost publish loses nothing (see bot.slack.home.publish_home).
        await publish_home(rt, client, identity)


async def oncall(ack, team: str, context: AsyncBoltContext, client: AsyncWebClient) -> None:
    """Who is on call now and next for ``team`` (default: the asker's teams), in the asker's
    Slack time zone; only to a person connected to an active Genie account."""
    rt, identity = runtime(context), identity_from(context)
    async with rt.sessionmaker() as session:
        link = await slack_links.current_link(session, identity)
        if link is None or not link.user.is_active:
            await ack(
                response_type="ephemeral",
                text="Genie shows who is on call to its own people: connect your Genie account first with "
                "`/genie connect`."
                if link is None
                else "Your Genie account is deactivated, so Genie shows you no on-call schedules.",
            )
            return
        now = rt.now()
        try:
            found = await rosters.team_rosters(session, [team] if team else None, link.user_id, now)
        except GenieError as err:
            await ack(response_type="ephemeral", text=escape(str(err)))
            return
    tz = await time_zone(client, identity.user_id, timeout=1.5)  # the answer is the ack: Slack waits 3 s
    text, blocks = oncall_message(found, tz, now)
    await ack(response_type="ephemeral", text=text, blocks=blocks)
