"""The alert list, its filters, an alert's page and an action on it, and the report's charts,
in headless Chromium (Playwright with Debian's ``chromium``, as in test_e2e.py): skipped
without it, unless ``GENIE_REQUIRE_BROWSER=1`` (CI), where it fails."""

from __future__ import annotations

from tests.test_admin_e2e import _sign_in, chromium  # noqa: F401  (the fixture)
from tests.test_alert_pages import fire, world  # noqa: F401  (the fixture)
from tests.test_e2e import needs_browser


@needs_browser
async def test_a_responder_filters_the_list_opens_an_alert_and_acknowledges_it_on_a_phone(world, chromium):
    from playwright.async_api import expect

    genie = world
    await fire(genie, "Refunds queue slow", priority="P3")
    alert_id = await fire(genie, "Checkout error rate above 5%", priority="P1", tags=["checkout"])
    await fire(genie, "Search index stale", team="Search", priority="P1")
    page = await chromium.new_page(viewport={"width": 390, "height": 844})  # a phone, at night
    await page.goto(f"{genie.url}/alerts")
    await _sign_in(page, "alice@example.com")
    await expect(page.locator("h1")).to_have_text("Alerts")
    rows = page.locator("table.list tbody tr")
    await expect(rows).to_have_count(2)  # Payments' two; Search's is not hers
    await page.locator("#filter-priority").select_option("P1")
    await page.locator("#filter-apply").click()
    await expect(rows).to_have_count(1)
    assert "priority=P1" in page.url
    await page.get_by_role("link", name="Checkout error rate above 5%").click()
    await expect(page.locator("#alert-state")).to_have_text("open")
    await page.locator("#do-acknowledge").click()
    await expect(page.locator("#done")).to_have_text("Acknowledged.")
    await expect(page.locator("#alert-state")).to_have_text("acknowledged")
    await expect(page.locator("#timeline")).to_contain_text("Alice Smith")
    await expect(page.locator("#timeline")).to_contain_text("member of the owning team")
    await page.locator("#note").fill("Rolled back 4.2; watching")
    await page.locator("#do-note").click()
    await expect(page.locator("#timeline")).to_contain_text("Rolled back 4.2; watching")
    assert await genie.scalar("SELECT acknowledged_by FROM alert WHERE id = :i", i=alert_id) == "Alice Smith"
    # the report draws its charts as SVG, with their tables
    await page.goto(f"{genie.url}/reports")
    await expect(page.locator("svg#chart-days")).to_be_visible()
    await expect(page.locator("#teams-table")).to_contain_text("Payments")
