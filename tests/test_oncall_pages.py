"""On call on the web (issue 15): a team's schedule page (``/teams/{name}/oncall``: the next two
weeks drawn as a timeline, overrides and gaps marked, a form to add an override and buttons to
delete one) and its escalation policy page — for the team's members and admins only (another
team's is "not found"), CSRF on every form, bad input shown and changing nothing; and the same
page driven in headless Chromium. On SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import timedelta

import pytest

from bot.services import teams
from bot.services.escalation import StepSpec
from storage.base import utcnow
from tests.conftest import Genie, page_text
from tests.test_admin_e2e import _sign_in, chromium  # noqa: F401 (the fixture)
from tests.test_e2e import needs_browser
from tests.test_oncall_slack import world  # noqa: F401 (the fixture)


@pytest.fixture
async def site(world: Genie) -> Genie:  # noqa: F811
    """test_oncall_slack's world on the real clock (Alice and Bob in Payments with schedule
    "primary", a gap every night 02:00–06:00 UTC), and Carol, in Search only."""
    world.rt.now = utcnow
    await world.add_user("carol@example.com", "Carol Diaz")
    async with world.sessionmaker.begin() as s:
        await teams.add_member(s, "Search", "carol@example.com")
    return world


def _local(delta: timedelta) -> str:
    return f"{(utcnow() + delta):%Y-%m-%dT%H:00}"


async def test_the_schedule_page_shows_the_timeline_and_overrides_are_made_and_deleted(site: Genie):
    browser = site.browser()
    await browser.login("alice@example.com")
    team = await browser.get("/teams/Payments")
    assert team.status_code == 200 and "/teams/Payments/oncall" in team.text
    assert "primary:" in page_text(team)

    page = await browser.get("/teams/Payments/oncall")
    assert page.status_code == 200
    text = page_text(page)
    assert "On call · Payments" in text and "primary" in text and "nobody on call" in text
    assert "Alice Smith" in text and "Bob Jones" in text
    assert 'class="shift gap"' in page.text and 'class="shift"' in page.text

    start, end = _local(timedelta(days=2)), _local(timedelta(days=2, hours=3))
    good = {"schedule": "primary", "email": "bob@example.com", "start": start, "end": end}
    # Bad input: each refused with what is wrong, nothing written.
    for bad, says in [
        ({**good, "end": _local(timedelta(days=1))}, "ends"),
        ({**good, "email": "carol@example.com"}, "is not a member of team Payments"),
        ({**good, "start": "next tuesday"}, "give a date and time"),
        ({**good, "schedule": "secondary"}, "has no schedule named secondary"),
    ]:
        refused = await browser.post("/teams/Payments/oncall/overrides", bad)
        assert refused.status_code == 400 and says in page_text(refused), (bad, page_text(refused)[:300])
    no_csrf = await browser.post("/teams/Payments/oncall/overrides", {**good, "csrf_token": "forged"})
    assert no_csrf.status_code == 403
    assert await site.scalar("SELECT count(*) FROM oncall_override") == 0

    made = await browser.post("/teams/Payments/oncall/overrides", good)
    assert made.status_code == 303 and made.headers["location"] == "/teams/Payments/oncall?done=added"
    page = await browser.get(made.headers["location"])
    assert "Override added." in page_text(page) and 'class="shift override"' in page.text
    override_id, who, by = (
        await site.rows('SELECT o.id, u.email, o.created_by FROM oncall_override o JOIN "user" u ON u.id = o.user_id')
    )[0]
    assert (who, by) == ("bob@example.com", "alice@example.com")

    gone = await browser.post(f"/teams/Payments/oncall/overrides/{override_id}/delete", {"schedule": "primary"})
    assert gone.status_code == 303
    assert await site.scalar("SELECT count(*) FROM oncall_override") == 0
    again = await browser.post(f"/teams/Payments/oncall/overrides/{override_id}/delete", {"schedule": "primary"})
    assert again.status_code == 400 and f"has no override {override_id}" in page_text(again)


async def test_another_teams_schedule_and_policy_are_not_found(site: Genie):
    async with site.sessionmaker.begin() as s:
        from bot.services import escalation

        await escalation.set_policy(
            s, "Payments", "default", [StepSpec(0, "schedule", "primary"), StepSpec(15, "team")], repeat=1
        )
    carol = site.browser()
    await carol.login("carol@example.com")
    for path in ("/teams/Payments/oncall", "/teams/Payments/escalation", "/teams/Nope/oncall"):
        page = await carol.get(path)
        assert page.status_code == 404 and "Bob Jones" not in page.text, path
    await carol.get("/teams/Search/oncall")  # her own team: a token for the form
    start, end = _local(timedelta(days=1)), _local(timedelta(days=1, hours=1))
    refused = await carol.post(
        "/teams/Payments/oncall/overrides",
        {"schedule": "primary", "email": "carol@example.com", "start": start, "end": end},
    )
    assert refused.status_code == 404
    assert await site.scalar("SELECT count(*) FROM oncall_override") == 0
    search = page_text(await carol.get("/teams/Search/oncall"))
    assert "Search has no on-call schedule." in search

    alice = site.browser()
    await alice.login("alice@example.com")
    policy = await alice.get("/teams/Payments/escalation")
    assert policy.status_code == 200
    text = page_text(policy)
    assert "after 0 min, notify the on-call person of schedule primary" in text
    assert "after 15 min, notify everyone in team Payments" in text and "runs again 1 more time" in text
    signed_out = await site.browser().get("/teams/Payments/oncall")
    assert signed_out.status_code == 303 and signed_out.headers["location"].startswith("/login")


async def test_only_an_admin_names_the_schedules_user_group(site: Genie):
    await site.add_user("root@example.com", "Root Admin", admin=True)
    alice = site.browser()
    await alice.login("alice@example.com")
    page = await alice.get("/teams/Payments/oncall")
    assert 'name="usergroup"' not in page.text
    refused = await alice.post("/teams/Payments/oncall/usergroup", {"schedule": "primary", "usergroup": "S0PAY"})
    assert refused.status_code == 403 and "Only a Genie admin" in page_text(refused)

    admin = site.browser()
    await admin.login("root@example.com")
    await admin.get("/teams/Payments/oncall")
    bad = await admin.post("/teams/Payments/oncall/usergroup", {"schedule": "primary", "usergroup": "@payments"})
    assert bad.status_code == 400 and "is not a Slack user group id" in page_text(bad)
    assert await site.scalar("SELECT slack_usergroup FROM oncall_schedule") is None
    saved = await admin.post("/teams/Payments/oncall/usergroup", {"schedule": "primary", "usergroup": "S0PAYONCALL"})
    assert saved.status_code == 303
    assert await site.scalar("SELECT slack_usergroup FROM oncall_schedule") == "S0PAYONCALL"
    assert "S0PAYONCALL" in page_text(await admin.get("/teams/Payments/oncall"))


@needs_browser
async def test_an_override_is_added_and_deleted_in_a_browser(site: Genie, chromium):  # noqa: F811
    from playwright.async_api import expect

    page = await chromium.new_page()
    await page.goto(f"{site.url}/teams/Payments")
    await _sign_in(page, "alice@example.com")
    await page.locator("#oncall-link").click()
    await expect(page.locator("h1")).to_have_text("On call · Payments")
    await expect(page.locator(".timeline .shift.gap").first).to_be_visible()
    await page.locator("#override-email").select_option("bob@example.com")
    await page.locator("#override-start").fill(_local(timedelta(days=3)))
    await page.locator("#override-end").fill(_local(timedelta(days=3, hours=4)))
    await page.locator("#override-add").click()
    await expect(page.locator("#done")).to_have_text("Override added.")
    await expect(page.locator(".timeline .shift.override")).to_have_count(1)
    # An override that ends before it starts: said, and nothing added.
    await page.locator("#override-start").fill(_local(timedelta(days=4)))
    await page.locator("#override-end").fill(_local(timedelta(days=3)))
    await page.locator("#override-add").click()
    await expect(page.locator("#error")).to_be_visible()
    await expect(page.locator(".overrides li")).to_have_count(1)
    await page.locator(".overrides li button").click()
    await expect(page.locator("#done")).to_have_text("Override deleted.")
    await expect(page.locator(".timeline .shift.override")).to_have_count(0)
