"""The outbox worker delivers what was committed to Slack: once, in order per channel, through
rate limits, outages and crashes (DESIGN.md §3, "Nothing accepted is lost").

Alerts are made with the service layer, as the API does, in a committed transaction; then
``rt.wake_outbox()``. What we assert is what the fake Slack received and what its channels show,
and the outbox and alert rows. The crash tests run ``genie serve`` as a process and SIGKILL it
in the middle of a delivery."""

from __future__ import annotations

import logging
import time
from pathlib import Path
from uuid import uuid4

import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot import metrics
from bot.blocks.alerts import alert_message
from bot.config import ConfigError, Settings
from bot.services import alerts, teams
from bot.services.alerts import Actor, CreateAlert
from bot.slack.render import alert_view
from storage.models import Alert
from storage.session import make_engine, make_sessionmaker
from tests.conftest import SECRET_KEY, SIGNING_SECRET, eventually
from tests.fake_slack import FakeSlack
from tests.helpers import block_text, buttons
from tests.processes import GenieServer, clean_env, free_port


# --- helpers -----------------------------------------------------------------------------------
async def add_team(sessionmaker, name: str, channel: str) -> None:
    async with sessionmaker.begin() as session:
        await teams.add_team(session, name, channel=channel)


async def fire(sessionmaker, team: str, message: str, rt=None, **fields) -> int:
    """Create an alert as the API does (one committed transaction); wake the worker if local."""
    async with sessionmaker.begin() as session:
        owner = await teams.require_team(session, team)
        alert, created = await alerts.create_alert(
            session, owner, CreateAlert(message=message, **fields), request_id=str(uuid4())
        )
    assert created
    if rt is not None:
        rt.wake_outbox()
    return alert.id


def alert_of(message: dict) -> int | None:
    return ((message.get("metadata") or {}).get("event_payload") or {}).get("alert_id")


def posts_of(fake: FakeSlack, alert_id: int):
    """chat.postMessage calls Genie made for this alert (answered or not)."""
    return [c for c in fake.calls("chat.postMessage") if alert_of(c.args) == alert_id]


async def outbox_rows(sessionmaker, alert_id: int | None = None) -> list:
    from sqlalchemy import text

    sql = (
        "SELECT id, kind, channel, alert_id, attempts, delivered_at, failed_at, last_error, first_attempt_at "
        "FROM outbox" + (" WHERE alert_id = :a" if alert_id is not None else "") + " ORDER BY id"
    )
    async with sessionmaker() as session:
        return list((await session.execute(text(sql), {"a": alert_id})).all())


async def delivered(sessionmaker, alert_id: int | None = None, count: int = 1):
    rows = await outbox_rows(sessionmaker, alert_id)
    return rows if len(rows) >= count and all(r.delivered_at for r in rows) else None


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


# --- the message -------------------------------------------------------------------------------
async def test_post_shows_the_alert_carries_metadata_and_is_recorded(genie):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    alert_id = await fire(
        genie.sessionmaker,
        "Payments",
        "Checkout error rate above 5%",
        genie.rt,
        priority="P1",
        description="Payments API returns 502s",
        tags=["checkout"],
        details={"region": "eu-west-1"},
    )
    post = (await genie.fake.wait_for("chat.postMessage", channel="C0PAY"))[0].args
    [row] = await eventually(lambda: delivered(genie.sessionmaker, alert_id))

    async with genie.sessionmaker() as session:
        alert = await session.get(Alert, alert_id)
        text, blocks = alert_message(await alert_view(session, alert), f"{genie.url}/alerts/{alert_id}")
    assert (post["text"], post["blocks"]) == (text, blocks)
    assert f"<{genie.url}/alerts/{alert_id}|Open in Genie>" in str(post["blocks"])  # the alert's web page
    assert "Checkout error rate above 5%" in block_text(post["blocks"])
    assert set(buttons(post["blocks"])) == {"alert_acknowledge", "alert_take", "alert_close"}
    assert post["metadata"] == {
        "event_type": "genie_alert",
        "event_payload": {"alert_id": alert_id, "outbox_id": row.id},
    }
    [shown] = genie.fake.messages("C0PAY")
    assert (alert.slack_channel, alert.slack_ts) == ("C0PAY", shown["ts"])
    assert row.attempts == 1 and row.failed_at is None
    assert genie.fake.calls("conversations.history") == []  # a first attempt has nothing to look for
    assert genie.rt.worker.client.retry_handlers == []  # backoff and Retry-After are the worker's


async def test_acknowledge_through_the_api_updates_the_message_in_place(genie):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    alert_id = await fire(genie.sessionmaker, "Payments", "Disk full on db-1", genie.rt)
    await eventually(lambda: delivered(genie.sessionmaker, alert_id))
    async with genie.sessionmaker.begin() as session:
        await alerts.acknowledge(session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox()

    update = (await genie.fake.wait_for("chat.update"))[0].args
    [shown] = genie.fake.messages("C0PAY")
    assert (update["channel"], update["ts"]) == ("C0PAY", shown["ts"])
    assert "Acknowledged by Alertmanager" in block_text(update["blocks"]).replace("*", "")
    assert set(buttons(update["blocks"])) == {"alert_close"}
    assert shown["blocks"] == update["blocks"]  # the one message in the channel now shows it
    await eventually(lambda: delivered(genie.sessionmaker, alert_id, count=2))


async def test_updates_queued_behind_a_delivery_go_out_as_one_update_of_the_latest_state(genie):
    """While one update of an alert is with Slack, three more changes of it queue up: the next
    delivery draws the alert as it is then and settles all three (one chat.update, not three),
    and the message ends up showing every change."""
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    alert_id = await fire(genie.sessionmaker, "Payments", "Queue backing up", genie.rt, alias="queue-depth")
    await eventually(lambda: delivered(genie.sessionmaker, alert_id))
    genie.fake.fail("chat.update", delay=2)  # the first update is slow: the others queue behind it
    async with genie.sessionmaker.begin() as session:
        await alerts.acknowledge(session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox()

    async def first_update_claimed():
        rows = await outbox_rows(genie.sessionmaker, alert_id)
        return len(rows) == 2 and rows[1].attempts == 1 and rows[1].delivered_at is None

    await eventually(first_update_claimed)
    for _ in range(2):  # the same alias again while it is open: de-duplicated, count goes up
        async with genie.sessionmaker.begin() as session:
            owner = await teams.require_team(session, "Payments")
            again, created = await alerts.create_alert(
                session, owner, CreateAlert(message="Queue backing up", alias="queue-depth"), request_id=str(uuid4())
            )
        assert (again.id, created) == (alert_id, False)
        genie.rt.wake_outbox()
    async with genie.sessionmaker.begin() as session:
        await alerts.close(session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox()

    rows = await eventually(lambda: delivered(genie.sessionmaker, alert_id, count=5))
    assert [r.kind for r in rows] == ["alert.post"] + ["alert.update"] * 4
    updates = genie.fake.calls("chat.update")
    assert len(updates) == 2  # the slow one, then one for the three that queued behind it
    assert "Acknowledged by Alertmanager" in block_text(updates[0].args["blocks"]).replace("*", "")
    last = block_text(updates[1].args["blocks"]).replace("*", "")
    assert "Closed by Alertmanager" in last and "×3" in last
    [shown] = genie.fake.messages("C0PAY")
    async with genie.sessionmaker() as session:
        alert = await session.get(Alert, alert_id)
        _, blocks = alert_message(await alert_view(session, alert), f"{genie.url}/alerts/{alert_id}")
    assert shown["blocks"] == updates[1].args["blocks"] == blocks  # the message shows the alert as it is
    assert "alert_acknowledge" not in buttons(blocks) and "alert_close" not in buttons(blocks)


async def test_stop_lets_the_call_in_flight_finish_and_records_it(genie):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    genie.fake.fail("chat.postMessage", delay=1)
    alert_id = await fire(genie.sessionmaker, "Payments", "Deploy stuck", genie.rt)
    await genie.fake.wait_for("chat.postMessage")
    await genie.rt.worker.stop()  # as at shutdown: waits for Slack's answer and records it
    [row] = await outbox_rows(genie.sessionmaker, alert_id)
    assert row.delivered_at is not None and row.attempts == 1
    async with genie.sessionmaker() as session:
        assert (await session.get(Alert, alert_id)).slack_ts == genie.fake.messages("C0PAY")[0]["ts"]


@pytest.mark.parametrize("value", ["1", "soon", "100000"])
def test_lease_setting_is_checked(value):
    with pytest.raises(ConfigError, match="^GENIE_OUTBOX_LEASE_SECONDS: "):
        Settings.from_env({"GENIE_OUTBOX_LEASE_SECONDS": value})
    assert Settings.from_env({}).outbox_lease_seconds == 60


# --- failures that pass --------------------------------------------------------------------------
async def test_server_error_is_retried_later_and_delivered_once(genie):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    genie.fake.fail("chat.postMessage", status=500)
    errors_before = sample("genie_outbox_errors_total", error="http_500")
    alert_id = await fire(genie.sessionmaker, "Payments", "Queue backlog", genie.rt)

    first, second = await genie.fake.wait_for("chat.postMessage", count=2, timeout=10)
    assert second.at - first.at >= 1.9  # exponential backoff starts at 2 s
    [row] = await eventually(lambda: delivered(genie.sessionmaker, alert_id))
    assert row.attempts == 2
    assert [alert_of(m) for m in genie.fake.messages("C0PAY")] == [alert_id]
    # A 500 leaves it open whether Slack posted: the retry looked before posting again.
    assert genie.fake.calls("conversations.history")
    assert sample("genie_outbox_errors_total", error="http_500") == errors_before + 1


@pytest.mark.parametrize("how", ["http_429", "ratelimited"])
async def test_rate_limit_waits_then_delivers(genie, how):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    if how == "http_429":
        genie.fake.fail("chat.postMessage", status=429, retry_after=1)
    else:
        genie.fake.fail("chat.postMessage", error="ratelimited")
    alert_id = await fire(genie.sessionmaker, "Payments", "Error budget burn", genie.rt)

    first, second = await genie.fake.wait_for("chat.postMessage", count=2, timeout=10)
    assert second.at - first.at >= 1.0
    [row] = await eventually(lambda: delivered(genie.sessionmaker, alert_id))
    assert row.attempts == 2
    assert [alert_of(m) for m in genie.fake.messages("C0PAY")] == [alert_id]
    assert genie.fake.calls("conversations.history") == []  # a rate limit certainly posted nothing


async def test_a_rate_limited_head_holds_its_channel_and_no_other(genie):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    await add_team(genie.sessionmaker, "Ops", "C0OPS")
    genie.fake.fail("chat.postMessage", status=429, retry_after=2)
    first = await fire(genie.sessionmaker, "Payments", "Payments #1", genie.rt)
    await genie.fake.wait_for("chat.postMessage")  # the 429
    limited_at = time.monotonic()
    second = await fire(genie.sessionmaker, "Payments", "Payments #2", genie.rt)
    third = await fire(genie.sessionmaker, "Payments", "Payments #3", genie.rt)
    other = await fire(genie.sessionmaker, "Ops", "Ops #1", genie.rt)

    await genie.fake.wait_for("chat.postMessage", channel="C0OPS")
    assert time.monotonic() - limited_at < 1.5, "another channel must not wait for C0PAY's rate limit"
    assert [c for c in genie.fake.calls("chat.postMessage") if c.args["channel"] == "C0PAY"] and genie.fake.messages(
        "C0PAY"
    ) == []  # C0PAY still waits: #2 and #3 did not jump the queue

    await eventually(lambda: delivered(genie.sessionmaker, count=4), timeout=10)
    assert [alert_of(m) for m in genie.fake.messages("C0PAY")] == [first, second, third]
    assert [alert_of(m) for m in genie.fake.messages("C0OPS")] == [other]
    retried = posts_of(genie.fake, first)
    assert len(retried) == 2 and retried[1].at - retried[0].at >= 2.0


# --- failures that do not pass -----------------------------------------------------------------
async def test_permanent_error_fails_the_message_and_the_channel_moves_on(genie, caplog):
    caplog.set_level(logging.INFO, logger="bot.slack.delivery")
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    genie.fake.fail("chat.postMessage", error="channel_not_found")
    failed_before = sample("genie_outbox_failed_total")
    errors_before = sample("genie_outbox_errors_total", error="channel_not_found")
    lost = await fire(genie.sessionmaker, "Payments", "Posted into the void", genie.rt)
    later = await fire(genie.sessionmaker, "Payments", "Posted fine", genie.rt)

    await eventually(lambda: delivered(genie.sessionmaker, later))
    [row] = await outbox_rows(genie.sessionmaker, lost)
    assert row.failed_at is not None and row.delivered_at is None and row.last_error == "channel_not_found"
    assert row.attempts == 1  # permanent: not retried
    assert [alert_of(m) for m in genie.fake.messages("C0PAY")] == [later]
    assert sample("genie_outbox_failed_total") == failed_before + 1
    assert sample("genie_outbox_errors_total", error="channel_not_found") == errors_before + 1
    [said] = [r for r in caplog.records if r.levelno == logging.ERROR]
    line = said.getMessage()
    assert "C0PAY" in line and f"alert #{lost}" in line and "channel_not_found" in line
    assert "xoxb-" not in caplog.text

    # Its update has no message to update: failed too, with that reason, and nothing sent.
    async with genie.sessionmaker.begin() as session:
        await alerts.close(session, await alerts.get(session, lost), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox()
    await eventually(lambda: _failed_update(genie, lost))
    assert genie.fake.calls("chat.update") == []


async def _failed_update(genie, alert_id: int):
    rows = [r for r in await outbox_rows(genie.sessionmaker, alert_id) if r.kind == "alert.update"]
    return rows and rows[0].failed_at and rows[0].last_error == "no Slack message to update"


# --- metrics ---------------------------------------------------------------------------------------
async def _metrics(genie) -> dict[tuple[str, tuple], float]:
    response = await genie.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


async def test_metrics_show_depth_age_and_deliveries(genie):
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    before = (await _metrics(genie)).get(("genie_outbox_delivered_total", (("kind", "alert.post"),)), 0.0)
    # Slack's wait outlasts the check below, however slow a busy machine makes it.
    genie.fake.fail("chat.postMessage", status=429, retry_after=8)
    await fire(genie.sessionmaker, "Payments", "Waits for its rate limit", genie.rt)
    await fire(genie.sessionmaker, "Payments", "Waits behind it", genie.rt)

    async def waiting():
        seen = await _metrics(genie)
        return seen if seen[("genie_outbox_depth", ())] == 2 else None

    seen = await eventually(waiting, timeout=7)
    assert seen[("genie_outbox_oldest_pending_age_seconds", ())] > 0

    async def drained():
        seen = await _metrics(genie)
        return seen if seen[("genie_outbox_depth", ())] == 0 else None

    seen = await eventually(drained, timeout=20)
    assert seen[("genie_outbox_delivered_total", (("kind", "alert.post"),))] == before + 2
    assert seen[("genie_outbox_oldest_pending_age_seconds", ())] == 0
    assert seen[("genie_outbox_errors_total", (("error", "ratelimited"),))] >= 1


# --- volume --------------------------------------------------------------------------------------
async def test_fifty_alerts_in_three_channels_arrive_once_each_and_in_order(genie):
    channels = {"Payments": "C0PAY", "Search": "C0SEARCH", "Ops": "C0OPS"}
    for team, channel in channels.items():
        await add_team(genie.sessionmaker, team, channel)
    genie.fake.fail("chat.postMessage", status=429, retry_after=1)  # one rate limit on the way
    fired: dict[str, list[int]] = {channel: [] for channel in channels.values()}
    for i in range(50):
        team = list(channels)[i % 3]
        fired[channels[team]].append(await fire(genie.sessionmaker, team, f"Alert number {i}", genie.rt))

    await eventually(lambda: delivered(genie.sessionmaker, count=50), timeout=30)
    for channel, ids in fired.items():
        assert [alert_of(m) for m in genie.fake.messages(channel)] == ids
    answered = [alert_of(c.args) for c in genie.fake.calls("chat.postMessage")]
    assert len(answered) == 51 and set(answered) == {i for ids in fired.values() for i in ids}


async def test_one_pass_claims_every_channel_head_at_once_and_a_failing_one_holds_only_its_channel(genie):
    """Nine alerts wait in three channels when the worker looks: one transaction claims the three
    channels' heads (one statement, one instant: their ``first_attempt_at`` is the same). The
    first post of that batch fails (a 500: it may have posted): its channel waits for its retry,
    which looks before posting again; the other two go on. Every alert is shown once, each
    channel in order."""
    channels = {"Payments": "C0PAY", "Search": "C0SEARCH", "Ops": "C0OPS"}
    for team, channel in channels.items():
        await add_team(genie.sessionmaker, team, channel)
    await genie.rt.worker.stop()  # so that all nine wait when it looks
    genie.fake.fail("chat.postMessage", status=500)
    fired: dict[str, list[int]] = {channel: [] for channel in channels.values()}
    for i in range(9):
        team = list(channels)[i % 3]
        fired[channels[team]].append(await fire(genie.sessionmaker, team, f"Alert number {i}"))
    genie.rt.worker.start()
    genie.rt.wake_outbox()

    rows = await eventually(lambda: delivered(genie.sessionmaker, count=9), timeout=30)
    for channel, ids in fired.items():
        assert [alert_of(m) for m in genie.fake.messages(channel)] == ids
    posts = [alert_of(c.args) for c in genie.fake.calls("chat.postMessage")]
    failed = posts[0]
    assert len(posts) == 10 and sorted(posts) == sorted([failed, *[i for ids in fired.values() for i in ids]])
    assert len(genie.fake.calls("conversations.history")) == 1  # the retry looked, for the doubtful one
    by_alert = {r.alert_id: r for r in rows}
    heads = [by_alert[ids[0]] for ids in fired.values()]
    assert len({r.first_attempt_at for r in heads}) == 1  # claimed together
    assert by_alert[failed].attempts == 2 and all(r.attempts == 1 for r in rows if r.alert_id != failed)


async def test_deliveries_that_finish_while_a_settle_runs_are_settled_together_once_each(genie):
    """Three channels' posts are with Slack; the test holds their outbox rows (a write
    transaction of its own) while Slack answers, so the first settle waits: those that finish
    meanwhile are settled together in the next transaction (one ``delivered_at``; one each
    would be three). Each post is shown once and recorded once."""
    import asyncio

    from sqlalchemy import update

    from storage.models import OutboxMessage

    channels = {"Payments": "C0PAY", "Search": "C0SEARCH", "Ops": "C0OPS"}
    for team, channel in channels.items():
        await add_team(genie.sessionmaker, team, channel)
    genie.fake.fail("chat.postMessage", delay=0.5, times=3)
    await genie.rt.worker.stop()
    fired = [await fire(genie.sessionmaker, team, f"{team} is down") for team in channels]
    genie.rt.worker.start()
    genie.rt.wake_outbox()
    await genie.fake.wait_for("chat.postMessage", count=3)
    async with genie.sessionmaker.begin() as session:  # the settles wait for this transaction
        await session.execute(update(OutboxMessage).where(OutboxMessage.alert_id.in_(fired)).values(last_error=None))
        await asyncio.sleep(1.5)  # every answer is in meanwhile

    rows = await eventually(lambda: delivered(genie.sessionmaker, count=3))
    # The first alone (or all three, if they were all in before it began), then the others together.
    assert len({r.delivered_at for r in rows}) <= 2
    for alert_id, channel in zip(fired, channels.values(), strict=True):
        assert [alert_of(m) for m in genie.fake.messages(channel)] == [alert_id]
    assert len(genie.fake.calls("chat.postMessage")) == 3 and all(r.attempts == 1 for r in rows)
    async with genie.sessionmaker() as session:
        shown = {alert_of(m): m["ts"] for channel in channels.values() for m in genie.fake.messages(channel)}
        for alert_id in fired:
            assert (await session.get(Alert, alert_id)).slack_ts == shown[alert_id]


async def test_the_assign_select_shows_the_team_as_it_is_at_each_render(genie):
    """The worker reads the team's members with the alert (and reuses what it parsed while they
    are the same): a member removed, deactivated or renamed since is never offered, one added
    is."""
    from sqlalchemy import update

    from bot.services import users
    from storage.models import User

    for email, name in [("alice@example.com", "Alice"), ("bob@example.com", "Bob"), ("carol@example.com", "Carol")]:
        await genie.add_user(email, name)
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    async with genie.sessionmaker.begin() as session:
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            await teams.add_member(session, "Payments", email)
    alert_id = await fire(genie.sessionmaker, "Payments", "Disk full", genie.rt, alias="disk")
    other_id = await fire(genie.sessionmaker, "Payments", "CPU hot", genie.rt)
    await eventually(lambda: delivered(genie.sessionmaker, count=2))

    def offered(blocks: list[dict]) -> list[str]:
        [select] = [e for b in blocks if b["type"] == "actions" for e in b["elements"] if e["type"] == "static_select"]
        return [o["text"]["text"] for o in select["options"]]

    shown = {alert_of(m): m for m in genie.fake.messages("C0PAY")}
    assert offered(shown[alert_id]["blocks"]) == offered(shown[other_id]["blocks"]) == ["Alice", "Bob", "Carol"]

    async with genie.sessionmaker.begin() as session:
        await teams.remove_member(session, "Payments", "bob@example.com")
        await users.set_active(session, "carol@example.com", False)
        await session.execute(update(User).where(User.email == "alice@example.com").values(name="Alice Smith"))
    await genie.add_user("dave@example.com", "Dave")
    async with genie.sessionmaker.begin() as session:
        await teams.add_member(session, "Payments", "dave@example.com")
        await alerts.acknowledge(session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox()
    [update_call] = await genie.fake.wait_for("chat.update")
    assert offered(update_call.args["blocks"]) == ["Alice Smith", "Dave"]

    async with genie.sessionmaker.begin() as session:
        await teams.remove_member(session, "Payments", "dave@example.com")
        await alerts.acknowledge(session, await alerts.get(session, other_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox()
    second = (await genie.fake.wait_for("chat.update", count=2))[1]
    assert offered(second.args["blocks"]) == ["Alice Smith"]
    async with genie.sessionmaker() as session:
        expected = await alert_view(session, await session.get(Alert, other_id))
    assert second.args["blocks"] == alert_message(expected, f"{genie.url}/alerts/{other_id}")[1]


async def test_a_change_queued_while_its_alert_update_is_with_slack_goes_out_right_after_it(genie):
    """An update whose lane held nothing more when it was claimed settles without looking for a
    next message — unless something was queued to its channel meanwhile: the close queued while
    the acknowledgement is with Slack follows it at once, not at the worker's next poll."""
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    alert_id = await fire(genie.sessionmaker, "Payments", "Disk full", genie.rt)
    await eventually(lambda: delivered(genie.sessionmaker, alert_id))
    genie.fake.fail("chat.update", delay=1)
    async with genie.sessionmaker.begin() as session:
        await alerts.acknowledge(session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox("C0PAY")
    [first] = await genie.fake.wait_for("chat.update")
    async with genie.sessionmaker.begin() as session:
        await alerts.close(session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager"))
    genie.rt.wake_outbox("C0PAY")

    first, second = await genie.fake.wait_for("chat.update", count=2, timeout=10)
    assert second.at - first.at < 1.8  # the ack's 1 s, then at once (the poll would be 2 s after the wake)
    assert "Closed by Alertmanager" in block_text(second.args["blocks"]).replace("*", "")
    rows = await eventually(lambda: delivered(genie.sessionmaker, alert_id, count=3))
    assert [r.attempts for r in rows] == [1, 1, 1]


async def test_two_workers_draining_one_lane_deliver_each_update_once_and_in_order(genie):
    """Two workers (as two processes would) drain one channel's update lane while Slack is slow:
    settling a message claims the lane's next one — on PostgreSQL in the one statement that also
    reads what it draws, with no transaction around it — so each next message is claimed by one
    of them only. Every update goes to Slack once, one at a time, in order, drawing its alert as
    it is."""
    from bot.slack.delivery import OutboxWorker, make_delivery_client

    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    fired = [await fire(genie.sessionmaker, "Payments", f"Disk {i} full", genie.rt) for i in range(12)]
    await eventually(lambda: delivered(genie.sessionmaker, count=12), timeout=10)
    await genie.rt.worker.stop()
    async with genie.sessionmaker.begin() as session:
        for alert_id in fired:
            await alerts.acknowledge(
                session, await alerts.get(session, alert_id), Actor(via="api", label="Alertmanager")
            )
    genie.fake.fail("chat.update", delay=0.1, times=12)
    other = OutboxWorker(genie.rt, make_delivery_client(genie.settings))
    try:
        other.start()
        genie.rt.worker.start()
        other.wake()
        genie.rt.wake_outbox()
        calls = await genie.fake.wait_for("chat.update", count=12, timeout=15)
        rows = await eventually(lambda: delivered(genie.sessionmaker, count=24), timeout=10)
    finally:
        await other.stop()
    assert len(genie.fake.calls("chat.update")) == 12 and all(r.attempts == 1 for r in rows)
    posted = {alert_of(m): m["ts"] for m in genie.fake.messages("C0PAY")}
    assert [call.args["ts"] for call in calls] == [posted[alert_id] for alert_id in fired]
    for earlier, later in zip(calls, calls[1:]):
        assert later.at - earlier.at >= 0.09  # one at a time: the next only once the last was answered
    for call, alert_id in zip(calls, fired, strict=True):
        assert f"Disk {fired.index(alert_id)} full" in block_text(call.args["blocks"])
        assert "Acknowledged by Alertmanager" in block_text(call.args["blocks"]).replace("*", "")


async def test_an_update_claimed_with_its_alerts_update_in_the_post_lane_waits_for_it(genie):
    """An alert has an update queued before its post was recorded (in the post lane) and one
    queued after (in the update lane); one pass claims both lane heads at once. The update lane's
    waits until the post lane's has been answered, so the older picture cannot land last — also
    on PostgreSQL, where the claim and the read are one statement whose read does not see that
    statement's own claims (the other claimed rows count as in flight)."""
    from bot.services import outbox

    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    alert_id = await fire(genie.sessionmaker, "Payments", "Disk full", genie.rt)
    await eventually(lambda: delivered(genie.sessionmaker, alert_id))
    await genie.rt.worker.stop()
    async with genie.sessionmaker.begin() as session:
        for lane in (outbox.POST_LANE, outbox.UPDATE_LANE):
            await outbox.enqueue(session, "C0PAY", outbox.UPDATE_ALERT, alert_id=alert_id, lane=lane)
    genie.fake.fail("chat.update", delay=1)
    genie.rt.worker.start()
    genie.rt.wake_outbox()
    first, second = await genie.fake.wait_for("chat.update", count=2, timeout=10)
    assert second.at - first.at >= 0.9  # after the first was answered, not beside it
    rows = await eventually(lambda: delivered(genie.sessionmaker, alert_id, count=3))
    assert rows[1].attempts == 1 and rows[2].attempts >= 2  # the update lane's waited


async def test_a_claim_takes_only_a_head_that_is_still_due(genie):
    """The worker looks for due heads and claims them in another statement (on PostgreSQL with
    no transaction around them): a head rescheduled in between (its delivery failed, it waits
    for its backoff) is not claimed before its time."""
    from bot.services import outbox
    from storage.base import utcnow

    await genie.rt.worker.stop()
    await add_team(genie.sessionmaker, "Payments", "C0PAY")
    alert_id = await fire(genie.sessionmaker, "Payments", "Disk full")
    [row] = await outbox_rows(genie.sessionmaker, alert_id)
    async with genie.sessionmaker.begin() as session:
        assert await outbox.mark_retry(session, row.id, 1, "http_503", utcnow(), retry_after=60)
    async with genie.sessionmaker.begin() as session:
        assert await outbox.claim_many(session, [row.id], utcnow()) == []
    [row] = await outbox_rows(genie.sessionmaker, alert_id)
    assert row.attempts == 0 and row.delivered_at is None


# --- crashes ---------------------------------------------------------------------------------------
@pytest.fixture
def serve(tmp_path: Path, db_url: str, fake_slack: FakeSlack):
    """``serve()`` starts ``genie serve`` on a fresh port; every server is killed at the end."""
    started: list[GenieServer] = []

    async def start() -> GenieServer:
        port = free_port()
        env = clean_env(
            DATABASE_URL=db_url,
            GENIE_SECRET_KEY=SECRET_KEY,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_BOT_TOKEN="xoxb-test-token",
            SLACK_API_URL=fake_slack.api_url,
            GENIE_BASE_URL=f"http://127.0.0.1:{port}",
            GENIE_OUTBOX_LEASE_SECONDS="2",
        )
        served = GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / f"serve-{len(started)}.log")
        started.append(served)
        await served.wait_healthy()
        return served

    yield start
    for served in started:
        served.kill()


@pytest.fixture
async def db(db_url: str):
    """This test's own connection to the database the servers use."""
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


async def test_killed_after_slack_posted_is_not_posted_twice(serve, db, fake_slack):
    """The worst moment: Slack has the message, the worker dies before recording it."""
    await add_team(db, "Payments", "C0PAY")
    first = await serve()
    fake_slack.fail("chat.postMessage", delay=4)  # posted at once, answered after 4 s
    alert_id = await fire(db, "Payments", "Checkout down")
    await fake_slack.wait_for("chat.postMessage", timeout=15)
    first.kill()

    [row] = await outbox_rows(db, alert_id)
    assert row.delivered_at is None and row.attempts == 1  # killed mid-delivery, nothing recorded
    assert [alert_of(m) for m in fake_slack.messages("C0PAY")] == [alert_id]

    second = await serve()
    [row] = await eventually(lambda: delivered(db, alert_id), timeout=30)
    shown = [m for m in fake_slack.messages("C0PAY") if alert_of(m) == alert_id]
    assert len(shown) == 1, shown
    assert len(posts_of(fake_slack, alert_id)) == 1  # the restarted worker found it and did not post
    assert fake_slack.calls("conversations.history")
    async with db() as session:
        alert = await session.get(Alert, alert_id)
    assert (alert.slack_channel, alert.slack_ts) == ("C0PAY", shown[0]["ts"])
    assert row.attempts == 2 and row.failed_at is None
    assert "adopting it" in second.log()


async def test_killed_before_slack_posted_is_delivered_once_after_restart(serve, db, fake_slack):
    """The request reached Slack, which had not acted when the worker died; and an alert
    committed while no server runs waits for the next one."""
    await add_team(db, "Payments", "C0PAY")
    first = await serve()
    fake_slack.fail("chat.postMessage", status=503, delay=4)  # nothing posted; the answer would be late
    alert_id = await fire(db, "Payments", "Checkout down")
    await fake_slack.wait_for("chat.postMessage", timeout=15)
    first.kill()
    assert fake_slack.messages("C0PAY") == []
    quiet_id = await fire(db, "Payments", "Committed while Genie was down")

    await serve()
    await eventually(lambda: delivered(db, count=2), timeout=30)
    assert [alert_of(m) for m in fake_slack.messages("C0PAY")] == [alert_id, quiet_id]
    assert len(posts_of(fake_slack, alert_id)) == 2 and len(posts_of(fake_slack, quiet_id)) == 1
    assert len(fake_slack.calls("conversations.history")) == 1  # looked once, for the doubtful one
    async with db() as session:
        assert all([(await session.get(Alert, a)).slack_ts for a in (alert_id, quiet_id)])


async def test_killed_while_a_settle_batch_waits_redelivers_each_post_once_by_adopting_it(serve, db, fake_slack):
    """Three channels' posts are in Slack and answered while the test holds their outbox rows,
    so the settle waits (one transaction for the ones that finished together); the process is
    killed right then. Nothing of that settle was recorded: after the lease runs out the next
    process finds each post in its channel's history and adopts it — no second post."""
    import asyncio

    from sqlalchemy import update

    from storage.models import OutboxMessage

    channels = {"Payments": "C0PAY", "Search": "C0SEARCH", "Ops": "C0OPS"}
    for team, channel in channels.items():
        await add_team(db, team, channel)
    first = await serve()
    fake_slack.fail("chat.postMessage", delay=0.5, times=3)
    fired = [await fire(db, team, f"{team} is down") for team in channels]
    await fake_slack.wait_for("chat.postMessage", count=3, timeout=15)
    async with db.begin() as session:  # the settle waits for this transaction
        await session.execute(update(OutboxMessage).where(OutboxMessage.alert_id.in_(fired)).values(last_error=None))
        await asyncio.sleep(1.5)  # every answer is in, the settle waits
        first.kill()
    rows = await outbox_rows(db)
    assert [r.delivered_at for r in rows] == [None] * 3  # killed before the settle committed

    second = await serve()
    rows = await eventually(lambda: delivered(db, count=3), timeout=30)
    for alert_id, channel in zip(fired, channels.values(), strict=True):
        assert [alert_of(m) for m in fake_slack.messages(channel)] == [alert_id]
        assert len(posts_of(fake_slack, alert_id)) == 1  # adopted, not posted again
    assert all(r.attempts == 2 and r.failed_at is None for r in rows)
    assert second.log().count("adopting it") == 3
    async with db() as session:
        for alert_id in fired:
            assert (await session.get(Alert, alert_id)).slack_ts is not None


# --- messages as typed intents --------------------------------------------------------------------
async def test_intents_are_drawn_at_delivery_and_rows_queued_before_them_still_deliver(genie):
    """A DM queued as an intent is drawn by its builder when delivered, its values escaped; rows
    queued before intents — text composed in advance, or ``render`` — are delivered as before;
    an intent Genie has no builder for fails, saying so."""
    from bot.ids import Intent
    from bot.services import outbox

    assigned = dict(
        alert_id=7,
        message="<!channel> disk & *full*",
        priority="P1",
        team="Ops",
        channel="C0OPS",
        by="Alice",
        by_slack=None,
    )
    async with genie.sessionmaker.begin() as session:
        await outbox.enqueue(session, "D0NEW", outbox.MESSAGE, payload=outbox.intent(Intent.ASSIGNED, **assigned))
        await outbox.enqueue(session, "D0OLD", outbox.MESSAGE, payload={"render": "assigned", "values": assigned})
        await outbox.enqueue(
            session,
            "D0TEXT",
            outbox.MESSAGE,
            payload={
                "text": "You're connected as a@example.com in Genie.",
                "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": "composed in advance"}}],
            },
        )
        await outbox.enqueue(session, "D0ODD", outbox.MESSAGE, payload={"intent": "no.such", "values": {}})
    genie.rt.wake_outbox()

    [new] = await genie.fake.wait_for("chat.postMessage", channel="D0NEW")
    assert new.args["text"] == (
        "You were assigned alert #7: &lt;!channel&gt; disk &amp; *full* (P1 · Ops) by Alice. It is in <#C0OPS>."
    )
    [old] = await genie.fake.wait_for("chat.postMessage", channel="D0OLD")
    assert (old.args["text"], old.args["blocks"]) == (new.args["text"], new.args["blocks"])
    [text] = await genie.fake.wait_for("chat.postMessage", channel="D0TEXT")
    assert text.args["text"] == "You're connected as a@example.com in Genie."
    assert block_text(text.args["blocks"]) == "composed in advance"
    error = await eventually(
        lambda: genie.scalar("SELECT last_error FROM outbox WHERE channel = 'D0ODD' AND failed_at IS NOT NULL")
    )
    assert "a message Genie cannot draw ('no.such')" in error
    assert [c for c in genie.fake.calls("chat.postMessage") if c.args.get("channel") == "D0ODD"] == []


def test_every_intent_has_a_builder_and_names_itself_in_the_payload():
    from bot.blocks.messages import BUILDERS, draw
    from bot.ids import Intent
    from bot.services import outbox

    assert set(BUILDERS) == set(Intent)
    payload = outbox.intent(
        Intent.PASSWORD_SET, person_email="a@example.com", account_url="https://genie.example/account"
    )
    assert payload == {
        "intent": "password.set",
        "values": {"person_email": "a@example.com", "account_url": "https://genie.example/account"},
    }
    assert draw(payload)[0].startswith("The password of your Genie account a@example.com was just set")
    assert draw({"intent": "password.set", "values": {"unexpected": 1}}) is None
