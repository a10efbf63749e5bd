""" "I've got it" (issue 15): the button on the alert's channel message and on the page DM
assigns the alert to the clicker and acknowledges it in one click, through the gate — the
escalation stops and the pages are redrawn; a second click changes nothing and says so; a
click by someone not connected is refused (and offered a link). Signed clicks through the real
server, the fake Slack answering, on SQLite and PostgreSQL."""

from __future__ import annotations

from bot.services.escalation import StepSpec
from tests.conftest import eventually
from tests.helpers import block_text, walk
from tests.slack_driver import SlackUser
from tests.test_paging import ALICE, BOB, World, _button, world  # noqa: F401 (the fixture)

CAROL = SlackUser("U0CAROL")


def _ids(blocks: list[dict]) -> set[str]:
    return {d.get("action_id") for d in walk(blocks) if isinstance(d, dict) and d.get("action_id")}


async def test_ive_got_it_from_the_page_dm_assigns_and_acknowledges_and_stops_the_escalation(world: World):
    genie = world.genie
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(10, "user", "bob@example.com")])
    alert_id = await world.alert()
    [dm] = await world.dms("U0ALICE")
    assert "alert_take" in _ids(dm["blocks"]) and "I've got it" in str(dm["blocks"])

    value = _button(dm["blocks"], "alert_take")
    # Clicked at once: even before Genie has recorded where the DM is, it is redrawn below
    # (test_a_page_dm_acknowledged_while_slack_was_still_taking_it_is_redrawn).
    response = await genie.slack.block_action(ALICE, "alert_take", value, container="message", channel_id="D0ALICE")
    assert response.status_code == 200
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))
    owner = await genie.scalar(
        'SELECT u.email FROM alert a JOIN "user" u ON u.id = a.owner_user_id WHERE a.id = :a', a=alert_id
    )
    assert owner == "alice@example.com"
    events = await world.timeline(alert_id)
    assigned = [e for e in events if e[0] == "assign" and e[1] == "applied"]
    assert len(assigned) == 1 and "assigned to Alice Smith (alice@example.com)" in assigned[0][2]
    assert "I've got it" in assigned[0][2]
    assert ("acknowledge", "applied", "paged at step 1; I've got it") in events
    # The page is redrawn (no Acknowledge, no I've got it) and the escalation is over.
    channel, ts = await _placed(genie, alert_id)
    [redrawn] = [c.args for c in await genie.fake.wait_for("chat.update", channel=channel, ts=ts)]
    assert "Acknowledged* by Alice Smith" in block_text(redrawn["blocks"])
    assert not {"alert_acknowledge", "alert_take"} & _ids(redrawn["blocks"])
    world.clock.move(minutes=11)
    assert await genie.rt.paging.run_once() == 0
    assert world.sent_to("U0BOB") == 0

    # A second click: nothing changes, and Alice is told why.
    await genie.slack.block_action(ALICE, "alert_take", value, container="message", channel_id="D0ALICE")
    told = await genie.fake.wait_for("response_url")
    assert "already yours and acknowledged" in told[-1].args["text"]
    assert [e for e in await world.timeline(alert_id) if e[0] == "take"] == [
        ("take", "noop", f"Alert #{alert_id} is already yours and acknowledged.")
    ]


async def test_ive_got_it_on_the_channel_message_and_refusals(world: World):
    genie = world.genie
    alert_id = await world.alert("Queue backlog")
    [post] = [c.args for c in await genie.fake.wait_for("chat.postMessage", channel="C0PAY")]
    value = _button(post["blocks"], "alert_take")

    # Carol is a member but not connected: refused, offered a link; nothing changed.
    await genie.slack.block_action(CAROL, "alert_take", value, container="message", channel_id="C0PAY")
    told = await genie.fake.wait_for("response_url")
    assert "take ownership of this alert yet" in told[-1].args["text"] or "take ownership of this alert yet" in str(
        told[-1].args.get("blocks")
    )
    assert await genie.scalar("SELECT owner_user_id FROM alert WHERE id = :a", a=alert_id) is None

    # Bob takes it from the channel: his, acknowledged, the channel message redrawn.
    await genie.slack.block_action(BOB, "alert_take", value, container="message", channel_id="C0PAY")
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))
    owner = await genie.scalar(
        'SELECT u.email FROM alert a JOIN "user" u ON u.id = a.owner_user_id WHERE a.id = :a', a=alert_id
    )
    assert owner == "bob@example.com"
    [update] = [c.args for c in await genie.fake.wait_for("chat.update", channel="C0PAY")]
    assert "Acknowledged* by Bob Jones" in block_text(update["blocks"]) and "alert_take" not in _ids(update["blocks"])


async def test_a_page_dm_acknowledged_while_slack_was_still_taking_it_is_redrawn(world: World):
    """The alert is acknowledged (from the DM, at once) while Slack has taken the page DM but not
    yet answered: the acknowledgement finds no page in Slack to redraw (Genie does not know where
    the DM is yet), so recording the DM's place must redraw it."""
    genie = world.genie
    await world.policy([StepSpec(0, "schedule", "primary")])
    genie.fake.fail("chat.postMessage", delay=1.5, times=3)  # Slack posts at once, answers late
    alert_id = await world.alert()
    [dm] = await world.dms("U0ALICE")
    assert await genie.scalar("SELECT slack_ts FROM page WHERE alert_id = :a", a=alert_id) is None
    value = _button(dm["blocks"], "alert_acknowledge")
    response = await genie.slack.block_action(ALICE, "alert_acknowledge", value, container="message")
    assert response.status_code == 200
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))
    channel, ts = await _placed(genie, alert_id)
    [redrawn] = [c.args for c in await genie.fake.wait_for("chat.update", channel=channel, ts=ts, timeout=10)]
    assert "Acknowledged* by Alice Smith" in block_text(redrawn["blocks"])
    assert not {"alert_acknowledge", "alert_take"} & _ids(redrawn["blocks"])


async def _placed(genie, alert_id: int) -> tuple[str, str]:
    """Where the page DM is, once Genie has recorded it."""

    async def where():
        rows = await genie.rows("SELECT slack_channel, slack_ts FROM page WHERE alert_id = :a", a=alert_id)
        return rows[0] if rows and rows[0][1] else None

    return await eventually(where, timeout=10)
