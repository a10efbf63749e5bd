"""Between the alert message being posted and the click, the clicker's standing changed: the
click is judged on the standing *now* (DESIGN.md §3, "Membership is read at click time").
Each case builds the click from the very message Genie posted (whose buttons were fine when it
was posted), changes one thing the way an admin would, and clicks: denied, with the reason,
the alert untouched, the denial on the timeline, and the message not updated."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from bot.services import alerts, slack_links, teams, users
from bot.services.alerts import Actor
from bot.services.slack_links import SlackIdentity
from tests.fake_slack import TEAM_ID
from tests.hardening import bolt_idle, outbox_idle, report
from tests.helpers import link_person, walk
from tests.test_alert_gate import BOB, CHANNEL, _events, _fire, world  # noqa: F401 - the fixture


async def _removed_from_team(genie, alert_id):
    async with genie.sessionmaker.begin() as s:
        await teams.remove_member(s, "Payments", "bob@example.com")


async def _unlinked_by_admin(genie, alert_id):
    async with genie.sessionmaker.begin() as s:
        await slack_links.unlink_by_admin(s, "bob@example.com")  # genie link remove bob@example.com


async def _unlinked_by_himself(genie, alert_id):
    async with genie.sessionmaker.begin() as s:
        await slack_links.unlink(s, SlackIdentity(TEAM_ID, "U0BOB"))  # /genie disconnect


async def _deactivated(genie, alert_id):
    async with genie.sessionmaker.begin() as s:
        await users.set_active(s, "bob@example.com", False)


async def _relinked_to_a_non_member(genie, alert_id):
    """Bob's Slack account now belongs to Carol's Genie account (a re-link), and Carol is not in Payments."""
    await link_person(genie, "U0BOB", "carol@example.com")


async def _demoted_admin(genie, alert_id):
    """Bob was no member but a Genie admin when the alert was posted; he is not an admin now."""
    async with genie.sessionmaker.begin() as s:
        await teams.remove_member(s, "Payments", "bob@example.com")
        await s.execute(text('UPDATE "user" SET is_admin = :f WHERE email = :e'), {"f": False, "e": "bob@example.com"})


async def _assignment_moved(genie, alert_id):
    """Bob, no longer a member, was the assignee; the alert was reassigned to Alice since."""
    async with genie.sessionmaker.begin() as s:
        alert = await alerts.get(s, alert_id)
        await alerts.assign(
            s, alert, Actor(via="api", label="Alertmanager"), await users.require_user(s, "alice@example.com")
        )
        await teams.remove_member(s, "Payments", "bob@example.com")


CHANGES = {
    "removed from the team": (_removed_from_team, "not a member of the owning team", "not in Payments"),
    "unlinked by an admin": (_unlinked_by_admin, "Slack account not linked", "isn't connected"),
    "unlinked by himself": (_unlinked_by_himself, "Slack account not linked", "isn't connected"),
    "deactivated": (_deactivated, "linked Genie account is deactivated", "deactivated"),
    "re-linked to a non-member": (_relinked_to_a_non_member, "not a member of the owning team", "not in Payments"),
    "no longer an admin": (_demoted_admin, "not a member of the owning team", "not in Payments"),
    "no longer the assignee": (_assignment_moved, "not a member of the owning team", "not in Payments"),
}


@pytest.mark.parametrize("change", list(CHANGES))
async def test_a_change_between_post_and_click_is_seen_by_the_click(world, change):
    make_change, reason, said = CHANGES[change]
    if change == "no longer an admin":
        async with world.sessionmaker.begin() as s:
            await s.execute(
                text('UPDATE "user" SET is_admin = :t WHERE email = :e'), {"t": True, "e": "bob@example.com"}
            )
    alert_id, post = await _fire(world)
    if change == "no longer the assignee":
        async with world.sessionmaker.begin() as s:
            await alerts.assign(
                s,
                await alerts.get(s, alert_id),
                Actor(via="api", label="Alertmanager"),
                await users.require_user(s, "bob@example.com"),
            )
    await bolt_idle()
    values = {d["action_id"]: d.get("value") for d in walk(post["blocks"]) if d.get("action_id")}
    await make_change(world, alert_id)
    await outbox_idle(world)  # a reassignment updates the message: let that settle first
    before = await world.rows("SELECT acknowledged, status, owner_user_id FROM alert WHERE id = :a", a=alert_id)

    for action_id in ("alert_acknowledge", "alert_close"):
        world.fake.clear()
        response = await world.slack.block_action(
            BOB, action_id, values[action_id], container="message", channel_id=CHANNEL
        )
        assert response.status_code == 200
        await bolt_idle()
        [told] = [c.args for c in world.fake.calls("response_url")]
        assert said in told["text"] and told["response_type"] == "ephemeral", told["text"]
        assert (await _events(world, alert_id))[-1][:2] == (action_id.removeprefix("alert_"), "denied")
        assert (await _events(world, alert_id))[-1][5] == reason
    assert await world.rows("SELECT acknowledged, status, owner_user_id FROM alert WHERE id = :a", a=alert_id) == before
    await outbox_idle(world)
    assert [c for c in world.fake.calls("chat.update") if f"#{alert_id} " in (c.args.get("text") or "")] == []
    report("test_membership_midflight", change=change, clicks_denied=2)
