"""Sign in with Slack (issue 17, item 5): OpenID Connect against the fake Slack on loopback —
its authorize endpoint, ``openid.connect.token`` and its published keys, ID tokens signed with a
test RSA key. The Slack identity used must be the one linked to the person with Slack's
confirmed email equal to theirs, or it is linked now under the one-time link's rule for a
matching confirmed email; anything else is refused and changes nothing. An admin can require
Slack sign-in for everyone but admins."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from bot.services import access, users
from tests.conftest import page_text
from tests.test_admin_e2e import chromium  # noqa: F401  (the fixture)
from tests.test_alert_pages import fire, signed_in, world  # noqa: F401  (the fixture)
from tests.test_e2e import needs_browser

CLIENT_ID, CLIENT_SECRET = "1234.5678", "oidc-client-secret"


@pytest.fixture
def genie_settings(fake_slack):
    fake_slack.oidc_clients = {CLIENT_ID: CLIENT_SECRET}
    yield {
        "GENIE_SLACK_OIDC_CLIENT_ID": CLIENT_ID,
        "GENIE_SLACK_OIDC_CLIENT_SECRET": CLIENT_SECRET,
        "GENIE_SLACK_OIDC_URL": fake_slack.url,
    }
    fake_slack.oidc_user, fake_slack.oidc_forge, fake_slack.oidc_clients = None, False, {}


async def slack_sign_in(genie, browser, next_path: str = "/alerts", *, tamper=None):
    """Click "Sign in with Slack", let Slack answer, come back: the callback's response."""
    start = await browser.get(f"/login/slack?next={next_path}")
    assert start.status_code == 303, start.text
    authorize = start.headers["location"]
    assert authorize.startswith(f"{genie.fake.url}/openid/connect/authorize?")
    query = parse_qs(urlsplit(authorize).query)
    assert query["scope"] == ["openid email profile"] and query["client_id"] == [CLIENT_ID] and query["nonce"]
    back = await browser.http.get(authorize)
    assert back.status_code == 302
    location = back.headers["location"]
    assert location.startswith(f"{genie.url}/login/slack/callback?")
    if tamper:
        location = tamper(location)
    return await browser.get(location)


async def test_a_linked_person_signs_in_with_slack_and_lands_where_they_were_going(world):
    genie = world
    await fire(genie, "Checkout error rate above 5%")
    login = await genie.browser().get("/login?next=/alerts")
    assert "Sign in with Slack" in page_text(login)
    genie.fake.oidc_sign_in_as("U0ALICE", email="Alice@Example.com", name="Alice Smith")
    b = genie.browser()
    r = await slack_sign_in(genie, b)
    assert r.status_code == 303 and r.headers["location"] == "/alerts"
    assert "genie_session=" in r.headers["set-cookie"]
    page = await b.get("/alerts")
    assert page.status_code == 200 and "Checkout error rate above 5%" in page_text(page)
    token_calls = genie.fake.calls("openid.connect.token")
    assert token_calls[-1].args["client_secret"] == CLIENT_SECRET  # the code was exchanged by Genie itself


async def test_an_unlinked_slack_account_is_linked_by_slacks_confirmed_email_and_audited(world):
    genie = world
    genie.fake.oidc_sign_in_as("U0BOB", email="bob@example.com", name="Bob Jones")
    b = genie.browser()
    r = await slack_sign_in(genie, b, "/account")
    assert r.status_code == 303 and r.headers["location"] == "/account"
    rows = await genie.rows(
        "SELECT u.email, l.via, l.email_verified, l.needs_review FROM slack_link l "
        "JOIN \"user\" u ON u.id = l.user_id WHERE l.slack_user_id = 'U0BOB'"
    )
    assert [tuple(r) for r in rows] == [("bob@example.com", "signin", True, False)] or [tuple(r) for r in rows] == [
        ("bob@example.com", "signin", 1, 0)
    ]
    assert (
        await genie.scalar(
            "SELECT count(*) FROM audit_event WHERE action = 'account.connect' AND external_id = 'U0BOB'"
        )
        == 1
    )


async def test_refusals_change_nothing_and_say_why(world):
    """Each case in turn on one server (one Genie start, not eight): the refusal says why, no
    session starts and no link is made."""
    genie = world
    cases = [
        ("unverified", "did not give a confirmed email"),
        ("nobody", "No Genie account has the email"),
        ("other_email", "connected to the Genie account alice@example.com"),
        ("forged", "could not be verified"),
        ("state", "didn't start in this browser"),
        ("no_cookie", "didn't start in this browser"),
        ("denied", "cancelled or refused"),
        ("deactivated", "deactivated"),
    ]
    for case, says in cases:
        genie.fake.oidc_forge = case == "forged"
        user, email, verified = "U0BOB", "bob@example.com", case != "unverified"
        if case == "nobody":
            user, email = "U0NEW", "newcomer@example.com"
        elif case in ("other_email", "deactivated"):
            user, email = "U0ALICE", "mallory@example.com" if case == "other_email" else "alice@example.com"
        if case == "deactivated":
            async with genie.sessionmaker.begin() as s:
                await users.set_active(s, "alice@example.com", False)
        genie.fake.oidc_sign_in_as(user, email=email, email_verified=verified)
        if case == "denied":
            genie.fake.oidc_user = None
        links = await genie.scalar("SELECT count(*) FROM slack_link")
        b = genie.browser()
        if case == "no_cookie":
            start = await b.get("/login/slack")
            back = await b.http.get(start.headers["location"])
            r = await genie.browser().get(back.headers["location"])  # another browser brings the code
        else:
            r = await slack_sign_in(genie, b, tamper=_tamper_state if case == "state" else None)
        assert r.status_code in (400, 403), (case, r.status_code)
        assert says in page_text(r), (case, page_text(r))
        assert "genie_session=" not in r.headers.get("set-cookie", ""), case
        assert await genie.scalar("SELECT count(*) FROM slack_link") == links, case
        assert await genie.scalar("SELECT count(*) FROM web_session") == 0, case


def _tamper_state(url: str) -> str:
    return url.replace("state=", "state=x")


async def test_an_admin_can_require_slack_sign_in_and_passwords_then_sign_in_admins_only(world):
    genie = world
    async with genie.sessionmaker.begin() as s:
        await access.set_workspace_setting(s, "*", "require_slack_signin", "yes")
    b = genie.browser()
    await b.get("/login")
    r = await b.post("/login", {"email": "alice@example.com", "password": "wrong password", "next": "/alerts"})
    assert r.status_code == 401  # a wrong password says only that: nothing about who must use Slack
    r = await b.post(
        "/login",
        {"email": "alice@example.com", "password": __import__("tests.conftest").conftest.PASSWORD, "next": "/alerts"},
    )
    assert r.status_code == 403 and "requires Sign in with Slack" in page_text(r)
    assert await genie.scalar("SELECT count(*) FROM web_session") == 0
    admin = await signed_in(genie, "root@example.com")
    assert (await admin.get("/alerts")).status_code == 200
    genie.fake.oidc_sign_in_as("U0ALICE", email="alice@example.com")
    r = await slack_sign_in(genie, genie.browser())
    assert r.status_code == 303


@needs_browser
async def test_sign_in_with_slack_in_headless_chromium(world, chromium):
    from playwright.async_api import expect

    genie = world
    await fire(genie, "Checkout error rate above 5%")
    genie.fake.oidc_sign_in_as("U0BOB", email="bob@example.com", name="Bob Jones")
    page = await chromium.new_page()
    await page.goto(f"{genie.url}/alerts")
    await expect(page.locator("h1")).to_have_text("Sign in to Genie")
    await page.locator("#slack-signin").click()  # → Slack (the fake) → back, signed in
    await expect(page.locator("h1")).to_have_text("Alerts")
    assert page.url == f"{genie.url}/alerts"
    await expect(page.locator("table.list")).to_contain_text("Checkout error rate above 5%")
