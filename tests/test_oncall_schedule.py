"""The schedule maths (``bot.services.oncall.schedule``): hand-offs, daylight saving in
Europe/Berlin and America/New_York, restrictions crossing midnight and the week, layers,
overrides and gaps — and a property test against a brute-force minute-by-minute oracle."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bot.services.oncall.schedule import (
    Override,
    Rotation,
    Schedule,
    ScheduleError,
    Shift,
    Window,
    describe_gaps,
    shifts,
    who_is_on_call,
)

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
NEW_YORK = ZoneInfo("America/New_York")


def local(tz: ZoneInfo, *args: int) -> datetime:
    return datetime(*args, tzinfo=tz)


def daily(
    name="primary", people=("alice", "bob", "carol"), length=1, unit="days", tz="Europe/Berlin", start=None, **kw
) -> Rotation:
    start = start or datetime(2026, 3, 1, 8, 0, tzinfo=UTC)  # 09:00 in Berlin
    return Rotation(name, tuple(people), length, unit, start, tz, **kw)


def handoffs(found: list[Shift]) -> list[tuple[str, str]]:
    """(local start, who) of each shift, in Berlin time, to read like a calendar."""
    return [(f"{s.start.astimezone(BERLIN):%a %d %H:%M %Z}", s.who) for s in found]


# --- hand-offs and daylight saving ------------------------------------------------------------
def test_daily_handoff_stays_at_nine_local_across_spring_forward_in_berlin():
    sched = Schedule((daily(),))
    found = shifts(sched, local(BERLIN, 2026, 3, 28, 9), local(BERLIN, 2026, 3, 31, 9))
    assert handoffs(found) == [
        ("Sat 28 09:00 CET", "alice"),
        ("Sun 29 09:00 CEST", "bob"),
        ("Mon 30 09:00 CEST", "carol"),
    ]
    # The night the clocks go forward, the shift is 23 hours long.
    assert [s.end - s.start for s in found] == [timedelta(hours=23), timedelta(hours=24), timedelta(hours=24)]
    assert found[0].start == datetime(2026, 3, 28, 8, tzinfo=UTC)
    assert found[1].start == datetime(2026, 3, 29, 7, tzinfo=UTC)


def test_daily_handoff_stays_at_nine_local_across_fall_back_in_berlin():
    sched = Schedule((daily(),))
    found = shifts(sched, local(BERLIN, 2026, 10, 24, 9), local(BERLIN, 2026, 10, 26, 9))
    assert [f"{s.start.astimezone(BERLIN):%d %H:%M}" for s in found] == ["24 09:00", "25 09:00"]
    assert [s.end - s.start for s in found] == [timedelta(hours=25), timedelta(hours=24)]
    # 2026-03-01 + 237 days: 237 % 3 == 0, so alice.
    assert [s.who for s in found] == ["alice", "bob"]


@pytest.mark.parametrize(
    "day, hours", [((2026, 3, 7), 23), ((2026, 3, 8), 24), ((2026, 10, 31), 25), ((2026, 11, 1), 24)]
)
def test_daily_handoff_in_new_york_across_its_own_changes(day, hours):
    # New York changes on 8 March and 1 November 2026 (Europe: 29 March and 25 October).
    rot = daily(tz="America/New_York", start=local(NEW_YORK, 2026, 1, 1, 8, 30), people=("ann", "ben"))
    start = local(NEW_YORK, *day, 8, 30)
    found = shifts(Schedule((rot,)), start, start + timedelta(days=2))
    # The shift starting on `day` is 23 or 25 hours long when the change falls in the night after it.
    first = found[0]
    assert f"{first.start.astimezone(NEW_YORK):%H:%M}" == "08:30"
    assert f"{first.end.astimezone(NEW_YORK):%H:%M}" == "08:30"
    assert first.end - first.start == timedelta(hours=hours)


def test_new_york_spring_forward_shift_is_23_hours():
    rot = daily(tz="America/New_York", start=local(NEW_YORK, 2026, 1, 1, 8, 30), people=("ann", "ben"))
    found = shifts(Schedule((rot,)), local(NEW_YORK, 2026, 3, 7, 12), local(NEW_YORK, 2026, 3, 9, 12))
    assert [(f"{s.start.astimezone(NEW_YORK):%d %H:%M %Z}", s.end - s.start) for s in found] == [
        ("07 12:00 EST", timedelta(hours=19, minutes=30)),  # clipped to the span's start
        ("08 08:30 EDT", timedelta(hours=24)),
        ("09 08:30 EDT", timedelta(hours=3, minutes=30)),  # clipped to the span's end
    ]
    # 1 Jan + 65 days = 7 March: ann on even days, so ben.
    assert [s.who for s in found] == ["ben", "ann", "ben"]


def test_hourly_rotation_is_elapsed_time_not_wall_clock():
    rot = daily(length=12, unit="hours", people=("a", "b"), start=local(BERLIN, 2026, 3, 28, 9))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 28, 9), local(BERLIN, 2026, 3, 30, 9))
    assert all(s.end - s.start == timedelta(hours=12) for s in found[:-1])
    # After the change, the 12-hour beat lands at 10:00 and 22:00 local.
    assert [f"{s.start.astimezone(BERLIN):%d %H:%M}" for s in found] == [
        "28 09:00",
        "28 21:00",
        "29 10:00",
        "29 22:00",
        "30 10:00",
    ][: len(found)]


def test_weekly_rotation_hands_off_on_monday_morning_in_local_time():
    rot = daily(length=1, unit="weeks", people=("a", "b", "c"), start=local(BERLIN, 2026, 3, 2, 9))  # Monday
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 2, 9), local(BERLIN, 2026, 4, 6, 9))
    assert handoffs(found) == [
        ("Mon 02 09:00 CET", "a"),
        ("Mon 09 09:00 CET", "b"),
        ("Mon 16 09:00 CET", "c"),
        ("Mon 23 09:00 CET", "a"),
        ("Mon 30 09:00 CEST", "b"),
    ]
    assert found[3].end - found[3].start == timedelta(days=7, hours=-1)


def test_multi_day_rotation_and_a_single_participant_merge_into_one_shift():
    rot = daily(length=2, people=("solo",))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 5), local(BERLIN, 2026, 3, 12))
    assert found == [
        Shift(
            local(BERLIN, 2026, 3, 5).astimezone(UTC),
            local(BERLIN, 2026, 3, 12).astimezone(UTC),
            "solo",
            "primary",
            False,
        )
    ]


def test_before_the_rotation_starts_and_after_it_ends_nobody_is_on_call():
    rot = daily(start=local(BERLIN, 2026, 3, 10, 9), end=local(BERLIN, 2026, 3, 12, 9), people=("a", "b"))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 9), local(BERLIN, 2026, 3, 13))
    assert [(f"{s.start.astimezone(BERLIN):%d %H:%M}", s.who) for s in found] == [
        ("09 00:00", None),
        ("10 09:00", "a"),
        ("11 09:00", "b"),
        ("12 09:00", None),
    ]
    assert who_is_on_call(Schedule((rot,)), local(BERLIN, 2026, 3, 9, 12)).who is None


def test_who_is_on_call_now_and_until_when():
    sched = Schedule((daily(people=("alice", "bob")),))
    now = who_is_on_call(sched, local(BERLIN, 2026, 3, 4, 3, 0))  # the third shift from 1 March
    assert (now.who, now.layer, now.override) == ("alice", "primary", False)
    assert now.start == local(BERLIN, 2026, 3, 3, 9).astimezone(UTC)
    assert now.end == local(BERLIN, 2026, 3, 4, 9).astimezone(UTC)
    # A hand-off instant belongs to the next shift.
    assert who_is_on_call(sched, local(BERLIN, 2026, 3, 4, 9, 0)).who == "bob"
    assert who_is_on_call(sched, local(BERLIN, 2026, 3, 4, 8, 59)).who == "alice"


# --- restrictions -----------------------------------------------------------------------------
def test_time_of_day_restriction_crossing_midnight_over_a_fall_back_night():
    night = Window(time(22), time(6))
    rot = daily(people=("a", "b"), windows=(night,))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 10, 24, 12), local(BERLIN, 2026, 10, 25, 12))
    on = [s for s in found if s.who]
    # 22:00 CEST Saturday to 06:00 CET Sunday is nine hours; the 09:00 hand-off is outside it.
    assert len(on) == 1 and on[0].end - on[0].start == timedelta(hours=9)
    assert f"{on[0].start.astimezone(BERLIN):%a %H:%M %Z}" == "Sat 22:00 CEST"
    assert f"{on[0].end.astimezone(BERLIN):%a %H:%M %Z}" == "Sun 06:00 CET"
    assert describe_gaps(found, BERLIN) == ["nobody on call Sat 12:00–22:00", "nobody on call Sun 06:00–12:00"]


def test_time_of_day_restriction_is_clipped_by_the_handoff_inside_it():
    # Hand-off at 02:00 inside a 22:00–06:00 window: a then b within one night.
    rot = daily(people=("a", "b"), start=local(BERLIN, 2026, 3, 1, 2), windows=(Window(time(22), time(6)),))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 2, 20), local(BERLIN, 2026, 3, 3, 8))
    assert [(f"{s.start.astimezone(BERLIN):%H:%M}", s.who) for s in found] == [
        ("20:00", None),
        ("22:00", "b"),
        ("02:00", "a"),
        ("06:00", None),
    ]


def test_a_window_starting_in_the_skipped_hour_starts_at_the_same_offset_as_zoneinfo_reads_it():
    rot = daily(people=("a",), windows=(Window(time(2, 30), time(5)),))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 29, 0), local(BERLIN, 2026, 3, 29, 12))
    on = [s for s in found if s.who]
    # 02:30 does not exist that night; read with the offset before the change it is 03:30 CEST.
    assert [(f"{s.start.astimezone(BERLIN):%H:%M %Z}", f"{s.end.astimezone(BERLIN):%H:%M %Z}") for s in on] == [
        ("03:30 CEST", "05:00 CEST")
    ]


def test_weekend_window_from_friday_evening_to_monday_morning():
    weekend = Window(time(18), time(9), start_day=4, end_day=0)
    rot = daily(length=1, unit="weeks", people=("weekender",), windows=(weekend,))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 2), local(BERLIN, 2026, 3, 16))
    on = [
        (f"{s.start.astimezone(BERLIN):%a %d %H:%M}", f"{s.end.astimezone(BERLIN):%a %d %H:%M}") for s in found if s.who
    ]
    # The rotation started on Sunday 1 March, inside the weekend of 27 February.
    assert on == [("Mon 02 00:00", "Mon 02 09:00"), ("Fri 06 18:00", "Mon 09 09:00"), ("Fri 13 18:00", "Mon 16 00:00")]


def test_weekly_window_wrapping_around_the_week_and_business_hours_on_weekdays():
    # Sunday 22:00 to Monday 06:00 wraps from day 6 to day 0.
    wrap = Window(time(22), time(6), start_day=6, end_day=0)
    rot = daily(people=("x",), windows=(wrap,))
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 7), local(BERLIN, 2026, 3, 10))
    assert [(f"{s.start.astimezone(BERLIN):%a %H:%M}", s.who) for s in found] == [
        ("Sat 00:00", None),
        ("Sun 22:00", "x"),
        ("Mon 06:00", None),
    ]
    # A same-day window: Wednesday 09:00–17:00 only.
    wed = Window(time(9), time(17), start_day=2, end_day=2)
    found = shifts(
        Schedule((daily(people=("y",), windows=(wed,)),)), local(BERLIN, 2026, 3, 2), local(BERLIN, 2026, 3, 9)
    )
    assert [(f"{s.start.astimezone(BERLIN):%a %H:%M}", s.who) for s in found if s.who] == [("Wed 09:00", "y")]
    # Start and end on the same weekday, end before start: the whole week but that gap.
    most = Window(time(17), time(9), start_day=2, end_day=2)
    found = shifts(
        Schedule((daily(people=("z",), windows=(most,)),)), local(BERLIN, 2026, 3, 2), local(BERLIN, 2026, 3, 9)
    )
    assert [(f"{s.start.astimezone(BERLIN):%a %H:%M}", s.who) for s in found] == [
        ("Mon 00:00", "z"),
        ("Wed 09:00", None),
        ("Wed 17:00", "z"),
    ]


def test_a_window_ending_when_it_starts_is_always_as_in_opsgenie():
    for window in (Window(time(9), time(9)), Window(time(9), time(9), start_day=2, end_day=2)):
        rot = daily(people=("p",), windows=(window,))
        found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 25), local(BERLIN, 2026, 4, 2))  # over a DST change
        assert [(s.who, s.start, s.end) for s in found] == [
            ("p", local(BERLIN, 2026, 3, 25).astimezone(UTC), local(BERLIN, 2026, 4, 2).astimezone(UTC))
        ]


def test_a_nobody_slot_lets_the_layer_below_show_through():
    low = daily(name="low", people=("backup",))
    high = daily(name="high", people=("a", None, "b"))
    found = shifts(Schedule((low, high)), local(BERLIN, 2026, 3, 1, 9), local(BERLIN, 2026, 3, 4, 9))
    assert [(s.who, s.layer) for s in found] == [("a", "high"), ("backup", "low"), ("b", "high")]
    found = shifts(Schedule((high,)), local(BERLIN, 2026, 3, 1, 9), local(BERLIN, 2026, 3, 4, 9))
    assert [s.who for s in found] == ["a", None, "b"]


def test_several_windows_are_a_union():
    rot = daily(
        people=("p",), windows=(Window(time(8), time(12)), Window(time(11), time(14)), Window(time(20), time(21)))
    )
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 3), local(BERLIN, 2026, 3, 4))
    assert [(f"{s.start.astimezone(BERLIN):%H:%M}", s.who) for s in found] == [
        ("00:00", None),
        ("08:00", "p"),
        ("14:00", None),
        ("20:00", "p"),
        ("21:00", None),
    ]


# --- layers, overrides, gaps ------------------------------------------------------------------
def business_hours_over_24_7():
    base = daily(name="follow-the-sun", people=("night1", "night2"))
    day = daily(
        name="business",
        people=("dev",),
        windows=tuple(Window(time(9), time(17), start_day=d, end_day=d) for d in range(5)),
    )
    return Schedule((base, day))


def test_higher_layer_wins_and_lower_shows_through_when_the_higher_is_restricted():
    sched = business_hours_over_24_7()
    tue_noon = who_is_on_call(sched, local(BERLIN, 2026, 3, 3, 12))
    assert (tue_noon.who, tue_noon.layer) == ("dev", "business")
    assert who_is_on_call(sched, local(BERLIN, 2026, 3, 3, 18)).layer == "follow-the-sun"
    assert who_is_on_call(sched, local(BERLIN, 2026, 3, 7, 12)).layer == "follow-the-sun"  # Saturday
    found = shifts(sched, local(BERLIN, 2026, 3, 3, 0), local(BERLIN, 2026, 3, 4, 0))
    assert [(f"{s.start.astimezone(BERLIN):%H:%M}", s.who, s.layer) for s in found] == [
        ("00:00", "night2", "follow-the-sun"),
        ("09:00", "dev", "business"),
        ("17:00", "night1", "follow-the-sun"),
    ]


def test_layer_order_is_list_order_not_names():
    a, b = daily(name="zz-low", people=("low",)), daily(name="aa-high", people=("high",))
    assert who_is_on_call(Schedule((a, b)), local(BERLIN, 2026, 3, 3, 12)).who == "high"
    assert who_is_on_call(Schedule((b, a)), local(BERLIN, 2026, 3, 3, 12)).who == "low"


def test_override_covers_a_weekend_over_every_layer():
    sched = business_hours_over_24_7()
    bob = Override("bob", local(BERLIN, 2026, 3, 6, 18), local(BERLIN, 2026, 3, 9, 9))
    sched = Schedule(sched.rotations, (bob,))
    found = shifts(sched, local(BERLIN, 2026, 3, 6, 12), local(BERLIN, 2026, 3, 9, 12))
    assert [(f"{s.start.astimezone(BERLIN):%a %H:%M}", s.who, s.override) for s in found] == [
        ("Fri 12:00", "dev", False),
        ("Fri 17:00", "night2", False),
        ("Fri 18:00", "bob", True),
        ("Mon 09:00", "dev", False),
    ]
    assert who_is_on_call(sched, local(BERLIN, 2026, 3, 8, 3)).override


def test_later_overlapping_override_wins_and_an_override_fills_a_gap():
    rot = daily(people=("a",), windows=(Window(time(9), time(17)),))
    first = Override("o1", local(BERLIN, 2026, 3, 3, 8), local(BERLIN, 2026, 3, 3, 12))
    second = Override("o2", local(BERLIN, 2026, 3, 3, 10), local(BERLIN, 2026, 3, 3, 11))
    found = shifts(Schedule((rot,), (first, second)), local(BERLIN, 2026, 3, 3, 6), local(BERLIN, 2026, 3, 3, 20))
    assert [(f"{s.start.astimezone(BERLIN):%H:%M}", s.who) for s in found] == [
        ("06:00", None),
        ("08:00", "o1"),
        ("10:00", "o2"),
        ("11:00", "o1"),
        ("12:00", "a"),
        ("17:00", None),
    ]


def test_the_same_person_from_a_layer_and_from_an_override_are_separate_shifts():
    rot = daily(people=("a",))
    ov = Override("a", local(BERLIN, 2026, 3, 3, 10), local(BERLIN, 2026, 3, 3, 11))
    found = shifts(Schedule((rot,), (ov,)), local(BERLIN, 2026, 3, 3, 9), local(BERLIN, 2026, 3, 3, 12))
    assert [(s.who, s.override) for s in found] == [("a", False), ("a", True), ("a", False)]


def test_gap_in_the_small_hours_of_saturday_is_reported():
    # Weekdays covered all day, weekends only 06:00–02:00 (next day): nobody Sat/Sun 02:00–06:00.
    rot = daily(
        people=("a",),
        windows=(
            Window(time(0), time(0), start_day=0, end_day=5),  # Mon 00:00 – Sat 00:00
            Window(time(6), time(2), start_day=4, end_day=5),  # Fri 06:00 – Sat 02:00
            Window(time(6), time(2), start_day=5, end_day=6),  # Sat 06:00 – Sun 02:00
            Window(time(6), time(0), start_day=6, end_day=0),  # Sun 06:00 – Mon 00:00
        ),
    )
    found = shifts(Schedule((rot,)), local(BERLIN, 2026, 3, 2), local(BERLIN, 2026, 3, 9))
    assert describe_gaps(found, BERLIN) == ["nobody on call Sat 02:00–06:00", "nobody on call Sun 02:00–06:00"]


def test_an_empty_schedule_is_one_gap():
    found = shifts(Schedule(), local(BERLIN, 2026, 3, 7), local(BERLIN, 2026, 3, 8))
    assert found == [Shift(local(BERLIN, 2026, 3, 7).astimezone(UTC), local(BERLIN, 2026, 3, 8).astimezone(UTC), None)]
    assert describe_gaps(found, BERLIN) == ["nobody on call Sat 00:00–Sun 00:00"]


# --- validation -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: Schedule((daily(name="Primary", people=()),)), "rotation 'Primary' has no participants"),
        (
            lambda: Schedule((daily(name="P", length=0),)),
            "rotation 'P': the rotation length must be a whole number of days above 0, not 0",
        ),
        (
            lambda: Schedule((daily(name="P", length=-3, unit="hours"),)),
            "rotation 'P': the rotation length must be a whole number of hours above 0, not -3",
        ),
        (
            lambda: Schedule((daily(name="P", unit="fortnights"),)),
            "rotation 'P': the rotation length unit 'fortnights' is not one of hours, days, weeks",
        ),
        (
            lambda: Schedule((daily(name="P", tz="Europe/Atlantis"),)),
            "rotation 'P': 'Europe/Atlantis' is not a known time zone",
        ),
        (
            lambda: Schedule((daily(name="P", tz="../etc/passwd"),)),
            "rotation 'P': '../etc/passwd' is not a known time zone",
        ),
        (
            lambda: Schedule((daily(name="P", start=datetime(2026, 3, 1, 9)),)),
            "rotation 'P' start: datetime.datetime(2026, 3, 1, 9, 0) has no time zone",
        ),
        (
            lambda: Schedule((daily(name="P", end=local(BERLIN, 2026, 2, 1)),)),
            "rotation 'P' ends (2026-02-01 00:00 CET) before it starts",
        ),
        (lambda: Schedule((daily(name="P", people=(None, None)),)), "rotation 'P' has no participants"),
        (
            lambda: Schedule((daily(name="P", windows=(Window(time(9), time(17), 7, 1),)),)),
            "rotation 'P', restriction 1: 7 is not a weekday",
        ),
        (
            lambda: Schedule((daily(name="P", windows=(Window(time(9), time(17), 1, None),)),)),
            "rotation 'P', restriction 1: give both a start day and an end day",
        ),
        (lambda: Schedule((daily(name="P"), daily(name="P"))), "rotation 'P' appears twice"),
        (
            lambda: Schedule(
                (), (Override("bob", local(BERLIN, 2026, 3, 9, 9), local(BERLIN, 2026, 3, 6, 18), "override for bob"),)
            ),
            "override for bob ends (2026-03-06 17:00 UTC) before it starts (2026-03-09 08:00 UTC)",
        ),
    ],
)
def test_a_faulty_schedule_is_refused_with_one_error_naming_the_item(make, message):
    sched = make()
    with pytest.raises(ScheduleError) as err:
        shifts(sched, local(BERLIN, 2026, 3, 7), local(BERLIN, 2026, 3, 8))
    assert message in str(err.value)
    with pytest.raises(ScheduleError):
        who_is_on_call(sched, local(BERLIN, 2026, 3, 7))


def test_a_span_that_ends_before_it_starts_is_too_long_or_too_far_off_is_refused():
    with pytest.raises(ScheduleError, match="the span ends"):
        shifts(Schedule((daily(),)), local(BERLIN, 2026, 3, 8), local(BERLIN, 2026, 3, 7))
    with pytest.raises(ScheduleError, match="ask for at most 400 days of shifts at a time"):
        shifts(Schedule((daily(),)), local(BERLIN, 2026, 3, 8), local(BERLIN, 2027, 4, 14))
    with pytest.raises(ScheduleError, match="at: 9999-12-31 is out of range"):
        who_is_on_call(Schedule((daily(),)), datetime(9999, 12, 31, tzinfo=UTC))
    with pytest.raises(ScheduleError, match="rotation 'primary' start: 1900-01-01 is out of range"):
        who_is_on_call(Schedule((daily(start=datetime(1900, 1, 1, tzinfo=UTC)),)), local(BERLIN, 2026, 3, 8))


# --- property: against a brute-force minute-by-minute oracle -----------------------------------
ZONES = ["UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata"]
#: Days around daylight-saving changes (Europe, US, Lord Howe's half hour) and a quiet one.
BASES = [
    datetime(2026, 3, 28),
    datetime(2026, 3, 7),
    datetime(2026, 10, 24),
    datetime(2026, 10, 31),
    datetime(2026, 4, 4),
    datetime(2026, 10, 3),
    datetime(2026, 6, 10),
]
SPAN_MINUTES = 3 * 24 * 60


def oracle(sched: Schedule, a: datetime) -> list[tuple]:
    """Paint each minute of [a, a + SPAN) by brute force: layer by layer, bottom up, then the
    overrides, each painting over what is below it."""
    n = SPAN_MINUTES
    out: list[tuple] = [(None, None, False)] * n

    def minute(t: datetime) -> int:
        return int((t - a) / timedelta(minutes=1))

    for rot in sched.rotations:
        tz = ZoneInfo(rot.time_zone)
        who: list = [None] * n
        start_local = rot.start.astimezone(tz)
        k, t = 0, rot.start.astimezone(UTC)
        while t < a + timedelta(minutes=n):
            if rot.unit == "hours":
                nxt = rot.start.astimezone(UTC) + timedelta(hours=rot.length * (k + 1))
            else:
                step = rot.length * (7 if rot.unit == "weeks" else 1) * (k + 1)
                wall = datetime.combine(start_local.date() + timedelta(days=step), start_local.time().replace(fold=0))
                nxt = wall.replace(tzinfo=tz).astimezone(UTC)
            for m in range(max(0, minute(t)), min(n, minute(nxt))):
                who[m] = rot.participants[k % len(rot.participants)]
            k, t = k + 1, nxt
        if rot.end is not None:
            for m in range(max(0, minute(rot.end)), n):
                who[m] = None
        if rot.windows:
            allowed = [False] * n
            for w in rot.windows:
                day = a.astimezone(tz).date() - timedelta(days=9)
                while day <= (a + timedelta(minutes=n)).astimezone(tz).date():
                    if w.start_day is None or day.weekday() == w.start_day:
                        if w.start_day is None:
                            end_day = day + timedelta(days=0 if w.end > w.start else 1)
                        else:
                            span = (w.end_day - w.start_day) % 7 or (7 if w.end <= w.start else 0)
                            end_day = day + timedelta(days=span)
                        ws = datetime.combine(day, w.start).replace(tzinfo=tz).astimezone(UTC)
                        we = datetime.combine(end_day, w.end).replace(tzinfo=tz).astimezone(UTC)
                        for m in range(max(0, minute(ws)), min(n, minute(we))):
                            allowed[m] = True
                    day += timedelta(days=1)
            who = [p if ok else None for p, ok in zip(who, allowed)]
        for m in range(n):
            if who[m] is not None:
                out[m] = (who[m], rot.name, False)
    for ov in sched.overrides:
        for m in range(max(0, minute(ov.start)), min(n, minute(ov.end))):
            out[m] = (ov.who, None, True)
    return out


#: Any minute, but often one in the small hours where the clocks change.
minutes_of_day = st.one_of(st.integers(0, 24 * 60 - 1), st.integers(60, 4 * 60)).map(lambda m: time(m // 60, m % 60))


@st.composite
def windows(draw):
    if draw(st.booleans()):
        return Window(draw(minutes_of_day), draw(minutes_of_day))
    return Window(draw(minutes_of_day), draw(minutes_of_day), draw(st.integers(0, 6)), draw(st.integers(0, 6)))


@st.composite
def schedules(draw):
    base = draw(st.sampled_from(BASES)).replace(tzinfo=UTC) + timedelta(minutes=draw(st.integers(0, 24 * 60)))
    rotations = []
    for n in range(draw(st.integers(0, 3))):
        tz = draw(st.sampled_from(ZONES))
        unit = draw(st.sampled_from(["hours", "days", "weeks"]))
        length = draw(st.integers(1, {"hours": 30, "days": 3, "weeks": 2}[unit]))
        start = base + timedelta(
            minutes=draw(
                st.one_of(st.integers(-20 * 24 * 60, 2 * 24 * 60), st.integers(-20, 20).map(lambda d: d * 24 * 60 + 60))
            )
        )
        end = start + timedelta(minutes=draw(st.integers(1, 30 * 24 * 60))) if draw(st.booleans()) else None
        ws = tuple(draw(st.lists(windows(), max_size=2)))
        people = tuple(
            draw(st.lists(st.sampled_from(["a", "b", "c", "d", None]), min_size=1, max_size=4).filter(lambda p: any(p)))
        )
        rotations.append(Rotation(f"r{n}", people, length, unit, start, tz, end, ws))
    overrides = []
    for _ in range(draw(st.integers(0, 2))):
        s = base + timedelta(minutes=draw(st.integers(-600, SPAN_MINUTES)))
        overrides.append(
            Override(draw(st.sampled_from("abcdo")), s, s + timedelta(minutes=draw(st.integers(1, 2 * 24 * 60))))
        )
    return Schedule(tuple(rotations), tuple(overrides)), base


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(schedules(), st.data())
def test_shifts_agree_with_a_minute_by_minute_oracle(case, data):
    sched, a = case
    b = a + timedelta(minutes=SPAN_MINUTES)
    found = shifts(sched, a, b)
    # Contiguous, covering [a, b), neighbours different.
    assert found[0].start == a and found[-1].end == b
    for x, y in zip(found, found[1:]):
        assert x.end == y.start and x.start < x.end and x.key() != y.key()
    painted = []
    for s in found:
        painted += [s.key()] * int((s.end - s.start) / timedelta(minutes=1))
    expected = oracle(sched, a)
    assert len(painted) == len(expected)
    first_bad = next((i for i, (p, e) in enumerate(zip(painted, expected)) if p != e), None)
    assert first_bad is None, (
        first_bad,
        a + timedelta(minutes=first_bad or 0),
        painted[first_bad],
        expected[first_bad],
    )
    for m in data.draw(st.lists(st.integers(0, SPAN_MINUTES - 1), min_size=1, max_size=3)):
        at = a + timedelta(minutes=m)
        assert who_is_on_call(sched, at).key() == expected[m]
        # Its bounds: those of the shift around it, seen `horizon` either side.
        horizon = timedelta(minutes=data.draw(st.integers(1, 4 * 24 * 60)))
        now = who_is_on_call(sched, at, horizon)
        assert now in shifts(sched, at - horizon, at + horizon)
