"""Pure Block Kit builders for linking: ephemeral answers to ``/genie``, the App Home tab and
the DM sent after linking. No I/O; every function returns plain dicts ready for the Web API.

Interactive elements come from ``slack_sdk.models.blocks`` so Slack's limits are validated
when the blocks are built, not when Slack rejects them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from slack_sdk.models.blocks import (
    ActionsBlock,
    ButtonElement,
    ContextBlock,
    DividerBlock,
    HeaderBlock,
    MarkdownTextObject,
    SectionBlock,
)

from bot.blocks.alerts import home_alert_lines
from bot.blocks.buttons import connect_button, disconnect_button
from bot.blocks.mrkdwn import escape as _esc
from bot.blocks.mrkdwn import mention
from bot.blocks.mrkdwn import when as _when


@dataclass(frozen=True)
class LinkView:
    """What the builders need to know about a link (plain values, no ORM objects)."""

    user_name: str
    user_email: str
    since: datetime
    user_active: bool = True


def _you(slack_user_id: str) -> str:
    """The person Slack says is asking (a signed request's user id), mentioned."""
    return mention(slack_user_id) or "You"


def connect_message(slack_user_id: str, url: str, ttl_seconds: int, workspace_name: str | None = None) -> list[dict]:
    minutes = max(1, ttl_seconds // 60)
    where = f" in *{_esc(workspace_name)}*" if workspace_name else ""
    return [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"You are {_you(slack_user_id)}{where}, not yet connected to a Genie account.\n"
                "Connect it so you can acknowledge, close and assign alerts from Slack."
            )
        ).to_dict(),
        ActionsBlock(elements=[connect_button(url)]).to_dict(),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text=f"The link works once and expires in {minutes} minute{'s' if minutes != 1 else ''}. "
                    "Only you can see this message — don't share the link."
                )
            ]
        ).to_dict(),
    ]


def linked_message(slack_user_id: str, link: LinkView, relink_url: str | None = None) -> list[dict]:
    elements: list[ButtonElement] = [disconnect_button(link.user_email)]
    if relink_url:
        elements.append(connect_button(relink_url, text="Connect a different account"))
    blocks = [
        SectionBlock(
            text=MarkdownTextObject(
                text=f"{_you(slack_user_id)} is connected to Genie as *{_esc(link.user_name)}* "
                f"({_esc(link.user_email)}) since {_when(link.since)}."
            )
        ).to_dict(),
    ]
    if not link.user_active:
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=":warning: That Genie account is deactivated, so it cannot act on alerts. "
                    "Disconnect, or ask a Genie admin to reactivate it."
                )
            ).to_dict()
        )
    blocks.append(ActionsBlock(elements=elements).to_dict())
    return blocks


def status_text(slack_user_id: str, link: LinkView | None, late_heartbeats: Sequence[str] = ()) -> str:
    if link is None:
        return f"{_you(slack_user_id)} is not connected to a Genie account. Run `/genie connect` to connect."
    state = "" if link.user_active else " (that Genie account is deactivated)"
    return (
        f"{_you(slack_user_id)} is connected to Genie as *{_esc(link.user_name)}* ({_esc(link.user_email)}) "
        f"since {_when(link.since)}{state}. Run `/genie disconnect` to undo."
    ) + late_heartbeats_text(late_heartbeats, "\n\n")


def late_heartbeats_text(lines: Sequence[str], before: str = "") -> str:
    """ ":warning: *Late heartbeats of your teams:* • nightly-backup (Payments): no ping since …"."""
    if not lines:
        return ""
    return before + ":warning: *Late heartbeats of your teams:*\n" + "\n".join(f"• {_esc(line)}" for line in lines)


def disconnected_text(link: LinkView | None) -> str:
    if link is None:
        return "You were not connected to a Genie account, so there was nothing to disconnect."
    return (
        f"Disconnected. Your Slack account no longer acts as *{_esc(link.user_name)}* "
        f"({_esc(link.user_email)}) in Genie. Run `/genie connect` to connect again."
    )


HELP_TEXT = (
    "*Genie* links your Slack account to your Genie account, so you can act on alerts here.\n"
    "• `/genie connect` — get a one-time link to connect your Genie account\n"
    "• `/genie status` — see which Genie account you are connected to\n"
    "• `/genie disconnect` — remove the connection\n"
    "• `/genie oncall [team]` — who is on call now and next (default: your teams)\n"
    "• `/genie help` — this message"
)


def help_blocks(unknown: str | None = None) -> list[dict]:
    text = HELP_TEXT
    if unknown:
        text = f"I don't know `{_esc(unknown[:50])}`.\n\n" + HELP_TEXT
    return [SectionBlock(text=MarkdownTextObject(text=text)).to_dict()]


def connected_dm(user_name: str, user_email: str, workspace_name: str | None) -> tuple[str, list[dict]]:
    text = f"You're connected as {_esc(user_email)} in Genie."
    where = f" in {_esc(workspace_name)}" if workspace_name else ""
    return text, [
        SectionBlock(
            text=MarkdownTextObject(
                text=f":white_check_mark: You're connected as *{_esc(user_name)}* ({_esc(user_email)}) "
                f"in Genie. Your Slack account{where} can now act on your teams' alerts."
            )
        ).to_dict(),
        ContextBlock(
            elements=[
                MarkdownTextObject(
                    text="Wasn't you? Disconnect from the Home tab or with `/genie disconnect`, and tell your Genie admin."
                )
            ]
        ).to_dict(),
    ]


def new_link_notice(
    person_email: str, slack_user_id: str, name: str | None, workspace: str | None, why: str, account_url: str
) -> tuple[str, list[dict]]:
    """To the person's other, verified Slack accounts: a Slack account was connected to their
    Genie account without Slack vouching for it by email."""
    who = f"{_esc(name)} ({_esc(slack_user_id)})" if name else _esc(slack_user_id)
    where = f" in {_esc(workspace)}" if workspace else ""
    text = (
        f"A new Slack account, {who}{where}, was connected to your Genie account {_esc(person_email)} "
        f"({_esc(why)}). If this wasn't you, undo it on your account page: {_esc(account_url)}"
    )
    return text, [
        SectionBlock(
            text=MarkdownTextObject(
                text=f":warning: A new Slack account, *{who}*{where}, was connected to your Genie account "
                f"{_esc(person_email)}. Slack did not confirm it is yours: {_esc(why)}."
            )
        ).to_dict(),
        SectionBlock(
            text=MarkdownTextObject(
                text=f"If this wasn't you, undo it with one click on your account page: {_esc(account_url)} "
                "— and tell your Genie admin."
            )
        ).to_dict(),
    ]


def password_set_notice(person_email: str, account_url: str) -> tuple[str, list[dict]]:
    text = (
        f"The password of your Genie account {_esc(person_email)} was just set through an invitation link, "
        f"and every other web session was signed out. If this wasn't you, tell your Genie admin now "
        f"(they can send you a new link). {_esc(account_url)}"
    )
    return text, [SectionBlock(text=MarkdownTextObject(text=f":key: {text}")).to_dict()]


def home_view(
    link: LinkView | None,
    teams: Sequence[str] = (),
    is_admin: bool = False,
    alerts: Sequence = (),
    admin_settings: dict | None = None,
    admin_unverified: bool = False,
    late_heartbeats: Sequence[str] = (),
    oncall: Sequence[dict] = (),
) -> dict:
    """The App Home tab: link state first, then the person's teams, their on-call shifts
    (``oncall``: drawn by ``bot.blocks.oncall.home_oncall_blocks``), their late heartbeats and
    their open alerts."""
    blocks: list[dict] = [HeaderBlock(text="Genie").to_dict()]
    if link is None:
        blocks += [
            SectionBlock(
                text=MarkdownTextObject(
                    text="*You are not connected to a Genie account.*\n"
                    "Type `/genie connect` in any channel or in this app's Messages tab to get a one-time link, "
                    "sign in to Genie and confirm. Then you can acknowledge, close and assign your teams' alerts here."
                )
            ).to_dict(),
        ]
    else:
        role = " · Genie admin" if is_admin else ""
        blocks += [
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"*Connected as {_esc(link.user_name)}* ({_esc(link.user_email)}){role}\n"
                    f"Since {_when(link.since)}"
                ),
                accessory=disconnect_button(link.user_email),
            ).to_dict(),
        ]
        if not link.user_active:
            blocks.append(
                SectionBlock(
                    text=MarkdownTextObject(
                        text=":warning: This Genie account is deactivated and cannot act on alerts. "
                        "Disconnect, or ask a Genie admin to reactivate it."
                    )
                ).to_dict()
            )
        blocks.append(DividerBlock().to_dict())
        team_text = ", ".join(_esc(t) for t in teams) if teams else "none yet — ask a Genie admin to add you"
        blocks.append(SectionBlock(text=MarkdownTextObject(text=f"*Your teams:* {team_text}")).to_dict())
        if link.user_active:
            blocks += oncall
        if late_heartbeats:
            blocks.append(
                SectionBlock(text=MarkdownTextObject(text=late_heartbeats_text(late_heartbeats)[:3000])).to_dict()
            )
        if link.user_active:
            blocks += home_alert_lines(alerts)
    if admin_settings:
        state = "allowed" if admin_settings["anonymous_actions"] else "not allowed"
        flip = "false" if admin_settings["anonymous_actions"] else "true"
        blocks.append(DividerBlock().to_dict())
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text=f"*Workspace settings* (you are a Genie admin)\n"
                    f"Anonymous actions by people who haven't connected: *{state}* in this workspace. "
                    f"Change: `genie workspace set allow_anonymous_actions {flip} --workspace {_esc(admin_settings['workspace'])}`"
                )
            ).to_dict()
        )
    elif admin_unverified:
        blocks.append(DividerBlock().to_dict())
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(
                    text="*Workspace settings* are not shown here: Slack did not confirm, by your email, that this Slack "
                    "account is yours when it was connected. Use the `genie` command, or reconnect with `/genie connect` "
                    "from a Slack account whose confirmed email is your Genie email."
                )
            ).to_dict()
        )
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text="`/genie help` lists every command.")]).to_dict())
    return {"type": "home", "blocks": blocks}


def invite_dm(email: str, url: str, days: int) -> tuple[str, list[dict]]:
    """The DM that carries a password invitation (``genie user invite``): text only."""
    return (
        f"You're invited to Genie's web pages as {_esc(email)}. Choose your password here "
        f"(the link works once and expires in {days} day{'s' if days != 1 else ''}): {_esc(url)}"
    ), []
