"""A transition's timeline and outbox rows are written by Core INSERTs built once
(``alerts._applied``, ``outbox.enqueue_row``), no longer by ORM objects flushed at the commit:
they must be the very rows the ORM wrote — every column, NULL and JSON ``null`` told apart —
for every kind of actor, and in the order the code made them."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bot.services import alerts, outbox, users
from bot.services.alerts import Actor
from bot.services.slack_links import SlackIdentity
from storage.base import utcnow
from storage.models import Alert, AlertAction, SlackDigest
from tests.conftest import eventually
from tests.fake_slack import TEAM_ID
from tests.test_alert_gate import _fire, world  # noqa: F401 - the fixture


def _raw(rows) -> list[tuple]:
    return [tuple(row[1:]) for row in rows]  # every column but the id


@pytest.mark.parametrize("who", ["member", "after_link", "anonymous", "api"])
async def test_a_transitions_core_rows_are_the_rows_the_orm_wrote(world, who):
    genie = world
    alert_id, _ = await _fire(genie)
    await posted(genie, alert_id)  # (its update then goes to the update lane)
    async with genie.sessionmaker() as session:
        alice = await users.user_by_email(session, "alice@example.com")
        identity = SlackIdentity(TEAM_ID, "U0ALICE")
        actor = {
            "member": Actor(via="slack", user=alice, identity=identity),
            "after_link": Actor(via="slack", user=alice, identity=identity, after_link=True),
            "anonymous": Actor(via="slack", identity=identity, anonymous=True),
            "api": Actor(via="api", label="Nagios"),
        }[who]
        alert = await session.get(Alert, alert_id)
        now = utcnow()
        before = await genie_max_ids(session, alert_id)
        # The ORM's way (what ``_applied`` did): objects, flushed together.
        await alerts.record(
            session,
            alert,
            AlertAction.ACKNOWLEDGE,
            "applied",
            actor,
            reason="member",
            note="a note",
            now=now,
            flush=False,
        )
        await alerts.refresh_in_slack(session, alert, now, flush=False)
        # Core's way; the ORM's pending rows go first, as an autoflush would send them.
        await alerts._applied(session, alert, AlertAction.ACKNOWLEDGE, actor, now=now, reason="member", note="a note")
        events, messages = await rows_since(session, alert_id, before)
        await session.rollback()  # (nothing for the worker to deliver)
    assert len(events) == 2 and len(messages) == 2
    orm_event, core_event = _raw(events)
    assert orm_event == core_event
    assert ("after linking: member" in orm_event) == (who == "after_link")
    orm_message, core_message = _raw(messages)
    assert orm_message == core_message
    assert "update" in orm_message  # the lane


async def posted(genie, alert_id: int) -> None:
    """Until the alert's post is recorded (its ``slack_ts``)."""

    async def recorded() -> bool:
        return bool(await genie.scalar("SELECT slack_ts FROM alert WHERE id = :a", a=alert_id))

    await eventually(recorded)


async def rows_since(session, alert_id: int, before: tuple[int, int]) -> tuple[list, list]:
    """The alert's timeline and outbox rows written after ``genie_max_ids`` gave ``before``."""
    events = (
        await session.execute(
            text("SELECT * FROM alert_event WHERE alert_id = :a AND id > :i ORDER BY id"),
            {"a": alert_id, "i": before[0]},
        )
    ).all()
    messages = (
        await session.execute(
            text("SELECT * FROM outbox WHERE alert_id = :a AND id > :i ORDER BY id"),
            {"a": alert_id, "i": before[1]},
        )
    ).all()
    return events, messages


async def genie_max_ids(session, alert_id: int) -> tuple[int, int]:
    event = await session.scalar(
        text("SELECT COALESCE(MAX(id), 0) FROM alert_event WHERE alert_id = :a"), {"a": alert_id}
    )
    message = await session.scalar(text("SELECT COALESCE(MAX(id), 0) FROM outbox WHERE alert_id = :a"), {"a": alert_id})
    return event, message


@pytest.mark.parametrize("state", ["posted", "not_posted", "no_channel"])
async def test_an_acknowledgement_writes_the_rows_the_orm_wrote_whatever_the_alerts_message(world, state):
    """``alerts.acknowledge`` writes its timeline row and its message update with the UPDATE
    itself on PostgreSQL (``_stop_and_record_statement``, one statement) and by ``_applied``
    after it elsewhere: either way the rows are the ORM's — the update lane once the alert's post
    is recorded, its post lane before, no message when it has no channel — and the worker is
    woken for the channel queued to."""
    genie = world
    alert_id, _ = await _fire(genie)
    await posted(genie, alert_id)
    async with genie.sessionmaker() as session:
        if state != "posted":
            channel = ", slack_channel = NULL" if state == "no_channel" else ""
            await session.execute(text(f"UPDATE alert SET slack_ts = NULL{channel} WHERE id = :a"), {"a": alert_id})
        alice = await users.user_by_email(session, "alice@example.com")
        actor = Actor(via="slack", user=alice, identity=SlackIdentity(TEAM_ID, "U0ALICE"))
        alert = await session.get(Alert, alert_id)
        now = utcnow()
        before = await genie_max_ids(session, alert_id)
        # The ORM's rows, as ``record`` and ``refresh_in_slack`` write them …
        await alerts.record(
            session, alert, AlertAction.ACKNOWLEDGE, "applied", actor, reason="member", note="a note", now=now
        )
        await alerts.refresh_in_slack(session, alert, now)
        session.info.clear()
        # … then the transition's own.
        await alerts.acknowledge(session, alert, actor, why="member", note="a note", now=now)
        woken = outbox.enqueued_channels(session)
        events, messages = await rows_since(session, alert_id, before)
        acknowledged = await session.scalar(text("SELECT acknowledged FROM alert WHERE id = :a"), {"a": alert_id})
        await session.rollback()
    assert acknowledged
    orm_event, core_event = _raw(events)
    assert orm_event == core_event
    assert "a note" in core_event and "member" in core_event
    if state == "no_channel":
        assert messages == [] and woken == {}
        return
    orm_message, core_message = _raw(messages)
    assert orm_message == core_message
    lane = "update" if state == "posted" else "post"
    assert lane in core_message
    assert woken == {core_message[0]: lane}  # the worker is woken for that channel's lane


async def test_acknowledging_an_alert_collapsed_into_a_digest_refreshes_the_digest_only(world):
    """An alert a storm collapsed into a digest has no message of its own: acknowledging it
    queues a refresh of the digest's message, and no update of the alert's."""
    genie = world
    alert_id, _ = await _fire(genie)
    await posted(genie, alert_id)
    async with genie.sessionmaker() as session:
        channel = await session.scalar(text("SELECT slack_channel FROM alert WHERE id = :a"), {"a": alert_id})
        digest = SlackDigest(channel=channel, slack_team_id=TEAM_ID, storm_priority="P3", slack_ts="1700000000.000100")
        session.add(digest)
        await session.flush()
        await session.execute(
            text("UPDATE alert SET slack_ts = NULL, slack_digest_id = :d WHERE id = :a"),
            {"a": alert_id, "d": digest.id},
        )
        alice = await users.user_by_email(session, "alice@example.com")
        actor = Actor(via="slack", user=alice, identity=SlackIdentity(TEAM_ID, "U0ALICE"))
        alert = await session.get(Alert, alert_id)
        before = await genie_max_ids(session, alert_id)
        await alerts.acknowledge(session, alert, actor, why="member")
        updates = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE alert_id = :a AND id > :i"), {"a": alert_id, "i": before[1]}
        )
        refreshes = await session.scalar(
            text("SELECT count(*) FROM outbox WHERE kind = 'digest' AND digest_id = :d AND delivered_at IS NULL"),
            {"d": digest.id},
        )
        events = await session.scalar(
            text("SELECT count(*) FROM alert_event WHERE alert_id = :a AND id > :i AND outcome = 'applied'"),
            {"a": alert_id, "i": before[0]},
        )
        await session.rollback()
    assert (updates, refreshes, events) == (0, 1, 1)


async def test_the_team_a_transition_reads_is_the_team_as_it_is_now(world):
    """A click's update of the alert's message names the alert's team (``teams.team_by_id``):
    taken from the session when its gate just loaded it, read again once the session's copy is
    expired (as ``session.get`` does) — a change another transaction committed meanwhile is
    seen, never the expired copy."""
    from bot.services import teams

    genie = world
    async with genie.sessionmaker() as session:
        team = await teams.team_by_name(session, "Payments")
        team_id = team.id
        assert await teams.team_by_id(session, team_id) is team
        await session.commit()
        session.expire(team)  # (as the gate's read, or a rollback, leaves what it loaded)
        async with genie.sessionmaker.begin() as other:
            (await teams.team_by_id(other, team_id)).slack_team_id = "T0OTHER"
        again = await teams.team_by_id(session, team_id)
        assert again.slack_team_id == "T0OTHER"
