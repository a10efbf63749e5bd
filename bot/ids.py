"""Ids: the action and callback ids shared by the Block Kit builders and listener registration,
and the one rule for "is this text a database id" (``parse_id``)."""

import re
from enum import StrEnum

#: The largest id the databases' INTEGER columns hold.
MAX_ID = 2**31 - 1
_DIGITS = re.compile(r"[0-9]{1,10}")


def parse_id(text: str | None, default: int | None = None) -> int | None:
    """The id that ``text`` is — ASCII digits that fit an INTEGER column — else ``default``.
    (``int()`` would also take " 1", "١", "²" or 30 digits.)"""
    if text is None or not _DIGITS.fullmatch(text) or int(text) > MAX_ID:
        return default
    return int(text)


def is_id(text: str | None) -> bool:
    return parse_id(text) is not None


class Action(StrEnum):
    #: The URL button that opens a link; Slack still sends block_actions for it, so we ack it.
    CONNECT_LINK = "connect_link"
    HOME_DISCONNECT = "home_disconnect"
    ALERT_ACKNOWLEDGE = "alert_acknowledge"
    ALERT_CLOSE = "alert_close"
    ALERT_ASSIGN = "alert_assign"
