"""Who is on call, drawn for Slack: the ``/genie oncall`` answer and the App Home lines, with
every time in the reader's time zone (Slack's ``users.info`` ``tz``). Pure: values in, blocks
out; every value escaped.

    text, blocks = oncall_message(rosters, ZoneInfo("Europe/Berlin"), now)
    blocks = home_oncall_blocks(mine, tz, now)
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

from slack_sdk.models.blocks import ContextBlock, MarkdownTextObject, SectionBlock

from bot.blocks.mrkdwn import escape as _esc

#: Slack's limit on a section's text.
_MAX = 3000


def when(at: datetime, tz: ZoneInfo, now: datetime) -> str:
    """ "Fri 09:00" within the coming week, "Fri 4 Dec 09:00" beyond it, in ``tz``."""
    local = at.astimezone(tz)
    if abs(at - now) < timedelta(days=6):
        return f"{local:%a %H:%M}"
    return f"{local:%a} {local.day} {local:%b %H:%M}"


def span(start: datetime, end: datetime, tz: ZoneInfo, now: datetime) -> str:
    """ "Sat 02:00–06:00", or "Sat 22:00–Sun 06:00" across midnight."""
    a, b = start.astimezone(tz), end.astimezone(tz)
    return f"{when(start, tz, now)}–{f'{b:%H:%M}' if a.date() == b.date() else when(end, tz, now)}"


def _zone_note(tz: ZoneInfo) -> str:
    return f"Times are in your time zone, {_esc(str(tz.key))}."


def _schedule_lines(roster, tz: ZoneInfo, now: datetime) -> str:
    current = roster.now
    if current.who is None:
        first = f"nobody on call now (until {when(current.end, tz, now)})"
    else:
        cover = " (override)" if current.override else ""
        until = "no hand-off this week" if current.open_end else f"until {when(current.end, tz, now)}"
        first = f"*{_esc(current.who)}*{cover} {until}"
    lines = [f"• *{_esc(roster.name)}*: {first}"]
    if roster.next is not None:
        who = _esc(roster.next.who) if roster.next.who else "nobody"
        lines.append(f"    next: {who} from {when(roster.next.start, tz, now)}")
    for gap in roster.gaps:
        if gap.start > now:
            lines.append(f"    :warning: nobody on call {span(gap.start, gap.end, tz, now)}")
    return "\n".join(lines)


def oncall_message(rosters: Sequence, tz: ZoneInfo, now: datetime) -> tuple[str, list[dict]]:
    """The ephemeral answer to ``/genie oncall [team]``: for each team, each schedule's person
    now, the next hand-off and the gaps over the coming week."""
    blocks: list[dict] = []
    summary = []
    for team in rosters:
        if not team.schedules:
            body = f"*{_esc(team.team)}* has no on-call schedule."
        else:
            body = f"*On call for {_esc(team.team)}*\n" + "\n".join(_schedule_lines(r, tz, now) for r in team.schedules)
        blocks.append(SectionBlock(text=MarkdownTextObject(text=body[:_MAX])).to_dict())
        names = [r.now.who or "nobody" for r in team.schedules]
        summary.append(f"{team.team}: {', '.join(names) or 'no schedule'}")
    blocks.append(ContextBlock(elements=[MarkdownTextObject(text=_zone_note(tz))]).to_dict())
    return _esc("On call — " + "; ".join(summary)), blocks[:50]


def home_oncall_blocks(shifts: Sequence, tz: ZoneInfo, now: datetime) -> list[dict]:
    """The App Home's on-call part: "You are on call for Payments until Fri 09:00" and the
    person's shifts over the next 7 days (none: says so)."""
    current = [s for s in shifts if s.start <= now < s.end]
    upcoming = [s for s in shifts if s.start > now]
    lines = [
        f":pager: *You are on call for {_esc(s.team)}* ({_esc(s.schedule)}) "
        + ("with no hand-off this week" if s.open_end else f"until {when(s.end, tz, now)}")
        + (" — an override" if s.override else "")
        for s in current
    ]
    if upcoming:
        lines.append("*Your shifts in the next 7 days:*")
        lines += [
            f"• {span(s.start, s.end, tz, now)} — {_esc(s.team)} ({_esc(s.schedule)})"
            + (" (override)" if s.override else "")
            for s in upcoming[:20]
        ]
    elif not current:
        lines.append("*On call:* you have no shifts in the next 7 days.")
    return [
        SectionBlock(text=MarkdownTextObject(text="\n".join(lines)[:_MAX])).to_dict(),
        ContextBlock(elements=[MarkdownTextObject(text=_zone_note(tz))]).to_dict(),
    ]


def _slack_date(ts: int) -> str:
    """A time Slack shows in the reader's own time zone (``<!date^…>``), UTC as the fallback."""
    fallback = datetime.fromtimestamp(int(ts), UTC).strftime("%a %d %b %H:%M UTC")
    return f"<!date^{int(ts)}^{{date_short_pretty}} {{time}}|{fallback}>"


def shift_reminder_dm(team: str, schedule: str, start: int, end: int, override: bool = False) -> tuple[str, list[dict]]:
    """The DM before a person's shift starts (outbox intent ``oncall.reminder``): times as
    Slack date tokens, so each reader sees their own time zone."""
    cover = " (an override)" if override else ""
    text = (
        f":pager: Your on-call shift for *{_esc(team)}* ({_esc(schedule)}){cover} starts "
        f"{_slack_date(start)} and lasts until {_slack_date(end)}."
    )
    return (
        f"Your on-call shift for {_esc(team)} ({_esc(schedule)}) starts soon",
        [
            SectionBlock(text=MarkdownTextObject(text=text)).to_dict(),
            ContextBlock(
                elements=[MarkdownTextObject(text="`/genie oncall` shows who is on call now and next.")]
            ).to_dict(),
        ],
    )
