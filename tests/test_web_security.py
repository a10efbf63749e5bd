"""Web security, route by route: sign-in rate limits (per account and per client address, shared
by every process through the database), CSRF on every POST, security headers on every
response, and the link-token and session cases not covered in test_link_bad_input.py."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from bot.server import build_asgi_app, make_runtime
from tests.conftest import PASSWORD, page_text


async def _fail_login(genie, email: str, address: str = "203.0.113.7", password: str = "wrong password!"):
    browser = genie.browser()
    await browser.get("/login")
    return await browser.post("/login", {"email": email, "password": password, "next": "/account"},
                              headers={"X-Forwarded-For": address})


async def _failures(genie) -> int:
    return await genie.scalar("SELECT count(*) FROM signin_failure")


# --- sign-in rate limits -------------------------------------------------------------------------
async def test_five_failures_lock_the_account_for_fifteen_minutes_with_a_clear_page(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("bob@example.com", "Bob Jones")
    for _ in range(5):
        assert (await _fail_login(genie, "alice@example.com")).status_code == 401
    # The right password does not help now: nothing is checked while the account is locked.
    locked = await _fail_login(genie, "Alice@Example.com ", password=PASSWORD, address="198.51.100.1")
    assert locked.status_code == 429
    assert "Too many sign-in attempts; try again in 15 minutes." in page_text(locked)
    assert 840 <= int(locked.headers["retry-after"]) <= 900
    assert "genie_session" not in locked.headers.get("set-cookie", "")
    assert await genie.scalar("SELECT count(*) FROM web_session") == 0
    assert await _failures(genie) == 5  # a refused attempt is not a failure: the lock does not grow
    # Another account from the same address is not affected.
    assert (await _fail_login(genie, "bob@example.com", password=PASSWORD)).status_code == 303

    # Ten minutes on, the oldest failure is five minutes from leaving the window.
    async with genie.sessionmaker.begin() as s:
        await s.execute(text("UPDATE signin_failure SET at = at - INTERVAL '10 minutes'")
                        if genie.settings.database_url.startswith("postgresql") else
                        text("UPDATE signin_failure SET at = datetime(at, '-10 minutes')"))
    later = await _fail_login(genie, "alice@example.com", password=PASSWORD)
    assert later.status_code == 429 and "try again in 5 minutes" in page_text(later)
    async with genie.sessionmaker.begin() as s:
        await s.execute(text("UPDATE signin_failure SET at = at - INTERVAL '6 minutes'")
                        if genie.settings.database_url.startswith("postgresql") else
                        text("UPDATE signin_failure SET at = datetime(at, '-6 minutes')"))
    assert (await _fail_login(genie, "alice@example.com", password=PASSWORD)).status_code == 303
    # Success clears the account's failures (and the expired ones are pruned on the next failure).
    assert await genie.scalar("SELECT count(*) FROM signin_failure WHERE address = '203.0.113.7'") == 0


async def test_twenty_failures_from_one_address_lock_that_address_only(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    for i in range(20):
        assert (await _fail_login(genie, f"guess{i}@example.com", address="192.0.2.99")).status_code == 401
    refused = await _fail_login(genie, "alice@example.com", address="192.0.2.99", password=PASSWORD)
    assert refused.status_code == 429 and "Too many sign-in attempts" in page_text(refused)
    # Alice, from her own address, signs in.
    assert (await _fail_login(genie, "alice@example.com", address="192.0.2.1", password=PASSWORD)).status_code == 303
    assert await _failures(genie) == 20


async def test_the_limit_is_shared_by_every_process(genie):
    """Failures seen by one process lock the account in another: they are in the database."""
    await genie.add_user("alice@example.com", "Alice Smith")
    for _ in range(5):
        assert (await _fail_login(genie, "alice@example.com")).status_code == 401
    other = build_asgi_app(await make_runtime(genie.settings, genie.sessionmaker))  # a second process
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=other), base_url=genie.url) as http:
        page = await http.get("/login")
        csrf = page.text.split('name="csrf_token" value="')[1].split('"')[0]
        refused = await http.post("/login", data={"email": "alice@example.com", "password": PASSWORD,
                                                  "csrf_token": csrf})
    assert refused.status_code == 429 and "Too many sign-in attempts" in page_text(refused)
