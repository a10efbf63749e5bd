"""The escalation engine end to end (issue 15): an alert of a team with an escalation policy
pages the person on call by Slack DM through the outbox; with no acknowledgement, the next step
pages the next person once its delay has passed (the server's clock, ``Runtime.now``, moved by
the test); the paged person acknowledges from the DM's own button (a signed request) and the
escalation stops. OpsGenie's escalate fires the next step at once; a person who cannot be paged
is recorded and the step falls through; engines racing over one database page once; a step
interrupted by a crash fires after the restart, once."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from bot.services import alerts, escalation, paging, schedules, slack_links, teams, users
from bot.services.escalation import StepSpec
from bot.services.schedules import RotationSpec
from bot.services.slack_links import SlackIdentity, SlackProfile
from storage.base import utcnow
from storage.session import make_engine, make_sessionmaker
from tests.conftest import Genie, eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import block_text, walk
from tests.slack_driver import SlackUser
from tests.test_alert_api import envelope

ALICE, BOB = SlackUser("U0ALICE"), SlackUser("U0BOB")


class Clock:
    """The server's clock: the real one, moved on by the test (alerts are stamped with the real
    one when the API creates them, so the two must agree until the test moves it)."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return utcnow() + self.offset

    def move(self, **delta: float) -> None:
        self.offset += timedelta(**delta)


class World:
    def __init__(self, genie: Genie, keys: dict[str, str], clock: Clock) -> None:
        self.genie, self.keys, self.clock = genie, keys, clock

    async def call(self, method: str, path: str, body: Any = None, team: str = "Payments") -> httpx.Response:
        return await self.genie.http.request(
            method, path, json=body, headers={"Authorization": f"GenieKey {self.keys[team]}"}
        )

    async def alert(self, message: str = "Disk full on db-1", team: str = "Payments") -> int:
        envelope(await self.call("POST", "/v2/alerts", {"message": message, "alias": message}, team), 202)
        return await self.genie.scalar("SELECT max(id) FROM alert")

    async def policy(self, steps: list[StepSpec], repeat: int = 0, repeat_after: int = 10) -> None:
        async with self.genie.sessionmaker.begin() as s:
            await escalation.set_policy(s, "Payments", "default", steps, repeat=repeat, repeat_after=repeat_after)

    async def pages(self, alert_id: int) -> list[tuple]:
        return await self.genie.rows(
            "SELECT u.email, p.step, p.repeat_round, p.channel, p.target, p.status FROM page p "
            'LEFT JOIN "user" u ON u.id = p.user_id WHERE p.alert_id = :a ORDER BY p.id',
            a=alert_id,
        )

    async def timeline(self, alert_id: int) -> list[tuple]:
        return await self.genie.rows(
            "SELECT action, outcome, reason FROM alert_event WHERE alert_id = :a ORDER BY id", a=alert_id
        )

    async def dms(self, user: str, count: int = 1) -> list[dict]:
        return [c.args for c in await self.genie.fake.wait_for("chat.postMessage", count, channel=user)]

    def sent_to(self, user: str) -> int:
        return len([c for c in self.genie.fake.calls("chat.postMessage") if c.args.get("channel") == user])


async def _link(genie: Genie, slack_user_id: str, email: str) -> None:
    async with genie.sessionmaker.begin() as s:
        req = await slack_links.issue_link(s, SlackIdentity(TEAM_ID, slack_user_id), SlackProfile(), 600)
        await slack_links.redeem(
            s, req.nonce, await users.require_user(s, email), replace=True, ownership_confirmed=True
        )


@pytest.fixture
async def world(genie: Genie) -> World:
    """Payments (C0PAY: Alice, Bob, Carol; a schedule "primary" with Alice on call all week) and
    Search (C0SEARCH, no policy); Alice and Bob linked in Slack, Carol not."""
    for email, name in [
        ("alice@example.com", "Alice Smith"),
        ("bob@example.com", "Bob Jones"),
        ("carol@example.com", "Carol Diaz"),
    ]:
        await genie.add_user(email, name)
    keys = {}
    async with genie.sessionmaker.begin() as s:
        for name, channel in [("Payments", "C0PAY"), ("Search", "C0SEARCH")]:
            keys[name] = await alerts.team_key(s, await teams.add_team(s, name, channel))
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            await teams.add_member(s, "Payments", email)
        start = (utcnow() - timedelta(days=2)).replace(microsecond=0)
        await schedules.create_schedule(
            s, "Payments", "primary", "UTC", [RotationSpec("week", ["alice@example.com"], 1, "weeks", start, "UTC")]
        )
    await _link(genie, "U0ALICE", "alice@example.com")
    await _link(genie, "U0BOB", "bob@example.com")
    clock = Clock()
    genie.rt.now = clock
    return World(genie, keys, clock)


def _button(blocks: list[dict], action_id: str) -> str:
    return next(d["value"] for d in walk(blocks) if isinstance(d, dict) and d.get("action_id") == action_id)


async def test_the_on_call_person_is_paged_then_the_next_step_and_the_paged_person_acks_from_the_dm(world: World):
    genie, fake = world.genie, world.genie.fake
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(10, "user", "bob@example.com")])
    alert_id = await world.alert()

    # Step 1 at once: Alice (on call in "primary") gets a DM with the alert and its buttons.
    [dm] = await world.dms("U0ALICE")
    text = block_text(dm["blocks"])
    assert "You are paged for alert" in text and "on call in schedule primary" in text and "Disk full on db-1" in text
    assert {"alert_acknowledge", "alert_close"} <= {
        d.get("action_id") for d in walk(dm["blocks"]) if isinstance(d, dict)
    }
    await fake.wait_for("chat.postMessage", channel="C0PAY")  # the channel message as before
    await eventually(lambda: _status(world, alert_id, "sent"))
    events = await world.timeline(alert_id)
    assert (
        "page",
        "applied",
        "step 1: paged Alice Smith (alice@example.com), on call in schedule primary, by Slack DM (queued)",
    ) in events
    assert any(e[0] == "page" and "Slack DM to Alice Smith delivered" in (e[2] or "") for e in events)

    # Nobody acknowledges. 9 minutes on: nothing; 10 minutes on: step 2 pages Bob, once.
    world.clock.move(minutes=9)
    assert await genie.rt.paging.run_once() == 0
    world.clock.move(minutes=1, seconds=1)
    genie.rt.paging.wake()
    [bob_dm] = await world.dms("U0BOB")
    assert "named in the policy" in block_text(bob_dm["blocks"])
    assert await genie.rt.paging.run_once() == 0
    assert [p[:3] for p in await world.pages(alert_id)] == [("alice@example.com", 0, 0), ("bob@example.com", 1, 0)]

    # Bob is taken out of the team, yet he was paged: his click on the DM's button acknowledges.
    async with genie.sessionmaker.begin() as s:
        await teams.remove_member(s, "Payments", "bob@example.com")
    value = _button(bob_dm["blocks"], "alert_acknowledge")
    response = await genie.slack.block_action(BOB, "alert_acknowledge", value, container="message", channel_id="D0BOB")
    assert response.status_code == 200
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))
    events = await world.timeline(alert_id)
    assert ("acknowledge", "applied", "paged at step 2") in events
    # Both pages are redrawn: acknowledged, no Acknowledge button any more.
    for channel, ts in await genie.rows("SELECT slack_channel, slack_ts FROM page ORDER BY id"):
        [redrawn] = [c.args for c in await genie.fake.wait_for("chat.update", channel=channel, ts=ts)]
        assert "Acknowledged* by Bob Jones" in block_text(redrawn["blocks"])
        assert "alert_acknowledge" not in {d.get("action_id") for d in walk(redrawn["blocks"]) if isinstance(d, dict)}
    assert [r[0] for r in await genie.rows("SELECT slack_channel FROM page ORDER BY id")] == ["D0ALICE", "D0BOB"]

    # Step 2 was the last: the policy had run its course (no repeat), and the timeline says so.
    assert any(
        e[0] == "page" and (e[2] or "").startswith("escalation policy default has run its course (1 round")
        for e in events
    )
    assert await genie.scalar("SELECT count(*) FROM alert_escalation") == 0

    # However late, nobody more is paged.
    world.clock.move(hours=2)
    assert await genie.rt.paging.run_once() == 0
    await asyncio.sleep(0.1)
    assert (world.sent_to("U0ALICE"), world.sent_to("U0BOB")) == (1, 1)


async def _status(world: World, alert_id: int, status: str) -> bool:
    return all(p[5] == status for p in await world.pages(alert_id)) and bool(await world.pages(alert_id))


async def test_an_api_alert_that_starts_an_escalation_wakes_the_engine(world: World):
    """Only an alert that started an escalation wakes the engine (``paging.started_in``; others
    do not, tests/test_alert_api.py): with the engine's poll an hour long, step 1 still goes at once."""
    genie = world.genie
    await world.policy([StepSpec(0, "user", "alice@example.com")])
    genie.rt.paging.poll_interval = 3600.0
    genie.rt.paging.wake()  # its current sleep ends; the next one is an hour
    await asyncio.sleep(0.2)
    alert_id = await world.alert()
    await world.dms("U0ALICE")  # within the fake's 5 s, not the hour
    assert [p[0] for p in await world.pages(alert_id)] == ["alice@example.com"]


async def test_repeat_runs_the_policy_again_and_closing_stops_it(world: World):
    genie = world.genie
    await world.policy(
        [StepSpec(0, "schedule", "primary"), StepSpec(5, "user", "bob@example.com")], repeat=1, repeat_after=3
    )
    alert_id = await world.alert()
    await world.dms("U0ALICE")
    world.clock.move(minutes=5, seconds=1)
    assert await genie.rt.paging.run_once() == 1  # Bob
    world.clock.move(minutes=3)
    assert await genie.rt.paging.run_once() == 1  # the repeat: Alice again
    assert [p[:3] for p in await world.pages(alert_id)] == [
        ("alice@example.com", 0, 0),
        ("bob@example.com", 1, 0),
        ("alice@example.com", 0, 1),
    ]
    await world.dms("U0ALICE", 2)
    # Closed through the API: the escalation stops, its next step never fires.
    envelope(await world.call("POST", f"/v2/alerts/{alert_id}/close?identifierType=tiny", {}), 202)
    world.clock.move(minutes=30)
    assert await genie.rt.paging.run_once() == 0
    assert await genie.scalar("SELECT count(*) FROM alert_escalation") == 0
    assert len(await world.pages(alert_id)) == 3
    assert ("page", "applied", "escalation stopped: closed by API (Payments)") in await world.timeline(alert_id)


async def test_a_dm_slack_refuses_is_recorded_as_failed_and_recipients_show_who_was_paged(world: World):
    genie, fake = world.genie, world.genie.fake
    await world.policy([StepSpec(5, "user", "bob@example.com"), StepSpec(10, "schedule", "primary")])
    alert_id = await world.alert()
    await fake.wait_for("chat.postMessage", channel="C0PAY")
    fake.fail("chat.postMessage", error="cannot_dm_bot")  # the next post: Bob's page
    world.clock.move(minutes=5, seconds=1)
    genie.rt.paging.wake()
    refused = ("page", "failed", "step 1: Slack DM to Bob Jones failed: Slack answered cannot_dm_bot")

    async def refusal_recorded() -> bool:
        return refused in await world.timeline(alert_id)

    await eventually(refusal_recorded)
    assert await _status(world, alert_id, "failed")
    world.clock.move(minutes=5)
    genie.rt.paging.wake()
    await world.dms("U0ALICE")
    await eventually(lambda: _sent(world, alert_id, "alice@example.com"))
    told = envelope(await world.call("GET", f"/v2/alerts/{alert_id}/recipients?identifierType=tiny"), 200)["data"]
    methods = {r["user"]["username"]: (r["state"], r["method"]) for r in told}
    assert methods["bob@example.com"] == ("failed", "Slack DM (paged)")
    assert methods["alice@example.com"] == ("notified", "Slack DM (paged)")
    assert methods["carol@example.com"] == ("notified", "Slack channel")
    # A failed page grants nothing at the gate.
    async with genie.sessionmaker() as s:
        from bot.services import access

        facts = await access.gate_facts(s, SlackIdentity(TEAM_ID, "U0BOB"), alert_id, anonymous_default=False)
        assert facts is not None and facts.paged_step is None


async def _sent(world: World, alert_id: int, email: str) -> bool:
    return any(p[0] == email and p[5] == "sent" for p in await world.pages(alert_id))


async def test_a_snoozed_alerts_next_step_waits_for_the_snooze_to_end(world: World):
    genie = world.genie
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(10, "user", "bob@example.com")])
    alert_id = await world.alert()
    await world.dms("U0ALICE")
    end = (utcnow() + timedelta(minutes=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    envelope(await world.call("POST", f"/v2/alerts/{alert_id}/snooze?identifierType=tiny", {"endTime": end}), 202)
    world.clock.move(minutes=11)
    assert await genie.rt.paging.run_once() == 0  # due, but snoozed: it waits
    world.clock.move(minutes=20)
    # The snooze is over: Bob — paged by this call, or by the engine's own loop if its poll came
    # first on a busy machine (it runs on the same moved clock); once either way.
    await genie.rt.paging.run_once()
    assert [p[0] for p in await world.pages(alert_id)] == ["alice@example.com", "bob@example.com"]


def test_the_page_escapes_what_came_from_outside():
    from bot.blocks.alerts import AlertView
    from bot.blocks.paging import page_message

    view = AlertView(
        id=7,
        message="<!channel> db down",
        priority="P1",
        status="open",
        created_at=datetime(2026, 11, 25, tzinfo=UTC),
        team_name="<@U0CEO>",
    )
    for channel in (False, True):
        text, blocks = page_message(view, step=1, repeat_round=2, why="on call in <!everyone>", channel=channel)
        shown = text + block_text(blocks)
        assert "<!channel>" not in shown and "<@U0CEO>" not in shown and "<!everyone>" not in shown
        assert "&lt;!channel&gt; db down" in shown and "step 2, repeat 2" in shown
    assert "<!here>" in block_text(page_message(view, step=0, channel=True)[1])


async def test_escalate_fires_the_next_step_at_once_and_a_team_without_a_policy_gets_a_clear_422(world: World):
    genie = world.genie
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(30, "user", "bob@example.com")])
    alert_id = await world.alert()
    await world.dms("U0ALICE")

    answer = envelope(
        await world.call(
            "POST",
            f"/v2/alerts/{alert_id}/escalate?identifierType=tiny",
            {"escalation": {"name": "default"}, "user": "ops-bot", "note": "no answer"},
        ),
        202,
    )
    status = envelope(await world.call("GET", f"/v2/alerts/requests/{answer['requestId']}"), 200)["data"]
    assert status["isSuccess"] is True and status["action"] == "EscalateToNext"
    assert status["status"] == "Escalated alert to next (step 2)"
    await world.dms("U0BOB")  # without moving the clock
    assert ("escalate", "applied", "step 2 of default fires now") in await world.timeline(alert_id)

    # Another escalation's name, and a team with no policy: 422, nothing changes.
    await eventually(lambda: _status(world, alert_id, "sent"))  # (Bob's DM settled: no race below)
    before = await world.pages(alert_id)
    wrong = envelope(
        await world.call(
            "POST", f"/v2/alerts/{alert_id}/escalate?identifierType=tiny", {"escalation": {"name": "nights"}}
        ),
        422,
    )
    assert "is not the policy of team Payments" in wrong["errors"]["escalation"]
    await world.call("POST", "/v2/alerts", {"message": "Search is slow"}, "Search")
    search_id = await genie.scalar("SELECT id FROM alert WHERE message = 'Search is slow'")
    refused = envelope(
        await world.call("POST", f"/v2/alerts/{search_id}/escalate?identifierType=tiny", {}, "Search"), 422
    )
    assert "team Search, which has no escalation policy" in refused["errors"]["escalation"]
    assert await world.pages(alert_id) == before
    assert await world.pages(search_id) == []


async def test_a_person_who_cannot_be_paged_is_recorded_and_the_step_falls_through(world: World):
    genie = world.genie
    async with genie.sessionmaker.begin() as s:
        await escalation.set_policy(
            s,
            "Payments",
            "default",
            [
                StepSpec(0, "user", "carol@example.com"),
                StepSpec(0, "user", "alice@example.com"),
                StepSpec(0, "schedule", "primary"),
                StepSpec(20, "user", "bob@example.com"),
            ],
        )
        await users.set_active(s, "alice@example.com", False)
    alert_id = await world.alert()
    # Carol has no Slack link, Alice (named, and on call in "primary") is deactivated: each recorded,
    # and Bob (step 4) is paged now.
    await world.dms("U0BOB")
    reasons = [e[2] for e in await world.timeline(alert_id) if e[0] == "page"]
    assert (
        "step 1: Carol Diaz (carol@example.com) not paged: no Slack account is linked in the workspace of "
        "Payments's channel"
    ) in reasons
    assert "step 1 reached nobody: step 2 fires now" in reasons
    assert "step 2: Alice Smith (alice@example.com) not paged: their Genie account is deactivated" in reasons
    assert "step 2 reached nobody: step 3 fires now" in reasons
    assert "step 3 reached nobody: step 4 fires now" in reasons
    assert [(p[0], p[5]) for p in await world.pages(alert_id)][:3] == [
        ("carol@example.com", "skipped"),
        ("alice@example.com", "skipped"),
        ("alice@example.com", "skipped"),
    ]
    assert (await world.pages(alert_id))[3][0] == "bob@example.com"
    assert world.sent_to("U0ALICE") == 0
    # Carol, skipped, may not act as "paged": the gate does not count a skipped page.
    async with genie.sessionmaker() as s:
        from bot.services import access

        await _link(genie, "U0CAROL", "carol@example.com")
        async with genie.sessionmaker.begin() as s2:
            await teams.remove_member(s2, "Payments", "carol@example.com")
        facts = await access.gate_facts(s, SlackIdentity(TEAM_ID, "U0CAROL"), alert_id, anonymous_default=False)
        assert facts is not None and facts.paged_step is None
        assert not (await access.decide(s, facts, "acknowledge")).allowed


async def test_a_person_no_longer_in_the_team_is_not_paged_and_the_timeline_says_so(world: World):
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(10, "user", "bob@example.com")])
    async with world.genie.sessionmaker.begin() as s:
        await teams.remove_member(s, "Payments", "alice@example.com")  # still in the rotation
    alert_id = await world.alert()
    await world.dms("U0BOB")
    assert (
        "page",
        "skipped",
        "step 1: Alice Smith (alice@example.com) not paged: no longer a member of Payments",
    ) in await world.timeline(alert_id)
    assert world.sent_to("U0ALICE") == 0


async def test_two_engines_on_one_database_page_each_step_once(world: World):
    genie = world.genie
    await genie.rt.paging.stop()  # the server's own engine stays out: two others race
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(10, "user", "bob@example.com")])
    ids = [await world.alert(f"alert {i}") for i in range(6)]
    engines = [make_engine(genie.settings.database_url) for _ in range(2)]
    try:
        runners = [paging.PagingEngine(make_sessionmaker(e), world.clock) for e in engines]
        for minutes in (0, 10.1):
            world.clock.move(minutes=minutes)
            queued = await asyncio.gather(*(r.run_once() for r in runners for _ in range(3)))
            assert sum(queued) == len(ids), queued
    finally:
        for e in engines:
            await e.dispose()
    for alert_id in ids:
        assert [p[:2] for p in await world.pages(alert_id)] == [("alice@example.com", 0), ("bob@example.com", 1)]
    assert await genie.scalar("SELECT count(*) FROM outbox WHERE kind = 'page'") == 2 * len(ids)


async def test_a_step_interrupted_by_a_crash_fires_after_the_restart_once(world: World):
    genie = world.genie
    await genie.rt.paging.stop()
    await world.policy([StepSpec(0, "schedule", "primary"), StepSpec(10, "user", "bob@example.com")])
    alert_id = await world.alert()
    # A process claims the step and dies before committing: nothing of it remains.
    async with genie.sessionmaker() as s:
        async with s.begin():
            assert await paging.claim_and_fire(s, alert_id, world.clock()) == 1
            await s.rollback()
    assert await world.pages(alert_id) == []
    # The restarted process (a new engine) finds the timer and fires it, once.
    restarted = paging.PagingEngine(genie.sessionmaker, world.clock, on_paged=genie.rt.wake_outbox)
    assert await restarted.run_once() == 1
    assert await restarted.run_once() == 0
    await world.dms("U0ALICE")
    world.clock.move(minutes=10, seconds=1)
    assert await paging.PagingEngine(genie.sessionmaker, world.clock).run_once() == 1
    assert [p[:2] for p in await world.pages(alert_id)] == [("alice@example.com", 0), ("bob@example.com", 1)]
