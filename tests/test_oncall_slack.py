"""On call in Slack (issue 15): ``/genie oncall [team]`` answers who is on call now and next,
with hand-offs and gaps in the asker's Slack time zone (``users.info`` ``tz``), and the App Home
tab says "You are on call for Payments until …" with the person's shifts of the coming week —
signed requests through the real server, the fake Slack answering, the clock fixed."""

from __future__ import annotations

from datetime import UTC, datetime, time

import pytest

from bot.services import schedules, teams
from bot.services.oncall.schedule import Window
from bot.services.schedules import RotationSpec
from tests.conftest import Genie
from tests.helpers import ack_json, block_text
from tests.slack_driver import SlackUser
from tests.test_paging import _link

ALICE, BOB, CAROL = SlackUser("U0ALICE"), SlackUser("U0BOB"), SlackUser("U0CAROL")
#: Thursday 26 November 2026, 10:00 UTC (11:00 in Berlin).
NOW = datetime(2026, 11, 26, 10, 0, tzinfo=UTC)


@pytest.fixture
async def world(genie: Genie) -> Genie:
    """Payments: schedule "primary", Alice and Bob a day each, handing off at 09:00 UTC (Alice
    from Monday), on call every day but 02:00–06:00 UTC (a gap); Search: no schedule. Alice and
    Bob linked (Bob reads in Europe/Berlin), Carol not."""
    for email, name in [("alice@example.com", "Alice Smith"), ("bob@example.com", "Bob Jones")]:
        await genie.add_user(email, name)
    async with genie.sessionmaker.begin() as s:
        await teams.add_team(s, "Payments", "C0PAY")
        await teams.add_team(s, "Search", "C0SEARCH")
        for email in ("alice@example.com", "bob@example.com"):
            await teams.add_member(s, "Payments", email)
        await teams.add_member(s, "Search", "alice@example.com")
        spec = RotationSpec(
            "daily",
            ["alice@example.com", "bob@example.com"],
            1,
            "days",
            datetime(2026, 11, 23, 9, tzinfo=UTC),
            "UTC",
            restrictions=[Window(time(6), time(2))],
        )
        await schedules.create_schedule(s, "Payments", "primary", "UTC", [spec])
    await _link(genie, "U0ALICE", "alice@example.com")
    await _link(genie, "U0BOB", "bob@example.com")
    genie.fake.add_user("U0BOB", "Bob Jones", "bob@example.com", tz="Europe/Berlin")
    genie.fake.add_user("U0ALICE", "Alice Smith", "alice@example.com", tz="America/New_York")
    genie.rt.now = lambda: NOW
    return genie


async def test_oncall_says_who_now_and_next_with_gaps_in_the_askers_time_zone(world: Genie):
    answer = ack_json(await world.slack.command(BOB, "oncall"))
    assert answer["response_type"] == "ephemeral"
    text = block_text(answer["blocks"])
    # Bob is on call since Thursday 09:00 UTC until the gap at 02:00 UTC = 03:00 in Berlin.
    assert "On call for Payments" in text and "*primary*: *Bob Jones* until Fri 03:00" in text
    assert "next: nobody from Fri 03:00" in text
    assert "nobody on call Fri 03:00–07:00" in text and "nobody on call Sat 03:00–07:00" in text
    assert "Europe/Berlin" in text

    # Alice, in New York, reads the same hand-offs in her zone; and names a team.
    answer = ack_json(await world.slack.command(ALICE, "oncall payments"))
    text = block_text(answer["blocks"])
    assert "*Bob Jones* until Thu 21:00" in text and "nobody on call Thu 21:00–Fri 01:00" in text
    assert "Search" not in text

    # Her default: both her teams; Search has no schedule and says so.
    text = block_text(ack_json(await world.slack.command(ALICE, "oncall"))["blocks"])
    assert "On call for Payments" in text and "*Search* has no on-call schedule." in text


async def test_oncall_refuses_an_unknown_team_and_people_not_connected(world: Genie):
    answer = ack_json(await world.slack.command(BOB, "oncall Nope<b>"))
    assert answer["response_type"] == "ephemeral"
    assert answer["text"] == "There is no team called 'Nope&lt;b&gt;'."
    answer = ack_json(await world.slack.command(CAROL, "oncall Payments"))
    assert "connect your Genie account first" in answer["text"] and "Bob" not in str(answer)


async def test_home_says_you_are_on_call_until_and_lists_the_coming_shifts(world: Genie):
    await world.slack.open_home(BOB)
    home = (await world.fake.wait_for("views.publish", user_id="U0BOB"))[-1].args["view"]
    text = block_text(home["blocks"])
    assert "You are on call for Payments* (primary) until Fri 03:00" in text
    # After the gap Bob's Thursday shift goes on until Alice takes over at 09:00 UTC; then Saturday.
    assert "Your shifts in the next 7 days:" in text
    assert "Fri 07:00–10:00 — Payments (primary)" in text and "Sat 10:00–Sun 03:00 — Payments (primary)" in text
    assert "Europe/Berlin" in text

    # Alice is not on call now: only her coming shifts.
    await world.slack.open_home(ALICE)
    home = (await world.fake.wait_for("views.publish", user_id="U0ALICE"))[-1].args["view"]
    text = block_text(home["blocks"])
    assert "You are on call" not in text and "Fri 04:00–21:00 — Payments (primary)" in text


async def test_oncall_answers_in_utc_when_slack_is_slow_to_say_the_time_zone(world: Genie):
    world.fake.fail("users.info", delay=4.0)
    answer = ack_json(await world.slack.command(BOB, "oncall"))
    text = block_text(answer["blocks"])
    assert "*Bob Jones* until Fri 02:00" in text and "your time zone, UTC" in text


async def test_a_shift_with_no_hand_off_in_sight_says_so(world: Genie):
    async with world.sessionmaker.begin() as s:
        spec = RotationSpec("always", ["alice@example.com"], 1, "weeks", datetime(2026, 10, 1, tzinfo=UTC), "UTC")
        await schedules.create_schedule(s, "Search", "solo", "UTC", [spec])
    text = block_text(ack_json(await world.slack.command(ALICE, "oncall Search"))["blocks"])
    assert "*solo*: *Alice Smith* no hand-off this week" in text
    await world.slack.open_home(ALICE)
    home = (await world.fake.wait_for("views.publish", user_id="U0ALICE"))[-1].args["view"]
    assert "You are on call for Search* (solo) with no hand-off this week" in block_text(home["blocks"])
