"""``genie apply``: config as code through the service (``bot.services.config_as_code``) on the
real database (SQLite, and PostgreSQL when ``GENIE_TEST_POSTGRES_URL`` is set): applying twice
changes nothing the second time, a dry run changes nothing, and each bad input is one error that
names the item and the file's line, with nothing applied."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import func, select

from bot.services import config_as_code, escalation, heartbeats, schedules, teams, users
from bot.services.config_as_code import ApplyError
from storage.models import (
    EscalationPolicy,
    EscalationStep,
    Heartbeat,
    OncallOverride,
    OncallParticipant,
    OncallRestriction,
    OncallRotation,
    OncallSchedule,
    Team,
    TeamMember,
)
from storage.session import make_engine, make_sessionmaker

TABLES = (
    Team,
    TeamMember,
    OncallSchedule,
    OncallRotation,
    OncallParticipant,
    OncallRestriction,
    OncallOverride,
    EscalationPolicy,
    EscalationStep,
    Heartbeat,
)

FILE = """\
teams:
  - name: Payments
    channel: C0PAYMENTS
    members: [alice@example.com, bob@example.com, carol@example.com]
    schedules:
      - name: payments
        time_zone: Europe/Berlin
        description: primary on call
        rotations:
          - name: weekdays
            participants: [alice@example.com, bob@example.com]
            length: 1
            unit: weeks
            start: 2026-03-02T09:00:00+01:00
            restrictions: ["Mon 09:00-Fri 17:00"]
          - name: nights
            participants: [carol@example.com, null]
            length: 1
            unit: days
            start: 2026-03-02T22:00:00+01:00
            restrictions: ["22:00-06:00"]
        overrides:
          - who: carol@example.com
            start: 2026-03-06T18:00:00+01:00
            end: 2026-03-09T09:00:00+01:00
    escalation:
      name: default
      repeat: 2
      steps:
        - after: 0
          notify: schedule
          target: payments
        - after: 10
          notify: user
          target: bob@example.com
        - after: 20
          notify: team
        - after: 30
          notify: channel
          target: C0PAYMENTS
    heartbeats:
      - name: nightly-backup
        interval: 1d
        tags: [backup]
"""


@pytest.fixture
async def db(db_url: str):
    engine = make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    async with sessionmaker.begin() as session:
        for email in ("alice@example.com", "bob@example.com", "carol@example.com", "mallory@example.com"):
            await users.add_user(session, email, email.split("@")[0].title(), None)
    yield sessionmaker
    await engine.dispose()


async def counts(db) -> dict[str, int]:
    async with db() as session:
        return {t.__tablename__: await session.scalar(select(func.count()).select_from(t)) for t in TABLES}


async def run(db, text: str, *, prune: bool = False, dry_run: bool = False) -> list[str]:
    async with db() as session:
        doc = config_as_code.load(text, "oncall.yaml")
        plan = await config_as_code.apply(session, doc, "oncall.yaml", prune=prune)
        if dry_run:
            await session.rollback()
        else:
            await session.commit()
        return plan.changes


async def refused(db, text: str, *words: str) -> str:
    before = await counts(db)
    with pytest.raises(ApplyError) as caught:
        await run(db, text)
    message = str(caught.value)
    assert "\n" not in message
    for word in words:
        assert word in message, message
    assert await counts(db) == before, "a refused file changed the database"
    return message


async def test_apply_twice_changes_nothing_the_second_time(db):
    first = await run(db, FILE)
    assert first[0] == "create team Payments (channel C0PAYMENTS)"
    assert "team Payments: add member carol@example.com" in first
    assert "team Payments: create schedule payments (2 rotation(s))" in first
    assert any("add override for carol@example.com 2026-03-06 17:00–2026-03-09 08:00 UTC" in c for c in first)
    assert "team Payments: set escalation policy default (4 step(s), repeat 2)" in first
    assert "team Payments: create heartbeat nightly-backup" in first
    stored = await counts(db)
    assert await run(db, FILE) == []
    assert await counts(db) == stored

    async with db() as session:
        team = await teams.require_team(session, "Payments")
        (sched,) = await schedules.schedules_of_team(session, team)
        shift = await schedules.on_call_in(session, sched, datetime(2026, 3, 3, 10, tzinfo=UTC))
        assert shift.who.email == "alice@example.com" and shift.layer == "weekdays"
        night = await schedules.on_call_in(session, sched, datetime(2026, 3, 2, 23, tzinfo=UTC))
        assert night.who.email == "carol@example.com" and night.layer == "nights"
        _, policy = await escalation.require_policy(session, "Payments")
        steps = await escalation.policy_steps(session, policy)
        assert [s.describe() for s in steps][1] == "after 10 min, notify bob@example.com"
        ((hb, _),) = await heartbeats.of_team(session, team.id)
        assert (hb.interval, hb.interval_unit, hb.alert_tags) == (1, "days", ["backup"])

    changed = FILE.replace("length: 1\n            unit: days", "length: 2\n            unit: days").replace(
        "repeat: 2", "repeat: 3"
    )
    assert await run(db, changed) == [
        "team Payments: change schedule payments (rotations)",
        "team Payments: change escalation policy default (4 step(s), repeat 3)",
    ]
    assert await run(db, changed) == []


async def test_dry_run_changes_nothing(db):
    before = await counts(db)
    plan = await run(db, FILE, dry_run=True)
    assert len(plan) == 8
    assert await counts(db) == before
    assert len(await run(db, FILE)) == 8


async def test_things_absent_from_the_file_stay_unless_pruned(db):
    await run(db, FILE)
    async with db.begin() as session:
        await teams.add_member(session, "Payments", "mallory@example.com")
        await schedules.create_schedule(
            session,
            "Payments",
            "extra",
            "UTC",
            [schedules.RotationSpec("r", ["alice@example.com"], 1, "days", datetime(2026, 3, 2, tzinfo=UTC), "UTC")],
        )
        await schedules.add_override(
            session,
            "Payments",
            "payments",
            "bob@example.com",
            datetime(2026, 4, 1, tzinfo=UTC),
            datetime(2026, 4, 2, tzinfo=UTC),
        )
        await teams.add_team(session, "Search")
    assert await run(db, FILE) == []
    pruned = await run(db, FILE, prune=True)
    assert pruned[0].startswith("team Payments: schedule payments: remove override")
    assert "team Payments: remove schedule extra" in pruned
    assert "team Payments: remove member mallory@example.com" in pruned
    async with db() as session:
        assert await teams.team_by_name(session, "Search") is not None  # teams not in the file: never touched
    assert await run(db, FILE, prune=True) == []

    # A section left out is an empty one under --prune: the policy and the heartbeat go.
    lean = FILE[: FILE.index("    escalation:")]
    assert await run(db, lean) == []
    assert await run(db, lean, prune=True) == [
        "team Payments: remove the escalation policy",
        "team Payments: remove heartbeat nightly-backup",
    ]


def bad(old: str, new: str) -> str:
    assert old in FILE, old
    return FILE.replace(old, new, 1)


async def test_rotation_with_no_participants(db):
    text = bad("participants: [carol@example.com, null]", "participants: [null]")
    await refused(db, text, "oncall.yaml:16:", "team Payments, schedule payments, rotation nights", "no participants")


async def test_override_ending_before_it_starts(db):
    text = bad("end: 2026-03-09T09:00:00+01:00", "end: 2026-03-05T09:00:00+01:00")
    await refused(db, text, "oncall.yaml:23:", "override for carol@example.com", "before")


async def test_override_for_someone_outside_the_team(db):
    text = bad("- who: carol@example.com", "- who: mallory@example.com")
    await refused(db, text, "oncall.yaml:23:", "mallory@example.com is not a member of team Payments")


async def test_unknown_time_zone(db):
    text = bad("time_zone: Europe/Berlin", "time_zone: Europe/Atlantis")
    await refused(db, text, "oncall.yaml:6:", "schedule payments", "'Europe/Atlantis' is not a known time zone")


async def test_step_with_no_target(db):
    text = bad("notify: user\n          target: bob@example.com", "notify: user")
    await refused(db, text, "oncall.yaml:33:", "escalation, step 2: no target")


async def test_unknown_key(db):
    text = bad(
        "        length: 1\n            unit: weeks",
        "        length: 1\n            lenght: 2\n            unit: weeks",
    )
    await refused(db, text, "oncall.yaml:13:", "rotation 1", "unknown key 'lenght'")


async def test_wrong_type(db):
    text = bad("length: 1\n            unit: weeks", "length: one\n            unit: weeks")
    await refused(db, text, "oncall.yaml:12:", "rotation 1", "'length' must be a whole number, not 'one'")


async def test_other_refusals(db):
    await refused(db, "teams:\n  - name: X\n    channel: [1]\n", "oncall.yaml:3:", "'channel' must be text")
    await refused(db, "teams:\n  - name: X\n    name: Y\n", "oncall.yaml:3:", "appears twice")
    await refused(db, "teams: [\n", "oncall.yaml:2:", "not valid YAML")
    await refused(db, bad("members: [alice", "members: [nobody@example.com, alice"), "oncall.yaml:2:", "team Payments")
    await refused(db, bad("start: 2026-03-02T09:00:00+01:00", "start: 2026-03-02T09:00:00"), "has no UTC offset")
    await refused(db, bad('"22:00-06:00"', '"22:00"'), "oncall.yaml:16:", "is not a window")
    await refused(db, bad("interval: 1d", "interval: soon"), "heartbeat nightly-backup", "interval 'soon'")
    # A later item's error undoes the earlier ones (the team, its members and schedule).
    await refused(db, bad("notify: team", "notify: everyone"), "'everyone' is not a target kind")
