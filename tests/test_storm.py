"""Storm-proof channels (issue 14): 1,000 alerts to one channel against a fake Slack that takes
about one post per second per channel, as Slack does.

Genie paces each channel itself (a token bucket, so hardly a 429), gives updates of posted
alerts their own lane (an acknowledgement shows within 2 s however many posts wait), and when
more alerts wait than Slack takes in a few seconds it posts one digest for the channel instead
of one message per alert: how many, the most urgent, counts by source and alias, refreshed in
place. Every collapsed alert stays listed (the web list the digest links to) and actionable
(its page, gated as always); a P1 during a storm of P3s still gets its own message; after the
storm, one message per alert again. Nothing is lost, nothing posted twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import event

from bot.blocks.digest import DigestAlert, DigestView, digest_message
from bot.services import alerts, outbox, teams
from bot.services.alerts import CreateAlert
from bot.slack.delivery import DIGEST_EVENT_TYPE, EVENT_TYPE, TokenBucket
from storage.base import utcnow
from tests import forkserver
from tests.conftest import eventually, page_text
from tests.helpers import block_text, buttons, link_person, signed_in
from tests.slack_driver import SlackUser

CHANNEL = "C0STORM"
STORM = 1000
QUIET = 3.0
ALICE = SlackUser("U0ALICE")


@pytest.fixture
def genie_settings() -> dict[str, str]:
    """Slack's pace, as in production (the suite's other tests run unpaced)."""
    return {
        "GENIE_SLACK_CHANNEL_RATE": "1",
        "GENIE_SLACK_CHANNEL_BURST": "3",
        "GENIE_SLACK_UPDATE_RATE": "2",
        "GENIE_SLACK_UPDATE_BURST": "5",
        "GENIE_SLACK_DIGEST_THRESHOLD": "10",
        "GENIE_SLACK_DIGEST_QUIET_SECONDS": str(QUIET),
    }


def _meta(message: dict) -> tuple[str | None, dict]:
    meta = message.get("metadata") or {}
    return meta.get("event_type"), meta.get("event_payload") or {}


def alert_messages(fake) -> dict[int, dict]:
    """The channel's messages of single alerts, by alert id."""
    found = {}
    for m in fake.messages(CHANNEL):
        kind, payload = _meta(m)
        if kind == EVENT_TYPE:
            found[int(payload["alert_id"])] = m
    return found


def digests(fake) -> list[dict]:
    return [m for m in fake.messages(CHANNEL) if _meta(m)[0] == DIGEST_EVENT_TYPE]


async def create(genie, count: int, *, priority: str = "P3", prefix: str = "storm", batch: int = 10) -> list[int]:
    """``count`` alerts committed in batches (as a burst of API requests would), waking the worker."""
    ids: list[int] = []
    for start in range(0, count, batch):
        async with genie.sessionmaker.begin() as session:
            team = await teams.require_team(session, "Payments")
            for i in range(start, min(count, start + batch)):
                alert, created = await alerts.create_alert(
                    session,
                    team,
                    CreateAlert(
                        message=f"Disk full on host-{i:04d} ({prefix})",
                        alias=f"{prefix}-disk-{i}",
                        source=f"probe-{i % 4}",
                        priority=priority,
                    ),
                    request_id=str(uuid.uuid4()),
                )
                assert created
                ids.append(alert.id)
        genie.rt.wake_outbox(CHANNEL)
        await asyncio.sleep(0)  # as requests would: others get the database between batches
    return ids


async def _is_zero(count) -> bool:
    return await count == 0


async def _own_message(genie, alert_id: int, timeout: float) -> dict:
    async def shown():
        return alert_messages(genie.fake).get(alert_id)

    return await eventually(shown, timeout=timeout)


async def _genie_cli(genie, tmp_path, *args: str) -> tuple[int, str, str]:
    """The real `genie` command, without blocking the event loop the server shares."""
    env = {"DATABASE_URL": genie.settings.database_url, "GENIE_SECRET_KEY": "k" * 32, "PATH": "/usr/bin:/bin"}
    done = await asyncio.to_thread(forkserver.run, args, env=env, cwd=tmp_path, timeout=60)
    return done.returncode, done.stdout, done.stderr


async def test_a_storm_of_1000_alerts_becomes_one_digest_that_keeps_every_alert_reachable(genie, tmp_path):
    fake = genie.fake
    fake.limit_per_channel(1.0, burst=3)  # Slack: ~1 post/s per channel, short bursts
    await genie.add_user("alice@example.com", "Alice Smith")
    async with genie.sessionmaker.begin() as session:
        await teams.add_team(session, "Payments", CHANNEL)
        await teams.add_member(session, "Payments", "alice@example.com")
    await link_person(genie, ALICE.user_id, "alice@example.com")

    # Before the storm: one message per alert.
    [before] = await create(genie, 1, prefix="before")
    before_msg = await _own_message(genie, before, timeout=5)

    # The storm.
    started = time.monotonic()
    storm = asyncio.create_task(create(genie, STORM))

    async def digest_shown():
        return digests(fake)

    [digest] = await eventually(digest_shown, timeout=10)
    first_digest_s = time.monotonic() - started
    assert first_digest_s <= 10, first_digest_s
    digest_id = int(_meta(digest)[1]["digest_id"])

    async def storm_open() -> bool:
        return await genie.scalar("SELECT closed_at FROM slack_digest WHERE id = :d", d=digest_id) is None

    # An Acknowledge clicked in Slack during the storm shows within 2 s.
    assert await storm_open()
    value = buttons(before_msg["blocks"])["alert_acknowledge"]["value"]
    clicked = time.monotonic()
    r = await genie.slack.block_action(
        ALICE, "alert_acknowledge", value, container="message", channel_id=CHANNEL, message_ts=before_msg["ts"]
    )
    assert r.status_code == 200

    async def acknowledged_in_slack():
        m = alert_messages(fake).get(before)
        return m is not None and "Acknowledged by" in block_text(m["blocks"]).replace("*", "")

    await eventually(acknowledged_in_slack, timeout=5)
    ack_s = time.monotonic() - clicked
    assert ack_s <= 2.0, f"the acknowledgement took {ack_s:.2f} s to show"

    # A P1 during the storm of P3s gets its own message at once.
    assert await storm_open()
    fired = time.monotonic()
    [urgent] = await create(genie, 1, priority="P1", prefix="urgent")
    await _own_message(genie, urgent, timeout=5)
    assert time.monotonic() - fired <= 3.0
    assert await genie.scalar("SELECT slack_digest_id FROM alert WHERE id = :a", a=urgent) is None

    storm_ids = await storm
    created_s = time.monotonic() - started
    every = {before, urgent, *storm_ids}

    # Every alert is represented in the channel: its own message, or counted in the digest.
    async def all_represented():
        own = set(alert_messages(fake))
        [d] = digests(fake)
        return len(own) + int(_meta(d)[1]["alerts"]) == len(every)

    await eventually(all_represented, timeout=10)
    represented_s = time.monotonic() - started
    assert represented_s <= max(10.0, created_s + 5.0), (represented_s, created_s)

    # The counts add up: each alert is in exactly one place, once; nothing pending or failed.
    own = set(alert_messages(fake))
    digested = {row[0] for row in await genie.rows("SELECT id FROM alert WHERE slack_digest_id = :d", d=digest_id)}
    assert own | digested == every and not own & digested
    assert len(digested) >= STORM - 20  # the storm is in the digest, not in 1,000 messages
    posted = [c for c in fake.calls("chat.postMessage") if _meta(c.args)[0] == EVENT_TYPE]
    assert len(posted) == len(own)  # no alert posted twice
    assert len([c for c in fake.calls("chat.postMessage") if _meta(c.args)[0] == DIGEST_EVENT_TYPE]) == 1
    # Nothing pending or failed: the last refresh of the digest queued while the one before was
    # in flight may still be on its way when the counts already add up (a failed row never goes).
    pending = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL OR failed_at IS NOT NULL"
    await eventually(lambda: _is_zero(genie.scalar(pending)), timeout=10)
    assert await genie.scalar(
        "SELECT count(*) FROM outbox WHERE kind = 'alert.post' AND digest_id = :d", d=digest_id
    ) == len(digested)
    [d] = digests(fake)
    text = block_text(d["blocks"])
    assert f"{len(digested):,} alerts" in text and "probe-0" in text
    assert fake.limited <= 3, f"{fake.limited} posts refused with 429: Genie should pace itself"

    # Every collapsed alert is listed on the web list the digest links to …
    assert f"/alerts?digest={digest_id}" in str(d["blocks"])
    alice = await signed_in(genie, "alice@example.com")
    listed: set[int] = set()
    page = await alice.get(f"/alerts?digest={digest_id}")
    while True:
        assert page.status_code == 200
        listed |= {int(i) for i in re.findall(r'<a href="/alerts/(\d+)">#', page.text)}
        older = re.search(r'href="([^"]+)" rel="next"', page.text)
        if older is None:
            break
        page = await alice.get(older.group(1).replace("&amp;", "&"))
    assert listed == digested
    # … and by the operator's `genie alert list` / `genie alert show`.
    code, out, err = await _genie_cli(
        genie, tmp_path, "alert", "list", "--digest", str(digest_id), "--limit", "5000", "--json"
    )
    assert code == 0, err
    assert {a["id"] for a in json.loads(out)} == digested
    code, out, err = await _genie_cli(genie, tmp_path, "alert", "show", str(min(digested)))
    assert code == 0 and f"collapsed into storm digest {digest_id}" in out, (out, err)

    # … and actionable: open one from the digest and acknowledge it on its page, gated as always.
    target = min(digested)
    assert f"{genie.url}/alerts/{target}|#{target}>" in str(d["blocks"])  # the most urgent, linked one by one
    shown = await alice.get(f"/alerts/{target}")
    seen = re.search(r'name="seen" value="([^"]+)"', shown.text).group(1)
    r = await alice.post(f"/alerts/{target}", {"action": "acknowledge", "seen": seen})
    assert r.status_code == 303, page_text(r)
    assert await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=target) in (True, 1)
    await genie.add_user("mallory@example.com", "Mallory Evil")
    outsider = await signed_in(genie, "mallory@example.com")
    assert (await outsider.get(f"/alerts/{target}")).status_code == 404  # not in the team: not found

    async def digest_refreshed():
        [m] = digests(fake)
        return "*1* acknowledged" in block_text(m["blocks"])

    await eventually(digest_refreshed, timeout=5)  # the digest stands for it: refreshed in place
    assert target not in alert_messages(fake)  # never a message of its own

    # The same alert sent again to the API (a repeat, as Alertmanager sends one) is counted, and
    # again its digest, not a message of its own, is what is refreshed.
    again = max(digested)
    alias = await genie.scalar("SELECT alias FROM alert WHERE id = :a", a=again)
    async with genie.sessionmaker.begin() as session:
        key = await alerts.team_key(session, await teams.require_team(session, "Payments"))
    drained = "SELECT count(*) FROM outbox WHERE delivered_at IS NULL"
    await eventually(lambda: _is_zero(genie.scalar(drained)), timeout=10)
    digest_rows = "SELECT count(*) FROM outbox WHERE kind = 'digest' AND digest_id = :d"
    refreshes = await genie.scalar(digest_rows, d=digest_id)
    its_rows = await genie.scalar("SELECT count(*) FROM outbox WHERE alert_id = :a", a=again)
    async with httpx.AsyncClient(base_url=genie.url) as client:
        r = await client.post(
            "/v2/alerts",
            json={"message": "Disk full again", "alias": alias},
            headers={"Authorization": f"GenieKey {key}"},
        )
    assert r.status_code == 202, r.text
    assert await genie.scalar("SELECT count FROM alert WHERE id = :a", a=again) == 2
    assert await genie.scalar(digest_rows, d=digest_id) == refreshes + 1
    assert await genie.scalar("SELECT count(*) FROM outbox WHERE alert_id = :a", a=again) == its_rows
    await eventually(lambda: _is_zero(genie.scalar(drained)), timeout=10)
    assert again not in alert_messages(fake)

    # After the storm (a quiet spell with nothing more coming) the digest says it has passed …
    async def passed_shown():
        [m] = digests(fake)
        return "has passed" in block_text(m["blocks"])

    await eventually(passed_shown, timeout=QUIET + 10)
    assert not await storm_open()
    # … and each new alert has a message of its own again.
    for i in range(3):
        [alert_id] = await create(genie, 1, prefix=f"after-{i}")
        await _own_message(genie, alert_id, timeout=5)
    assert len(digests(fake)) == 1
    assert await genie.scalar("SELECT count(*) FROM alert WHERE slack_digest_id IS NOT NULL") == len(digested)


# --- the rule and the builder, on their own ------------------------------------------------------
def test_storm_priority_is_the_most_urgent_level_with_more_than_threshold_alerts_at_or_above_it():
    assert outbox.storm_priority({"P3": 500}, 10) == "P3"
    assert outbox.storm_priority({"P1": 1, "P3": 500}, 10) == "P3"  # the P1 is posted on its own
    assert outbox.storm_priority({"P1": 4, "P2": 7, "P3": 500}, 10) == "P2"  # 11 at P2 or above: a storm
    assert outbox.storm_priority({"P1": 50, "P3": 500}, 10) == "P1"  # a storm of P1s is collapsed too


def test_digest_escapes_every_value_and_links_each_alert_and_the_list():
    view = DigestView(
        id=7,
        team_name="Pay <&> ments",
        storm_priority="P3",
        opened_at=utcnow(),
        closed_at=None,
        total=1200,
        open=1190,
        acknowledged=5,
        closed=5,
        by_priority=(("P1", 1), ("P3", 1199)),
        by_source=(("<!channel>", 1000),),
        by_alias=(("disk-*", 3),),
        top=(DigestAlert(42, "P1", "DB down <@U0BOSS> & more", "open"),),
    )
    text, blocks = digest_message(view, "https://genie.example.com/")
    rendered = str(blocks)
    assert "1,200 alerts" in text
    assert "<!channel>" not in rendered and "&lt;!channel&gt;" in rendered
    assert "<@U0BOSS>" not in rendered and "Pay &lt;&amp;&gt; ments" in rendered
    assert "<https://genie.example.com/alerts/42|#42>" in rendered
    assert "<https://genie.example.com/alerts?digest=7|Open all 1,200 in Genie>" in rendered
    assert "other (200)" in rendered  # by source: the rest is counted, not dropped


async def test_token_bucket_allows_a_burst_then_paces_and_obeys_retry_after():
    now = [0.0]
    bucket = TokenBucket(rate=1.0, burst=3, clock=lambda: now[0])
    for _ in range(3):
        assert bucket.wait_time() == 0
        bucket.tokens -= 1
    assert bucket.wait_time() == pytest.approx(1.0)
    now[0] = 0.5
    assert bucket.wait_time() == pytest.approx(0.5)
    bucket.block(5)
    assert bucket.wait_time() == pytest.approx(6.0)  # Retry-After, then a token's worth
    now[0] = 6.5
    assert bucket.wait_time() == 0


async def test_a_claimed_post_whose_storm_look_fails_is_retried_soon_and_posted_once(genie, caplog):
    """On PostgreSQL a pass claims a channel's head and reads what it draws in one statement with
    no transaction, and the storm rule then looks in a transaction of its own. When that one
    fails (here the database refuses the digest), the claim is not stranded until its lease runs
    out: its delivery fails and is retried with backoff like any failure — then the storm's
    digest takes the alerts, none posted twice."""
    if not genie.settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite claims, reads and applies the storm rule in one transaction")
    from sqlalchemy import text

    await genie.rt.worker.stop()
    async with genie.sessionmaker.begin() as session:
        await teams.add_team(session, "Payments", CHANNEL)
    fired = await create(genie, 12, prefix="refused")
    async with genie.sessionmaker.begin() as session:
        await session.execute(
            text(
                "CREATE FUNCTION refuse_digest() RETURNS trigger LANGUAGE plpgsql AS "
                "$$ BEGIN RAISE EXCEPTION 'digest refused'; END $$"
            )
        )
        await session.execute(
            text(
                "CREATE TRIGGER refuse_digest BEFORE INSERT ON slack_digest FOR EACH ROW EXECUTE FUNCTION refuse_digest()"
            )
        )
    started = time.monotonic()
    genie.rt.worker.start()
    genie.rt.wake_outbox(CHANNEL)

    async def refused():
        return await genie.scalar(
            "SELECT attempts FROM outbox WHERE alert_id = :a AND last_error IS NOT NULL", a=fired[0]
        )

    assert await eventually(refused, timeout=10) == 1
    async with genie.sessionmaker.begin() as session:
        await session.execute(text("DROP TRIGGER refuse_digest ON slack_digest"))
        await session.execute(text("DROP FUNCTION refuse_digest()"))
    await eventually(lambda: asyncio.sleep(0, digests(genie.fake)), timeout=15)
    assert time.monotonic() - started < 15  # the backoff's seconds, not the lease's minute
    assert "digest refused" in caplog.text
    posted = [alert_id for m in genie.fake.messages(CHANNEL) if (alert_id := _meta(m)[1].get("alert_id"))]
    assert len(posted) == len(set(posted))


async def test_an_update_waits_for_its_alerts_message_in_flight_in_the_post_lane(genie):
    """Per-alert order across the lanes: an update queued before the post was recorded travels
    behind the post; while another worker is sending it (leased, drawn from an older state), a
    later update in the update lane waits for it instead of overtaking it."""
    async with genie.sessionmaker.begin() as session:
        await teams.add_team(session, "Payments", CHANNEL)
    [alert_id] = await create(genie, 1, prefix="order")
    await _own_message(genie, alert_id, timeout=5)
    async with genie.sessionmaker.begin() as session:
        now = utcnow()
        in_flight = await outbox.enqueue(session, CHANNEL, outbox.UPDATE_ALERT, alert_id=alert_id, now=now)
        in_flight.locked_until = now + timedelta(seconds=60)  # another worker holds it, mid-call
        later = await outbox.enqueue(
            session, CHANNEL, outbox.UPDATE_ALERT, alert_id=alert_id, now=now, lane=outbox.UPDATE_LANE
        )
    genie.rt.wake_outbox(CHANNEL)

    async def waited():
        return await genie.scalar("SELECT last_error FROM outbox WHERE id = :i", i=later.id) == "waits_for_post"

    await eventually(waited, timeout=5)
    assert not [c for c in genie.fake.calls("chat.update")]  # it did not overtake
    async with genie.sessionmaker.begin() as session:  # the other worker's update lands
        await outbox.mark_delivered(session, in_flight.id, utcnow())
    genie.rt.wake_outbox(CHANNEL)
    await genie.fake.wait_for("chat.update", timeout=5)

    async def delivered():
        return await genie.scalar("SELECT delivered_at FROM outbox WHERE id = :i", i=later.id)

    await eventually(delivered, timeout=5)


@pytest.mark.parametrize(
    "genie_settings", [{"GENIE_SLACK_CHANNEL_RATE": "0.2", "GENIE_SLACK_CHANNEL_BURST": "1"}], ids=["paced"]
)
async def test_channels_waiting_for_their_pace_do_not_hold_back_other_channels(genie):
    """Thirty teams' channels, two alerts each, a pace of one post every 5 s per channel.
    A delivery waiting for its channel's token holds none of the worker's places (8): every
    channel's first alert is posted at once. Holding them, channels 9 to 30 waited until one
    of the first eight had posted both (5 s and more), and 30 channels drained at 8 posts
    per pace interval instead of 30.

    The pace is slow on purpose: the guarded wait (a whole interval, 5 s) stays far from how
    long 30 posts take on a loaded CI machine (up to 1.8 s seen on PostgreSQL at a 1 s pace,
    which made a 1 s bound flaky)."""
    channels = [f"C0PACE{i:02d}" for i in range(30)]
    async with genie.sessionmaker.begin() as session:
        for i, channel in enumerate(channels):
            await teams.add_team(session, f"Team {i:02d}", channel)
    started = time.monotonic()
    async with genie.sessionmaker.begin() as session:
        for round_ in range(2):
            for i in range(len(channels)):
                team = await teams.require_team(session, f"Team {i:02d}")
                await alerts.create_alert(
                    session, team, CreateAlert(message=f"Queue {round_} is slow"), request_id=str(uuid.uuid4())
                )
    genie.rt.wake_outbox()
    await genie.fake.wait_for("chat.postMessage", count=60, timeout=25)
    posts = genie.fake.calls("chat.postMessage")
    first = {}
    for call in posts:
        first.setdefault(call.args["channel"], call.at)
    assert set(first) == set(channels)
    # Each channel's first post needs no token from the past: all 30 go out together, well within
    # one interval of pace (before: the first eight, then one more channel per drained channel,
    # each a whole interval later).
    spread = max(first.values()) - min(first.values())
    assert spread < 3.5, f"the channels' first posts spread over {spread:.1f} s"
    for channel in channels:  # and each channel still at its pace
        at = sorted(c.at for c in posts if c.args["channel"] == channel)
        # a 5 s pace, less what the first call took longer than the second on a loaded machine
        # (0.7 s seen in CI); unpaced, the second post follows the first at once
        assert at[1] - at[0] >= 3.0, (channel, at)
    assert time.monotonic() - started < 20


@contextlib.contextmanager
def worker_looks(genie) -> Iterator[list[str]]:
    """The outbox worker's looks at the outbox (``outbox.heads``) while in the block — not its
    gauges and digests, which it reads once a second whatever is woken."""
    looks: list[str] = []

    def look(conn, cursor, statement, *args):
        task = asyncio.current_task()
        if task is not None and task.get_name() == "genie-outbox-worker" and "outbox_head" in statement:
            looks.append(statement)

    engine = genie.sessionmaker.kw["bind"].sync_engine
    event.listen(engine, "before_cursor_execute", look)
    try:
        yield looks
    finally:
        event.remove(engine, "before_cursor_execute", look)


async def test_api_alerts_queued_behind_a_paced_post_make_the_worker_look_no_more(genie):
    """A channel whose post lane is being delivered (here: its next post waiting for Slack's pace)
    takes each new post when it settles the one before — settling claims the next. So API alerts
    queued to it meanwhile wake no look at the outbox (``OutboxWorker.wake`` with the lane the
    alert's post is in): during a storm every batch of alerts made one, a transaction each, and
    the looks were a fifth of Genie's CPU per alert (bench/RESULTS.md, "Issue 14, eighth round").
    Nothing waits for a look that did not happen: every alert is represented in the channel."""
    fake = genie.fake
    fake.limit_per_channel(1.0, burst=3)
    async with genie.sessionmaker.begin() as session:
        key = await alerts.team_key(session, await teams.add_team(session, "Payments", CHANNEL))

    async def post(i: int) -> None:
        body = {"message": f"Disk full on host-{i}", "alias": f"paced-{i}"}
        response = await genie.http.post("/v2/alerts", json=body, headers={"Authorization": f"GenieKey {key}"})
        assert response.status_code == 202, response.text

    for i in range(4):  # three go at once (the channel's burst), the fourth waits for its token
        await post(i)

    async def burst_posted():
        return len(fake.messages(CHANNEL)) == 3

    await eventually(burst_posted, timeout=5)
    await asyncio.sleep(0.1)  # the fourth is claimed: the post lane is in flight
    with worker_looks(genie) as looks:
        for i in range(4, 24):
            await post(i)
    assert len(looks) <= 3, [s[:60] for s in looks]  # a woken look per alert was 20 or more

    async def all_represented():
        own = set(alert_messages(fake))
        counted = sum(int(_meta(d)[1]["alerts"]) for d in digests(fake))
        return len(own) + counted == 24

    await eventually(all_represented, timeout=15)


@pytest.mark.parametrize(
    "genie_settings",
    [{"GENIE_SLACK_UPDATE_RATE": "2", "GENIE_SLACK_UPDATE_BURST": "1", "GENIE_SLACK_DIGEST_THRESHOLD": "0"}],
)
async def test_clicks_queued_behind_a_paced_update_make_the_worker_look_no_more(genie):
    """The same for clicks: a click's update of its alert's message is in the channel's update
    lane; while that lane is delivering (an update waiting for its pace), clicks on the channel's
    other alerts wake no look — each is taken when the one before settles — and every message
    still shows its acknowledgement."""
    fake = genie.fake
    await genie.add_user("alice@example.com", "Alice Smith")
    async with genie.sessionmaker.begin() as session:
        await teams.add_team(session, "Payments", CHANNEL)
        await teams.add_member(session, "Payments", "alice@example.com")
    await link_person(genie, ALICE.user_id, "alice@example.com")
    ids = await create(genie, 10, prefix="clicked")
    shown = [await _own_message(genie, alert_id, timeout=10) for alert_id in ids]

    async def acknowledge(message: dict) -> None:
        value = buttons(message["blocks"])["alert_acknowledge"]["value"]
        r = await genie.slack.block_action(
            ALICE, "alert_acknowledge", value, container="message", channel_id=CHANNEL, message_ts=message["ts"]
        )
        assert r.status_code == 200

    async def updated(count: int):
        return len(fake.calls("chat.update")) >= count

    await acknowledge(shown[0])  # the lane's one token
    await eventually(lambda: updated(1), timeout=5)
    await acknowledge(shown[1])  # waits half a second for the next: the update lane is in flight
    await asyncio.sleep(0.1)
    with worker_looks(genie) as looks:
        for message in shown[2:]:
            await acknowledge(message)
    assert len(looks) <= 3, [s[:60] for s in looks]  # a woken look per click was 8 or more

    async def all_acknowledged():
        return all("Acknowledged by" in block_text(m["blocks"]).replace("*", "") for m in alert_messages(fake).values())

    await eventually(all_acknowledged, timeout=15)
