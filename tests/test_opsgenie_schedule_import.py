"""``genie opsgenie import --schedules --escalations`` against the fake OpsGenie (its Schedule,
Schedule Override and Escalation APIs, shaped as OpsGenie answers): rotations, restrictions,
overrides and the policy arrive in Genie, what cannot be carried over is listed, a second run
changes nothing, and the written YAML applies as is."""

from __future__ import annotations

from pathlib import Path

from bot.importers import opsgenie
from tests.fake_opsgenie import FakeOpsGenie
from tests.test_cli import as_json, ok
from tests.test_importers import OG_KEY, ImportCli, cli, og, og_server, seed_opsgenie  # noqa: F401 — fixtures

PAYMENTS = ("t-pay", "Payments")


def seed_oncall(og: FakeOpsGenie) -> None:
    seed_opsgenie(og)  # Payments: alice, bob (and carol, who is not carried over)
    weekdays = og.rotation(
        "r-1",
        "weekdays",
        "weekly",
        "2026-03-02T08:00:00Z",
        [("user", "u-alice", "alice@example.com"), ("user", "u-bob", "Bob@Example.com")],
        restriction={
            "type": "weekday-and-time-of-day",
            "restrictions": [
                {"startDay": "monday", "startHour": 8, "startMin": 0, "endDay": "friday", "endHour": 18, "endMin": 0}
            ],
        },
    )
    nights = og.rotation(
        "r-2",
        "nights",
        "daily",
        "2026-03-02T21:00:00Z",
        [("user", "u-bob", "Bob@Example.com"), ("none", None, None), ("team", "t-search", "Search")],
        restriction={
            "type": "time-of-day",
            "restriction": {"startHour": 22, "startMin": 0, "endHour": 6, "endMin": 30},
        },
    )
    og.add_schedule("s-pay", "Payments_schedule", PAYMENTS, "Europe/Berlin", [weekdays, nights])
    og.add_override("s-pay", "ov-1", ("u-alice", "alice@example.com"), "2026-03-07T08:00:00Z", "2026-03-08T08:00:00Z")
    og.add_override("s-pay", "ov-2", ("u-stan", "stan@example.com"), "2026-03-09T08:00:00Z", "2026-03-10T08:00:00Z")
    og.add_schedule(
        "s-mars",
        "Mars_schedule",
        PAYMENTS,
        "Mars/Olympus_Mons",
        [og.rotation("r-3", "r", "hourly", "2026-03-02T08:00:00Z", [("user", "u-alice", "alice@example.com")])],
    )
    og.add_schedule(
        "s-none", "Orphan_schedule", None, "UTC", [og.rotation("r-4", "r", "daily", "2026-03-02T08:00:00Z", [])]
    )
    og.add_escalation(
        "e-pay",
        "Payments_escalation",
        PAYMENTS,
        [
            (0, "default", "schedule", "s-pay", "Payments_schedule"),
            (5, "next", "schedule", "s-pay", "Payments_schedule"),
            (10, "default", "user", "u-bob", "bob@example.com"),
            (15, "all", "team", "t-pay", "Payments"),
            (20, "default", "schedule", "s-mars", "Mars_schedule"),
        ],
        repeat=(10, 2),
    )
    og.add_escalation("e-pay-2", "Payments_second", PAYMENTS, [(0, "default", "user", "u-alice", "alice@example.com")])


async def test_schedules_and_escalations_move_from_opsgenie(cli: ImportCli, og: FakeOpsGenie):
    seed_oncall(og)
    args = ("opsgenie", "import", "--url", og.url, "--teams", "--create-people", "--schedules", "--escalations")
    run = ok(
        cli(*args, "--write", "oncall.yaml"),
        "team Payments: create schedule Payments_schedule (2 rotation(s))",
        "add override for alice@example.com 2026-03-07 08:00–2026-03-08 08:00 UTC",
        "team Payments: set escalation policy Payments_escalation (4 step(s), repeat 2)",
        "written to oncall.yaml",
    )
    notes = [line.split("not carried over: ", 1)[1] for line in run.stdout.splitlines() if "not carried over: " in line]
    assert notes == [
        "schedule Payments_schedule, rotation nights: participant of type team (Search) cannot be carried over "
        "(Genie's participants are people); its shifts are a nobody slot",
        "schedule Payments_schedule, override ov-2: stan@example.com is not an active member of team Payments in Genie",
        "schedule Mars_schedule: time zone 'Mars/Olympus_Mons' is not an IANA zone Genie knows",
        "schedule Orphan_schedule: no owner team (Genie's schedules belong to a team)",
        "escalation Payments_escalation, rule 2: notify type 'next' (Genie pages the person on call now, as 'default')",
        "escalation Payments_escalation, rule 5: schedule Mars_schedule was not carried over into team Payments",
        "escalation Payments_second: team Payments already has Payments_escalation (Genie: one policy a team)",
    ], run

    shown = ok(
        cli("schedule", "show", "Payments_schedule", "--team", "Payments", "--from", "2026-03-02T09:00", "--days", "2"),
        "layer 1 nights: bob@example.com, (nobody), (nobody); every 1 days from 2026-03-02 22:00 Europe/Berlin, "
        "only 22:00-06:30",
        "layer 0 weekdays: alice@example.com, bob@example.com; every 1 weeks from 2026-03-02 09:00 Europe/Berlin, "
        "only Mon 08:00-Fri 18:00",
        "Mon 2026-03-02 22:00 – Tue 2026-03-03 06:30  bob@example.com (nights)",
        "Tue 2026-03-03 06:30 – Wed 2026-03-04 09:00  alice@example.com (weekdays)",
    )
    assert shown.stdout.endswith("gaps: none\n"), shown
    friday = ok(
        cli("schedule", "show", "Payments_schedule", "--team", "Payments", "--from", "2026-03-06T09:00", "--days", "2")
    )
    assert "gaps:\n  nobody on call Fri 18:00–Sat 09:00\n" in friday.stdout, friday
    assert "Sat 2026-03-07 09:00 – Sun 2026-03-08 09:00  alice@example.com (override)" in friday.stdout, friday
    ok(
        cli("escalation", "show", "--team", "Payments"),
        "1. after 0 min, notify the on-call person of schedule Payments_schedule",
        "2. after 5 min, notify the on-call person of schedule Payments_schedule",
        "3. after 10 min, notify bob@example.com",
        "4. after 15 min, notify everyone in team Payments",
        "then again 2 more time(s), 10 min after the last step",
    )

    again = as_json(cli(*args, "--json"))
    assert again["oncall"]["changes"] == [] and len(again["oncall"]["not_carried_over"]) == 7
    written = (Path(cli.cwd) / "oncall.yaml").read_text()
    assert written.startswith("# Written by genie opsgenie import")
    assert ok(cli("apply", "oncall.yaml")).stdout == "oncall.yaml: nothing to change\n"


async def test_reader_asks_each_schedule_for_its_overrides(og: FakeOpsGenie):
    seed_oncall(og)
    export = await opsgenie.fetch_oncall(OG_KEY, base_url=og.url)
    assert [s["name"] for s in export.schedules] == ["Payments_schedule", "Mars_schedule", "Orphan_schedule"]
    assert [o["alias"] for o in export.schedules[0]["overrides"]] == ["ov-1", "ov-2"]
    assert export.schedules[0]["rotations"][1]["timeRestriction"]["type"] == "time-of-day"
    assert [e["name"] for e in export.escalations] == ["Payments_escalation", "Payments_second"]
    assert export.requests == 5
    assert [r.query.get("expand") for r in og.seen("/v2/schedules")] == ["rotation"]
