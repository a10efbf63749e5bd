"""On-call hand-offs (issue 15): the reminder DM N minutes before a shift starts, queued once
however often (and by however many processes) the loop looks, delivered through the outbox; and
the schedule's Slack user group set to the person on call at each hand-off, left alone in a gap,
retried after a Slack failure. The clock (``Runtime.now``) is moved by the test; the fake Slack
answers ``usergroups.users.update``; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from bot.services import handoffs, schedules
from bot.services.schedules import RotationSpec
from bot.slack.handoffs import HandoffLoop
from tests.conftest import Genie
from tests.helpers import block_text
from tests.test_oncall_slack import NOW, world  # noqa: F401 (the fixture)


class Clock:
    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture
async def genie_at(world: Genie) -> tuple[Genie, Clock]:  # noqa: F811
    """The world of test_oncall_slack (Bob on call Thu 09:00 UTC – Fri 02:00, then a gap until
    06:00, Bob again until Alice at Fri 09:00), with the server's own loop stopped so that the
    test's loops are the only ones."""
    await world.rt.handoffs.stop()
    clock = Clock(NOW)
    world.rt.now = clock
    return world, clock


async def test_a_reminder_goes_once_before_the_shift_starts(genie_at):
    genie, clock = genie_at
    one, other = HandoffLoop(genie.rt), HandoffLoop(genie.rt)  # two processes
    clock.at = NOW + timedelta(hours=18)  # Fri 04:00 UTC: Bob's 06:00 start is 2 h away
    assert (await one.run_once())[0] == 0
    clock.at = NOW + timedelta(hours=19, minutes=1)  # Fri 05:01: 59 minutes away
    assert (await one.run_once())[0] == 1
    assert (await other.run_once())[0] == 0 and (await one.run_once())[0] == 0
    genie.rt.wake_outbox()
    [dm] = [c.args for c in await genie.fake.wait_for("chat.postMessage", channel="U0BOB")]
    text = block_text(dm["blocks"])
    start = int(datetime.fromisoformat("2026-11-27T06:00:00+00:00").timestamp())
    assert "Your on-call shift for *Payments* (primary) starts" in text and f"<!date^{start}^" in text
    # Alice's 09:00 shift, once its hour comes.
    clock.at = NOW + timedelta(hours=22, minutes=30)
    assert (await other.run_once())[0] == 1
    genie.rt.wake_outbox()
    await genie.fake.wait_for("chat.postMessage", channel="U0ALICE")
    rows = await genie.rows(
        'SELECT h.kind, u.email, h.status FROM oncall_handoff h JOIN "user" u ON u.id = h.user_id ORDER BY h.id'
    )
    assert [tuple(r) for r in rows] == [
        ("reminder", "bob@example.com", "done"),
        ("reminder", "alice@example.com", "done"),
    ]
    assert len([c for c in genie.fake.calls("chat.postMessage") if c.args.get("channel") == "U0BOB"]) == 1


async def test_the_user_group_follows_the_hand_offs(genie_at):
    genie, clock = genie_at
    async with genie.sessionmaker.begin() as s:
        await handoffs.set_usergroup(s, "Payments", "primary", "S0PAYONCALL")
    genie.fake.usergroups["S0PAYONCALL"] = ["U0SOMEONE"]
    loop = HandoffLoop(genie.rt)

    assert await loop.run_once() == (0, 1)
    assert genie.fake.usergroups["S0PAYONCALL"] == ["U0BOB"]
    assert await loop.run_once() == (0, 0)
    assert len(genie.fake.calls("usergroups.users.update")) == 1

    # The gap: nobody to put there, the group is left as it was, and that is recorded once.
    clock.at = NOW + timedelta(hours=17)
    assert await loop.run_once() == (0, 0)
    assert genie.fake.usergroups["S0PAYONCALL"] == ["U0BOB"]
    assert await genie.scalar("SELECT detail FROM oncall_handoff WHERE status = 'skipped'") == (
        "group left as it was: nobody is on call"
    )

    # Alice's hand-off; Slack fails once: not recorded, set at the next tick.
    clock.at = NOW + timedelta(hours=23, minutes=5)
    genie.fake.fail("usergroups.users.update", error="ratelimited")
    assert await loop.run_once() == (0, 0)
    assert genie.fake.usergroups["S0PAYONCALL"] == ["U0BOB"]
    assert await loop.run_once() == (0, 1)
    assert genie.fake.usergroups["S0PAYONCALL"] == ["U0ALICE"]
    assert (
        await genie.scalar("SELECT count(*) FROM oncall_handoff WHERE kind = 'usergroup'") == 3
    )  # Bob, the gap, Alice


async def test_one_person_on_call_for_weeks_is_set_once_and_a_new_group_at_once(genie_at):
    genie, clock = genie_at
    async with genie.sessionmaker.begin() as s:
        await schedules.create_schedule(
            s,
            "Payments",
            "solo",
            "UTC",
            [RotationSpec("always", ["alice@example.com"], 1, "weeks", NOW - timedelta(days=30), "UTC")],
        )
        await handoffs.set_usergroup(s, "Payments", "solo", "S0SOLO")
    genie.fake.usergroups["S0SOLO"] = ["U0SOMEONE"]
    loop = HandoffLoop(genie.rt)
    assert await loop.run_once() == (0, 1)
    for minutes in (1, 30, 600):  # her shift, seen 8 days either side, "starts" later each look
        clock.at = NOW + timedelta(minutes=minutes)
        assert await loop.run_once() == (0, 0)
    assert genie.fake.usergroups["S0SOLO"] == ["U0ALICE"]
    async with genie.sessionmaker.begin() as s:
        await handoffs.set_usergroup(s, "Payments", "solo", "S0SOLO2")
    genie.fake.usergroups["S0SOLO2"] = ["U0SOMEONE"]
    assert await loop.run_once() == (0, 1)
    assert genie.fake.usergroups["S0SOLO2"] == ["U0ALICE"]


async def test_a_user_group_id_is_checked(genie_at):
    genie, _ = genie_at
    from bot.services.errors import InvalidInput

    async with genie.sessionmaker.begin() as s:
        with pytest.raises(InvalidInput, match="is not a Slack user group id"):
            await handoffs.set_usergroup(s, "Payments", "primary", "@payments-oncall")
