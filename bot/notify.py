"""Slack calls shared by the listeners and the web pages: publish a person's App Home,
DM them when their account is connected.

These run after the state change has committed; a Slack failure here is logged and never
undoes the change (the Home tab is re-published the next time it is opened).
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.linking import LinkView, connected_dm, home_view
from bot.alert_render import alert_view
from bot.runtime import Runtime
from bot.services import access
from bot.services import alerts as alert_service
from bot.services import heartbeats, linking, outbox
from bot.services.linking import SlackIdentity, SlackProfile
from storage import repositories as repo
from storage.models import SlackLink

logger = logging.getLogger(__name__)

#: What a Slack Web API call can fail with: an error answer, a transport failure, a timeout.
SLACK_FAILURES = (SlackClientError, aiohttp.ClientError, asyncio.TimeoutError)


def _why(err: Exception) -> str:
    if isinstance(err, SlackApiError):
        return str(err.response.get("error"))
    return type(err).__name__


async def fetch_profile(client: AsyncWebClient, user_id: str, workspace_name: str | None) -> SlackProfile | None:
    """Who a Slack user is (``users.info``: name, profile email), or None if Slack can't say."""
    try:
        answer = await client.users_info(user=user_id)
    except SLACK_FAILURES as err:
        logger.warning("users.info for %s failed (%s)", user_id, _why(err))
        return None
    user = answer.get("user") or {}
    profile = user.get("profile") or {}
    name = profile.get("real_name") or profile.get("display_name") or user.get("real_name") or user.get("name")
    return SlackProfile(name=name, email=profile.get("email"), workspace_name=workspace_name)


def link_view(link: SlackLink) -> LinkView:
    return LinkView(user_name=link.user.name, user_email=link.user.email, since=link.created_at,
                    user_active=link.user.is_active)


async def publish_home(rt: Runtime, client: AsyncWebClient, identity: SlackIdentity) -> None:
    async with rt.sessionmaker() as session:
        link = await linking.current_link(session, identity)
        teams = [t.name for t in await repo.teams_of_user(session, link.user_id)] if link else []
        open_alerts = []
        if link is not None and link.user.is_active:
            open_alerts = [await alert_view(session, a, with_members=False)
                           for a in await alert_service.open_alerts_for(session, link.user_id)]
        late = [heartbeats.late_line(h, team) for h, team in await heartbeats.late_for_user(session, link.user_id, rt.now())
                ] if link is not None else []
        is_admin = bool(link and link.user.is_admin and link.user.is_active)
        admin_settings = None
        if is_admin:
            anonymous = await access.allow_anonymous(session, identity.workspace_id, rt.settings.allow_anonymous_actions)
            admin_settings = {"workspace": identity.workspace_id, "anonymous_actions": anonymous}
        view = home_view(link_view(link) if link else None, teams, is_admin=is_admin, alerts=open_alerts,
                         admin_settings=admin_settings, late_heartbeats=late)
    try:
        await client.views_publish(user_id=identity.user_id, view=view)
    except SLACK_FAILURES as err:
        logger.warning("views.publish for %s failed: %s", identity.user_id, _why(err))


async def queue_connected_dm(rt: Runtime, session, link: SlackLink) -> None:
    """In the confirm's own transaction: the DM "You're connected as …" goes to the outbox, so
    the worker delivers it through Slack's failures (retried with backoff, or failed where an
    operator sees it: metric, log, ``genie outbox list``) — the link never exists unannounced."""
    if rt.settings.slack_mode == "none":
        return
    text, blocks = connected_dm(link_view(link), link.workspace_name)
    await outbox.enqueue(session, link.slack_user_id, outbox.MESSAGE, payload={"text": text, "blocks": blocks},
                         slack_team_id=link.slack_team_id, enterprise_id=link.enterprise_id)


async def announce_link(rt: Runtime, link: SlackLink) -> None:
    """After a web confirm has committed (with its DM queued): deliver the DM now, and refresh
    the Home tab (best effort: it is published again whenever the tab is opened)."""
    rt.wake_outbox()
    client = await rt.client_for(link.slack_team_id, link.enterprise_id)
    if client is None:
        return
    await publish_home(rt, client, SlackIdentity(link.slack_team_id, link.slack_user_id, link.enterprise_id))


async def refresh_home_after_unlink(rt: Runtime, link: SlackLink) -> None:
    client = await rt.client_for(link.slack_team_id, link.enterprise_id)
    if client is not None:
        await publish_home(rt, client, SlackIdentity(link.slack_team_id, link.slack_user_id, link.enterprise_id))
