"""Schedule maths: who is on call at an instant, and the shifts over a span. Pure: no database,
no clock; every instant in and out is an aware UTC ``datetime``.

A ``Schedule`` is a stack of ``Rotation`` layers (the last in the list is the highest) plus
``Override``\\ s:

- A rotation hands off from one participant to the next every ``length`` ``unit``\\ s, starting
  at ``start`` (and, if given, stopping at ``end``), read in its IANA ``time_zone``. Rotations in
  ``days`` and ``weeks`` keep the *wall-clock* hand-off time: a 09:00 Europe/Berlin hand-off is at
  09:00 local on both sides of a daylight-saving change, so that shift is 23 or 25 hours long.
  Rotations in ``hours`` are elapsed time (every 12 h of real time), as in GoAlert.
- ``Window``\\ s restrict a rotation to parts of the day or the week (OpsGenie's "time-of-day" and
  "weekday-and-time-of-day" restrictions), also read in the rotation's time zone; a window whose
  end is not after its start crosses midnight (or, for a weekly window, wraps around the week).
  Restrictions clip the shifts, they do not move the hand-offs: outside every window the layer has
  nobody.
- At each instant the highest layer that has somebody wins; a layer with nobody lets the one
  below show through.
- An override (X covers from A to B) beats every layer; of two overlapping overrides the later in
  the list wins.

A wall-clock time is turned into an instant the way ``zoneinfo`` does with ``fold=0``: a time
skipped by a spring-forward change (02:30 on the last Sunday of March in Berlin) is read with the
offset before the change (so it is 03:30 CEST), an ambiguous one (02:30 on the fall-back night) is
its first occurrence. A window that this makes empty (02:10–02:50 on that March night) is empty.

``Schedule.validate()`` (called by ``who_is_on_call`` and ``shifts``) raises ``ScheduleError``
with one sentence that names the faulty item.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from bot.services.errors import InvalidInput

UNITS = ("hours", "days", "weeks")
DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
UTC = UTC


class ScheduleError(InvalidInput):
    """A schedule that cannot be computed; the text names the item at fault."""


def zone(name: str, item: str = "time zone") -> ZoneInfo:
    """The IANA zone ``name``, or ``ScheduleError`` naming ``item``."""
    try:
        if not name or name != name.strip() or name.startswith("/") or ".." in name:
            raise ValueError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, TypeError):
        raise ScheduleError(
            f"{item}: {name!r} is not a known time zone (use an IANA name such as Europe/Berlin)"
        ) from None


#: Instants a schedule may name, and the longest span one question may cover (far-off dates
#: would overflow ``datetime``; a span of centuries would be a denial of service).
EARLIEST, LATEST = datetime(1970, 1, 1, tzinfo=UTC), datetime(2200, 1, 1, tzinfo=UTC)
MAX_SPAN = timedelta(days=400)


def instant(value: datetime, item: str) -> datetime:
    """``value`` in UTC, or ``ScheduleError`` naming ``item`` (naive, or out of range)."""
    if not isinstance(value, datetime) or value.tzinfo is None or value.utcoffset() is None:
        raise ScheduleError(f"{item}: {value!r} has no time zone (give an aware datetime)")
    value = value.astimezone(UTC)
    if not EARLIEST <= value < LATEST:
        raise ScheduleError(f"{item}: {value:%Y-%m-%d} is out of range ({EARLIEST:%Y} to {LATEST.year - 1})")
    return value


def resolve(day: date, at: time, tz: ZoneInfo) -> datetime:
    """The instant of wall-clock ``at`` on ``day`` in ``tz`` (``fold=0``), in UTC."""
    return datetime.combine(day, at, tzinfo=tz).replace(fold=0).astimezone(UTC)


@dataclass(frozen=True)
class Window:
    """An allowed period. ``start_day``/``end_day`` None: every day from ``start`` to ``end``
    (OpsGenie's time-of-day); else weekdays 0 (Monday) … 6 (Sunday), from ``start_day`` at
    ``start`` to ``end_day`` at ``end`` (weekday-and-time-of-day). As in OpsGenie, an end equal
    to the start is a whole day (a whole week): always."""

    start: time
    end: time
    start_day: int | None = None
    end_day: int | None = None

    @property
    def weekly(self) -> bool:
        return self.start_day is not None

    def describe(self) -> str:
        if self.weekly:
            return (
                f"{DAYS[self.start_day].title()} {self.start:%H:%M}–"  # type: ignore[index]
                f"{DAYS[self.end_day].title()} {self.end:%H:%M}"
            )  # type: ignore[index]
        return f"{self.start:%H:%M}–{self.end:%H:%M}"

    def validate(self, item: str) -> None:
        for t in (self.start, self.end):
            if not isinstance(t, time) or t.tzinfo is not None:
                raise ScheduleError(f"{item}: {t!r} is not a time of day")
        if (self.start_day is None) != (self.end_day is None):
            raise ScheduleError(f"{item}: give both a start day and an end day, or neither")
        if self.weekly:
            for d in (self.start_day, self.end_day):
                if not isinstance(d, int) or isinstance(d, bool) or not 0 <= d <= 6:
                    raise ScheduleError(f"{item}: {d!r} is not a weekday (0 = Monday … 6 = Sunday)")

    def occurrences(self, tz: ZoneInfo, start: datetime, end: datetime) -> list[tuple[datetime, datetime]]:
        """The window's periods that meet [start, end), as UTC intervals, in order."""
        first = start.astimezone(tz).date() - timedelta(days=8 if self.weekly else 1)
        last = end.astimezone(tz).date()
        out = []
        day = first
        while day <= last:
            if not self.weekly or day.weekday() == self.start_day:
                if self.weekly:
                    span = (self.end_day - self.start_day) % 7  # type: ignore[operator]
                    if span == 0 and self.end <= self.start:
                        span = 7
                else:
                    span = 0 if self.end > self.start else 1
                a, b = resolve(day, self.start, tz), resolve(day + timedelta(days=span), self.end, tz)
                if a < b and b > start and a < end:
                    out.append((a, b))
            day += timedelta(days=1)
        return out


@dataclass(frozen=True)
class Rotation:
    """One layer. ``start`` is the first hand-off (to ``participants[0]``); its wall-clock time
    in ``time_zone`` is the hand-off time of every later shift (days, weeks). A participant may
    appear several times; None is a "nobody" slot (OpsGenie's ``none``): that shift the layer has
    nobody, and the one below shows through."""

    name: str
    participants: tuple[Hashable, ...]
    length: int
    unit: str
    start: datetime
    time_zone: str
    end: datetime | None = None
    windows: tuple[Window, ...] = ()

    def validate(self) -> None:
        item = f"rotation {self.name!r}"
        if all(p is None for p in self.participants):
            raise ScheduleError(f"{item} has no participants")
        if self.unit not in UNITS:
            raise ScheduleError(f"{item}: the rotation length unit {self.unit!r} is not one of {', '.join(UNITS)}")
        if not isinstance(self.length, int) or isinstance(self.length, bool) or self.length <= 0:
            raise ScheduleError(
                f"{item}: the rotation length must be a whole number of {self.unit} above 0, not {self.length!r}"
            )
        if self.length > 10_000:
            raise ScheduleError(f"{item}: a rotation length of {self.length} {self.unit} is too long")
        zone(self.time_zone, item)
        start = instant(self.start, f"{item} start")
        if self.end is not None and instant(self.end, f"{item} end") <= start:
            raise ScheduleError(
                f"{item} ends ({self.end:%Y-%m-%d %H:%M %Z}) before it starts ({self.start:%Y-%m-%d %H:%M %Z})"
            )
        for n, window in enumerate(self.windows, 1):
            window.validate(f"{item}, restriction {n}")

    # -- hand-offs --
    def _handoff(self, k: int) -> datetime:
        """The instant of the k-th hand-off (k = 0 is ``start``)."""
        start = self.start.astimezone(UTC)
        if self.unit == "hours":
            return start + timedelta(hours=self.length * k)
        tz = ZoneInfo(self.time_zone)
        local = self.start.astimezone(tz)
        days = self.length * (7 if self.unit == "weeks" else 1) * k
        return resolve(local.date() + timedelta(days=days), local.time().replace(tzinfo=None, fold=0), tz)

    def _index(self, at: datetime) -> int:
        """The k with handoff(k) <= at < handoff(k + 1) (negative before the start)."""
        hours = self.length * {"hours": 1, "days": 24, "weeks": 168}[self.unit]
        k = math.floor((at - self.start.astimezone(UTC)) / timedelta(hours=hours))
        while self._handoff(k) > at:
            k -= 1
        while self._handoff(k + 1) <= at:
            k += 1
        return k

    def shifts(self, start: datetime, end: datetime) -> list[tuple[datetime, datetime, Hashable]]:
        """The rotation's own shifts over [start, end), clipped to it and to the windows."""
        lo = max(start, self.start.astimezone(UTC))
        hi = min(end, self.end.astimezone(UTC)) if self.end is not None else end
        raw: list[tuple[datetime, datetime, Hashable]] = []
        if lo < hi:
            k = self._index(lo)
            while True:
                a, b = self._handoff(k), self._handoff(k + 1)
                who = self.participants[k % len(self.participants)]
                if who is not None:  # a "nobody" slot: this layer has nobody for that shift
                    raw.append((max(a, lo), min(b, hi), who))
                if b >= hi:
                    break
                k += 1
        if not self.windows or not raw:
            return raw
        tz = ZoneInfo(self.time_zone)
        allowed = _union([occ for w in self.windows for occ in w.occurrences(tz, lo, hi)])
        out = []
        for a, b, who in raw:
            for wa, wb in allowed:
                x, y = max(a, wa), min(b, wb)
                if x < y:
                    out.append((x, y, who))
        return out


@dataclass(frozen=True)
class Override:
    """``who`` covers from ``start`` to ``end``, over every layer."""

    who: Hashable
    start: datetime
    end: datetime
    name: str = "override"

    def validate(self) -> None:
        start, end = instant(self.start, f"{self.name} start"), instant(self.end, f"{self.name} end")
        if end <= start:
            raise ScheduleError(
                f"{self.name} ends ({end:%Y-%m-%d %H:%M} UTC) before it starts ({start:%Y-%m-%d %H:%M} UTC)"
            )


@dataclass(frozen=True)
class Schedule:
    rotations: tuple[Rotation, ...] = ()
    overrides: tuple[Override, ...] = ()

    def validate(self) -> None:
        names = set()
        for rotation in self.rotations:
            rotation.validate()
            if rotation.name in names:
                raise ScheduleError(f"rotation {rotation.name!r} appears twice in the schedule")
            names.add(rotation.name)
        for override in self.overrides:
            override.validate()


@dataclass(frozen=True)
class Shift:
    """Who is on call from ``start`` to ``end`` (``who`` None: nobody — a gap), from which
    ``layer`` (the rotation's name; None for overrides and gaps), and whether by override."""

    start: datetime
    end: datetime
    who: Hashable | None
    layer: str | None = None
    override: bool = False

    def key(self) -> tuple:
        return (self.who, self.layer, self.override)


def _union(intervals: Iterable[tuple[datetime, datetime]]) -> list[tuple[datetime, datetime]]:
    out: list[tuple[datetime, datetime]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], b))
        else:
            out.append((a, b))
    return out


def shifts(schedule: Schedule, start: datetime, end: datetime) -> list[Shift]:
    """The shifts over [start, end), in order, contiguous and covering all of it: gaps are
    shifts with ``who`` None; neighbours that are the same person from the same source are
    merged."""
    schedule.validate()
    start, end = instant(start, "start"), instant(end, "end")
    if end <= start:
        raise ScheduleError(f"the span ends ({end:%Y-%m-%d %H:%M} UTC) before it starts ({start:%Y-%m-%d %H:%M} UTC)")
    if end - start > MAX_SPAN:
        raise ScheduleError(f"ask for at most {MAX_SPAN.days} days of shifts at a time")
    # Each source: (priority, intervals); overrides above every layer, later ones higher.
    sources: list[tuple[list[tuple[datetime, datetime, Hashable]], str | None, bool]] = []
    for rotation in schedule.rotations:
        sources.append((rotation.shifts(start, end), rotation.name, False))
    for override in schedule.overrides:
        a, b = max(override.start.astimezone(UTC), start), min(override.end.astimezone(UTC), end)
        sources.append(([(a, b, override.who)] if a < b else [], None, True))
    cuts = sorted({start, end} | {t for ivs, _, _ in sources for a, b, _ in ivs for t in (a, b)})
    starts = [[a for a, _, _ in ivs] for ivs, _, _ in sources]
    out: list[Shift] = []
    for a, b in zip(cuts, cuts[1:]):
        piece = Shift(a, b, None)
        for n in range(len(sources) - 1, -1, -1):
            ivs, layer, is_override = sources[n]
            i = bisect.bisect_right(starts[n], a) - 1
            if i >= 0 and ivs[i][1] > a:
                piece = Shift(a, b, ivs[i][2], layer, is_override)
                break
        if out and out[-1].end == a and out[-1].key() == piece.key():
            out[-1] = Shift(out[-1].start, b, piece.who, piece.layer, piece.override)
        else:
            out.append(piece)
    return out


def who_is_on_call(schedule: Schedule, at: datetime, horizon: timedelta = timedelta(days=8)) -> Shift:
    """The shift at instant ``at`` (``who`` None: nobody); its ``start`` and ``end`` are seen
    at most ``horizon`` either side of ``at`` (enough to say "until Fri 09:00")."""
    at = instant(at, "at")
    span = min(horizon, timedelta(days=1))  # most shifts end within a day: look there first
    while True:
        shift = next(s for s in shifts(schedule, at - span, at + span) if s.start <= at < s.end)
        if span >= horizon or (at - span < shift.start and shift.end < at + span):
            return shift
        span = horizon


def describe_gaps(found: list[Shift], tz: ZoneInfo) -> list[str]:
    """ "nobody on call Sat 02:00–06:00" for each gap, in ``tz``."""
    out = []
    for s in found:
        if s.who is None:
            a, b = s.start.astimezone(tz), s.end.astimezone(tz)
            b_text = f"{b:%H:%M}" if b.date() == a.date() else f"{b:%a %H:%M}"
            out.append(f"nobody on call {a:%a %H:%M}–{b_text}")
    return out
