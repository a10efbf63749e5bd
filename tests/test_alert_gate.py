"""Acknowledge / Close / Assign… in Slack, gated on the linked account and team membership.

Clicks are built from the message Genie actually posted (read back from the fake Slack) and
sent as signed Slack payloads; assertions are on what people see: the updated message, the
ephemeral refusal, and the alert's timeline."""

from __future__ import annotations

import asyncio
import json
import uuid
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from bot.services import alerts, slack_links, teams, users
from bot.services.alerts import Actor, CreateAlert
from bot.services.slack_links import SlackIdentity
from tests import forkserver
from tests.conftest import eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import block_text, buttons, link_person, walk
from tests.slack_driver import SlackUser

ALICE, BOB, MALLORY, CAROL, ADMIN, STRANGER = (
    SlackUser(u) for u in ("U0ALICE", "U0BOB", "U0MALLORY", "U0CAROL", "U0ADMIN", "U0STRANGER")
)
CHANNEL = "C0PAY"


@pytest.fixture
async def world(genie):
    """Payments (channel C0PAY) with Alice and Bob; Mallory linked but not in it; an admin."""
    for email, name in [
        ("alice@example.com", "Alice Smith"),
        ("bob@example.com", "Bob Jones"),
        ("mallory@example.com", "Mallory Evil"),
        ("carol@example.com", "Carol Diaz"),
    ]:
        await genie.add_user(email, name)
    await genie.add_user("root@example.com", "Ada Admin", admin=True)
    async with genie.sessionmaker.begin() as s:
        await teams.add_team(s, "Payments", CHANNEL)
        await teams.add_team(s, "Search", "C0SEARCH")
        await teams.add_member(s, "Payments", "alice@example.com")
        await teams.add_member(s, "Payments", "bob@example.com")
        await teams.add_member(s, "Search", "mallory@example.com")
    for uid, email in [
        ("U0ALICE", "alice@example.com"),
        ("U0BOB", "bob@example.com"),
        ("U0MALLORY", "mallory@example.com"),
        ("U0CAROL", "carol@example.com"),
        ("U0ADMIN", "root@example.com"),
    ]:
        await link_person(genie, uid, email)
    return genie


async def _fire(genie, message="Checkout error rate above 5%", team="Payments", **fields) -> tuple[int, dict]:
    """Create an alert as a monitoring tool would and wait for Genie's post; return (id, post)."""
    async with genie.sessionmaker.begin() as s:
        owner = await teams.require_team(s, team)
        alert, _ = await alerts.create_alert(s, owner, CreateAlert(message=message, **fields), str(uuid.uuid4()))
    genie.rt.wake_outbox()

    async def posted():
        return next(
            (
                c
                for c in genie.fake.calls("chat.postMessage")
                if c.args.get("channel") == owner.slack_channel_id and f"#{alert.id} " in c.args["text"]
            ),
            None,
        )

    return alert.id, (await eventually(posted)).args


async def _latest_blocks(genie, alert_id: int) -> list[dict]:
    """The alert message as people see it now: the last update, else the post."""

    def mine(call):
        return f"#{alert_id} " in (call.args.get("text") or "")

    updates = [c for c in genie.fake.calls("chat.update") if mine(c)]
    if updates:
        return updates[-1].args["blocks"]
    return [c for c in genie.fake.calls("chat.postMessage") if mine(c)][-1].args["blocks"]


async def _click(
    genie,
    who: SlackUser,
    alert_id: int,
    action_id: str,
    *,
    option: str | None = None,
    value: str | None = None,
    blocks: list[dict] | None = None,
):
    blocks = blocks or await _latest_blocks(genie, alert_id)
    element = next(d for d in walk(blocks) if d.get("action_id") == action_id)
    selected = None
    if option is not None:
        selected = next(o for o in element["options"] if o["text"]["text"] == option)
    response = await genie.slack.block_action(
        who,
        action_id,
        value if value is not None else element.get("value"),
        container="message",
        selected_option=selected,
        channel_id=CHANNEL,
        message_ts="1700000000.000100",
    )
    assert response.status_code == 200, response.text
    return response


async def _events(genie, alert_id: int) -> list[tuple]:
    return await genie.rows(
        "SELECT action, outcome, actor_name, slack_user_id, anonymous, reason FROM alert_event "
        "WHERE alert_id = :a ORDER BY id",
        a=alert_id,
    )


async def _ephemeral(genie, count: int = 1) -> list[dict]:
    return [c.args for c in await genie.fake.wait_for("response_url", count=count)]


# --- the message -----------------------------------------------------------------------------
async def test_alert_is_posted_with_its_facts_and_buttons(world):
    alert_id, post = await _fire(
        world,
        priority="P1",
        description="Payments API returns 502s",
        tags=["checkout", "prod"],
        details={"region": "eu-west-1"},
        source="Alertmanager",
    )
    words = block_text(post["blocks"])
    for fact in (
        "P1",
        f"#{alert_id}",
        "Checkout error rate above 5%",
        "Payments API returns 502s",
        "checkout",
        "eu-west-1",
        "Payments",
        "Alertmanager",
        "Open",
    ):
        assert fact in words, fact
    assert set(buttons(post["blocks"])) == {"alert_acknowledge", "alert_take", "alert_close"}
    select = next(d for d in walk(post["blocks"]) if d.get("action_id") == "alert_assign")
    assert [o["text"]["text"] for o in select["options"]] == ["Alice Smith", "Bob Jones"]
    assert await eventually(lambda: world.scalar("SELECT slack_ts FROM alert WHERE id = :a", a=alert_id))


async def test_member_acknowledges_then_closes_and_the_message_follows(world):
    alert_id, _ = await _fire(world)
    await _click(world, ALICE, alert_id, "alert_acknowledge")
    update = (await world.fake.wait_for("chat.update"))[-1].args
    assert update["channel"] == CHANNEL
    assert "Acknowledged* by Alice Smith" in block_text(update["blocks"])
    assert "after it fired" in block_text(update["blocks"])
    assert set(buttons(update["blocks"])) == {"alert_close"}  # no Acknowledge any more

    await _click(world, BOB, alert_id, "alert_close")
    update = (await world.fake.wait_for("chat.update", count=2))[-1].args
    assert "Closed* by Bob Jones" in block_text(update["blocks"])
    assert buttons(update["blocks"]) == {} and "alert_assign" not in json.dumps(update["blocks"])
    events = await _events(world, alert_id)
    assert [(a, o, n) for a, o, n, *_ in events] == [
        ("create", "applied", "API (Payments)"),
        ("acknowledge", "applied", "Alice Smith"),
        ("close", "applied", "Bob Jones"),
    ]
    assert events[1][3] == "U0ALICE" and events[1][5] == "member of the owning team"
    assert world.fake.calls("response_url") == []  # nobody was told off


async def test_assign_from_the_select_and_only_to_members(world):
    alert_id, _ = await _fire(world)
    await _click(world, ALICE, alert_id, "alert_assign", option="Bob Jones")
    update = (await world.fake.wait_for("chat.update"))[-1].args
    # Bob is linked in this workspace: the message mentions him (Slack shows his name).
    assert "Assigned to <@U0BOB>" in block_text(update["blocks"])
    # A forged option naming a non-member (Mallory, id from the DB) is refused and changes nothing.
    mallory_id = await world.scalar("SELECT id FROM \"user\" WHERE email = 'mallory@example.com'")
    forged = {
        "text": {"type": "plain_text", "text": "Bob Jones"},
        "value": json.dumps({"alert": alert_id, "user": mallory_id}),
    }
    await world.slack.block_action(
        ALICE, "alert_assign", container="message", selected_option=forged, channel_id=CHANNEL
    )
    said = (await _ephemeral(world))[-1]
    assert "Mallory Evil is not an active member of Payments" in said["text"]
    assert await world.scalar("SELECT owner_user_id FROM alert WHERE id = :a", a=alert_id) != mallory_id


# --- the gate ----------------------------------------------------------------------------------
async def test_unlinked_person_is_refused_with_a_connect_button_that_works(world):
    alert_id, _ = await _fire(world)
    world.fake.add_user("U0STRANGER", "Sam Stranger", "carol@example.com")
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    said = (await _ephemeral(world))[-1]
    assert said["response_type"] == "ephemeral" and said["replace_original"] is False
    assert "your Slack account isn't connected to a Genie account" in said["text"]
    url = buttons(said["blocks"])["connect_link"]["url"]
    assert url.startswith(world.url + "/link/")
    assert await world.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id) in (False, 0)
    assert (await _events(world, alert_id))[-1][:2] == ("acknowledge", "denied")
    assert (await _events(world, alert_id))[-1][5] == "Slack account not linked"

    # One click on the button starts linking: sign in, confirm, and the retry is allowed.
    browser = world.browser()
    path = urlsplit(url).path
    await browser.login("carol@example.com", next_path=path)
    await browser.get(path)
    assert (await browser.post(path, {"replace": "yes", "mine": "yes"})).status_code == 200
    async with world.sessionmaker.begin() as s:
        await teams.add_member(s, "Payments", "carol@example.com")
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    update = (await world.fake.wait_for("chat.update"))[-1].args
    assert "Acknowledged* by Carol Diaz" in block_text(update["blocks"])


async def test_linked_non_member_is_told_which_team_and_whom_to_ask(world):
    alert_id, _ = await _fire(world)
    await _click(world, MALLORY, alert_id, "alert_close")
    said = (await _ephemeral(world))[-1]
    assert "you (mallory@example.com) are not in Payments" in said["text"]
    assert "ask a Genie admin (Ada Admin)" in said["text"]
    assert await world.scalar("SELECT status FROM alert WHERE id = :a", a=alert_id) == "open"
    assert (await _events(world, alert_id))[-1][:4] == ("close", "denied", "Mallory Evil", "U0MALLORY")


async def test_deactivated_account_is_refused_and_offered_disconnect(world):
    alert_id, _ = await _fire(world)
    async with world.sessionmaker.begin() as s:
        await users.set_active(s, "bob@example.com", False)
    await _click(world, BOB, alert_id, "alert_acknowledge")
    said = (await _ephemeral(world))[-1]
    assert "whose Genie account is deactivated" in said["text"]
    assert "home_disconnect" in buttons(said["blocks"])
    assert (await _events(world, alert_id))[-1][:2] == ("acknowledge", "denied")


async def test_membership_is_read_at_click_time(world):
    alert_id, _ = await _fire(world)
    async with world.sessionmaker.begin() as s:
        await teams.remove_member(s, "Payments", "bob@example.com")
        await teams.add_member(s, "Payments", "carol@example.com")
    await _click(world, BOB, alert_id, "alert_acknowledge")
    assert "not in Payments" in (await _ephemeral(world))[-1]["text"]
    await _click(world, CAROL, alert_id, "alert_acknowledge")
    update = (await world.fake.wait_for("chat.update"))[-1].args
    assert "Acknowledged* by Carol Diaz" in block_text(update["blocks"])
    # Unlinking takes effect at once too.
    async with world.sessionmaker.begin() as s:
        await slack_links.unlink(s, SlackIdentity(TEAM_ID, "U0ALICE"))
    await _click(world, ALICE, alert_id, "alert_close")
    assert "isn't connected" in (await _ephemeral(world, 2))[-1]["text"]


async def test_admins_and_the_assignee_may_act_and_teamless_alerts_are_admin_only(world):
    alert_id, _ = await _fire(world)
    async with world.sessionmaker.begin() as s:
        alert = await alerts.get(s, alert_id)
        bob = await users.require_user(s, "bob@example.com")
        await alerts.assign(s, alert, Actor(via="api", label="Alertmanager"), bob)
        await teams.remove_member(s, "Payments", "bob@example.com")
    await _click(world, BOB, alert_id, "alert_acknowledge")  # assignee, no longer a member
    await eventually(lambda: _acked(world, alert_id))
    assert (await _events(world, alert_id))[-1][5] == "assignee"

    other_id, _ = await _fire(world, message="Disk full", team="Search")
    async with world.sessionmaker.begin() as s:
        await s.execute(text("UPDATE alert SET team_id = NULL WHERE id = :a"), {"a": other_id})
    await _click(world, MALLORY, other_id, "alert_close")
    assert "belongs to no team" in (await _ephemeral(world))[-1]["text"]
    await _click(world, ADMIN, other_id, "alert_close")
    await eventually(lambda: _closed(world, other_id))
    assert (await _events(world, other_id))[-1][:3] == ("close", "applied", "Ada Admin")


async def _acked(genie, alert_id):
    return await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id)


async def _closed(genie, alert_id):
    return await genie.scalar("SELECT status FROM alert WHERE id = :a", a=alert_id) == "closed"


@pytest.mark.parametrize("genie_settings", [{"GENIE_ALLOW_ANONYMOUS_ACTIONS": "true"}])
async def test_anonymous_actions_when_the_workspace_allows_them(world):
    alert_id, _ = await _fire(world)
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    update = (await world.fake.wait_for("chat.update"))[-1].args
    assert "Acknowledged* by <@U0STRANGER> (anonymous)" in block_text(update["blocks"])
    event = (await _events(world, alert_id))[-1]
    assert event[:2] == ("acknowledge", "applied") and event[3] == "U0STRANGER" and event[4] in (True, 1)
    # Linked people are still judged as themselves: Mallory is not in Payments.
    await _click(world, MALLORY, alert_id, "alert_close")
    assert "not in Payments" in (await _ephemeral(world))[-1]["text"]


async def test_workspace_setting_turns_anonymous_actions_on_for_one_workspace(world):
    from bot.services import access

    alert_id, _ = await _fire(world)
    async with world.sessionmaker.begin() as s:
        await access.set_workspace_setting(s, "T0OTHERWS", "allow_anonymous_actions", "true")
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    assert "isn't connected" in (await _ephemeral(world))[-1]["text"]
    async with world.sessionmaker.begin() as s:
        await access.set_workspace_setting(s, TEAM_ID, "allow_anonymous_actions", "true")
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    await eventually(lambda: _acked(world, alert_id))


async def test_the_deployment_wide_setting_applies_where_a_workspace_has_none_of_its_own(world):
    """``genie workspace set`` without ``--workspace`` writes workspace ``*``: every workspace
    without its own value follows it; a workspace's own value wins."""
    from bot.services import access

    alert_id, _ = await _fire(world)
    async with world.sessionmaker.begin() as s:
        await access.set_workspace_setting(s, "*", "allow_anonymous_actions", "true")
        await access.set_workspace_setting(s, TEAM_ID, "allow_anonymous_actions", "false")
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    assert "isn't connected" in (await _ephemeral(world))[-1]["text"]
    async with world.sessionmaker.begin() as s:
        await s.execute(text("DELETE FROM workspace_setting WHERE workspace_id = :w"), {"w": TEAM_ID})
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    await eventually(lambda: _acked(world, alert_id))


# --- never trust the button ----------------------------------------------------------------------
async def test_forged_values_are_judged_against_the_real_alert(world):
    search_id, _ = await _fire(world, message="Index lag", team="Search")
    pay_id, _ = await _fire(world)
    # Alice (Payments) edits a Payments button to point at the Search alert: judged as Search's.
    await _click(world, ALICE, pay_id, "alert_close", value=json.dumps({"alert": search_id}))
    assert "not in Search" in (await _ephemeral(world))[-1]["text"]
    assert await world.scalar("SELECT status FROM alert WHERE id = :a", a=search_id) == "open"
    blocks = await _latest_blocks(world, pay_id)
    for junk in ["", "null", "{}", '{"alert": "1"}', '{"alert": true}', "x" * 5000, '{"alert": 99999}']:
        world.fake.clear()
        await _click(world, ALICE, pay_id, "alert_acknowledge", value=junk, blocks=blocks)
        said = (await _ephemeral(world))[-1]["text"]
        assert "doesn't belong to a Genie alert" in said or "doesn't exist" in said, junk
    assert await world.scalar("SELECT count(*) FROM alert WHERE acknowledged = :t OR status = 'closed'", t=True) == 0


# --- exactly once ------------------------------------------------------------------------------
async def test_concurrent_acknowledges_make_one_transition_and_losers_learn_who_won(world):
    people = [f"member{i}@example.com" for i in range(8)]
    clickers = []
    for i, email in enumerate(people):
        await world.add_user(email, f"Member {i}", password=None)
        async with world.sessionmaker.begin() as s:
            await teams.add_member(s, "Payments", email)
        await link_person(world, f"U0MEMBER{i}", email)
        clickers.append(SlackUser(f"U0MEMBER{i}"))
    alert_id, post = await _fire(world)
    value = buttons(post["blocks"])["alert_acknowledge"]["value"]
    responses = await asyncio.gather(
        *(
            world.slack.block_action(who, "alert_acknowledge", value, container="message", channel_id=CHANNEL)
            for who in clickers
        )
    )
    assert all(r.status_code == 200 for r in responses)
    said = await _ephemeral(world, count=len(clickers) - 1)
    events = await _events(world, alert_id)
    applied = [e for e in events if e[0] == "acknowledge" and e[1] == "applied"]
    assert len(applied) == 1
    assert sum(1 for e in events if e[1] == "noop") == len(clickers) - 1
    assert all(f"already acknowledged by {applied[0][2]}" in s["text"] for s in said)


async def test_acknowledge_racing_close_and_acting_on_a_closed_alert(world):
    alert_id, post = await _fire(world)
    ack_value = buttons(post["blocks"])["alert_acknowledge"]["value"]
    close_value = buttons(post["blocks"])["alert_close"]["value"]
    await asyncio.gather(
        world.slack.block_action(ALICE, "alert_close", close_value, container="message", channel_id=CHANNEL),
        world.slack.block_action(BOB, "alert_acknowledge", ack_value, container="message", channel_id=CHANNEL),
    )
    await eventually(lambda: _closed(world, alert_id))
    events = await _events(world, alert_id)
    assert [e[:2] for e in events].count(("close", "applied")) == 1
    blocks = post["blocks"]
    world.fake.clear()
    await _click(world, BOB, alert_id, "alert_acknowledge", value=ack_value, blocks=blocks)
    assert "already closed (by Alice Smith" in (await _ephemeral(world))[-1]["text"]


# --- API changes and App Home ----------------------------------------------------------------
async def test_api_close_updates_the_message_and_home_lists_open_alerts(world):
    alert_id, _ = await _fire(world)
    other_id, _ = await _fire(world, message="Latency p99 over 2s", priority="P2")
    world.fake.clear()
    await world.slack.open_home(ALICE)
    home = (await world.fake.wait_for("views.publish", user_id="U0ALICE"))[-1].args["view"]
    words = block_text(home["blocks"])
    assert "Your teams:* Payments" in words
    assert f"#{alert_id}* Checkout error rate" in words and f"#{other_id}* Latency p99" in words

    async with world.sessionmaker.begin() as s:
        await alerts.close(s, await alerts.get(s, alert_id), Actor(via="api", label="Alertmanager"))
    world.rt.wake_outbox()
    update = (await world.fake.wait_for("chat.update"))[-1].args
    assert "Closed* by Alertmanager" in block_text(update["blocks"])
    await world.slack.open_home(ALICE)
    home = (await world.fake.wait_for("views.publish", user_id="U0ALICE", count=2))[-1].args["view"]
    assert f"#{alert_id}*" not in block_text(home["blocks"])


async def test_home_lists_the_ten_newest_open_alerts_of_every_team_and_those_assigned(world):
    """Newest first across the person's teams and what is assigned to them in another team;
    closed ones and other teams' unassigned ones are not listed; at most ten."""
    async with world.sessionmaker.begin() as s:
        await teams.add_team(s, "Ops", "C0OPS")
        await teams.add_member(s, "Ops", "alice@example.com")
        alice = await users.require_user(s, "alice@example.com")
        made = []
        for i, team in enumerate(["Payments", "Ops", "Search", "Payments", "Ops"] * 3):
            owner = await teams.require_team(s, team)
            alert, _ = await alerts.create_alert(s, owner, CreateAlert(message=f"Home row {i}"), str(uuid.uuid4()))
            made.append((alert, team))
        # Search's last one is Alice's (assigned while she was in Search); one of Payments' newest is closed.
        search = [a for a, team in made if team == "Search"]
        await teams.add_member(s, "Search", "alice@example.com")
        await alerts.assign(s, search[-1], Actor(via="api", label="Tool"), alice)
        await teams.remove_member(s, "Search", "alice@example.com")
        closed = [a for a, team in made if team == "Payments"][-1]
        await alerts.close(s, closed, Actor(via="api", label="Tool"))
    expected = [a.id for a, team in reversed(made) if a.id != closed.id and (team != "Search" or a.id == search[-1].id)]
    world.fake.clear()
    await world.slack.open_home(ALICE)
    home = (await world.fake.wait_for("views.publish", user_id="U0ALICE"))[-1].args["view"]
    words = block_text(home["blocks"])
    listed = [a.id for a, _ in made if f"#{a.id}*" in words]
    assert sorted(listed, reverse=True) == expected[:10]
    positions = [words.index(f"#{i}*") for i in expected[:10]]
    assert positions == sorted(positions)  # newest first


async def _genie_cli(world, tmp_path, *args: str) -> tuple[int, str, str]:
    """Run the real `genie` command without blocking the event loop the server shares."""
    env = {"DATABASE_URL": world.settings.database_url, "GENIE_SECRET_KEY": "k" * 32, "PATH": "/usr/bin:/bin"}
    done = await asyncio.to_thread(forkserver.run, args, env=env, cwd=tmp_path, timeout=60)
    return done.returncode, done.stdout, done.stderr


async def test_genie_alert_show_prints_the_timeline(world, tmp_path):
    alert_id, _ = await _fire(world)
    await _click(world, MALLORY, alert_id, "alert_acknowledge")
    await _click(world, ALICE, alert_id, "alert_acknowledge")
    await eventually(lambda: _acked(world, alert_id))
    code, out, err = await _genie_cli(world, tmp_path, "alert", "show", str(alert_id))
    assert code == 0, err
    lines = out.splitlines()
    assert "Checkout error rate" in lines[0]
    assert any("acknowledge" in l and "denied" in l and "Mallory Evil" in l and "U0MALLORY" in l for l in lines)
    assert any("acknowledge" in l and "applied" in l and "Alice Smith" in l for l in lines)
    code, out, err = await _genie_cli(world, tmp_path, "alert", "show", str(alert_id), "--json")
    timeline = json.loads(out)["timeline"]
    # Both clicks are acked at once and carried out after the ack, so either may be recorded first.
    events = [(e["action"], e["outcome"]) for e in timeline]
    assert events[0] == ("create", "applied")
    assert sorted(events[1:]) == [("acknowledge", "applied"), ("acknowledge", "denied")], events
