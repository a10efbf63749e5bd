"""Slack re-sends what it thinks failed; a repeated delivery does nothing twice.

Events API: a retry carries the same ``event_id`` (and ``X-Slack-Retry-Num``,
``X-Slack-Retry-Reason``); Genie takes each event in once, across processes, and answers every
delivery 200 at once. Slash commands and interactivity are not retried by Slack, but a
duplicated click payload (a proxy replaying it, a double submit) must not act twice either: the
transitions are conditional updates, and the duplicate is told who got there first."""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

from sqlalchemy import text

from bot.services import cleanup, slack_events
from storage.base import utcnow
from tests.conftest import ALICE, BOB
from tests.hardening import bolt_idle
from tests.helpers import buttons, link_person
from tests.test_alert_gate import CHANNEL, _events, _fire, world  # noqa: F401 - the fixture

HOME = {"type": "app_home_opened", "user": "U0ALICE", "channel": "D0HOME", "tab": "home", "event_ts": "1.0"}


async def _home_event(genie, event_id: str, retry: int | None = None, reason: str = "http_timeout"):
    headers = {"X-Slack-Retry-Num": str(retry), "X-Slack-Retry-Reason": reason} if retry else None
    started = time.monotonic()
    response = await genie.slack.event(ALICE, dict(HOME), event_id=event_id, headers=headers)
    assert response.status_code == 200, response.text
    assert time.monotonic() - started < 3
    return response


async def test_a_retried_event_is_taken_in_once(genie):
    await _home_event(genie, "Ev0RETRY01")
    for n, reason in ((1, "http_timeout"), (2, "http_error"), (3, "too_many_requests")):
        await _home_event(genie, "Ev0RETRY01", retry=n, reason=reason)
    await bolt_idle()
    assert len(genie.fake.calls("views.publish")) == 1
    assert await genie.scalar("SELECT count(*) FROM slack_event WHERE event_id = 'Ev0RETRY01'") == 1
    # Another event is its own: handled.
    await _home_event(genie, "Ev0RETRY02")
    await bolt_idle()
    assert len(genie.fake.calls("views.publish")) == 2


async def test_concurrent_deliveries_of_one_event_make_one_publish(genie):
    responses = await asyncio.gather(
        *(
            genie.slack.event(
                ALICE, dict(HOME), event_id="Ev0RACE0001", headers={"X-Slack-Retry-Num": str(i)} if i else None
            )
            for i in range(8)
        )
    )
    assert [r.status_code for r in responses] == [200] * 8
    await bolt_idle()
    assert len(genie.fake.calls("views.publish")) == 1


async def test_a_forged_delivery_cannot_burn_a_real_event_id(genie):
    """Ids are recorded only after Bolt verified the signature."""
    forged = await genie.slack.event(ALICE, dict(HOME), event_id="Ev0REAL0001", secret="not-the-signing-secret")
    assert forged.status_code == 401
    assert await genie.scalar("SELECT count(*) FROM slack_event") == 0
    await _home_event(genie, "Ev0REAL0001")
    await genie.fake.wait_for("views.publish")


async def test_seen_event_ids_are_pruned_after_an_hour(genie):
    """By the periodic cleanup (not on every request: that was a DELETE per click)."""
    await _home_event(genie, "Ev0OLD00001")
    await _home_event(genie, "Ev0NEW00001")
    old = utcnow() - slack_events.KEEP - timedelta(minutes=1)
    async with genie.sessionmaker.begin() as s:
        await s.execute(
            text("UPDATE slack_event SET received_at = :t WHERE event_id = 'Ev0OLD00001'"),
            {"t": old.replace(tzinfo=None) if genie.settings.database_url.startswith("sqlite") else old},
        )
    async with genie.sessionmaker.begin() as s:
        assert (await cleanup.prune(s))["slack_event"] == 1
    assert await genie.scalar("SELECT count(*) FROM slack_event") == 1
    assert await genie.scalar("SELECT event_id FROM slack_event") == "Ev0NEW00001"


# --- interactivity and commands: not retried by Slack, duplicates are harmless ----------------
async def test_a_duplicated_click_payload_acts_once(world):
    alert_id, post = await _fire(world)
    value = buttons(post["blocks"])["alert_acknowledge"]["value"]
    close = buttons(post["blocks"])["alert_close"]["value"]
    for action_id, val in (("alert_acknowledge", value), ("alert_close", close)):
        # The very same payload, twice at once and once more after.
        same = dict(container="message", channel_id=CHANNEL, message_ts="1700000000.000100")
        first = await asyncio.gather(*(world.slack.block_action(ALICE, action_id, val, **same) for _ in range(2)))
        again = await world.slack.block_action(
            ALICE, action_id, val, **same, headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"}
        )
        assert [r.status_code for r in (*first, again)] == [200, 200, 200]
        await bolt_idle()
    events = await _events(world, alert_id)
    assert [e[:2] for e in events].count(("acknowledge", "applied")) == 1
    assert [e[:2] for e in events].count(("close", "applied")) == 1
    assert [e[:2] for e in events].count(("acknowledge", "noop")) == 2
    assert [e[:2] for e in events].count(("close", "noop")) == 2
    said = [c.args["text"] for c in world.fake.calls("response_url")]
    assert sum("already acknowledged by Alice Smith" in s for s in said) == 2
    assert sum("already closed (by Alice Smith" in s for s in said) == 2


async def test_duplicated_slash_commands_leave_one_usable_link(genie):
    """Two ``/genie connect`` in a row (a double submit): the older link is superseded, so
    exactly one link works; ``/genie disconnect`` twice: the second says there is nothing."""
    answers = await asyncio.gather(genie.slack.command(BOB, "connect"), genie.slack.command(BOB, "connect"))
    assert [a.status_code for a in answers] == [200, 200]
    await bolt_idle()
    usable = await genie.scalar("SELECT count(*) FROM link_request WHERE superseded_at IS NULL")
    assert usable == 1 and await genie.scalar("SELECT count(*) FROM link_request") == 2
    # Bob links, then disconnects twice: the first removes the link, the second finds none.
    await genie.add_user("bob@example.com", "Bob Jones")
    await link_person(genie, BOB.user_id, "bob@example.com")
    first = await genie.slack.command(BOB, "disconnect")
    second = await genie.slack.command(BOB, "disconnect")
    assert first.status_code == second.status_code == 200
    assert first.json()["text"].startswith("Disconnected. Your Slack account no longer acts as *Bob Jones*")
    assert second.json()["text"] == "You were not connected to a Genie account, so there was nothing to disconnect."
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0
