"""A transition's timeline and outbox rows are written by Core INSERTs built once
(``alerts._applied``, ``outbox.enqueue_row``), no longer by ORM objects flushed at the commit:
they must be the very rows the ORM wrote — every column, NULL and JSON ``null`` told apart —
for every kind of actor, and in the order the code made them."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bot.services import alerts, users
from bot.services.alerts import Actor
from bot.services.slack_links import SlackIdentity
from storage.base import utcnow
from storage.models import Alert, AlertAction
from tests.conftest import eventually
from tests.fake_slack import TEAM_ID
from tests.test_alert_gate import _fire, world  # noqa: F401 - the fixture


def _raw(rows) -> list[tuple]:
    return [tuple(row[1:]) for row in rows]  # every column but the id


@pytest.mark.parametrize("who", ["member", "after_link", "anonymous", "api"])
async def test_a_transitions_core_rows_are_the_rows_the_orm_wrote(world, who):
    genie = world
    alert_id, _ = await _fire(genie)

    async def posted() -> bool:  # (its update then goes to the update lane)
        return bool(await genie.scalar("SELECT slack_ts FROM alert WHERE id = :a", a=alert_id))

    await eventually(posted)
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
        await session.rollback()  # (nothing for the worker to deliver)
    assert len(events) == 2 and len(messages) == 2
    orm_event, core_event = _raw(events)
    assert orm_event == core_event
    assert ("after linking: member" in orm_event) == (who == "after_link")
    orm_message, core_message = _raw(messages)
    assert orm_message == core_message
    assert "update" in orm_message  # the lane


async def genie_max_ids(session, alert_id: int) -> tuple[int, int]:
    event = await session.scalar(
        text("SELECT COALESCE(MAX(id), 0) FROM alert_event WHERE alert_id = :a"), {"a": alert_id}
    )
    message = await session.scalar(text("SELECT COALESCE(MAX(id), 0) FROM outbox WHERE alert_id = :a"), {"a": alert_id})
    return event, message
