"""``genie schedule``, ``genie escalation`` and ``genie apply`` as an operator runs them: a real
``python -m bot`` process (through ``tests/forkserver.py``) on the real database."""

from __future__ import annotations

from pathlib import Path

from tests.test_apply import FILE
from tests.test_cli import Cli, as_json, cli, ok, user_error  # noqa: F401 — cli is a fixture


def setup_team(cli: Cli) -> None:
    for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
        ok(cli("user", "add", email, "--name", email.split("@")[0]))
    ok(cli("team", "add", "Payments"))
    for email in ("alice@example.com", "bob@example.com"):
        ok(cli("team", "add-member", "Payments", email))


async def test_schedule_and_escalation_commands(cli: Cli):
    setup_team(cli)
    ok(
        cli(
            "schedule", "add", "payments", "--team", "Payments", "--tz", "Europe/Berlin",
            "--participants", "alice@example.com,bob@example.com", "--unit", "days",
            "--start", "2026-03-02T09:00", "--restrict", "Mon 00:00-Sat 02:00", "--restrict", "Sat 06:00-Mon 00:00",
        ),
        "added schedule payments of team Payments (Europe/Berlin)",
    )  # fmt: skip
    shown = ok(
        cli("schedule", "show", "payments", "--team", "Payments", "--from", "2026-03-02T09:00", "--days", "7"),
        "layer 0 primary: alice@example.com, bob@example.com; every 1 days",
        "Mon 2026-03-02 09:00 – Tue 2026-03-03 09:00  alice@example.com (primary)",
    )
    assert shown.stdout.endswith("gaps:\n  nobody on call Sat 02:00–06:00\n"), shown
    ok(
        cli("schedule", "show", "payments", "--team", "Payments", "--from", "2026-03-02T09:00", "--tz", "UTC"),
        "nobody on call Sat 01:00–05:00",
    )
    user_error(
        cli("schedule", "show", "payments", "--team", "Payments", "--tz", "Mars/Olympus"), "not a known time zone"
    )
    user_error(
        cli(
            "schedule", "override", "payments", "--team", "Payments", "--who", "carol@example.com",
            "--start", "2026-03-06T18:00", "--end", "2026-03-09T09:00",
        ),
        "carol@example.com is not a member of team Payments",
    )  # fmt: skip
    user_error(
        cli(
            "schedule", "override", "payments", "--team", "Payments", "--who", "bob@example.com",
            "--start", "2026-03-06T18:00", "--end", "2026-03-05T09:00",
        ),
        "ends", "before it starts",
    )  # fmt: skip
    ok(
        cli(
            "schedule", "override", "payments", "--team", "Payments", "--who", "bob@example.com",
            "--start", "2026-03-07T00:00", "--end", "2026-03-07T12:00",
        ),
        "added override 1: bob@example.com covers schedule payments from Sat 2026-03-07 00:00",
    )  # fmt: skip
    listed = as_json(cli("schedule", "overrides", "payments", "--team", "Payments", "--all", "--json"))
    assert [(o["id"], o["who"], o["start"]) for o in listed] == [(1, "bob@example.com", "2026-03-07T00:00:00+01:00")]
    shown = ok(cli("schedule", "show", "payments", "--team", "Payments", "--from", "2026-03-02T09:00"))
    assert "gaps: none" in shown.stdout and "bob@example.com (override)" in shown.stdout, shown

    user_error(cli("escalation", "show", "--team", "Payments"), "team Payments has no escalation policy")
    user_error(cli("escalation", "set", "--team", "Payments", "--step", "0:schedule:payments", "--step", "10:user"),
               "step 2: no target")  # fmt: skip
    user_error(cli("escalation", "set", "--team", "Payments", "--step", "soon:team"), "give MINUTES:KIND[:TARGET]")
    ok(
        cli("escalation", "set", "--team", "Payments", "--step", "0:schedule:payments", "--step", "15:team",
            "--repeat", "2"),
        "set escalation policy default of team Payments: 2 step(s), repeat 2",
        "1. after 0 min, notify the on-call person of schedule payments",
    )  # fmt: skip
    ok(cli("escalation", "show", "--team", "Payments"), "2. after 15 min, notify everyone in team Payments")
    user_error(cli("schedule", "remove", "payments", "--team", "Payments"), "step 1 of team Payments's escalation")
    ok(cli("escalation", "remove", "--team", "Payments"), "removed the escalation policy of team Payments")
    ok(cli("schedule", "remove-override", "payments", "1", "--team", "Payments"), "removed override 1")
    user_error(cli("schedule", "remove-override", "payments", "1", "--team", "Payments"), "has no override 1")
    ok(cli("schedule", "remove", "payments", "--team", "Payments"), "removed schedule payments")
    assert ok(cli("schedule", "list")).stdout == "(none)\n"


async def test_apply_through_the_cli(cli: Cli):
    for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
        ok(cli("user", "add", email, "--name", email.split("@")[0]))
    path = Path(cli.cwd) / "oncall.yaml"
    path.write_text(FILE)
    dry = ok(cli("apply", "oncall.yaml", "--dry-run"), "oncall.yaml: would make 8 change(s)", "dry run: nothing")
    assert "create team Payments" in dry.stdout
    assert ok(cli("team", "list")).stdout == "(none)\n"
    ok(cli("apply", "oncall.yaml"), "oncall.yaml: made 8 change(s)", "create schedule payments")
    assert ok(cli("apply", "oncall.yaml")).stdout == "oncall.yaml: nothing to change\n"
    ok(cli("schedule", "list", "--team", "Payments"), "payments")
    path.write_text(FILE.replace("unit: weeks", "unit: fortnights"))
    user_error(cli("apply", "oncall.yaml"), "oncall.yaml:10:", "rotation weekdays", "'fortnights' is not one of")
    user_error(cli("apply", "missing.yaml"), "missing.yaml: No such file")
