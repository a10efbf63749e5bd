"""Slack text made safe in one place. Every text Genie sends to Slack — block texts, the
fallback ``text`` of messages (what push and desktop notifications show), DMs, ephemeral
answers, the Home tab — goes through ``escape`` for anything that came from outside Genie's
own wording: alert fields, names of people and teams, Slack names, error texts.

Slack reads ``<…>`` as markup (``<!channel>``, ``<@U…>``, ``<#C…>``, ``<https://…|label>``);
with ``&``, ``<`` and ``>`` escaped, no value can become a mention, a broadcast or a disguised
link. The only markup Genie writes is made here, from ids it resolved itself (a person's
Slack link, the clicker of a signed request, a team's channel) and checked for shape::

    f"Acknowledged by {mention(alert.acknowledged_by_slack) or escape(alert.acknowledged_by)}"

Pure: no Slack SDK, no I/O.
"""

from __future__ import annotations

import re
from datetime import datetime

_SLACK_USER = re.compile(r"[UW][A-Z0-9]{2,20}")
_CHANNEL = re.compile(r"[CGD][A-Z0-9]{2,30}")


def escape(text: str) -> str:
    """Escape the three characters Slack's mrkdwn treats as control characters."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def mention(slack_user_id: str | None) -> str | None:
    """``<@U…>`` for a well-formed Slack user id, else None (the caller shows a name)."""
    if slack_user_id and _SLACK_USER.fullmatch(slack_user_id):
        return f"<@{slack_user_id}>"
    return None


def channel_link(channel_id: str | None) -> str | None:
    """``<#C…>`` for a well-formed channel id, else None."""
    if channel_id and _CHANNEL.fullmatch(channel_id):
        return f"<#{channel_id}>"
    return None


def when(moment: datetime) -> str:
    """Slack renders this in the reader's own time zone; the fallback is UTC."""
    ts = int(moment.timestamp())
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{ts}^{{date_short_pretty}} at {{time}}|{fallback}>"
