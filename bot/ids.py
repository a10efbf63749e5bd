"""Action and callback ids, shared by the Block Kit builders and listener registration; the
intents of outbox messages, shared by the services that queue them and the builders that draw
them; and the one rule for "is this text a database id" (``parse_id``)."""

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
    #: "I've got it": take ownership (assign to the clicker and acknowledge).
    ALERT_TAKE = "alert_take"


class Intent(StrEnum):
    """What an outbox message says, as a typed intent (``{"intent": …, "values": {…}}``): the
    builder it names (``bot.blocks.messages.BUILDERS``) draws it from its values at delivery."""

    #: "You were assigned alert #12 …" — {alert_id, message, priority, team, channel, by, by_slack}
    ASSIGNED = "assigned"
    #: What became of a click made before connecting — {action, alert_id, message, outcome, detail}
    AFTER_LINK = "after_link"
    #: A deleted alert's message, replaced (the payload's ``update_ts``) — {alert_id, message, by}
    ALERT_DELETED = "alert.deleted"
    #: "You're connected as …" to the newly linked Slack account — {user_name, user_email, workspace_name}
    LINK_CONFIRMED = "link.confirmed"
    #: To the person's other verified Slack accounts —
    #: {person_email, slack_user_id, name, workspace, why, account_url}
    LINK_UNVERIFIED = "link.unverified"
    #: The password was set through an invitation — {person_email, account_url}
    PASSWORD_SET = "password.set"
    #: A password invitation — {email, url, days}
    INVITE = "invite"
    #: An admin's reminder to connect, from /reports' linking health — {refused}
    LINK_REMINDER = "link.reminder"
    #: "Your on-call shift starts …" — {team, schedule, start, end, override} (Unix times)
    ONCALL_REMINDER = "oncall.reminder"
