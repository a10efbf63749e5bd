"""The listeners' one error path (``app.error``)."""

from __future__ import annotations

import logging

from bot.blocks.mrkdwn import escape
from bot.listeners.context import tell
from bot.services.errors import GenieError


async def on_error(error: Exception, body: dict, respond, logger: logging.Logger) -> None:
    """One error path: domain errors become an ephemeral message; the unexpected is logged."""
    if isinstance(error, GenieError):
        text = str(error)
    else:
        logger.exception("unhandled error in a Slack listener", exc_info=error)
        text = "Something went wrong on Genie's side. Please try again in a moment."
    if body.get("response_url"):
        who = (body.get("user") or {}).get("id") if isinstance(body.get("user"), dict) else body.get("user_id")
        await tell(
            respond, str(who), "about the error", text=escape(text), response_type="ephemeral", replace_original=False
        )
