"""Who a Slack user is, asked of Slack (``users.info``) while a person waits."""

from __future__ import annotations

import asyncio
import logging
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from slack_sdk.web.async_client import AsyncWebClient

from bot.runtime import Runtime
from bot.services import slack_directory
from bot.services.slack_links import SlackIdentity, SlackProfile
from bot.slack.clients import SLACK_FAILURES, SlackClients, why
from storage.models import LinkRequest, SlackLink

logger = logging.getLogger(__name__)


async def fetch_profile(
    client: AsyncWebClient, identity: SlackIdentity, workspace_name: str | None
) -> SlackProfile | None:
    """Who a Slack user is (``users.info``: name, handle, profile email and whether that email
    verifiably is theirs), or None if Slack can't say."""
    try:
        answer = await client.users_info(user=identity.user_id)
    except SLACK_FAILURES as err:
        logger.warning("users.info for %s failed (%s)", identity.user_id, why(err))
        return None
    user = answer.get("user") or {}
    if not isinstance(user, dict):
        return None
    profile = user.get("profile") if isinstance(user.get("profile"), dict) else {}
    name = profile.get("real_name") or profile.get("display_name") or user.get("real_name") or user.get("name")
    email = profile.get("email") if isinstance(profile.get("email"), str) else None
    confirmed, _why_not = slack_directory.confirmed_email(
        user, slack_directory.Workspace(identity.workspace_id, identity.team_id, identity.enterprise_id)
    )
    handle = user.get("name") if isinstance(user.get("name"), str) else None
    return SlackProfile(
        name=name if isinstance(name, str) else None,
        email=email,
        workspace_name=workspace_name,
        handle=handle,
        email_confirmed=bool(email) and confirmed == email.strip().lower(),
    )


async def time_zone(client: AsyncWebClient, user_id: str, timeout: float | None = None) -> ZoneInfo:
    """The Slack user's time zone (``users.info`` ``tz``), to show times as they read them;
    UTC when Slack can't say (within ``timeout`` seconds: a slash command's answer must go
    within Slack's 3) or names a zone this machine does not know."""
    try:
        answer = await asyncio.wait_for(client.users_info(user=user_id), timeout)
    except SLACK_FAILURES as err:
        logger.warning("users.info for %s failed (%s)", user_id, why(err))
        return ZoneInfo("UTC")
    user = answer.get("user") if isinstance(answer.get("user"), dict) else {}
    name = user.get("tz")
    try:
        return (
            ZoneInfo(name)
            if isinstance(name, str) and name and ".." not in name and not name.startswith("/")
            else ZoneInfo("UTC")
        )
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


async def requester_profile(rt: Runtime, row: LinkRequest) -> SlackProfile | None:
    """The Slack profile of whoever asked for a link (``GET``/``POST /link/…``), asked of Slack
    now with the workspace's own client: if the lookup that follows /genie connect has not
    finished (or failed), the confirm page must still be able to warn when the Slack email is
    not the person's own. None when Genie is not installed there or Slack can't say."""
    client = await rt.client_for(row.slack_team_id, row.enterprise_id)
    if client is None:
        return None
    return await fetch_profile(
        client, SlackIdentity(row.slack_team_id, row.slack_user_id, row.enterprise_id), row.workspace_name
    )


async def owner_problem(clients: SlackClients, link: SlackLink, email: str) -> str | None:
    """Why the Slack account of ``link`` may not receive what only ``email``'s owner may (its
    confirmed email, ``users.info`` now, is not ``email``; Slack can't say), or None."""
    client = await clients.for_workspace(link.slack_team_id, link.enterprise_id)
    if client is None:
        return f"Genie is not installed in workspace {link.workspace_id}"
    try:
        answer = await client.users_info(user=link.slack_user_id)
    except SLACK_FAILURES as err:
        return f"Slack could not say whose account it is (users.info: {why(err)})"
    workspace = slack_directory.Workspace(link.workspace_id, link.slack_team_id, link.enterprise_id)
    return slack_directory.owner_problem(answer.get("user") or {}, workspace, email)
