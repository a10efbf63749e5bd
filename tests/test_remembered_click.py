"""The refused click is remembered: someone not connected clicks Acknowledge / Close / Assign…,
gets a Connect button, connects on the web — and Genie then carries the click out, through the
gate as it stands at that moment, on the timeline as done "after linking", with the message
updated and the person told (a DM, and the confirmation page). An expired, superseded or used
link carries nothing out; an alert that changed meanwhile is only reported.

Driven like the outside world: signed clicks, a browser signing in and confirming, and what the
fake Slack received."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import urlsplit

from sqlalchemy import update

from bot.services import teams
from storage.base import utcnow
from storage.models import LinkRequest
from tests.conftest import eventually, page_text
from tests.helpers import block_text, buttons
from tests.slack_driver import SlackUser
from tests.test_alert_gate import CHANNEL, _click, _ephemeral, _events, _fire, world  # noqa: F401 - fixture

STRANGER, OUTSIDER = SlackUser("U0STRANGER"), SlackUser("U0OUTSIDER")


async def _refused_with_connect(genie, who: SlackUser, alert_id: int, action_id: str, count: int = 1, **kw) -> str:
    """Click as someone not connected; the path of the Connect link offered."""
    await _click(genie, who, alert_id, action_id, **kw)
    said = (await _ephemeral(genie, count))[-1]
    assert "isn't connected" in said["text"]
    return urlsplit(buttons(said["blocks"])["connect_link"]["url"]).path


async def _confirm(genie, path: str, email: str):
    """Sign in as ``email`` and confirm the link: the page the browser ends on."""
    browser = genie.browser()
    await browser.login(email, next_path=path)
    await browser.get("/account")  # a CSRF token of this session, should the link's page have no form
    shown = await browser.get(path)
    # U0STRANGER is unknown to Slack's users.info: the second, explicit step ("this Slack account is mine").
    return shown, await browser.post(path, {"replace": "yes", "mine": "yes"})


async def _dms(genie, slack_user: str) -> list[str]:
    return [c.args["text"] for c in genie.fake.calls("chat.postMessage") if c.args.get("channel") == slack_user]


async def test_a_click_made_before_connecting_is_carried_out_once_the_link_is_confirmed(world):
    await world.add_user("dave@example.com", "Dave Doe")
    async with world.sessionmaker.begin() as s:
        await teams.add_member(s, "Payments", "dave@example.com")
    alert_id, _ = await _fire(world)
    await _click(world, STRANGER, alert_id, "alert_acknowledge")
    said = (await _ephemeral(world))[-1]
    assert f"Once you're connected, Genie will acknowledge alert #{alert_id} for you" in block_text(said["blocks"])
    path = urlsplit(buttons(said["blocks"])["connect_link"]["url"]).path

    shown, done = await _confirm(world, path, "dave@example.com")
    assert (
        f"Confirming also carries out the click this Slack account made before it was connected: "
        f"acknowledge alert #{alert_id} “Checkout error rate above 5%”, as Dave Doe" in page_text(shown)
    )
    assert done.status_code == 200
    assert (
        f"Done: alert #{alert_id} “Checkout error rate above 5%” is acknowledged — the click you made in Slack "
        f"before connecting." in page_text(done)
    )
    # The alert, its timeline, its Slack message and the person.
    assert await world.scalar("SELECT acknowledged_by FROM alert WHERE id = :a", a=alert_id) == "Dave Doe"
    assert (await _events(world, alert_id))[-1] == (
        "acknowledge",
        "applied",
        "Dave Doe",
        "U0STRANGER",
        False,
        "after linking: member of the owning team",
    )
    update = (await world.fake.wait_for("chat.update"))[-1].args
    assert update["channel"] == CHANNEL and "Acknowledged* by Dave Doe" in block_text(update["blocks"])

    async def told():
        return [t for t in await _dms(world, "U0STRANGER") if "the click you made before connecting" in t]

    [dm] = await eventually(told)
    assert dm.startswith(
        f":white_check_mark: You're connected, so Genie acknowledged alert #{alert_id}: Checkout error rate above 5%"
    )
    # The link is used: posting it again carries nothing out a second time.
    browser = world.browser()
    await browser.login("dave@example.com", next_path=path)
    await browser.get("/account")  # a CSRF token of this session: the used link's page has no form
    again = await browser.post(path, {"replace": "yes", "mine": "yes"})
    assert "already been used" in page_text(again)
    assert [e[:2] for e in await _events(world, alert_id)].count(("acknowledge", "applied")) == 1


async def test_the_gate_is_read_when_the_click_is_carried_out_and_a_changed_alert_is_only_reported(world):
    await world.add_user("erin@example.com", "Erin Outside")  # in no team
    await world.add_user("dave@example.com", "Dave Doe")
    async with world.sessionmaker.begin() as s:
        await teams.add_member(s, "Payments", "dave@example.com")
    alert_id, _ = await _fire(world)

    # Linked, but not allowed: refused after linking, and told why.
    path = await _refused_with_connect(world, STRANGER, alert_id, "alert_close")
    _, done = await _confirm(world, path, "erin@example.com")
    assert done.status_code == 200
    assert f"Your click to close alert #{alert_id} “Checkout error rate above 5%” was not carried out: " in page_text(
        done
    ) and "not in Payments" in page_text(done)
    assert await world.scalar("SELECT status FROM alert WHERE id = :a", a=alert_id) == "open"
    assert (await _events(world, alert_id))[-1] == (
        "close",
        "denied",
        "Erin Outside",
        "U0STRANGER",
        False,
        "after linking: not a member of the owning team",
    )

    async def told(who: str, words: str):
        async def check():
            return [t for t in await _dms(world, who) if words in t]

        return (await eventually(check))[-1]

    refusal = await told("U0STRANGER", "was not carried out")
    assert refusal.startswith(f":no_entry: You're connected, but your click to close alert #{alert_id}")

    # Allowed, but the alert changed meanwhile (closed by Alice): nothing is done, the person is told.
    path = await _refused_with_connect(world, OUTSIDER, alert_id, "alert_acknowledge", count=2)
    await _click(world, SlackUser("U0ALICE"), alert_id, "alert_close")
    await eventually(lambda: _closed(world, alert_id))
    _, done = await _confirm(world, path, "dave@example.com")
    assert (
        f"Your click to acknowledge alert #{alert_id} “Checkout error rate above 5%” changed nothing: "
        f"Alert #{alert_id} is already closed (by Alice Smith" in page_text(done)
    )
    assert await world.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id) in (False, 0)
    last = (await _events(world, alert_id))[-1]
    assert last[:4] == ("acknowledge", "noop", "Dave Doe", "U0OUTSIDER")
    assert last[5].startswith(f"after linking: Alert #{alert_id} is already closed (by Alice Smith")
    assert "changed nothing" in await told("U0OUTSIDER", "changed nothing")


async def _closed(genie, alert_id):
    return await genie.scalar("SELECT status FROM alert WHERE id = :a", a=alert_id) == "closed"


async def test_an_expired_or_superseded_link_carries_nothing_out(world):
    await world.add_user("dave@example.com", "Dave Doe")
    async with world.sessionmaker.begin() as s:
        await teams.add_member(s, "Payments", "dave@example.com")
    alert_id, _ = await _fire(world)

    # Older than its TTL: the confirm is refused, and the click is not carried out.
    expired = await _refused_with_connect(world, STRANGER, alert_id, "alert_close")
    async with world.sessionmaker.begin() as s:
        await s.execute(
            update(LinkRequest)
            .where(LinkRequest.slack_user_id == "U0STRANGER")
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    _, done = await _confirm(world, expired, "dave@example.com")
    assert "This link has expired" in page_text(done)
    # Superseded by a newer click (Acknowledge): only the newest link carries out its click.
    first = await _refused_with_connect(world, STRANGER, alert_id, "alert_close", count=2)
    newest = await _refused_with_connect(world, STRANGER, alert_id, "alert_acknowledge", count=3)
    _, done = await _confirm(world, first, "dave@example.com")
    assert "replaced by a newer one" in page_text(done)
    assert await world.scalar("SELECT status FROM alert WHERE id = :a", a=alert_id) == "open"
    assert (
        await world.scalar(
            "SELECT count(*) FROM alert_event WHERE alert_id = :a AND outcome <> 'denied' AND action <> 'create'",
            a=alert_id,
        )
        == 0
    )
    assert await world.scalar("SELECT count(*) FROM slack_link WHERE slack_user_id = 'U0STRANGER'") == 0
    assert not [t for t in await _dms(world, "U0STRANGER") if "before connecting" in t or "your click" in t]

    _, done = await _confirm(world, newest, "dave@example.com")
    assert f"Done: alert #{alert_id}" in page_text(done)
    assert await world.scalar("SELECT status FROM alert WHERE id = :a", a=alert_id) == "open"
    assert await world.scalar("SELECT acknowledged_by FROM alert WHERE id = :a", a=alert_id) == "Dave Doe"
