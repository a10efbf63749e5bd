"""The App Home tab: drawn from the current state and published with ``views.publish``.

These run after the state change has committed; a Slack failure here is logged and never
undoes the change (the Home tab is re-published the next time it is opened).
"""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from bot.blocks.linking import home_view
from bot.blocks.oncall import home_oncall_blocks
from bot.runtime import Runtime
from bot.services import access, heartbeats, rosters, slack_links, teams
from bot.services import alerts as alert_service
from bot.services.slack_links import SlackIdentity
from bot.slack.clients import SLACK_FAILURES, why
from bot.slack.profiles import time_zone
from bot.slack.render import alert_view, link_view
from storage.models import SlackLink

logger = logging.getLogger(__name__)


async def publish_home(rt: Runtime, client: AsyncWebClient, identity: SlackIdentity) -> None:
    """Draw the person's App Home as it is now and publish it (``views.publish``) — the one
    place Genie publishes a Home tab.

    Called directly, not through the outbox: a Home tab is a snapshot of the current state, not
    a message — it is drawn again and re-published every time the tab is opened
    (``app_home_opened``), so a failed publish loses nothing and is only logged, and a
    publish is never worth a retry that might land after a newer one. The outbox's guarantees
    (nothing lost, no double post, one channel in order) are for chat messages."""
    async with rt.sessionmaker() as session:
        link = await slack_links.current_link(session, identity)
        team_names = [t.name for t in await teams.teams_of_user(session, link.user_id)] if link else []
        open_alerts = []
        if link is not None and link.user.is_active:
            open_alerts = [
                await alert_view(session, a, with_members=False)
                for a in await alert_service.open_alerts_for(session, link.user_id)
            ]
        late = (
            [
                heartbeats.late_line(h, team)
                for h, team in await heartbeats.late_for_user(session, link.user_id, rt.now())
            ]
            if link is not None
            else []
        )
        now = rt.now()
        mine = await rosters.my_shifts(session, link.user_id, now) if link is not None and link.user.is_active else None
        is_admin = bool(link and link.user.is_admin and link.user.is_active)
        # Admin settings only to a Slack account Slack vouched for by the admin's email: a phished
        # link must not show an attacker the admin's view of the workspace.
        admin_unverified = is_admin and not link.email_verified
        admin_settings = None
        if is_admin and not admin_unverified:
            anonymous = await access.allow_anonymous(
                session, identity.workspace_id, rt.settings.allow_anonymous_actions
            )
            admin_settings = {"workspace": identity.workspace_id, "anonymous_actions": anonymous}
        view = home_view(
            link_view(link) if link else None,
            team_names,
            is_admin=is_admin,
            alerts=open_alerts,
            admin_settings=admin_settings,
            admin_unverified=admin_unverified,
            late_heartbeats=late,
            oncall=home_oncall_blocks(mine, await time_zone(client, identity.user_id), now)
            if mine is not None and (mine or team_names)
            else (),
        )
    try:
        await client.views_publish(user_id=identity.user_id, view=view)
    except SLACK_FAILURES as err:
        logger.warning("views.publish for %s failed: %s", identity.user_id, why(err))


async def refresh_home(rt: Runtime, identity: SlackIdentity) -> None:
    """After a change made outside Slack (a web confirm, an unlink, an admin's edit): publish
    the person's Home with the workspace's client, if Genie is installed there."""
    client = await rt.client_for(identity.team_id, identity.enterprise_id)
    if client is not None:
        await publish_home(rt, client, identity)


async def announce_link(rt: Runtime, link: SlackLink) -> None:
    """After a web confirm has committed (with its DM queued): deliver the DM now, and refresh
    the Home tab (best effort: it is published again whenever the tab is opened)."""
    rt.wake_outbox()
    await refresh_home(rt, SlackIdentity(link.slack_team_id, link.slack_user_id, link.enterprise_id))


async def refresh_home_after_unlink(rt: Runtime, link: SlackLink) -> None:
    await refresh_home(rt, SlackIdentity(link.slack_team_id, link.slack_user_id, link.enterprise_id))
