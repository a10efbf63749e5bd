"""Action and callback ids, shared by the Block Kit builders and listener registration."""

from enum import StrEnum


class Action(StrEnum):
    #: The URL button that opens a link; Slack still sends block_actions for it, so we ack it.
    CONNECT_LINK = "connect_link"
    HOME_DISCONNECT = "home_disconnect"
    ALERT_ACKNOWLEDGE = "alert_acknowledge"
    ALERT_CLOSE = "alert_close"
    ALERT_ASSIGN = "alert_assign"
