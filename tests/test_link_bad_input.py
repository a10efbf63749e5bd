"""Bad input gets a clear answer and changes nothing: forged, tampered, expired, used and
superseded tokens; conflicting links; missing CSRF; unsigned or stale Slack requests; wrong
passwords; and two confirms racing for one link."""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit

import pytest
from sqlalchemy import text

from bot.services.slack_links import LinkTokens
from tests.conftest import ALICE, BOB, MALLORY, PASSWORD, SECRET_KEY, page_text
from tests.helpers import connect_url, link_through_slack, signed_in
from tests.slack_driver import SlackUser


async def _connect_path(genie, who=ALICE) -> str:
    return urlsplit(connect_url(await genie.slack.command(who, "connect"))).path


async def _state(genie):
    links = await genie.rows("SELECT user_id, workspace_id, slack_user_id FROM slack_link ORDER BY id")
    consumed = await genie.scalar("SELECT count(*) FROM link_request WHERE consumed_at IS NOT NULL")
    return links, consumed


# --- tokens ----------------------------------------------------------------------------------
@pytest.mark.parametrize("mangle", ["flip-char", "truncate", "append", "garbage", "other-key", "wrong-salt"])
async def test_tampered_and_forged_tokens_get_a_friendly_page(genie, mangle):
    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie)
    token = path.removeprefix("/link/")
    nonce = await genie.scalar("SELECT nonce FROM link_request")
    bad = {
        "flip-char": token[:-3] + ("A" if token[-3] != "A" else "B") + token[-2:],
        "truncate": token[: len(token) // 2],
        "append": token + "x",
        "garbage": "not-a-token",
        "other-key": LinkTokens(["another-secret-key-which-is-long"], 600).dump(nonce),
        "wrong-salt": __import__("itsdangerous").URLSafeTimedSerializer(SECRET_KEY, salt="other").dumps(nonce),
    }[mangle]
    browser = await signed_in(genie, "alice@example.com", "/account")
    before = await _state(genie)
    page = await browser.get(f"/link/{bad}")
    assert page.status_code == 400
    assert "This link isn't valid" in page_text(page) and "/genie connect" in page_text(page)
    posted = await browser.post(f"/link/{bad}")
    assert posted.status_code == 400 and "/genie connect" in page_text(posted)
    assert await _state(genie) == before


async def test_expired_token_signature_and_row(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie)
    nonce = await genie.scalar("SELECT nonce FROM link_request")
    browser = await signed_in(genie, "alice@example.com", "/account")

    old = LinkTokens([SECRET_KEY], 600, clock=lambda: time.time() - 601).dump(nonce)
    page = await browser.get(f"/link/{old}")
    assert page.status_code == 410 and "This link has expired" in page_text(page)

    # A fresh signature over a row whose expiry passed is expired too (the row is the truth).
    async with genie.sessionmaker.begin() as s:
        from sqlalchemy import text

        await s.execute(text("UPDATE link_request SET expires_at = created_at"))
    page = await browser.get(path)
    assert page.status_code == 410 and "expired" in page_text(page)
    posted = await browser.post(path)
    assert posted.status_code == 410 and "expired" in page_text(posted)
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0


async def test_superseded_link_stops_working(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    first = await _connect_path(genie)
    second = await _connect_path(genie)
    browser = await signed_in(genie, "alice@example.com", first)
    page = await browser.get(first)
    assert page.status_code == 410 and "replaced by a newer one" in page_text(page)
    await browser.get("/account")  # a CSRF token of this session (the 410 page has no form)
    assert (await browser.post(first)).status_code == 410
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0
    await browser.get(second)
    assert (await browser.post(second)).status_code == 200
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 1


async def test_get_and_head_never_change_anything(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie)
    browser = await signed_in(genie, "alice@example.com", path)
    for _ in range(3):
        assert (await browser.get(path)).status_code == 200
        assert (await browser.http.head(path)).status_code == 200
    assert await genie.scalar("SELECT count(*) FROM link_request WHERE consumed_at IS NOT NULL") == 0
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0
    assert (await browser.post(path)).status_code == 200


@pytest.mark.parametrize("genie_settings", [{"GENIE_SECRET_KEY": "brand-new-key-0123456789abcdef," + SECRET_KEY}])
async def test_rotated_key_still_verifies_old_links(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    await _connect_path(genie)
    nonce = await genie.scalar("SELECT nonce FROM link_request")
    old_key_token = LinkTokens([SECRET_KEY], 600).dump(nonce)
    browser = await signed_in(genie, "alice@example.com", "/account")
    await browser.get(f"/link/{old_key_token}")
    assert (await browser.post(f"/link/{old_key_token}")).status_code == 200


# --- conflicts: a clear choice, not an error --------------------------------------------------
async def test_identity_linked_to_someone_else_offers_to_move_it(genie):
    await link_through_slack(genie, ALICE, "bob@example.com")  # Bob confirmed Alice's Slack account by mistake
    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie, ALICE)
    browser = await signed_in(genie, "alice@example.com", path)
    page = await browser.get(path)
    words = page_text(page)
    assert "now connected to Bob Person (bob@example.com)" in words and "Replace and connect" in words

    # A confirm that did not choose to replace changes nothing, and asks again.
    csrf = browser.last_csrf
    refused = await browser.post(path, {"csrf_token": csrf})
    assert refused.status_code == 409 and "Replace and connect" in page_text(refused)
    assert await genie.scalar("SELECT count(*) FROM link_request WHERE consumed_at IS NOT NULL") == 1  # Bob's only
    moved = await browser.post(path, {"replace": "yes", "mine": "yes"})
    assert moved.status_code == 200
    rows = await genie.rows('SELECT u.email, l.slack_user_id FROM slack_link l JOIN "user" u ON u.id = l.user_id')
    assert rows == [("alice@example.com", "U0ALICE")]


async def test_user_already_linked_to_another_slack_user_is_warned(genie):
    await link_through_slack(genie, ALICE, "alice@example.com")
    path = await _connect_path(genie, BOB)
    browser = await signed_in(genie, "alice@example.com", path)
    words = page_text(await browser.get(path))
    assert "already connected to Slack user U0ALICE" in words and "replaces that earlier link" in words
    assert "Careful" in words  # Bob's Slack email is not Alice's
    done = await browser.post(path, {"replace": "yes", "mine": "yes"})
    assert done.status_code == 200
    rows = await genie.rows('SELECT u.email, l.slack_user_id FROM slack_link l JOIN "user" u ON u.id = l.user_id')
    assert rows == [("alice@example.com", "U0BOB")]


async def test_someone_elses_link_warns_about_the_email(genie):
    """The phishing case: Mallory sends Alice her own link."""
    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie, MALLORY)

    async def recorded():
        return await genie.scalar("SELECT slack_email FROM link_request")

    from tests.conftest import eventually

    await eventually(recorded)
    browser = await signed_in(genie, "alice@example.com", path)
    words = page_text(await browser.get(path))
    assert "Careful: this Slack account's email is mallory@evil.example , not alice@example.com" in words
    assert "Mallory Evil" in words


# --- CSRF ------------------------------------------------------------------------------------
async def test_posts_without_valid_csrf_are_refused(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie)
    browser = await signed_in(genie, "alice@example.com", path)
    await browser.get(path)
    for form in ({}, {"csrf_token": "forged"}, {"csrf_token": browser.last_csrf + "x"}):
        refused = await browser.post(path, form, csrf=False)
        assert refused.status_code == 403 and "try again" in page_text(refused).lower()
    # A valid token from another browser (another cookie) does not work here.
    other = genie.browser()
    await other.get("/login")
    assert (await browser.post(path, {"csrf_token": other.last_csrf}, csrf=False)).status_code == 403
    # Nor does a cross-site POST carrying the right token.
    assert (await browser.post(path, headers={"Origin": "https://evil.example"})).status_code == 403
    login = await genie.browser().post("/login", {"email": "alice@example.com", "password": PASSWORD}, csrf=False)
    assert login.status_code == 403 and "genie_session" not in login.headers.get("set-cookie", "")
    assert await _state(genie) == ([], 0)
    assert (await browser.post(path)).status_code == 200


# --- sign-in -----------------------------------------------------------------------------------
async def test_wrong_password_and_unknown_email_say_the_same(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    browser = genie.browser()
    wrong = await browser.login("alice@example.com", "not the password")
    unknown = await browser.login("nobody@example.com", "not the password")
    for response in (wrong, unknown):
        assert response.status_code == 401
        assert "Email or password is incorrect." in page_text(response)
        assert "genie_session" not in response.headers.get("set-cookie", "")
    assert await genie.scalar("SELECT count(*) FROM web_session") == 0


async def test_sign_in_issues_a_new_session_and_deactivated_users_cannot(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    browser = genie.browser()
    # The attacker planted a session cookie before the victim opened the sign-in page.
    await browser.get("/login", headers={"Cookie": "genie_session=attacker-chosen-session-id"})
    ok = await browser.post(
        "/login",
        {"email": "alice@example.com", "password": PASSWORD},
        headers={
            "Cookie": f"genie_csrf={browser.http.cookies['genie_csrf']}; genie_session=attacker-chosen-session-id"
        },
    )
    assert ok.status_code == 303
    issued = ok.headers["set-cookie"].split("genie_session=")[1].split(";")[0]
    assert issued and issued != "attacker-chosen-session-id"
    fixed = await genie.http.get("/account", headers={"Cookie": "genie_session=attacker-chosen-session-id"})
    assert fixed.status_code == 303
    # Deactivated by a path that leaves her sessions in place (an UPDATE by hand or by a tool):
    # a session is honoured only for an active person, so it stops working all the same.
    other = genie.browser()
    assert (await other.login("alice@example.com")).status_code == 303
    assert (await other.get("/account")).status_code == 200
    for active in (False, True):
        async with genie.sessionmaker.begin() as s:
            await s.execute(
                text('UPDATE "user" SET is_active = :a WHERE email = :e'), {"a": active, "e": "alice@example.com"}
            )
        if not active:
            assert (await other.get("/account")).status_code == 303
    async with genie.sessionmaker.begin() as s:
        from bot.services import users

        await users.set_active(s, "alice@example.com", False)
    assert (await browser.get("/account")).status_code == 303  # session no longer valid
    assert (await genie.browser().login("alice@example.com")).status_code == 401


# --- Slack request verification ----------------------------------------------------------------
async def test_unsigned_wrongly_signed_and_stale_slack_requests_get_401(genie):
    attempts = [
        dict(signature=""),
        dict(signature="v0=" + "0" * 64),
        dict(secret="not-the-signing-secret"),
        dict(timestamp=int(time.time()) - 6 * 60),
        dict(timestamp=int(time.time()) + 6 * 60),
    ]
    for kw in attempts:
        response = await genie.slack.command(ALICE, "connect", **kw)
        assert response.status_code == 401, kw
    no_headers = await genie.http.post(
        "/slack/events",
        content=b"command=%2Fgenie&text=connect",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert no_headers.status_code == 401
    assert await genie.scalar("SELECT count(*) FROM link_request") == 0
    assert genie.fake.calls("users.info") == []
    # Within five minutes is fine.
    assert (await genie.slack.command(ALICE, "status", timestamp=int(time.time()) - 4 * 60)).status_code == 200


async def test_enterprise_grid_identity_uses_the_org_id(genie):
    grid_alice = SlackUser("U0ALICE", team_id="T0GRIDWS1", enterprise_id="E0ACMEORG")
    await genie.add_user("alice@example.com", "Alice Smith")
    path = urlsplit(connect_url(await genie.slack.command(grid_alice, "connect"))).path
    browser = await signed_in(genie, "alice@example.com", path)
    await browser.get(path)
    assert (await browser.post(path, {"mine": "yes"})).status_code == 200
    rows = await genie.rows("SELECT workspace_id, slack_team_id, enterprise_id, slack_user_id FROM slack_link")
    assert rows == [("E0ACMEORG", "T0GRIDWS1", "E0ACMEORG", "U0ALICE")]
    # The same user id in an unrelated workspace is a different identity: not linked there.
    status = (await genie.slack.command(SlackUser("U0ALICE", team_id="T0OTHER"), "status")).json()
    assert "not connected" in status["text"]


# --- concurrency -----------------------------------------------------------------------------
async def test_concurrent_confirms_of_one_link_link_once(genie):
    people = [f"person{i}@example.com" for i in range(12)]
    for email in people:
        await genie.add_user(email, email.split("@")[0].title())
    path = await _connect_path(genie)
    browsers = []
    for email in people:
        b = await signed_in(genie, email, path)
        await b.get(path)
        browsers.append(b)
    results = await asyncio.gather(*(b.post(path, {"mine": "yes"}) for b in browsers))
    codes = sorted(r.status_code for r in results)
    assert codes.count(200) == 1, codes
    assert all(c == 410 for c in codes if c != 200), codes
    assert all("already been used" in page_text(r) for r in results if r.status_code == 410)
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 1
    winner = await genie.scalar("SELECT consumed_by_user_id FROM link_request")
    assert await genie.scalar("SELECT user_id FROM slack_link") == winner


async def test_phishing_warning_holds_even_when_the_profile_lookup_after_connect_failed(genie):
    """users.info failed right after /genie connect: the confirm page asks Slack itself."""
    await genie.add_user("alice@example.com", "Alice Smith")
    genie.fake.fail("users.info", status=500, times=3)  # the lookup after the ack (and its retries) fail
    path = await _connect_path(genie, MALLORY)
    await genie.fake.wait_for("users.info")
    from tests.conftest import eventually

    async def settled():
        return len(genie.fake.calls("users.info")) >= 1 and not genie.fake._failures.get("users.info")

    await eventually(settled, timeout=10)
    assert await genie.scalar("SELECT slack_email FROM link_request") is None
    browser = await signed_in(genie, "alice@example.com", path)
    words = page_text(await browser.get(path))
    assert "Careful: this Slack account's email is mallory@evil.example" in words
    assert await genie.scalar("SELECT slack_email FROM link_request") is None  # GET wrote nothing
