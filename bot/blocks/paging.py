"""The page: the Slack DM (or channel message) the escalation engine sends for an alert
(``bot.services.paging``), drawn when the outbox delivers it from the alert as it is then, with
the channel message's gated buttons (Acknowledge, Close, Assign…). Pure: no I/O.

    text, blocks = page_message(view, step=1, repeat_round=0, why="on call in schedule primary")
"""

from __future__ import annotations

from slack_sdk.models.blocks import MarkdownTextObject, SectionBlock

from bot.blocks.alerts import AlertView, alert_message
from bot.blocks.mrkdwn import escape as _esc


def page_message(
    view: AlertView, *, step: int, repeat_round: int = 0, why: str | None = None, channel: bool = False
) -> tuple[str, list[dict]]:
    """``(fallback text, blocks)``. ``step`` counts from 0 as stored; ``why``: why this person
    is paged ("on call in schedule primary"); ``channel``: paging the team's channel."""
    where = f"step {step + 1}" + (f", repeat {repeat_round}" if repeat_round else "")
    team = f" of {_esc(view.team_name)}" if view.team_name else ""
    if channel:
        intro = f":rotating_light: <!here> *Alert #{view.id} needs someone* — escalation{team}, {where}."
    else:
        because = f" ({_esc(why)})" if why else ""
        intro = (
            f":rotating_light: *You are paged for alert #{view.id}*{because} — escalation{team}, {where}. "
            "Acknowledge it to stop the escalation."
        )
    text, blocks = alert_message(view)
    return f"Paged: {text}", [SectionBlock(text=MarkdownTextObject(text=intro)).to_dict(), *blocks]
