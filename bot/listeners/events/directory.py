"""``team_join`` and ``user_change``: keep the Slack directory current between syncs.

A new hire is recorded (and linked, where the workspace has ``auto_link_by_email`` on) when they
join; a deactivated user loses their link at once; a changed email or name is recorded. The
same rules as ``genie slack sync`` (``bot.services.slack_directory``). Slack's re-deliveries are
dropped by ``event_id`` before this runs (``bot.listeners.middleware``)."""

from __future__ import annotations

import logging

from slack_bolt.context.async_context import AsyncBoltContext

from bot.listeners.context import runtime
from bot.services import slack_directory
from bot.services.audit import Who
from bot.services.slack_directory import Workspace

logger = logging.getLogger(__name__)


async def directory_member(ack, event: dict, context: AsyncBoltContext) -> None:
    await ack()
    kind = str(event.get("type"))
    member = event.get("user")
    workspace_id = context.enterprise_id or context.team_id
    if not isinstance(member, dict) or not workspace_id:
        logger.warning("ignored a Slack %s event without a user object or a workspace", kind)
        return
    workspace = Workspace(workspace_id=workspace_id, team_id=context.team_id, enterprise_id=context.enterprise_id)
    async with runtime(context).sessionmaker.begin() as session:
        entry = await slack_directory.record_member(session, member, workspace, Who(label=f"slack {kind}", via="slack"))
    logger.info("Slack %s for %s/%s: %s (%s)", kind, workspace_id, entry.slack_user, entry.outcome, entry.detail)
