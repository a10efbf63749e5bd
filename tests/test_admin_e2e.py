"""The admin pages and /account in headless Chromium: an admin signs in, finds the ambiguous
account, connects it, moves one (through the confirm page) and removes one, and reads it all
on the audit log; a person removes one of their own accounts.

Genie is the real ASGI app served by uvicorn on loopback (the ``genie`` fixture), on each
database; people and accounts are seeded through the services an importer uses. The browser is
Debian's ``chromium`` driven by Playwright, as in test_e2e.py: without it these tests are
skipped, unless ``GENIE_REQUIRE_BROWSER=1`` (CI), where they fail.
"""

from __future__ import annotations

import pytest

from tests.conftest import PASSWORD
from tests.test_admin_pages import world
from tests.test_e2e import CHROMIUM, CHROMIUM_ARGS, HAVE_CHROMIUM, needs_browser


@pytest.fixture
async def chromium(tmp_path):
    assert HAVE_CHROMIUM, f"GENIE_REQUIRE_BROWSER=1 but {CHROMIUM} is missing: apt-get install chromium"
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def _sign_in(page, email: str) -> None:
    await page.get_by_label("Email").fill(email)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in").click()


async def _owner(genie, account_id: int) -> str | None:
    return await genie.scalar(
        'SELECT u.email FROM external_account a JOIN "user" u ON u.id = a.user_id WHERE a.id = :i', i=account_id
    )


@needs_browser
async def test_an_admin_connects_moves_and_removes_accounts_and_reads_the_audit_log(genie, chromium, tmp_path):
    from playwright.async_api import expect

    ids = await world(genie)
    page = await chromium.new_page()

    # Signed out: sent to sign in, and back to the page asked for.
    await page.goto(f"{genie.url}/admin/people")
    await expect(page.locator("h1")).to_have_text("Sign in to Genie")
    await _sign_in(page, "ada@example.com")
    await expect(page.locator("h1")).to_have_text("People and accounts")
    assert page.url == f"{genie.url}/admin/people"

    # Ambiguous: the OpsGenie account whose email two people share, and why.
    await page.locator("#show-ambiguous").click()
    og = page.locator(f"#acct-a-{ids['og_shared']}")
    await expect(og).to_contain_text("oncall@example.com identifies 2 people: alice@example.com, bob@example.com")
    await expect(page.locator("#people-table")).to_have_count(0)
    await expect(page.locator(f"#acct-a-{ids['sentry']}")).to_have_count(0)

    # Connect it to Bob.
    await og.get_by_label("Connect opsgenie og-7 to (email)").fill("bob@example.com")
    await og.get_by_role("button", name="Connect").click()
    await expect(page.locator("#done")).to_contain_text("Connected.")
    await expect(page.locator(f"#acct-a-{ids['og_shared']}")).to_have_count(0)  # no longer ambiguous-and-loose
    assert await _owner(genie, ids["og_shared"]) == "bob@example.com"

    # Everyone: it is Bob's now, connected by Ada.
    await page.locator("#show-all").click()
    await expect(page.locator(f"#acct-a-{ids['og_shared']}")).to_contain_text("by ada@example.com")

    # Move Alice's GitHub account to Carol: the confirm page names both; nothing moves before it.
    gh = page.locator(f"#acct-a-{ids['gh_alice']}")
    await gh.get_by_label("Move github 1001 to (email)").fill("carol@example.com")
    await gh.get_by_role("button", name="Move…", exact=True).click()
    await expect(page.locator("h1")).to_have_text("Move this account?")
    await expect(page.locator("#confirm-from")).to_have_text("Alice Smith (alice@example.com)")
    await expect(page.locator("#confirm-to")).to_have_text("Carol Diaz (carol@example.com)")
    assert await _owner(genie, ids["gh_alice"]) == "alice@example.com"
    await page.screenshot(path=str(tmp_path / "admin-move-confirm.png"), full_page=True)
    await page.locator("#confirm").click()
    await expect(page.locator("#done")).to_contain_text("Moved.")
    await expect(page.locator(f"#acct-a-{ids['gh_alice']}")).to_contain_text("by ada@example.com")
    assert await _owner(genie, ids["gh_alice"]) == "carol@example.com"
    await page.screenshot(path=str(tmp_path / "admin-people.png"), full_page=True)

    # Cancel on a confirm page changes nothing; then remove Alice's PagerDuty account for real.
    pd = page.locator(f"#acct-a-{ids['pd_alice']}")
    await pd.get_by_role("button", name="Remove…", exact=True).click()
    await expect(page.locator("h1")).to_have_text("Remove this connection?")
    await page.get_by_role("link", name="Cancel").click()
    await expect(page.locator("h1")).to_have_text("People and accounts")
    assert await _owner(genie, ids["pd_alice"]) == "alice@example.com"
    await page.locator(f"#acct-a-{ids['pd_alice']}").get_by_role("button", name="Remove…", exact=True).click()
    await expect(page.locator("#confirm-from")).to_have_text("Alice Smith (alice@example.com)")
    await page.locator("#confirm").click()
    await expect(page.locator("#done")).to_contain_text("Removed.")
    assert await _owner(genie, ids["pd_alice"]) is None
    # Now connected to no one, it is listed under Unlinked.
    await page.locator("#show-unlinked").click()
    await expect(page.locator("#loose-table")).to_contain_text("PALICE1")

    # The audit log, from the header: all three, newest first, with who did them.
    await page.get_by_role("banner").get_by_role("link", name="Audit log").click()
    await expect(page.locator("h1")).to_have_text("Audit log")
    rows = page.locator("#audit-table tbody tr")
    await expect(rows.nth(0)).to_contain_text("account.remove")
    await expect(rows.nth(0)).to_contain_text("PALICE1")
    await expect(rows.nth(1)).to_contain_text("account.move")
    await expect(rows.nth(1)).to_contain_text("carol@example.com")
    await expect(rows.nth(2)).to_contain_text("account.connect")
    await expect(rows.nth(2)).to_contain_text("og-7")
    for i in range(3):
        await expect(rows.nth(i)).to_contain_text("ada@example.com (web)")
    # Filtered to GitHub: only the move (and the import that first connected it).
    await page.locator("#filter-provider").select_option("github")
    await page.get_by_role("button", name="Filter").click()
    await expect(rows).to_have_count(2)
    await expect(rows.nth(0)).to_contain_text("moved from alice@example.com")
    await page.screenshot(path=str(tmp_path / "admin-audit.png"), full_page=True)


@needs_browser
async def test_a_person_removes_their_own_account_on_the_account_page(genie, chromium):
    from playwright.async_api import expect

    ids = await world(genie)
    page = await chromium.new_page()
    await page.goto(f"{genie.url}/account")
    await _sign_in(page, "bob@example.com")
    await expect(page.locator("h1")).to_have_text("Bob Jones")
    await expect(page.locator("#admin-links")).to_have_count(0)
    jira = page.locator(f"#account-{ids['jira_bob']}")
    await expect(jira).to_contain_text("bob-jira")
    await expect(page.locator("main")).to_contain_text("U0BOB")  # his Slack link, with Disconnect

    await jira.get_by_role("button", name="Remove…", exact=True).click()
    await expect(page.locator("h1")).to_have_text("Remove this account?")
    await expect(page.locator("#confirm-what")).to_contain_text("bob-jira")
    assert await _owner(genie, ids["jira_bob"]) == "bob@example.com"
    await page.get_by_role("button", name="Remove it").click()

    await expect(page.locator("#removed")).to_have_text("Removed.")
    await expect(page.locator(f"#account-{ids['jira_bob']}")).to_have_count(0)
    await expect(page.get_by_role("button", name="Disconnect")).to_have_count(1)  # Slack untouched
    assert await _owner(genie, ids["jira_bob"]) is None
    assert await genie.scalar("SELECT actor FROM audit_event WHERE action = 'account.remove'") == "bob@example.com"
