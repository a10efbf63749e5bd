"""Schedules, overrides and escalation policies through their services, on the real database
(SQLite, and PostgreSQL when ``GENIE_TEST_POSTGRES_URL`` is set): what is stored reads back the
same, who is on call comes out of the rows, and every refused change names the item and leaves
the database as it was."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import func, select

from bot.services import escalation, schedules, teams, users
from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from bot.services.escalation import StepSpec
from bot.services.oncall.schedule import ScheduleError, Window, describe_gaps
from bot.services.schedules import RotationSpec
from storage.models import (
    EscalationPolicy,
    EscalationStep,
    OncallOverride,
    OncallParticipant,
    OncallRestriction,
    OncallRotation,
    OncallSchedule,
)
from storage.session import make_engine, make_sessionmaker

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
MONDAY_9 = datetime(2026, 3, 2, 9, tzinfo=BERLIN)  # Monday 2 March 2026, 09:00 in Berlin
TABLES = (
    OncallSchedule,
    OncallRotation,
    OncallParticipant,
    OncallRestriction,
    OncallOverride,
    EscalationPolicy,
    EscalationStep,
)


@pytest.fixture
async def db(db_url: str):
    engine = make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        for email, name in [
            ("alice@example.com", "Alice"),
            ("bob@example.com", "Bob"),
            ("carol@example.com", "Carol"),
            ("mallory@example.com", "Mallory"),
        ]:
            await users.add_user(session, email, name, None)  # no password: no argon2 time
        await teams.add_team(session, "Payments", "C0PAYMENTS")
        await teams.add_team(session, "Search")
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            await teams.add_member(session, "Payments", email)
        await teams.add_member(session, "Search", "mallory@example.com")
    yield sessionmaker
    await engine.dispose()


async def counts(db) -> dict[str, int]:
    async with db() as session:
        return {t.__tablename__: await session.scalar(select(func.count()).select_from(t)) for t in TABLES}


def weekly(name="primary", people=("alice@example.com", "bob@example.com"), **kw) -> RotationSpec:
    kw.setdefault("start", MONDAY_9)
    kw.setdefault("time_zone", "Europe/Berlin")
    return RotationSpec(name, list(people), kw.pop("length", 1), kw.pop("unit", "weeks"), **kw)


async def make_payments(db, *rotations: RotationSpec, name="payments"):
    async with db.begin() as session:
        return await schedules.create_schedule(
            session, "Payments", name, "Europe/Berlin", list(rotations) or [weekly()]
        )


async def on_call(db, at: datetime, team="Payments") -> list[tuple[str, str | None, bool]]:
    async with db() as session:
        t = await teams.require_team(session, team)
        return [
            (s.name, shift.who.email if shift.who else None, shift.override)
            for s, shift in await schedules.who_is_on_call(session, t, at)
        ]


async def test_a_stored_schedule_answers_who_is_on_call_across_a_dst_change(db):
    await make_payments(db)
    assert await on_call(db, MONDAY_9 + timedelta(hours=1)) == [("payments", "alice@example.com", False)]
    assert await on_call(db, datetime(2026, 3, 9, 8, 59, tzinfo=BERLIN)) == [("payments", "alice@example.com", False)]
    assert await on_call(db, datetime(2026, 3, 9, 9, 0, tzinfo=BERLIN)) == [("payments", "bob@example.com", False)]
    async with db() as session:
        _, sched = await schedules.require_schedule(session, "Payments", "payments")
        found = await schedules.shifts(
            session, sched, datetime(2026, 3, 23, tzinfo=BERLIN), datetime(2026, 4, 7, tzinfo=BERLIN)
        )
    # The hand-off stays at Monday 09:00 local when the clocks go forward on 29 March.
    assert [(f"{s.start.astimezone(BERLIN):%a %d %H:%M %Z}", s.who.email) for s in found] == [
        ("Mon 23 00:00 CET", "alice@example.com"),
        ("Mon 23 09:00 CET", "bob@example.com"),
        ("Mon 30 09:00 CEST", "alice@example.com"),
        ("Mon 06 09:00 CEST", "bob@example.com"),
    ]


async def test_participants_keep_their_order_and_restrictions_and_layers_read_back(db):
    nights = weekly(
        "nights",
        people=("carol@example.com", "alice@example.com", "carol@example.com"),
        length=1,
        unit="days",
        restrictions=[Window(time(22), time(6))],
    )
    weekdays = weekly(
        "business",
        people=("bob@example.com",),
        restrictions=[Window(time(9), time(17), start_day=d, end_day=d) for d in range(5)],
    )
    await make_payments(db, nights, weekdays)
    async with db() as session:
        _, sched = await schedules.require_schedule(session, "Payments", "payments")
        rows = await schedules.rotations(session, sched)
        assert [(r.name, r.layer, [u.email for u in users], len(ws)) for r, users, ws in rows] == [
            ("nights", 0, ["carol@example.com", "alice@example.com", "carol@example.com"], 1),
            ("business", 1, ["bob@example.com"], 5),
        ]
        assert rows[0][2] == [Window(time(22), time(6))]
        assert rows[0][0].starts_at == MONDAY_9.astimezone(UTC)
        found = await schedules.shifts(
            session, sched, datetime(2026, 3, 3, 12, tzinfo=BERLIN), datetime(2026, 3, 4, 12, tzinfo=BERLIN)
        )
    assert [(f"{s.start.astimezone(BERLIN):%H:%M}", s.who and s.who.email, s.layer) for s in found] == [
        ("12:00", "bob@example.com", "business"),
        ("17:00", None, None),
        ("22:00", "alice@example.com", "nights"),
        ("06:00", None, None),
        ("09:00", "bob@example.com", "business"),
    ]
    assert describe_gaps(found, BERLIN) == ["nobody on call Tue 17:00–22:00", "nobody on call Wed 06:00–09:00"]


async def test_a_nobody_slot_is_stored_and_lets_the_lower_layer_through(db):
    await make_payments(
        db,
        weekly("backup", people=("carol@example.com",)),
        weekly("primary", people=("alice@example.com", None, "bob@example.com")),
    )
    async with db() as session:
        _, sched = await schedules.require_schedule(session, "Payments", "payments")
        rows = await schedules.rotations(session, sched)
    assert [u and u.email for u in rows[1][1]] == ["alice@example.com", None, "bob@example.com"]
    assert await on_call(db, MONDAY_9 + timedelta(days=7, hours=1)) == [("payments", "carol@example.com", False)]
    assert await on_call(db, MONDAY_9 + timedelta(days=14, hours=1)) == [("payments", "bob@example.com", False)]


async def test_overrides_are_stored_shown_and_removed(db):
    await make_payments(db)
    friday_18, monday_9 = datetime(2026, 3, 6, 18, tzinfo=BERLIN), datetime(2026, 3, 9, 9, tzinfo=BERLIN)
    async with db.begin() as session:
        override = await schedules.add_override(
            session, "Payments", "payments", "Carol@Example.com ", friday_18, monday_9, created_by="alice@example.com"
        )
    assert await on_call(db, friday_18 + timedelta(hours=1)) == [("payments", "carol@example.com", True)]
    assert await on_call(db, friday_18 - timedelta(minutes=1)) == [("payments", "alice@example.com", False)]
    async with db() as session:
        _, sched = await schedules.require_schedule(session, "Payments", "payments")
        found = await schedules.shifts(session, sched, friday_18 - timedelta(hours=1), monday_9 + timedelta(hours=1))
    assert [(s.who.email, s.override) for s in found] == [
        ("alice@example.com", False),
        ("carol@example.com", True),
        ("bob@example.com", False),
    ]
    with pytest.raises(NotFound, match="schedule payments has no override 9999"):
        async with db.begin() as session:
            await schedules.delete_override(session, "Payments", "payments", 9999)
    async with db.begin() as session:
        await schedules.delete_override(session, "Payments", "payments", override.id)
    assert await on_call(db, friday_18 + timedelta(hours=1)) == [("payments", "alice@example.com", False)]


async def test_a_later_override_wins_over_an_earlier_one(db):
    await make_payments(db)
    at = datetime(2026, 3, 4, 12, tzinfo=BERLIN)
    async with db.begin() as session:
        await schedules.add_override(
            session, "Payments", "payments", "carol@example.com", at - timedelta(hours=5), at + timedelta(hours=5)
        )
        await schedules.add_override(
            session, "Payments", "payments", "bob@example.com", at - timedelta(hours=1), at + timedelta(hours=1)
        )
    assert await on_call(db, at) == [("payments", "bob@example.com", True)]
    assert await on_call(db, at + timedelta(hours=2)) == [("payments", "carol@example.com", True)]


@pytest.mark.parametrize(
    "rotation, error",
    [
        (weekly("Primary", people=()), "rotation 'Primary' has no participants"),
        (weekly("Primary", people=(None,)), "rotation 'Primary' has no participants"),
        (
            weekly("Primary", length=0),
            "rotation 'Primary': the rotation length must be a whole number of weeks above 0, not 0",
        ),
        (
            weekly("Primary", length=-2, unit="hours"),
            "rotation 'Primary': the rotation length must be a whole number of hours above 0",
        ),
        (
            weekly("Primary", time_zone="Mars/Olympus_Mons"),
            "rotation 'Primary': 'Mars/Olympus_Mons' is not a known time zone",
        ),
        (
            weekly("Primary", people=("alice@example.com", "mallory@example.com")),
            "rotation 'Primary': mallory@example.com is not a member of team Payments",
        ),
        (
            weekly("Primary", people=("nobody@example.com",)),
            "rotation 'Primary': nobody has the email nobody@example.com",
        ),
        (weekly("Primary", people=("not an email",)), "rotation 'Primary': 'not an email' is not an email address"),
        (
            weekly("Primary", end=MONDAY_9 - timedelta(days=1)),
            "rotation 'Primary' ends (2026-03-01 09:00 CET) before it starts",
        ),
        (
            weekly("Primary", restrictions=[Window(time(9), time(17), 1, 9)]),
            "rotation 'Primary', restriction 1: 9 is not a weekday",
        ),
        (
            weekly("Primary", restrictions=[Window(time(9, 0, 30), time(17))]),
            "rotation 'Primary', restriction 1: give whole minutes",
        ),
        (weekly(" "), "a rotation name of 1 to 100 characters is required"),
    ],
)
async def test_a_faulty_rotation_is_refused_naming_it_and_nothing_is_written(db, rotation, error):
    before = await counts(db)
    with pytest.raises(InvalidInput) as err:
        await make_payments(db, weekly("secondary"), rotation)
    assert error in str(err.value)
    assert await counts(db) == before


async def test_two_rotations_of_one_name_and_bad_schedule_fields_are_refused(db):
    with pytest.raises(ScheduleError, match="rotation 'a' appears twice in the schedule"):
        await make_payments(db, weekly("a"), weekly(" a "))
    with pytest.raises(ScheduleError, match="schedule 'x': 'Europe/Nowhere' is not a known time zone"):
        async with db.begin() as session:
            await schedules.create_schedule(session, "Payments", "x", "Europe/Nowhere", [weekly()])
    with pytest.raises(NotFound, match="no team named Nope"):
        async with db.begin() as session:
            await schedules.create_schedule(session, "Nope", "x", "UTC", [weekly()])
    assert set((await counts(db)).values()) == {0}
    await make_payments(db)
    with pytest.raises(AlreadyExists, match="team Payments already has a schedule named payments"):
        await make_payments(db)
    # The same name in another team is another schedule.
    async with db.begin() as session:
        await schedules.create_schedule(session, "Search", "payments", "UTC", [weekly(people=("mallory@example.com",))])
    assert await on_call(db, MONDAY_9, team="Search") == [("payments", "mallory@example.com", False)]


async def test_two_requests_making_one_schedule_at_once_make_one(db):
    async with db.begin() as first:
        await schedules.create_schedule(first, "Payments", "payments", "UTC", [weekly()])
        # The second waits for the first's write (PostgreSQL: on the unique index; SQLite: the
        # one writer) and then finds the name taken.
        second = asyncio.create_task(make_payments(db))
        await asyncio.sleep(0.3)
    with pytest.raises(AlreadyExists, match="team Payments already has a schedule named payments"):
        await second
    assert (await counts(db))["oncall_schedule"] == 1


async def test_an_update_replaces_the_rotations_and_a_refused_update_changes_nothing(db):
    await make_payments(db, weekly("old", people=("alice@example.com",)))
    with pytest.raises(InvalidInput, match="rotation 'new': mallory@example.com is not a member of team Payments"):
        async with db.begin() as session:
            await schedules.update_schedule(
                session,
                "Payments",
                "payments",
                new_name="renamed",
                rotations=[weekly("new", people=("mallory@example.com",))],
            )
    assert await on_call(db, MONDAY_9) == [("payments", "alice@example.com", False)]
    async with db.begin() as session:
        await schedules.update_schedule(
            session,
            "Payments",
            "payments",
            new_name="renamed",
            time_zone="UTC",
            rotations=[
                weekly("low", people=("bob@example.com",)),
                weekly("high", people=("carol@example.com",), restrictions=[Window(time(12), time(13))]),
            ],
        )
    assert await on_call(db, MONDAY_9) == [("renamed", "bob@example.com", False)]
    assert await on_call(db, datetime(2026, 3, 3, 12, 30, tzinfo=BERLIN)) == [("renamed", "carol@example.com", False)]
    assert (await counts(db))["oncall_rotation"] == 2
    assert (await counts(db))["oncall_participant"] == 2


async def test_a_faulty_override_is_refused_naming_it(db):
    await make_payments(db)
    start = datetime(2026, 3, 6, 18, tzinfo=BERLIN)
    cases = [
        (
            ("carol@example.com", start, start - timedelta(hours=1)),
            "override for carol@example.com ends (2026-03-06 16:00 UTC) before it starts (2026-03-06 17:00 UTC)",
        ),
        (("carol@example.com", start, start), "override for carol@example.com ends"),
        (
            ("mallory@example.com", start, start + timedelta(hours=1)),
            "override: mallory@example.com is not a member of team Payments",
        ),
        (("carol@example.com", datetime(2026, 3, 6, 18), start), "override for carol@example.com start: "),
    ]
    for (email, a, b), error in cases:
        with pytest.raises(InvalidInput) as err:
            async with db.begin() as session:
                await schedules.add_override(session, "Payments", "payments", email, a, b)
        assert error in str(err.value)
    with pytest.raises(NotFound, match="team Payments has no schedule named nope"):
        async with db.begin() as session:
            await schedules.add_override(
                session, "Payments", "nope", "carol@example.com", start, start + timedelta(hours=1)
            )
    assert (await counts(db))["oncall_override"] == 0


async def test_a_deactivated_person_cannot_be_put_on_call(db):
    async with db.begin() as session:
        await users.set_active(session, "carol@example.com", False)
    with pytest.raises(InvalidInput, match="rotation 'primary': carol@example.com is deactivated"):
        await make_payments(db, weekly(people=("carol@example.com",)))


async def test_deleting_a_schedule_takes_its_rows_with_it(db):
    await make_payments(db, weekly(restrictions=[Window(time(9), time(17))]))
    async with db.begin() as session:
        await schedules.add_override(
            session, "Payments", "payments", "carol@example.com", MONDAY_9, MONDAY_9 + timedelta(hours=1)
        )
    stored = await counts(db)
    assert all(stored[t] for t in ("oncall_schedule", "oncall_participant", "oncall_restriction", "oncall_override"))
    async with db.begin() as session:
        await schedules.delete_schedule(session, "Payments", "payments")
    assert set((await counts(db)).values()) == {0}
    assert await on_call(db, MONDAY_9) == []


# --- escalation policies ----------------------------------------------------------------------
async def test_a_policy_with_every_kind_of_target_reads_back_in_order(db):
    await make_payments(db)
    async with db.begin() as session:
        await escalation.set_policy(
            session,
            "Payments",
            "default",
            [
                StepSpec(0, "schedule", "payments"),
                StepSpec(10, "user", "carol@example.com"),
                StepSpec(10, "team"),
                StepSpec(30, "channel", "C0PAYMENTS"),
            ],
            repeat=2,
        )
    async with db() as session:
        _, policy = await escalation.require_policy(session, "Payments")
        steps = await escalation.policy_steps(session, policy)
    assert (policy.name, policy.repeat) == ("default", 2)
    assert [s.describe() for s in steps] == [
        "after 0 min, notify the on-call person of schedule payments",
        "after 10 min, notify carol@example.com",
        "after 10 min, notify everyone in team Payments",
        "after 30 min, notify the channel C0PAYMENTS",
    ]
    # Setting it again replaces the steps.
    async with db.begin() as session:
        await escalation.set_policy(session, "Payments", "renamed", [StepSpec(5, "team", "Payments")])
    async with db() as session:
        _, policy = await escalation.require_policy(session, "Payments")
        assert [s.describe() for s in await escalation.policy_steps(session, policy)] == [
            "after 5 min, notify everyone in team Payments"
        ]
    assert (await counts(db))["escalation_policy"] == 1


async def test_a_faulty_policy_is_refused_naming_the_step_and_the_old_one_stays(db):
    await make_payments(db)
    async with db.begin() as session:
        await schedules.create_schedule(session, "Search", "search", "UTC", [weekly(people=("mallory@example.com",))])
        await escalation.set_policy(session, "Payments", "default", [StepSpec(0, "schedule", "payments")])
    cases = [
        ([StepSpec(0, "schedule", "payments"), StepSpec(5, "user", "")], "step 2: no target (give the person's email)"),
        ([StepSpec(0, "schedule")], "step 1: no target (give the schedule's name)"),
        ([StepSpec(0, "channel", " ")], "step 1: no target (give the Slack channel id)"),
        ([StepSpec(0, "schedule", "search")], "step 1: schedule search belongs to team Search, not Payments"),
        ([StepSpec(0, "schedule", "nope")], "step 1: team Payments has no schedule named nope"),
        ([StepSpec(0, "user", "mallory@example.com")], "step 1: mallory@example.com is not a member of team Payments"),
        ([StepSpec(0, "team", "Search")], "step 1: team Search is not Payments (a policy notifies only its own team)"),
        ([StepSpec(0, "team", "Nope")], "step 1: there is no team named Nope"),
        ([StepSpec(0, "channel", "#payments")], "step 1: '#payments' is not a Slack channel id"),
        ([StepSpec(0, "pager", "x")], "step 1: 'pager' is not a target kind (one of schedule, user, team, channel)"),
        ([StepSpec(10, "team"), StepSpec(5, "team")], "step 2: its delay (5 min) comes before step 1's (10 min)"),
        ([StepSpec(-1, "team")], "step 1: the delay must be a whole number of minutes from 0 to 10080, not -1"),
        ([], "policy default: give at least one step"),
    ]
    for steps, error in cases:
        with pytest.raises(InvalidInput) as err:
            async with db.begin() as session:
                await escalation.set_policy(session, "Payments", "default", steps)
        assert error in str(err.value), (steps, str(err.value))
    with pytest.raises(InvalidInput, match="policy default: repeat must be a whole number from 0 to 10, not 11"):
        async with db.begin() as session:
            await escalation.set_policy(session, "Payments", "default", [StepSpec(0, "team")], repeat=11)
    async with db() as session:
        _, policy = await escalation.require_policy(session, "Payments")
        assert [s.describe() for s in await escalation.policy_steps(session, policy)] == [
            "after 0 min, notify the on-call person of schedule payments"
        ]


async def test_a_schedule_a_policy_names_cannot_be_deleted_until_the_policy_changes(db):
    await make_payments(db)
    async with db.begin() as session:
        await escalation.set_policy(
            session, "Payments", "default", [StepSpec(0, "team"), StepSpec(5, "schedule", "payments")]
        )
    with pytest.raises(InvalidInput, match="schedule payments is step 2 of team Payments's escalation policy"):
        async with db.begin() as session:
            await schedules.delete_schedule(session, "Payments", "payments")
    assert (await counts(db))["oncall_schedule"] == 1
    async with db.begin() as session:
        await escalation.delete_policy(session, "Payments")
        await schedules.delete_schedule(session, "Payments", "payments")
    assert set((await counts(db)).values()) == {0}
    with pytest.raises(NotFound, match="team Payments has no escalation policy"):
        async with db() as session:
            await escalation.require_policy(session, "Payments")


async def test_two_requests_setting_a_new_policy_at_once_leave_one(db, db_url):
    async def set_one(name: str):
        async with db.begin() as session:
            await escalation.set_policy(session, "Payments", name, [StepSpec(0, "team")])

    async with db.begin() as first:
        await escalation.set_policy(first, "Payments", "first", [StepSpec(5, "team")])
        second = asyncio.create_task(set_one("second"))
        await asyncio.sleep(0.3)
    if db_url.startswith("sqlite"):
        await second  # it waited for the one writer, then replaced the policy
    else:
        # It found no policy, then met the first's on the unique index.
        with pytest.raises(AlreadyExists, match="team Payments's escalation policy was just set by someone else"):
            await second
    stored = await counts(db)
    assert (stored["escalation_policy"], stored["escalation_step"]) == (1, 1)


async def test_asking_about_a_naive_or_far_off_time_is_a_clear_error(db):
    await make_payments(db)
    async with db() as session:
        team, sched = await schedules.require_schedule(session, "Payments", "payments")
        with pytest.raises(ScheduleError, match="at: 9999-12-31 is out of range"):
            await schedules.who_is_on_call(session, team, datetime(9999, 12, 31, tzinfo=UTC))
        with pytest.raises(ScheduleError, match="start: datetime.datetime.2026, 3, 2, 0, 0. has no time zone"):
            await schedules.shifts(session, sched, datetime(2026, 3, 2), datetime(2026, 3, 3, tzinfo=UTC))
