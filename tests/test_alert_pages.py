"""Alerts on the web side (issue 17): the list, an alert's page with its actions, a team's page.

Driven through the real server with a cookie-keeping client (``genie.browser()``); assertions
are on the pages people read and on the rows the actions wrote. Access is checked per page:
a person sees their teams' alerts only, an admin all, a person in no team none, and another
team's alert or team is "not found"."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest

from bot.services import alerts, slack_links, teams, users
from bot.services.alerts import Actor, CreateAlert
from bot.services.slack_links import SlackIdentity, SlackProfile
from storage.base import utcnow
from tests.conftest import eventually, page_text
from tests.fake_slack import TEAM_ID


async def _link(genie, slack_user_id: str, email: str) -> None:
    async with genie.sessionmaker.begin() as s:
        req = await slack_links.issue_link(s, SlackIdentity(TEAM_ID, slack_user_id), SlackProfile(), 600)
        user = await users.require_user(s, email)
        await slack_links.redeem(s, req.nonce, user, replace=True, ownership_confirmed=True)


async def fire(genie, message: str, team: str = "Payments", **fields) -> int:
    async with genie.sessionmaker.begin() as s:
        owner = await teams.require_team(s, team)
        alert, _ = await alerts.create_alert(s, owner, CreateAlert(message=message, **fields), str(uuid.uuid4()))
    return alert.id


@pytest.fixture
async def world(genie):
    """Payments (C0PAY: Alice, Bob), Search (C0SEARCH: Mallory); Nora in no team; an admin."""
    for email, name in [
        ("alice@example.com", "Alice Smith"),
        ("bob@example.com", "Bob Jones"),
        ("mallory@example.com", "Mallory Evil"),
        ("nora@example.com", "Nora None"),
    ]:
        await genie.add_user(email, name)
    await genie.add_user("root@example.com", "Ada Admin", admin=True)
    async with genie.sessionmaker.begin() as s:
        await teams.add_team(s, "Payments", "C0PAY")
        await teams.add_team(s, "Search", "C0SEARCH")
        await teams.add_member(s, "Payments", "alice@example.com")
        await teams.add_member(s, "Payments", "bob@example.com")
        await teams.add_member(s, "Search", "mallory@example.com")
    await _link(genie, "U0ALICE", "alice@example.com")
    return genie


async def signed_in(genie, email: str):
    b = genie.browser()
    r = await b.login(email)
    assert r.status_code == 303, r.text
    return b


async def test_list_shows_each_person_their_teams_alerts_and_filters_say_what_is_wrong(world):
    genie = world
    pay = await fire(genie, "Checkout error rate above 5%", priority="P1", tags=["checkout", "db"])
    pay2 = await fire(genie, "Refunds queue slow", priority="P3", alias="refunds-slow")
    search = await fire(genie, "Search index stale", team="Search", priority="P2")

    alice = await signed_in(genie, "alice@example.com")
    text = page_text(await alice.get("/alerts"))
    assert "Checkout error rate above 5%" in text and "Refunds queue slow" in text
    assert "Search index stale" not in text
    # newest first
    assert text.index("Refunds queue slow") < text.index("Checkout error rate above 5%")

    mallory = await signed_in(genie, "mallory@example.com")
    text = page_text(await mallory.get("/alerts"))
    assert "Search index stale" in text and "Checkout" not in text
    # another team's name in the filter shows nothing of theirs
    assert "Checkout" not in page_text(await mallory.get("/alerts?team=Payments"))

    nora = await signed_in(genie, "nora@example.com")
    r = await nora.get("/alerts")
    assert r.status_code == 200 and "You are in no team yet" in page_text(r)
    assert "Checkout" not in r.text and "Search index" not in r.text

    admin = await signed_in(genie, "root@example.com")
    text = page_text(await admin.get("/alerts"))
    assert all(m in text for m in ("Checkout error", "Refunds queue", "Search index stale"))

    assert '<meta http-equiv="refresh" content="30">' in (await admin.get("/alerts?refresh=1")).text
    assert "http-equiv" not in (await admin.get("/alerts")).text

    # filters
    text = page_text(await admin.get("/alerts?priority=P1"))
    assert "Checkout error" in text and "Refunds" not in text and "Search index" not in text
    text = page_text(await admin.get("/alerts?tag=checkout"))
    assert "Checkout error" in text and "Refunds" not in text
    text = page_text(await admin.get("/alerts?q=refunds-SLOW"))
    assert "Refunds queue slow" in text and "Checkout" not in text
    text = page_text(await admin.get(f"/alerts?q=%23{search}"))
    assert "Search index stale" in text and "Checkout" not in text
    text = page_text(await admin.get("/alerts?team=Search&status=open"))
    assert "Search index stale" in text and "Checkout" not in text
    today = utcnow().date()
    text = page_text(await admin.get(f"/alerts?from={today}&to={today}"))
    assert "Checkout error" in text
    text = page_text(await admin.get(f"/alerts?to={today - timedelta(days=2)}"))
    assert "No alerts match" in text

    # bad input: a page that says what is wrong, 400, never a 500
    for query, says in [
        ("status=exploded", "Unknown status"),
        ("priority=P9", "Unknown priority"),
        (f"from={today}&to={today - timedelta(days=1)}", "ends"),
        ("from=yesterday", "must be a date"),
        ("q=" + "x" * 10_000, "too long"),
        ("after=forged.cursor", "changed or is broken"),
        ("q=%00", "NUL"),
        ("tag=a%00b", "NUL"),
    ]:
        r = await admin.get(f"/alerts?{query}")
        assert r.status_code == 400, (query, r.status_code)
        assert says in page_text(r), query
    assert pay and pay2

    # signed out: sent to sign in, and back
    r = await genie.http.get("/alerts?status=open")
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=%2Falerts")


async def test_keyset_paging_with_a_signed_cursor(world):
    genie = world
    async with genie.sessionmaker.begin() as s:
        team = await teams.require_team(s, "Payments")
        for i in range(55):
            await alerts.create_alert(s, team, CreateAlert(message=f"Disk {i:02d} full"), str(uuid.uuid4()))
    alice = await signed_in(genie, "alice@example.com")
    first = await alice.get("/alerts")
    assert "Disk 54 full" in first.text and "Disk 04 full" not in first.text
    older = re.search(r'href="([^"]+)" rel="next"', first.text).group(1).replace("&amp;", "&")
    second = await alice.get(older)
    assert second.status_code == 200
    assert "Disk 04 full" in second.text and "Disk 00 full" in second.text and "Disk 54 full" not in second.text
    # the cursor is signed: another id in it is refused, not obeyed
    cursor = re.search(r"after=([^&\"]+)", older).group(1)
    tampered = cursor.replace(cursor.split(".")[0], cursor.split(".")[0][:-1] + "Z")
    r = await alice.get(f"/alerts?after={tampered}")
    assert r.status_code == 400 and "changed or is broken" in page_text(r)


async def test_alert_page_actions_go_through_the_gate_and_the_timeline_says_who(world):
    genie = world
    alert_id = await fire(
        genie,
        "Checkout error rate above 5%",
        description="Error rate 7% for 10 min",
        details={"runbook": "https://runbooks/checkout"},
        tags=["checkout"],
    )
    other = await fire(genie, "Search index stale", team="Search")
    # a refused Slack click, on the timeline with its reason
    async with genie.sessionmaker.begin() as s:
        a = await alerts.get(s, alert_id)
        await alerts.record(
            s,
            a,
            "acknowledge",
            "denied",
            Actor(via="slack", identity=SlackIdentity(TEAM_ID, "U0STRANGER")),
            reason="Slack account not linked",
        )

    alice = await signed_in(genie, "alice@example.com")
    page = await alice.get(f"/alerts/{alert_id}")
    text = page_text(page)
    assert page.status_code == 200
    assert "Error rate 7% for 10 min" in text and "https://runbooks/checkout" in text and "checkout" in text
    assert "denied" in text and "Slack account not linked" in text and "U0STRANGER" in text

    # another team's alert, and one that does not exist: not found, and nothing recorded
    for path in (f"/alerts/{other}", "/alerts/999999", "/alerts/abc"):
        r = await alice.get(path)
        assert r.status_code == 404 and "No such alert" in page_text(r)
    r = await alice.post(f"/alerts/{other}", {"action": "close"})
    assert r.status_code == 404
    assert await genie.scalar("SELECT status FROM alert WHERE id = :i", i=other) == "open"
    assert await genie.scalar("SELECT count(*) FROM alert_event WHERE alert_id = :i AND via = 'web'", i=other) == 0

    # no CSRF token: refused, nothing changed
    await alice.get(f"/alerts/{alert_id}")
    r = await alice.http.post(f"/alerts/{alert_id}", data={"action": "acknowledge"})
    assert r.status_code == 403 and "Please try again" in page_text(r)
    assert await genie.scalar("SELECT acknowledged FROM alert WHERE id = :i", i=alert_id) in (False, 0)

    # acknowledge, with the version the page showed
    seen = re.search(r'name="seen" value="([^"]+)"', page.text).group(1)
    r = await alice.post(f"/alerts/{alert_id}", {"action": "acknowledge", "seen": seen})
    assert r.status_code == 303 and r.headers["location"] == f"/alerts/{alert_id}?done=acknowledge"
    row = (await genie.rows("SELECT acknowledged_by FROM alert WHERE id = :i", i=alert_id))[0]
    assert row[0] == "Alice Smith"
    event = (
        await genie.rows(
            "SELECT via, actor_name, reason FROM alert_event WHERE alert_id = :i "
            "AND action = 'acknowledge' AND outcome = 'applied'",
            i=alert_id,
        )
    )[0]
    assert tuple(event) == ("web", "Alice Smith", "member of the owning team")
    # the Slack message is updated through the outbox, and links back to the page
    update = await eventually(lambda: _update_of(genie, alert_id), timeout=15)
    assert f"{genie.url}/alerts/{alert_id}" in str(update.args["blocks"])

    # acting on the picture the page showed before: it changed meanwhile
    r = await alice.post(f"/alerts/{alert_id}", {"action": "close", "seen": seen})
    assert r.status_code == 409 and "changed while you were looking" in page_text(r)
    assert await genie.scalar("SELECT status FROM alert WHERE id = :i", i=alert_id) == "open"

    # a note, and an assignment, from the page
    page = await alice.get(f"/alerts/{alert_id}")
    r = await alice.post(f"/alerts/{alert_id}", {"action": "note", "note": "Rolling back 4.2"})
    assert r.status_code == 303
    bob_id = await genie.scalar("SELECT id FROM \"user\" WHERE email = 'bob@example.com'")
    page = await alice.get(f"/alerts/{alert_id}")
    seen = re.search(r'name="seen" value="([^"]+)"', page.text).group(1)
    r = await alice.post(f"/alerts/{alert_id}", {"action": "assign", "assignee": str(bob_id), "seen": seen})
    assert r.status_code == 303
    text = page_text(await alice.get(f"/alerts/{alert_id}"))
    assert "Rolling back 4.2" in text and "assigned to Bob Jones" in text
    r = await alice.post(f"/alerts/{alert_id}", {"action": "assign", "assignee": "x'; drop"})
    assert r.status_code == 400 and "Choose who" in page_text(r)
    r = await alice.post(f"/alerts/{alert_id}", {"action": "explode"})
    assert r.status_code == 400 and "isn't one Genie knows" in page_text(r)

    # an admin closes it; closing again says who got there first
    admin = await signed_in(genie, "root@example.com")
    await admin.get(f"/alerts/{alert_id}")
    r = await admin.post(f"/alerts/{alert_id}", {"action": "close"})
    assert r.status_code == 303
    assert tuple(
        (
            await genie.rows(
                "SELECT via, reason FROM alert_event WHERE alert_id = :i AND action = 'close' AND outcome = 'applied'",
                i=alert_id,
            )
        )[0]
    ) == ("web", "Genie admin")
    r = await alice.post(f"/alerts/{alert_id}", {"action": "close"})
    assert r.status_code == 409 and "already closed (by Ada Admin" in page_text(r)


async def test_a_member_removed_meanwhile_is_refused_by_the_same_gate(world):
    genie = world
    alert_id = await fire(genie, "Checkout error rate above 5%")
    bob = await signed_in(genie, "bob@example.com")
    await bob.get(f"/alerts/{alert_id}")
    async with genie.sessionmaker.begin() as s:  # Bob leaves Payments while the page is open
        await s.execute(
            __import__("sqlalchemy").text(
                "DELETE FROM team_member WHERE user_id = (SELECT id FROM \"user\" WHERE email = 'bob@example.com')"
            )
        )
    r = await bob.post(f"/alerts/{alert_id}", {"action": "acknowledge"})
    assert r.status_code == 404  # no longer his team's: not found, and nothing done
    assert await genie.scalar("SELECT acknowledged FROM alert WHERE id = :i", i=alert_id) in (False, 0)


async def _update_of(genie, alert_id):
    """The alert's message showing it acknowledged: an update, or the first post if it was still
    queued when the acknowledgement came (the post then draws the state at delivery)."""
    calls = [*genie.fake.calls("chat.postMessage"), *genie.fake.calls("chat.update")]
    return next(
        (
            c
            for c in reversed(calls)
            if f"#{alert_id} " in (c.args.get("text") or "") and "acknowledged" in c.args["text"]
        ),
        None,
    )


async def test_team_page_members_keys_and_rotation_by_admins_only(world):
    genie = world
    await fire(genie, "Checkout error rate above 5%")
    async with genie.sessionmaker.begin() as s:
        old_key = await alerts.team_key(s, await teams.require_team(s, "Payments"))
    alice = await signed_in(genie, "alice@example.com")
    r = await alice.get("/teams/Payments")
    text = page_text(r)
    assert r.status_code == 200
    assert "Alice Smith" in text and "Bob Jones" in text and "C0PAY" in text and "Checkout error" in text
    assert "linked" in text and "not linked" in text  # Alice is, Bob is not
    assert old_key not in r.text and "Rotate" not in text
    assert (await alice.get("/teams/Search")).status_code == 404
    assert (await alice.get("/teams/Nope")).status_code == 404
    assert (await alice.get("/teams/Pay%00ments")).status_code == 404
    r = await alice.post("/teams/Payments/rotate-key", {"confirm": "yes"})
    assert r.status_code == 403
    assert await genie.scalar("SELECT key FROM team_api_key") == old_key

    admin = await signed_in(genie, "root@example.com")
    await admin.get("/teams/Payments")
    r = await admin.post("/teams/Payments/rotate-key", {})
    assert r.status_code == 400 and await genie.scalar("SELECT key FROM team_api_key") == old_key
    r = await admin.post("/teams/Payments/rotate-key", {"confirm": "yes"})
    new_key = await genie.scalar("SELECT key FROM team_api_key")
    assert r.status_code == 200 and new_key != old_key and new_key in r.text
    again = await admin.get("/teams/Payments")
    assert new_key not in again.text  # shown once
    r = await genie.http.get("/v2/alerts", headers={"Authorization": f"GenieKey {old_key}"})
    assert r.status_code in (401, 403)
