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

from bot.blocks.linking import LinkView, connected_dm, home_view, new_link_notice, password_set_notice
from bot.slack.render import alert_view
from bot.runtime import Runtime
from bot.services import access
from bot.services import alerts as alert_service
from bot.services import heartbeats, linking, outbox, slack_directory
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


async def fetch_profile(client: AsyncWebClient, identity: SlackIdentity,
                        workspace_name: str | None) -> SlackProfile | None:
    """Who a Slack user is (``users.info``: name, handle, profile email and whether that email
    verifiably is theirs), or None if Slack can't say."""
    try:
        answer = await client.users_info(user=identity.user_id)
    except SLACK_FAILURES as err:
        logger.warning("users.info for %s failed (%s)", identity.user_id, _why(err))
        return None
    user = answer.get("user") or {}
    if not isinstance(user, dict):
        return None
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    name = profile.get("real_name") or profile.get("display_name") or user.get("real_name") or user.get("name")
    email = profile.get("email") if isinstance(profile.get("email"), str) else None
    confirmed, _why_not = slack_directory.confirmed_email(user, slack_directory.Workspace(
        identity.workspace_id, identity.team_id, identity.enterprise_id))
    handle = user.get("name") if isinstance(user.get("name"), str) else None
    return SlackProfile(name=name if isinstance(name, str) else None, email=email, workspace_name=workspace_name,
                        handle=handle, email_confirmed=bool(email) and confirmed == email.strip().lower())


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
        # Admin settings only to a Slack account Slack vouched for by the admin's email: a phished
        # link must not show an attacker the admin's view of the workspace.
        admin_unverified = is_admin and not link.email_verified
        admin_settings = None
        if is_admin and not admin_unverified:
            anonymous = await access.allow_anonymous(session, identity.workspace_id, rt.settings.allow_anonymous_actions)
            admin_settings = {"workspace": identity.workspace_id, "anonymous_actions": anonymous}
        view = home_view(link_view(link) if link else None, teams, is_admin=is_admin, alerts=open_alerts,
                         admin_settings=admin_settings, admin_unverified=admin_unverified,
                         late_heartbeats=late)
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


async def queue_owner_dm(session, link: SlackLink, email: str, text: str, blocks: list[dict]) -> None:
    """A DM that only the person's own Slack account may receive: the outbox asks Slack again
    at delivery (``users.info``) and sends it only if that account's confirmed email is
    ``email`` (``slack_directory.owner_problem``); otherwise the message fails, saying why."""
    await outbox.enqueue(session, link.slack_user_id, outbox.MESSAGE,
                         payload={"text": text, "blocks": blocks, "owner_email": email,
                                  "workspace_id": link.workspace_id},
                         slack_team_id=link.slack_team_id, enterprise_id=link.enterprise_id)


async def verified_links(session, user_id: int, *, besides: int | None = None) -> list[SlackLink]:
    """The person's Slack links that verifiably are theirs (made by a confirmed matching email)."""
    return [link for link in await repo.links_of_user(session, user_id)
            if link.email_verified and link.id != besides]


async def queue_new_link_notices(rt: Runtime, session, link: SlackLink, why: str) -> int:
    """In the confirm's transaction: a link Slack did not vouch for by email is announced to the
    person's other, verified Slack accounts (the "You're connected" DM goes to the new account,
    which may be someone else's). ``/account`` shows it too, with Undo. Returns how many."""
    if rt.settings.slack_mode == "none":
        return 0
    others = await verified_links(session, link.user_id, besides=link.id)
    text, blocks = new_link_notice(link.user.email, link.slack_user_id, link.slack_name,
                                   link.workspace_name or link.slack_team_id, why, f"{rt.settings.base_url}/account")
    for other in others:
        await queue_owner_dm(session, other, link.user.email, text, blocks)
    return len(others)


async def queue_password_set_notices(rt: Runtime, session, user) -> int:
    """In the invitation's transaction: the person hears in every Slack account that verifiably
    is theirs that their password was set and their other sessions ended."""
    if rt.settings.slack_mode == "none":
        return 0
    links = await verified_links(session, user.id)
    text, blocks = password_set_notice(user.email, f"{rt.settings.base_url}/account")
    for link in links:
        await queue_owner_dm(session, link, user.email, text, blocks)
    return len(links)


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
