"""Outbox messages as typed intents (``bot.ids.Intent``): a row carries
``{"intent": name, "values": {...}}`` (``bot.services.outbox.intent``) and
the outbox worker (``bot.slack.delivery``) draws it here, at delivery, with the builder the
intent names — so every text Genie sends is composed and escaped by the block builders
(``bot.blocks.mrkdwn``), never in advance by whoever queued it.

Rows queued before intents existed still deliver: ``{"render": name, "values": …}`` is read
as an intent, and ``{"text": …, "blocks": …}`` (text composed in advance) is sent as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bot.blocks.alerts import after_link_dm, assigned_dm, deleted_message, link_reminder_dm
from bot.blocks.linking import connected_dm, invite_dm, new_link_notice, password_set_notice
from bot.blocks.oncall import shift_reminder_dm
from bot.ids import Intent

BUILDERS: dict[Intent, Callable[..., tuple[str, list[dict]]]] = {
    Intent.ASSIGNED: assigned_dm,
    Intent.AFTER_LINK: after_link_dm,
    Intent.ALERT_DELETED: deleted_message,
    Intent.LINK_CONFIRMED: connected_dm,
    Intent.LINK_UNVERIFIED: new_link_notice,
    Intent.PASSWORD_SET: password_set_notice,
    Intent.INVITE: invite_dm,
    Intent.LINK_REMINDER: link_reminder_dm,
    Intent.ONCALL_REMINDER: shift_reminder_dm,
}


def intent_of(payload: dict) -> Any:
    """The intent a payload names (``render`` in rows queued before intents), or None."""
    return payload.get("intent", payload.get("render"))


def draw(payload: dict) -> tuple[str, list[dict]] | None:
    """An outbox payload drawn by its intent's builder; None when it names none Genie knows
    (or its values do not fit)."""
    name = intent_of(payload)
    build = BUILDERS.get(name) if isinstance(name, str) else None
    values = payload.get("values")
    if build is None or not isinstance(values, dict):
        return None
    try:
        return build(**values)
    except TypeError:
        return None
