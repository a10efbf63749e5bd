"""Pure Block Kit builders for alerts: the channel message (state-driven: only the buttons that
still make sense), the ephemeral refusals, and the App Home list. No I/O.

    text, blocks = alert_message(view)        # chat.postMessage / chat.update
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from slack_sdk.errors import SlackObjectFormationError
from slack_sdk.models.blocks import (
    ActionsBlock,
    ContextBlock,
    MarkdownTextObject,
    Option,
    SectionBlock,
)

from bot.blocks.buttons import connect_button, disconnect_button
from bot.blocks.mrkdwn import channel_link, mention
from bot.blocks.mrkdwn import escape as _esc
from bot.blocks.mrkdwn import when as _when
from bot.ids import MAX_ID, Action
from storage.models import AlertAction, AlertStatus

PRIORITY_ICON = {
    "P1": ":red_circle:",
    "P2": ":large_orange_circle:",
    "P3": ":large_yellow_circle:",
    "P4": ":large_blue_circle:",
    "P5": ":white_circle:",
}
MAX_SELECT_OPTIONS = 100
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000


@dataclass(frozen=True)
class PersonRef:
    """A person the alert names, as resolved when it was created (``Alert.people``)."""

    #: The name as the tool gave it ("alice-og", "PXPGF42").
    given: str
    #: The Slack user to mention (their link in the alert's workspace), if any.
    slack_user_id: str | None = None
    #: The Genie person's name; None: unresolved.
    name: str | None = None


def person_text(ref: PersonRef, mark_unresolved: bool = True) -> str:
    """``<@U…>`` for a resolved person with a Slack link, else their name; an unresolved name
    as given (escaped), marked "(unresolved)" — never a guess."""
    if ref.name is None:
        return _esc(ref.given) + (" (unresolved)" if mark_unresolved else "")
    return mention(ref.slack_user_id) or _esc(ref.name)


def _people_list(refs: Sequence[PersonRef], limit: int) -> str:
    """Comma-separated, cut between names (a mention is never cut in half)."""
    shown: list[str] = []
    for i, ref in enumerate(refs):
        text = person_text(ref)
        more = f" and {len(refs) - i} more"
        if len(", ".join([*shown, text])) + len(f" and {len(refs)} more") > limit:
            if not shown:  # one name longer than the field (a mention never is): cut it, not the list
                rest = f" and {len(refs) - 1} more" if len(refs) > 1 else ""
                return _clip(text, limit - len(rest)) + rest
            return ", ".join(shown) + more
        shown.append(text)
    return ", ".join(shown)


@dataclass(frozen=True)
class AlertView:
    """What the message shows, as plain values."""

    id: int
    message: str
    priority: str
    status: str
    created_at: datetime
    team_name: str | None = None
    description: str | None = None
    tags: Sequence[str] = ()
    details: dict[str, str] = field(default_factory=dict)
    source: str | None = None
    entity: str | None = None
    count: int = 1
    acknowledged: bool = False
    acknowledged_by: str | None = None
    acknowledged_at: datetime | None = None
    closed_by: str | None = None
    closed_at: datetime | None = None
    #: The Slack user who acknowledged / closed without a Genie account (anonymous), as Slack
    #: identified them: mentioned, with "(anonymous)"; ``*_by`` is then only the plain name.
    acknowledged_by_slack: str | None = None
    closed_by_slack: str | None = None
    #: Snoozed until then (OpsGenie's snooze), if that is still ahead.
    snoozed_until: datetime | None = None
    owner_name: str | None = None
    #: The assignee's Slack user id in the alert's workspace: the message mentions them.
    owner_slack: str | None = None
    owner_id: int | None = None
    #: (Genie user id, name) of people it may be assigned to.
    members: Sequence[tuple[int, str]] = ()
    #: The API's ``user``: a resolved person, or the display name as given.
    reported_by: PersonRef | None = None
    #: User responders, in the order given.
    responders: Sequence[PersonRef] = ()
    #: ``details`` values that name a person (``github_user`` …), by key.
    detail_people: dict[str, PersonRef] = field(default_factory=dict)


@dataclass(frozen=True)
class ButtonValue:
    """What an alert's button carries: the alert, and for an Assign option the person. Small
    JSON (``{"alert":12,"user":3}``); never trusted — the listener re-reads the alert::

        ButtonValue(12, user=3).encode()      # '{"alert":12,"user":3}'
        ButtonValue.parse(value)              # ButtonValue(alert=12, user=3), or None
    """

    alert: int
    user: int | None = None

    def encode(self) -> str:
        if type(self.alert) is int and (self.user is None or type(self.user) is int):
            # What json.dumps gives for ints, without its cost: an alert message encodes one
            # value per Assign… option (up to 100) on every render.
            if self.user is None:
                return f'{{"alert":{self.alert}}}'
            return f'{{"alert":{self.alert},"user":{self.user}}}'
        data = {"alert": self.alert} if self.user is None else {"alert": self.alert, "user": self.user}
        return json.dumps(data, separators=(",", ":"))

    @classmethod
    def parse(cls, value: str | None) -> ButtonValue | None:
        """None if the value is not ours (forged, mangled, too big)."""
        if not value or len(value) > 200:
            return None
        try:
            data = json.loads(value)
        except ValueError:
            return None
        if not isinstance(data, dict) or not isinstance(data.get("alert"), int) or isinstance(data["alert"], bool):
            return None
        # Ids are INTEGER columns: a bigger number is no id of ours (PostgreSQL would refuse the query).
        if not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= MAX_ID for v in data.values()):
            return None
        return cls(data["alert"], data.get("user"))


def _after(start: datetime, then: datetime | None) -> str:
    if then is None:
        return ""
    seconds = max(0, int((then - start).total_seconds()))
    if seconds < 60:
        return f" · {seconds} s after it fired"
    if seconds < 7200:
        return f" · {seconds // 60} min after it fired"
    return f" · {seconds // 3600} h {seconds % 3600 // 60} min after it fired"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def who_text(name: str | None, anonymous_slack_user: str | None = None) -> str:
    """Who acted: an anonymous Slack actor mentioned from the id Slack gave for the click, else
    the stored name, escaped (whatever it says: an API ``user`` of ``<@U…>`` stays text)."""
    anonymous = mention(anonymous_slack_user)
    if anonymous is not None:
        return f"{anonymous} (anonymous)"
    return _esc(name) if name else "someone"


def status_line(view: AlertView) -> str:
    if view.status == AlertStatus.CLOSED:
        line = f":white_check_mark: *Closed* by {who_text(view.closed_by, view.closed_by_slack)}{_after(view.created_at, view.closed_at)}"
    elif view.acknowledged:
        line = (
            f":eyes: *Acknowledged* by {who_text(view.acknowledged_by, view.acknowledged_by_slack)}"
            f"{_after(view.created_at, view.acknowledged_at)}"
        )
    else:
        line = f":rotating_light: *Open* · fired {_when(view.created_at)}"
    if view.status != AlertStatus.CLOSED and view.snoozed_until is not None:
        line += f" · :zzz: snoozed until {view.snoozed_until.astimezone(UTC):%Y-%m-%d %H:%M} UTC"
    assignee = mention(view.owner_slack) or _esc(view.owner_name or "")
    if view.owner_name and view.status != AlertStatus.CLOSED:
        line += f" · Assigned to {assignee}"
    elif view.owner_name:
        line += f" · was assigned to {assignee}"
    return line


def _option(label: str, value: str) -> dict:
    """A select option as the dict ``Option(text=label, value=value).to_dict()`` gives, with the
    same limits checked. Built directly because slack_sdk's per-object validation (``dir()`` of
    every object) made 100 members' options cost ~4 ms of the ~7 ms an alert message took to
    render, and every click re-renders its alert (bench/RESULTS.md)."""
    if not label or len(label) > Option.label_max_length or len(value) > Option.value_max_length:
        raise SlackObjectFormationError(f"option {label!r} / {value!r} exceeds Slack's limits")
    return {"text": {"type": "plain_text", "text": label, "emoji": True}, "value": value}


def _button(text: str, action_id: str, value: str, style: str | None = None) -> dict:
    """``ButtonElement(text=…, action_id=…, value=…, style=…).to_dict()`` for the alert's own
    buttons (short constant labels and ids, a small value: within every limit it checks)."""
    button: dict = {"action_id": action_id}
    if style is not None:
        button["style"] = style
    button["text"] = {"emoji": True, "text": text, "type": "plain_text"}
    button["type"] = "button"
    button["value"] = value
    return button


def _label(name: str) -> str:
    limit = Option.label_max_length
    return name if len(name) <= limit else _clip(name, limit)


def _buttons(view: AlertView) -> list[dict]:
    value = ButtonValue(view.id).encode()
    elements: list[dict] = []
    if not view.acknowledged:
        elements.append(_button("Acknowledge", Action.ALERT_ACKNOWLEDGE, value, "primary"))
        elements.append(_button("I've got it", Action.ALERT_TAKE, value))
    elements.append(_button("Close", Action.ALERT_CLOSE, value))
    return elements


def _select(view: AlertView, members: Sequence[tuple[int, str]], options: Any) -> dict:
    """The Assign… select with ``options`` (a list, or None to leave them out)."""
    select: dict = {"action_id": Action.ALERT_ASSIGN}
    owner = next(((uid, name) for uid, name in members if uid == view.owner_id), None)
    if owner is not None:
        select["initial_option"] = _option(_label(owner[1]), ButtonValue(view.id, user=owner[0]).encode())
    if options is not None:
        select["options"] = options
    select["placeholder"] = {"emoji": True, "text": "Assign…", "type": "plain_text"}
    select["type"] = "static_select"
    return select


def _actions(view: AlertView) -> dict:
    """The alert's actions block, as ``ActionsBlock(…).to_dict()`` of the buttons and the
    Assign… select gives it (same keys, same order), built directly: the models' ``to_dict``
    walked every option's dict again (~60 % of an alert message's render with 100 members), and
    the worker renders the alert for every post and update (bench/RESULTS.md)."""
    elements = _buttons(view)
    members = view.members[:MAX_SELECT_OPTIONS]
    if members:
        options = [_option(_label(name), ButtonValue(view.id, user=uid).encode()) for uid, name in members]
        elements.append(_select(view, members, options))
    return {"block_id": f"alert-{view.id}", "elements": elements, "type": "actions"}


def _mrkdwn(text: str) -> dict:
    """``MarkdownTextObject(text=text).to_dict()`` of a non-empty text."""
    return {"text": text, "type": "mrkdwn"}


def _section(text: str) -> dict:
    """``SectionBlock(text=MarkdownTextObject(text=text)).to_dict()``, with its limit checked,
    built directly like ``_actions``: the models' validation and ``to_dict`` (``dir()`` of every
    object) were most of what remained of an alert message's render, and the worker renders the
    alert for every post and update (bench/RESULTS.md, "Round three")."""
    if len(text) > SectionBlock.text_max_length:
        raise SlackObjectFormationError(f"text attribute cannot exceed {SectionBlock.text_max_length} characters")
    return {"text": _mrkdwn(text), "type": "section"}


def alert_message(view: AlertView, web_url: str | None = None) -> tuple[str, list[dict]]:
    """``(fallback text, blocks)`` for the alert's channel message, showing its current state.
    ``web_url``: the alert's page on Genie's web side (``/alerts/{id}``), linked as "Open in Genie"."""
    text, blocks = _alert_blocks(view, web_url)
    if view.status != AlertStatus.CLOSED:
        blocks.append(_actions(view))
    return text, blocks


def alert_message_json(view: AlertView, web_url: str | None = None) -> tuple[str, str]:
    """``alert_message`` with its blocks as the JSON text Slack takes (slack-sdk sends a string
    as it is: what the outbox worker sends). The same blocks (``json.loads`` of it equals
    ``alert_message``'s), made for less: the Assign… select's options — up to 100, the bulk of
    the message, the same for every alert of the team but for the alert's id in their values —
    are joined from a template made once per member list (``_options_template``) instead of
    being built as dicts and encoded one by one for every post and update
    (bench/RESULTS.md, "Round three")."""
    text, blocks = _alert_blocks(view, web_url)
    members = view.members[:MAX_SELECT_OPTIONS]
    if view.status == AlertStatus.CLOSED:
        return text, json.dumps(blocks)
    if not members or type(view.id) is not int:
        blocks.append(_actions(view))
        return text, json.dumps(blocks)
    template = _options_template(members)
    # The actions block with the select last and its options left out; its JSON ends with the
    # select's, the elements' and the block's closing "}]}": the options go before them.
    actions = {"block_id": f"alert-{view.id}", "type": "actions"}
    actions["elements"] = [*_buttons(view), _select(view, members, None)]
    head, shell = json.dumps(blocks), json.dumps(actions)
    assert head.endswith("]") and shell.endswith("}]}")
    options = str(view.id).join(template)
    return text, f'{head[:-1]}, {shell[:-3]}, "options": {options}}}]}}]'


#: A member list (as the view has it) -> its options' JSON, split where the alert's id goes.
_OPTIONS_TEMPLATES: dict[tuple, tuple[str, ...]] = {}


def _options_template(members: Sequence[tuple[int, str]]) -> tuple[str, ...]:
    """The JSON array of the Assign… options of ``members`` for any alert: ``str(alert_id)``
    joins its pieces into the array ``_actions`` would encode (each option's value names the
    alert and the member; labels clipped and checked as ``_option`` does). Made once per member
    list: the worker's member lists come from ``render._members``, the same tuple while the
    team's members are unchanged."""
    key = tuple(members) if not isinstance(members, tuple) else members
    try:
        found = _OPTIONS_TEMPLATES.get(key)
    except TypeError:  # unhashable entries (lists): made each time
        found, key = None, None
    if found is not None:
        return found
    pieces, before = [], "["
    for uid, name in members:
        label = _label(name)
        # What _option checks; the value is at most '{"alert":<MAX_ID>,"user":<MAX_ID>}' long.
        if type(uid) is not int or not 0 <= uid <= MAX_ID:
            raise SlackObjectFormationError(f"option value for user {uid!r} is not an id")
        _option(label, ButtonValue(MAX_ID, user=MAX_ID).encode())
        text = json.dumps({"type": "plain_text", "text": label, "emoji": True})
        pieces.append(f'{before}{{"text": {text}, "value": "{{\\"alert\\":')
        before = f',\\"user\\":{uid}}}"}}, '
    pieces.append(before[: -len(", ")] + "]")
    found = tuple(pieces)
    if key is not None:
        if len(_OPTIONS_TEMPLATES) >= 256:
            _OPTIONS_TEMPLATES.clear()
        _OPTIONS_TEMPLATES[key] = found
    return found


def _alert_blocks(view: AlertView, web_url: str | None) -> tuple[str, list[dict]]:
    """``(fallback text, blocks)`` of the alert message but for its actions block."""
    icon = PRIORITY_ICON.get(view.priority, "")
    title = f"{icon} *{view.priority}* · #{view.id} · {_esc(view.message)}"
    if view.count > 1:
        title += f"  _(×{view.count})_"
    blocks: list[dict] = [_section(title)]
    if view.description:
        blocks.append(_section(_clip(_esc(view.description), SECTION_LIMIT)))
    facts = []
    if view.team_name:
        facts.append(f"*Team*\n{_esc(view.team_name)}")
    if view.reported_by is not None:
        facts.append(_clip(f"*Reported by*\n{person_text(view.reported_by, mark_unresolved=False)}", FIELD_LIMIT))
    if view.responders:
        facts.append(f"*Responders*\n{_people_list(view.responders, FIELD_LIMIT - 20)}")
    if view.source:
        facts.append(f"*Source*\n{_esc(view.source)}")
    if view.entity:
        facts.append(f"*Entity*\n{_esc(view.entity)}")
    if view.tags:
        facts.append("*Tags*\n" + ", ".join(f"`{_esc(t)}`" for t in view.tags))
    for key, value in list(view.details.items())[: 10 - len(facts)]:
        person = view.detail_people.get(key)
        shown = person_text(person) if person is not None else _esc(value)
        facts.append(_clip(f"*{_esc(key)}*\n{shown}", FIELD_LIMIT))
    if facts:
        blocks.append({"fields": [_mrkdwn(f) for f in facts[: SectionBlock.fields_max_length]], "type": "section"})
    context = [_mrkdwn(status_line(view))]
    if web_url:
        context.append(_mrkdwn(f"<{_esc(web_url)}|Open in Genie>"))
    blocks.append({"elements": context, "type": "context"})
    state = (
        AlertStatus.CLOSED
        if view.status == AlertStatus.CLOSED
        else "acknowledged"
        if view.acknowledged
        else AlertStatus.OPEN
    )
    text = f"[{view.priority}] #{view.id} {_esc(view.message)} ({state})"
    return text, blocks


def refusal_blocks(
    text: str, connect_url: str | None = None, offer_disconnect_for: str | None = None, then: str | None = None
) -> list[dict]:
    """An ephemeral "you can't do that" that carries its own fix. ``then``: what Genie will do
    once the person has connected through ``connect_url`` (the click, remembered)."""
    blocks = [SectionBlock(text=MarkdownTextObject(text=f":no_entry: {_esc(text)}")).to_dict()]
    elements = []
    if connect_url:
        elements.append(connect_button(connect_url))
    if offer_disconnect_for:
        elements.append(disconnect_button(offer_disconnect_for))
    if elements:
        blocks.append(ActionsBlock(elements=elements).to_dict())
    if connect_url and then:
        blocks.append(
            ContextBlock(
                elements=[
                    MarkdownTextObject(
                        text=f"Once you're connected, Genie will {_esc(then)} for you — if your Genie account may."
                    )
                ]
            ).to_dict()
        )
    return blocks


def refusal_message(text: str, **options) -> tuple[str, list[dict]]:
    """``(fallback text, blocks)`` of a refusal (``refusal_blocks`` takes the options)."""
    return _esc(text), refusal_blocks(text, **options)


# --- direct messages the outbox delivers --------------------------------------------------------
#: Verbs of the alert actions, for people.
DONE = {
    AlertAction.ACKNOWLEDGE: "acknowledged",
    AlertAction.CLOSE: "closed",
    AlertAction.ASSIGN: "assigned",
    AlertAction.TAKE: "assigned you and acknowledged",
}


def assigned_dm(
    alert_id: int,
    message: str,
    priority: str,
    team: str | None,
    channel: str | None,
    by: str | None,
    by_slack: str | None = None,
) -> tuple[str, list[dict]]:
    """ "You were assigned alert #12: Disk full on db-1 (P1 · Payments) by Alice Smith. It is
    in #payments." ``by_slack``: an anonymous Slack actor, mentioned."""
    where = f" It is in {channel_link(channel)}." if channel_link(channel) else ""
    team_part = f" · {_esc(team)}" if team else ""
    text = (
        f"You were assigned alert #{alert_id}: {_esc(message)} ({_esc(priority)}{team_part}) "
        f"by {who_text(by, by_slack)}.{where}"
    )
    return text, [SectionBlock(text=MarkdownTextObject(text=text)).to_dict()]


def after_link_dm(action: str, alert_id: int, message: str, outcome: str, detail: str | None) -> tuple[str, list[dict]]:
    """What became of the click a person made before connecting, once they connected:
    ``outcome`` applied, denied (``detail``: why and what to do) or noop (``detail``: who got
    there first, or the alert is gone)."""
    what = f"alert #{alert_id}: {_esc(message)}" if message else f"alert #{alert_id}"
    if outcome == "applied":
        done = f"{DONE.get(action, action)} {what}" + (f" ({_esc(detail)})" if detail else "")
        text = f":white_check_mark: You're connected, so Genie {done} — the click you made before connecting."
    elif outcome == "denied":
        text = (
            f":no_entry: You're connected, but your click to {_esc(action)} {what} was not carried out: "
            f"{_esc(detail or 'not allowed')}"
        )
    else:
        text = (
            f"You're connected. Your click to {_esc(action)} {what} changed nothing: {_esc(detail or 'nothing to do')}"
        )
    return text, [SectionBlock(text=MarkdownTextObject(text=_clip(text, SECTION_LIMIT))).to_dict()]


def deleted_message(alert_id: int, message: str, by: str) -> tuple[str, list[dict]]:
    """What replaces a deleted alert's message in its channel. Plain text, no mrkdwn: nothing in
    it is read as markup."""
    text = f"Alert #{alert_id} ({message}) was deleted by {by}."
    return text, [{"type": "section", "text": {"type": "plain_text", "text": text}}]


def link_reminder_dm(refused: int) -> tuple[str, list[dict]]:
    """An admin's one-click reminder (``/reports``, linking health) to a Slack user whose clicks
    on alerts were refused because their Slack account is connected to no Genie account."""
    times = "once" if refused == 1 else f"{int(refused)} times"
    text = (
        f"Your clicks on Genie alerts were refused {times} because your Slack account isn't connected to a "
        "Genie account yet. Type `/genie connect` to connect it; after that your clicks count."
    )
    return text, [SectionBlock(text=MarkdownTextObject(text=text)).to_dict()]


def home_alert_lines(alerts: Sequence[AlertView]) -> list[dict]:
    if not alerts:
        return [SectionBlock(text=MarkdownTextObject(text="*Open alerts:* none right now. :sunny:")).to_dict()]
    lines = "\n".join(
        f"{PRIORITY_ICON.get(a.priority, '')} *#{a.id}* {_esc(_clip(a.message, 80))}"
        f"{' — ' + _esc(a.team_name) if a.team_name else ''}{' · acknowledged' if a.acknowledged else ''}"
        for a in alerts
    )
    return [
        SectionBlock(
            text=MarkdownTextObject(text=_clip(f"*Open alerts of your teams:*\n{lines}", SECTION_LIMIT))
        ).to_dict()
    ]
