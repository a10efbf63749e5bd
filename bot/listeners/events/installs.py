"""``app_uninstalled`` and ``tokens_revoked``: forget the workspace's tokens at once.

In multi-workspace mode the installation is removed from slack-sdk's store, so every process
stops using it (tokens are looked up per request). In single-workspace mode the operator is
told in the log: the configured SLACK_BOT_TOKEN no longer works."""

from __future__ import annotations

import logging

from slack_bolt.context.async_context import AsyncBoltContext

from bot.listeners.context import runtime

logger = logging.getLogger(__name__)


async def app_uninstalled(ack, context: AsyncBoltContext) -> None:
    await ack()
    rt = runtime(context)
    where = "/".join(x for x in (context.enterprise_id, context.team_id) if x)
    store = rt.clients.installation_store if rt.clients is not None else None
    if store is None:
        logger.error(
            "Genie was uninstalled from Slack workspace %s: SLACK_BOT_TOKEN no longer works; "
            "reinstall the app and update SLACK_BOT_TOKEN",
            where,
        )
        return
    await store.async_delete_all(enterprise_id=context.enterprise_id, team_id=context.team_id)
    logger.warning("Genie was uninstalled from Slack workspace %s; its tokens are deleted", where)


async def tokens_revoked(ack, event: dict, context: AsyncBoltContext) -> None:
    await ack()
    rt = runtime(context)
    where = "/".join(x for x in (context.enterprise_id, context.team_id) if x)
    tokens = event.get("tokens") if isinstance(event.get("tokens"), dict) else {}
    store = rt.clients.installation_store if rt.clients is not None else None
    if store is None:
        if tokens.get("bot"):
            logger.error(
                "Slack revoked Genie's bot token in workspace %s: reinstall the app and update SLACK_BOT_TOKEN", where
            )
        return
    if tokens.get("oauth"):
        for user_id in tokens["oauth"]:
            await store.async_delete_installation(
                enterprise_id=context.enterprise_id, team_id=context.team_id, user_id=user_id
            )
    if tokens.get("bot"):
        await store.async_delete_bot(enterprise_id=context.enterprise_id, team_id=context.team_id)
        logger.warning("Slack revoked Genie's bot token in workspace %s; it is deleted", where)
