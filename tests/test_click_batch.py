"""Group commit for clicks (``bot.services.click_batch``; SQLite): the clicks of one moment share
one transaction, and each is decided and recorded exactly as it would be alone — who won a race,
who is refused and why, what is on the timeline, which message is redrawn; a click the database
refuses fails alone; the gate's facts are read by each click when it runs. On PostgreSQL each
click has a transaction of its own, run at once."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from bot.services import actions
from bot.services.slack_links import SlackIdentity
from storage.session import make_engine
from tests import helpers
from tests.conftest import eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import block_text
from tests.test_alert_gate import ALICE, BOB, MALLORY, _click, _events, _fire, _latest_blocks, world  # noqa: F401


def database_held(genie):
    """A click's first statement waits (on PostgreSQL it reads the alert table)."""
    return helpers.database_held(genie.settings.database_url, "alert")


def batched_here(genie) -> None:
    if genie.settings.database_url.startswith("postgresql"):
        pytest.skip("PostgreSQL runs each click in a transaction of its own, at once (click_batch)")


async def in_one_batch(genie, clicks) -> tuple[list, int]:
    """Make each ``(who, alert_id, action_id)`` click so that all are taken by the click writer
    together, in this order: a first click (on an alert of its own) keeps the writer waiting on
    the held database while the others queue behind it, one after the other. Returns the
    answers and how many transactions committed them."""
    ahead, _ = await _fire(genie, "ahead")
    blocks = {alert_id: await _latest_blocks(genie, alert_id) for alert_id in (ahead, *(c[1] for c in clicks))}
    genie.fake.clear()  # (what the clicks cause is all the fake Slack has from here on)
    writer = genie.rt.clicks
    async with database_held(genie):
        taken = writer.taken + 1
        first = asyncio.create_task(_click(genie, ALICE, ahead, "alert_acknowledge", blocks=blocks[ahead]))
        await eventually(lambda: _true(writer.taken == taken and writer.waiting == 0))
        batches = writer.batches
        made = []
        for who, alert_id, action_id in clicks:
            made.append(asyncio.create_task(_click(genie, who, alert_id, action_id, blocks=blocks[alert_id])))
            await eventually(lambda n=len(made): _true(writer.waiting == n))  # in this order
        assert writer.taken == taken  # (each was acked at once: only their transactions wait)
    answers = await asyncio.gather(first, *made)
    await eventually(lambda: _true(genie.rt.clicks_pending == 0))  # every click's work done
    return list(answers[1:]), writer.batches - batches - 1  # (the first, "ahead", alone)


async def _true(value):
    return value


async def _acknowledged_by(genie, alert_id: int) -> str | None:
    return await genie.scalar("SELECT acknowledged_by FROM alert WHERE id = :a", a=alert_id)


async def test_clicks_of_one_moment_share_a_transaction_and_each_is_decided_as_alone(world):
    """Bob acknowledges alert one, then Alice does (she lost the race: told who won), then
    Mallory, who is not in the team, tries alert two (refused, and told why): one transaction
    for the three, and the timeline, the messages and what each person is told are those of
    three clicks one after the other."""
    genie = world
    batched_here(genie)
    one, _ = await _fire(genie, "one")
    two, _ = await _fire(genie, "two")
    answers, transactions = await in_one_batch(
        genie, [(BOB, one, "alert_acknowledge"), (ALICE, one, "alert_acknowledge"), (MALLORY, two, "alert_acknowledge")]
    )
    assert transactions == 1 and all(a.status_code == 200 for a in answers)
    said = [c.args["text"] for c in await genie.fake.wait_for("response_url", count=2)]
    assert any("already acknowledged by Bob Jones" in s for s in said), said
    assert any("can't acknowledge this alert" in s and "Payments" in s for s in said), said
    assert [e[:3] for e in await _events(genie, one) if e[0] == "acknowledge"] == [
        ("acknowledge", "applied", "Bob Jones"),
        ("acknowledge", "noop", "Alice Smith"),
    ]
    assert [e[:3] for e in await _events(genie, two) if e[0] == "acknowledge"] == [
        ("acknowledge", "denied", "Mallory Evil"),
    ]
    assert await _acknowledged_by(genie, one) == "Bob Jones" and await _acknowledged_by(genie, two) is None

    async def redrawn():  # (the fake was cleared before the clicks: only their updates are there)
        updates = [c for c in genie.fake.calls("chat.update") if f"#{one} " in (c.args.get("text") or "")]
        return bool(updates) and "Acknowledged* by Bob Jones" in block_text(updates[-1].args["blocks"])

    await eventually(redrawn)
    await asyncio.sleep(0.3)
    updates = [c for c in genie.fake.calls("chat.update") if f"#{one} " in (c.args.get("text") or "")]
    assert len(updates) == 1  # one applied change, one redraw
    assert not [c for c in genie.fake.calls("chat.update") if f"#{two} " in (c.args.get("text") or "")]


def refusing_acknowledgements_of(genie, alert_id: int):
    """The database refuses the timeline row of an applied change to this alert: a failure that
    only the database catches, in the middle of a batch."""
    condition = f"NEW.alert_id = {alert_id} AND NEW.outcome = 'applied'"
    return helpers.refusing_rows(genie.settings.database_url, "alert_event", condition, "refused event")


async def test_a_click_the_database_refuses_fails_alone_in_its_batch(world):
    """The batch's transaction fails on the middle click; the clicks are run again one at a
    time: the other two are applied once each, the bad one changes nothing and its clicker is
    told something went wrong."""
    genie = world
    batched_here(genie)
    ids = [(await _fire(genie, f"alert {i}"))[0] for i in range(3)]
    async with refusing_acknowledgements_of(genie, ids[1]):
        answers, transactions = await in_one_batch(genie, [(BOB, i, "alert_acknowledge") for i in ids])
        said = [c.args["text"] for c in await genie.fake.wait_for("response_url", count=1)]
    assert all(a.status_code == 200 for a in answers)
    assert transactions == 2  # the batch failed; then each good one in its own
    assert "Something went wrong on Genie's side" in said[0]
    assert [await _acknowledged_by(genie, i) for i in ids] == ["Bob Jones", None, "Bob Jones"]
    for i in (ids[0], ids[2]):
        assert [e[:2] for e in await _events(genie, i) if e[0] == "acknowledge"] == [("acknowledge", "applied")]
    assert not [e for e in await _events(genie, ids[1]) if e[0] == "acknowledge"]


async def test_each_click_of_a_batch_reads_the_gate_s_facts_when_it_runs(world):
    """Two clicks by Bob in one transaction (as a batch runs them), and between them another
    connection deactivates him: the second is refused. (The session loaded Bob for the first
    click; the gate's query must not answer the second from that.) Shown on PostgreSQL, where
    another transaction can commit between two statements of ours; on SQLite a batch holds the
    database's one write lock, so nothing can land between two of its clicks."""
    genie = world
    if not genie.settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite: no other writer can commit while a batch's transaction runs")
    one, _ = await _fire(genie, "one")
    two, _ = await _fire(genie, "two")
    bob = SlackIdentity(TEAM_ID, BOB.user_id)
    other = make_engine(genie.settings.database_url)
    try:
        async with genie.sessionmaker.begin() as session:  # the batch's transaction
            first = await actions.act(session, bob, "acknowledge", one, anonymous_default=False)
            assert first.applied
            async with other.begin() as conn:
                await conn.execute(text("UPDATE \"user\" SET is_active = false WHERE email = 'bob@example.com'"))
            second = await actions.act(session, bob, "acknowledge", two, anonymous_default=False)
    finally:
        await other.dispose()
    assert not second.applied and second.reason == "inactive", second


async def test_on_postgresql_clicks_are_not_held_for_each_other(world):
    """PostgreSQL: a click's transaction starts at once, beside the others' — one held up (here
    by a lock on its alert) holds up no other click. (Batched, the second would wait for the
    first's transaction.)"""
    genie = world
    if not genie.settings.database_url.startswith("postgresql"):
        pytest.skip("SQLite: one connection, so transactions queue (and clicks are batched)")
    one, _ = await _fire(genie, "one")
    two, _ = await _fire(genie, "two")
    blocks = {i: await _latest_blocks(genie, i) for i in (one, two)}
    other = make_engine(genie.settings.database_url)
    try:
        async with other.begin() as conn:
            await conn.execute(text("SELECT id FROM alert WHERE id = :a FOR UPDATE"), {"a": one})
            await _click(genie, BOB, one, "alert_acknowledge", blocks=blocks[one])  # waits on the row lock
            await _click(genie, ALICE, two, "alert_acknowledge", blocks=blocks[two])
            assert await eventually(lambda: _acknowledged_by(genie, two)) == "Alice Smith"
            assert await _acknowledged_by(genie, one) is None
        await eventually(lambda: _acknowledged_by(genie, one))
    finally:
        await other.dispose()
    assert await _acknowledged_by(genie, one) == "Bob Jones"
