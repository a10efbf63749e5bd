"""Buttons that several messages carry (the link messages, the alert refusals)."""

from __future__ import annotations

from slack_sdk.models.blocks import ButtonElement, ConfirmObject

from bot.blocks.mrkdwn import escape as _esc
from bot.ids import Action


def connect_button(url: str, text: str = "Connect your Genie account") -> ButtonElement:
    return ButtonElement(text=text, action_id=Action.CONNECT_LINK, url=url, style="primary")


def disconnect_button(email: str) -> ButtonElement:
    return ButtonElement(
        text="Disconnect",
        action_id=Action.HOME_DISCONNECT,
        value="disconnect",
        style="danger",
        confirm=ConfirmObject(
            title="Disconnect from Genie?",
            text=f"Your Slack account will no longer act as {_esc(email)} in Genie. "
            "You can connect again at any time with /genie connect.",
            confirm="Disconnect",
            deny="Cancel",
            style="danger",
        ),
    )
