"""Pure Block Kit builder for a storm digest: the one message that stands for the alerts a storm
brought to a channel (``bot.services.outbox.storm``). No I/O; every value is escaped.

    text, blocks = digest_message(view, "https://genie.example.com")   # chat.postMessage / chat.update
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from slack_sdk.models.blocks import ContextBlock, DividerBlock, MarkdownTextObject, SectionBlock

from bot.blocks.alerts import PRIORITY_ICON
from bot.blocks.mrkdwn import escape as _esc
from bot.blocks.mrkdwn import when as _when

#: How many alerts the digest lists by name (most urgent first); the web list has them all.
TOP = 10
#: How many sources and aliases it counts by name; the rest are "other".
GROUPS = 5
SECTION_LIMIT = 3000


@dataclass(frozen=True)
class DigestAlert:
    id: int
    priority: str
    message: str
    #: open, acknowledged or closed
    state: str


@dataclass(frozen=True)
class DigestView:
    id: int
    team_name: str | None
    storm_priority: str
    opened_at: datetime
    closed_at: datetime | None
    total: int
    open: int
    acknowledged: int
    closed: int
    #: ``(priority, count)``, most urgent first.
    by_priority: tuple[tuple[str, int], ...]
    #: ``(source or alias, count)``, largest first, at most ``GROUPS`` (plus the rest's count).
    by_source: tuple[tuple[str, int], ...]
    by_alias: tuple[tuple[str, int], ...]
    #: The most urgent alerts still open (unacknowledged first), at most ``TOP``.
    top: tuple[DigestAlert, ...]


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _groups(pairs: tuple[tuple[str, int], ...], total: int) -> str:
    shown = ", ".join(f"{_esc(_clip(name, 60))} ({count:,})" for name, count in pairs)
    rest = total - sum(count for _, count in pairs)
    return shown + (f", other ({rest:,})" if rest > 0 else "") if shown else "—"


def digest_message(view: DigestView, base_url: str) -> tuple[str, list[dict]]:
    """``(fallback text, blocks)``: how many alerts, by state and priority, the most urgent ones
    (each linking to its page, where it can be acted on), counts by source and alias, and a link
    to the web list of exactly these alerts."""
    base = base_url.rstrip("/")
    list_url = f"{base}/alerts?digest={view.id}"
    team = f" for {_esc(view.team_name)}" if view.team_name else ""
    noun = "alert" if view.total == 1 else "alerts"
    if view.closed_at is None:
        headline = f":rotating_light: *Alert storm{team}: {view.total:,} {noun}* collapsed into this message"
        text = f"Alert storm{team}: {view.total:,} {noun}"
    else:
        headline = f":white_check_mark: *Alert storm{team} has passed: {view.total:,} {noun}* were collapsed here"
        text = f"Alert storm{team} (passed): {view.total:,} {noun}"
    blocks: list[dict] = [SectionBlock(text=MarkdownTextObject(text=headline)).to_dict()]
    states = f"*{view.open:,}* open · *{view.acknowledged:,}* acknowledged · *{view.closed:,}* closed"
    priorities = " · ".join(f"{PRIORITY_ICON.get(p, '')} {_esc(p)}: {n:,}" for p, n in view.by_priority)
    blocks.append(SectionBlock(text=MarkdownTextObject(text=f"{states}\n{priorities}")).to_dict())
    if view.top:
        lines = [
            f"{PRIORITY_ICON.get(a.priority, '')} *{_esc(a.priority)}* · <{_esc(f'{base}/alerts/{a.id}')}|#{a.id}> · "
            f"{_esc(_clip(a.message, 120))}" + ("  _(acknowledged)_" if a.state == "acknowledged" else "")
            for a in view.top
        ]
        more = view.open + view.acknowledged - len(view.top)
        if more > 0:
            lines.append(f"_… and {more:,} more_")
        blocks.append(
            SectionBlock(
                text=MarkdownTextObject(text=_clip("*Most urgent*\n" + "\n".join(lines), SECTION_LIMIT))
            ).to_dict()
        )
    blocks.append(
        SectionBlock(
            fields=[
                MarkdownTextObject(text=_clip(f"*By source*\n{_groups(view.by_source, view.total)}", 2000)),
                MarkdownTextObject(text=_clip(f"*By alias*\n{_groups(view.by_alias, view.total)}", 2000)),
            ]
        ).to_dict()
    )
    blocks.append(DividerBlock().to_dict())
    since = f"Since {_when(view.opened_at)}"
    if view.closed_at is not None:
        since += f", until {_when(view.closed_at)}"
    rule = (
        f"{_esc(view.storm_priority)} and less urgent alerts are collapsed here; more urgent ones are posted on their own"
        if view.closed_at is None
        else "New alerts are posted one by one again"
    )
    blocks.append(
        ContextBlock(
            elements=[
                MarkdownTextObject(text=f"{since}. {rule}."),
                MarkdownTextObject(text=f"<{_esc(list_url)}|Open all {view.total:,} in Genie> to act on each"),
            ]
        ).to_dict()
    )
    return text, blocks
