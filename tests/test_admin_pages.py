"""The admin pages for people and connected accounts (``/admin/people``, ``/admin/audit``) and
a person's own accounts on ``/account``, driven over HTTP like a browser, on every database.

People and accounts are seeded through the services an importer uses (``external_accounts.upsert``,
``auto_link``, ``connect``); what is checked is what a person reads on the page and what the
database holds afterwards — including, for every refused request, that nothing changed."""

from __future__ import annotations

import asyncio
import re
from urllib.parse import quote

import pytest
from sqlalchemy import event

from bot.services import audit, external_accounts
from bot.services.audit import Who
from bot.services.external_accounts import ReportedAccount
from storage.models import SlackLink
from tests.conftest import PASSWORD, page_text
from tests.hardening import changes, snapshot
from tests.helpers import signed_in

WORKSPACE = "T0GENIE01"


# --- a small world ---------------------------------------------------------------------------------
async def _record(genie, reported: ReportedAccount, *, auto: bool = False, to: str | None = None, via: str = "admin"):
    async with genie.sessionmaker.begin() as s:
        account = await external_accounts.upsert(s, reported)
        if auto:
            await external_accounts.auto_link(s, account, allowed=True, who=Who.cli("slack sync"))
        if to:
            person = await external_accounts.people_with_email(s, to)
            await external_accounts.connect(s, account, person[0], via=via, who=Who.cli("genie accounts import"))
        return account.id


async def world(genie) -> dict[str, int]:
    """Admin Ada; Alice (PagerDuty by email, GitHub by an import); Bob (Slack by email, Jira by
    an import); Carol (nothing, and no password). Unconnected: a Sentry account, and an
    OpsGenie account whose email two people share (ambiguous)."""
    await genie.add_user("ada@example.com", "Ada Admin", admin=True)
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("bob@example.com", "Bob Jones")
    await genie.add_user("carol@example.com", "Carol Diaz", password=None)
    ids = {
        "pd_alice": await _record(
            genie,
            ReportedAccount(
                "pagerduty",
                "PALICE1",
                "acme.pagerduty.com",
                email="alice@example.com",
                email_verified=True,
                display_name="Alice S.",
            ),
            auto=True,
        ),
        "gh_alice": await _record(
            genie,
            ReportedAccount("github", "1001", handle="alice-s", email="oncall@example.com", display_name="Alice"),
            to="alice@example.com",
            via="import",
        ),
        "jira_bob": await _record(
            genie,
            ReportedAccount("jira", "bob-jira", "acme.atlassian.net", email="oncall@example.com", display_name="Bob J"),
            to="bob@example.com",
            via="import",
        ),
        "slack_bob": await _record(
            genie,
            ReportedAccount(
                "slack",
                "U0BOB",
                WORKSPACE,
                handle="bob",
                email="bob@example.com",
                email_verified=True,
                display_name="Bob Jones",
                attrs={"team_id": WORKSPACE},
            ),
            auto=True,
        ),
        "og_shared": await _record(
            genie,
            ReportedAccount(
                "opsgenie",
                "og-7",
                "acme",
                handle="oncall",
                email="oncall@example.com",
                email_verified=True,
                display_name="On-call",
            ),
            auto=True,
        ),
        "sentry": await _record(
            genie, ReportedAccount("sentry", "S-99", "acme", handle="nobody", display_name="Nobody Known")
        ),
    }
    return ids


async def _admin(genie):
    browser = await signed_in(genie, "ada@example.com", "/admin/people")
    assert (await browser.get("/admin/people")).status_code == 200
    return browser


async def _owner(genie, account_id: int) -> str | None:
    return await genie.scalar(
        'SELECT u.email FROM external_account a JOIN "user" u ON u.id = a.user_id WHERE a.id = :i', i=account_id
    )


async def _audit(genie) -> list[tuple]:
    return [
        tuple(r)
        for r in await genie.rows(
            "SELECT action, actor, via, subject_email, provider, external_id FROM audit_event WHERE via = 'web' ORDER BY id"
        )
    ]


def _row(response, key: str) -> str:
    """The visible text of one account's table row (``a:12`` → ``<tr id="acct-a-12">``)."""
    match = re.search(rf'<tr id="acct-{key.replace(":", "-")}"[^>]*>(.*?)</tr>', response.text, re.S)
    assert match, f"no row for {key}"
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(1))).strip()


def _section(response, element_id: str) -> str:
    match = re.search(rf'<table[^>]*id="{element_id}".*?</table>', response.text, re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", match.group(0))) if match else ""


# --- who may see them ------------------------------------------------------------------------------
async def test_signed_out_people_are_sent_to_sign_in_and_come_back(genie):
    await world(genie)
    for path in ("/admin/people?show=unlinked&provider=github", "/admin/audit"):
        response = await genie.http.get(path, follow_redirects=False)
        assert response.status_code == 303
        assert response.headers["location"] == f"/login?next={quote(path, safe='')}"
        browser = genie.browser()
        await browser.get(response.headers["location"])
        signed_in = await browser.post("/login", {"email": "ada@example.com", "password": PASSWORD, "next": path})
        assert signed_in.status_code == 303 and signed_in.headers["location"] == path
        assert (await browser.get(path)).status_code == 200
    # A POST from a signed-out browser changes nothing and goes to sign in.
    browser = genie.browser()
    await browser.get("/login")
    before = await snapshot(genie.sessionmaker)
    refused = await browser.post("/admin/accounts/remove", {"account": "a:1", "confirm": "yes", "from": "2"})
    assert refused.status_code == 303 and refused.headers["location"].startswith("/login?next=")
    assert changes(before, await snapshot(genie.sessionmaker)) == {}


async def test_a_person_who_is_not_an_admin_gets_403_and_changes_nothing(genie):
    ids = await world(genie)
    alice = await signed_in(genie, "alice@example.com")
    for path in ("/admin/people", "/admin/people?show=ambiguous", "/admin/audit"):
        page = await alice.get(path)
        assert page.status_code == 403 and "Admins only" in page_text(page)
        assert "PALICE1" not in page.text and "og-7" not in page.text
    account_page = await alice.get("/account")
    assert 'href="/admin/people"' not in account_page.text  # no admin links for her
    before = await snapshot(genie.sessionmaker)
    for path, form in (
        ("/admin/accounts/connect", {"account": f"a:{ids['sentry']}", "email": "alice@example.com"}),
        (
            "/admin/accounts/move",
            {"account": f"a:{ids['jira_bob']}", "email": "alice@example.com", "confirm": "yes", "from": "3"},
        ),
        ("/admin/accounts/remove", {"account": f"a:{ids['slack_bob']}", "confirm": "yes", "from": "3"}),
    ):
        await alice.get("/account")  # a valid CSRF token: only her not being an admin stops her
        response = await alice.post(path, form)
        assert response.status_code == 403 and "Admins only" in page_text(response), path
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    # The admin's account page links to the admin pages.
    ada = await _admin(genie)
    assert 'href="/admin/people"' in (await ada.get("/account")).text


@pytest.mark.parametrize("path", ["/admin/accounts/connect", "/admin/accounts/move", "/admin/accounts/remove"])
async def test_forged_admin_posts_are_refused_and_change_nothing(genie, path):
    ids = await world(genie)
    ada = await _admin(genie)
    form = {"account": f"a:{ids['pd_alice']}", "email": "carol@example.com", "confirm": "yes", "from": "2"}
    if path.endswith("connect"):
        form["account"] = f"a:{ids['sentry']}"
    before = await snapshot(genie.sessionmaker)
    for attempt, headers in (
        ({}, None),
        ({"csrf_token": "forged"}, None),
        ({"csrf_token": ada.last_csrf}, {"Origin": "https://evil.example"}),
    ):
        response = await ada.post(path, {**form, **attempt}, csrf=False, headers=headers)
        assert response.status_code == 403 and "Please try again" in page_text(response), (path, attempt)
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    # The same form from Genie's own page goes through.
    await ada.get("/admin/people")
    done = await ada.post(path, form, headers={"Origin": genie.url})
    assert done.status_code == 303, page_text(done)
    assert changes(before, await snapshot(genie.sessionmaker)) != {}


# --- what the list shows ----------------------------------------------------------------------------
async def test_the_list_shows_each_account_as_reported_and_how_it_was_connected(genie):
    ids = await world(genie)
    ada = await _admin(genie)
    page = await ada.get("/admin/people")
    pd = _row(page, f"a:{ids['pd_alice']}")
    for part in (
        "pagerduty",
        "acme.pagerduty.com",
        "PALICE1",
        "alice@example.com",
        "Alice S.",
        "email",
        "by slack sync (",
        "UTC",
    ):
        assert part in pd, (part, pd)
    alice = await genie.scalar("SELECT id FROM \"user\" WHERE email = 'alice@example.com'")
    assert f'<tr id="acct-a-{ids["pd_alice"]}" class="person-{alice}">' in page.text  # in Alice's rows
    assert "Alice Smith alice@example.com" in _section(page, "people-table")
    gh = _row(page, f"a:{ids['gh_alice']}")
    for part in ("github", "1001", "alice-s", "oncall@example.com", "import", "by genie accounts import"):
        assert part in gh, (part, gh)
    slack = _row(page, f"a:{ids['slack_bob']}")
    for part in ("Bob Jones", "slack", WORKSPACE, "U0BOB", "bob@example.com", "email", "by slack sync"):
        assert part in slack, (part, slack)
    people = _section(page, "people-table")
    assert "Carol Diaz" in people and "no connected accounts" in people and "cannot sign in yet" in people
    loose = _section(page, "loose-table")
    assert "S-99" in loose and "og-7" in loose and "PALICE1" not in loose and "U0BOB" not in loose
    # Names as the providers reported them are escaped, never markup.
    await _record(genie, ReportedAccount("github", "666", handle="<script>x</script>", display_name="<b>bold</b>"))
    page = await ada.get("/admin/people")
    assert "<b>bold</b>" not in page.text and "&lt;b&gt;bold&lt;/b&gt;" in page.text
    assert "<script>x</script>" not in page.text


async def test_filters_unlinked_ambiguous_provider_and_search(genie):
    ids = await world(genie)
    ada = await _admin(genie)

    unlinked = await ada.get("/admin/people?show=unlinked")
    people = _section(unlinked, "people-table")
    assert "Carol Diaz" in people and "Ada Admin" in people
    assert "Alice Smith" not in people and "Bob Jones" not in people
    loose = _section(unlinked, "loose-table")
    assert "S-99" in loose and "og-7" in loose

    ambiguous = await ada.get("/admin/people?show=ambiguous")
    assert _section(ambiguous, "people-table") == ""
    row = _row(ambiguous, f"a:{ids['og_shared']}")
    assert "ambiguous" in row and "oncall@example.com identifies 2 people: alice@example.com, bob@example.com" in row
    assert "S-99" not in ambiguous.text

    github = await ada.get("/admin/people?provider=github")
    people = _section(github, "people-table")
    assert "Alice Smith" in people and "Bob Jones" not in people and "Carol Diaz" not in people
    # Everyone without a GitHub account, and GitHub accounts connected to no one (none yet).
    no_github = await ada.get("/admin/people?show=unlinked&provider=github")
    people = _section(no_github, "people-table")
    assert "Bob Jones" in people and "Carol Diaz" in people and "Alice Smith" not in people
    assert "S-99" not in no_github.text and 'id="no-loose"' in no_github.text
    slack = await ada.get("/admin/people?show=unlinked&provider=slack")
    assert "Bob Jones" not in _section(slack, "people-table") and "Alice Smith" in _section(slack, "people-table")

    # Search: the person's email or name, or what one of their accounts is called.
    for q, expect, not_expect in (
        ("BOB@", "Bob Jones", "Alice Smith"),
        ("diaz", "Carol Diaz", "Bob Jones"),
        ("alice-s", "Alice Smith", "Bob Jones"),
        ("Bob J", "Bob Jones", "Alice Smith"),
    ):
        found = await ada.get(f"/admin/people?q={quote(q)}")
        assert expect in _section(found, "people-table") and not_expect not in _section(found, "people-table"), q
    nobody = await ada.get("/admin/people?q=nobody")
    assert "S-99" in _section(nobody, "loose-table") and 'id="no-people"' in nobody.text
    # LIKE wildcards are searched for literally.
    assert 'id="no-people"' in (await ada.get("/admin/people?q=%25")).text
    assert 'id="no-people"' in (await ada.get("/admin/people?q=_")).text
    # Nonsense in the query string is ignored, not an error.
    odd = await ada.get("/admin/people?show=evil&provider=%3Cx%3E&page=-3&apage=99999999999")
    assert odd.status_code == 200 and "Alice Smith" in odd.text


async def test_a_page_of_many_people_takes_a_few_queries_and_pages(genie):
    await world(genie)
    ada = await _admin(genie)
    engine = genie.sessionmaker.kw["bind"].sync_engine
    statements: list[str] = []

    def count(conn, cursor, statement, *args):
        # The page's own reads; the outbox worker, the heartbeat monitor, the escalation engine
        # and the channel worker (e-mail and webhook pages) poll meanwhile, on their own.
        if (
            statement.lstrip().upper().startswith("SELECT")
            and "outbox" not in statement
            and "FROM heartbeat" not in statement
            and "alert_escalation" not in statement
            and "FROM page" not in statement
        ):
            statements.append(statement)

    event.listen(engine, "before_cursor_execute", count)
    try:
        await ada.get("/admin/people")
        few = len(statements)
        async with genie.sessionmaker.begin() as s:
            for i in range(70):
                from bot.services import users

                person = await users.add_user(s, f"p{i:03d}@example.com", f"Person {i:03d}")
                account = await external_accounts.upsert(
                    s, ReportedAccount("pagerduty", f"PD{i:03d}", "acme", email=person.email, email_verified=True)
                )
                await external_accounts.auto_link(s, account, allowed=True, who=Who.cli("test"))
                slack = await external_accounts.upsert(
                    s, ReportedAccount("slack", f"U{i:04d}", WORKSPACE, email=person.email, email_verified=True)
                )
                await external_accounts.auto_link(s, slack, allowed=True, who=Who.cli("test"))
        statements.clear()
        first = await ada.get("/admin/people")
        many = len(statements)
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert many == few, (few, many, [x[:80] for x in statements])  # no query per person
    assert many <= 10, statements
    people = _section(first, "people-table")
    assert "p000@example.com" in people and "p045@example.com" in people and "p060@example.com" not in people
    assert 'id="people-next"' in first.text
    second = await ada.get("/admin/people?page=2")
    people = _section(second, "people-table")
    assert "p050@example.com" in people and "p069@example.com" in people and "p000@example.com" not in people
    assert "PD069" in people and "U0069" in people


# --- changes by an admin ----------------------------------------------------------------------------
async def test_connect_move_and_remove_with_confirm_steps_on_the_audit_log(genie):
    ids = await world(genie)
    ada = await _admin(genie)

    # Connect the ambiguous OpsGenie account to Bob.
    await ada.get("/admin/people?show=ambiguous")
    done = await ada.post(
        "/admin/accounts/connect",
        {"account": f"a:{ids['og_shared']}", "email": " Bob@Example.com ", "back": "show=ambiguous"},
    )
    assert done.status_code == 303 and done.headers["location"] == "/admin/people?show=ambiguous&done=connect"
    assert await _owner(genie, ids["og_shared"]) == "bob@example.com"
    shown = await ada.get(done.headers["location"])
    assert "Connected." in page_text(shown) and "og-7" not in _section(shown, "loose-table")
    assert "by ada@example.com" in _row(await ada.get("/admin/people"), f"a:{ids['og_shared']}")

    # Move Alice's GitHub account to Carol: a confirm page that changes nothing, then the move.
    await ada.get("/admin/people")
    confirm = await ada.post("/admin/accounts/move", {"account": f"a:{ids['gh_alice']}", "email": "carol@example.com"})
    assert confirm.status_code == 200
    text = page_text(confirm)
    assert "Move this account?" in text and "From Alice Smith (alice@example.com)" in text
    assert "To Carol Diaz (carol@example.com)" in text and "alice-s" in text
    assert await _owner(genie, ids["gh_alice"]) == "alice@example.com"
    moved = await ada.post(
        "/admin/accounts/move",
        {
            "account": f"a:{ids['gh_alice']}",
            "email": "carol@example.com",
            "from": re.search(r'name="from" value="(\d+)"', confirm.text).group(1),
            "confirm": "yes",
            "back": "",
        },
    )
    assert moved.status_code == 303 and moved.headers["location"] == "/admin/people?done=move"
    assert await _owner(genie, ids["gh_alice"]) == "carol@example.com"

    # Move Bob's Slack account to Alice: the Slack link itself moves (what the gate reads).
    await ada.get("/admin/people")
    confirm = await ada.post("/admin/accounts/move", {"account": f"a:{ids['slack_bob']}", "email": "alice@example.com"})
    assert "From Bob Jones (bob@example.com)" in page_text(confirm)
    bob_id = re.search(r'name="from" value="(\d+)"', confirm.text).group(1)
    moved = await ada.post(
        "/admin/accounts/move",
        {"account": f"a:{ids['slack_bob']}", "email": "alice@example.com", "from": bob_id, "confirm": "yes"},
    )
    assert moved.status_code == 303
    assert (
        await genie.scalar(
            "SELECT u.email FROM slack_link l JOIN \"user\" u ON u.id = l.user_id WHERE l.slack_user_id = 'U0BOB'"
        )
        == "alice@example.com"
    )
    assert await genie.scalar("SELECT via FROM slack_link WHERE slack_user_id = 'U0BOB'") == "admin"

    # Remove Alice's PagerDuty account: confirm first.
    await ada.get("/admin/people")
    confirm = await ada.post("/admin/accounts/remove", {"account": f"a:{ids['pd_alice']}"})
    assert "Remove this connection?" in page_text(confirm) and "Alice Smith (alice@example.com)" in page_text(confirm)
    assert await _owner(genie, ids["pd_alice"]) == "alice@example.com"
    alice_id = re.search(r'name="from" value="(\d+)"', confirm.text).group(1)
    removed = await ada.post(
        "/admin/accounts/remove", {"account": f"a:{ids['pd_alice']}", "from": alice_id, "confirm": "yes"}
    )
    assert removed.status_code == 303
    assert await _owner(genie, ids["pd_alice"]) is None
    assert await genie.scalar("SELECT connected_via FROM external_account WHERE id = :i", i=ids["pd_alice"]) is None

    assert await _audit(genie) == [
        ("account.connect", "ada@example.com", "web", "bob@example.com", "opsgenie", "og-7"),
        ("account.move", "ada@example.com", "web", "carol@example.com", "github", "1001"),
        ("account.move", "ada@example.com", "web", "alice@example.com", "slack", "U0BOB"),
        ("account.remove", "ada@example.com", "web", "alice@example.com", "pagerduty", "PALICE1"),
    ]
    log = page_text(await ada.get("/admin/audit"))
    assert log.index("PALICE1") < log.index("U0BOB") < log.index("1001") < log.index("og-7")  # newest first
    assert "moved from alice@example.com by an admin on the web" in log


async def test_refused_changes_say_why_and_change_nothing(genie):
    ids = await world(genie)
    ada = await _admin(genie)
    before = await snapshot(genie.sessionmaker)
    cases = [
        (
            "/admin/accounts/connect",
            {"account": f"a:{ids['sentry']}", "email": "nobody@example.com"},
            404,
            "No person has the email nobody@example.com.",
        ),
        ("/admin/accounts/connect", {"account": f"a:{ids['sentry']}", "email": ""}, 400, "Give the email"),
        (
            "/admin/accounts/connect",
            {"account": f"a:{ids['pd_alice']}", "email": "bob@example.com"},
            409,
            "is already connected to alice@example.com; move it instead.",
        ),
        (
            "/admin/accounts/connect",
            {"account": "a:999999", "email": "bob@example.com"},
            404,
            "That account does not exist any more",
        ),
        (
            "/admin/accounts/connect",
            {"account": "a:1 OR 1=1", "email": "bob@example.com"},
            404,
            "That account does not exist any more",
        ),
        (
            "/admin/accounts/move",
            {"account": f"a:{ids['sentry']}", "email": "bob@example.com"},
            404,
            "is not connected to anyone; connect it instead.",
        ),
        (
            "/admin/accounts/move",
            {"account": f"a:{ids['pd_alice']}", "email": "alice@example.com"},
            400,
            "is already connected to alice@example.com.",
        ),
        ("/admin/accounts/remove", {"account": f"a:{ids['sentry']}"}, 404, "is not connected to anyone."),
        (
            "/admin/accounts/remove",
            {"account": "l:999999", "confirm": "yes", "from": "1"},
            404,
            "That account does not exist any more",
        ),
    ]
    # A confirm page that showed Bob, confirmed after the account went elsewhere: refused.
    bob = await genie.scalar("SELECT id FROM \"user\" WHERE email = 'bob@example.com'")
    cases += [
        (
            "/admin/accounts/move",
            {"account": f"a:{ids['pd_alice']}", "email": "carol@example.com", "confirm": "yes", "from": str(bob)},
            409,
            "is now connected to alice@example.com, not to whom the page showed",
        ),
        (
            "/admin/accounts/remove",
            {"account": f"a:{ids['pd_alice']}", "confirm": "yes", "from": str(bob)},
            409,
            "is now connected to alice@example.com, not to whom the page showed",
        ),
    ]
    # Slack: a person has one Slack account per workspace; connecting a second is refused.
    stray = await _record(genie, ReportedAccount("slack", "U0STRAY", WORKSPACE, email="stray@example.com"))
    before = await snapshot(genie.sessionmaker)
    cases.append(
        (
            "/admin/accounts/connect",
            {"account": f"a:{stray}", "email": "bob@example.com"},
            409,
            "bob@example.com is already linked to Slack user U0BOB",
        )
    )
    for path, form, status, message in cases:
        await ada.get("/admin/people")
        response = await ada.post(path, {**form, "back": "show=unlinked"})
        assert response.status_code == status, (path, form, response.status_code, page_text(response)[:300])
        text = page_text(response)
        assert message in text and "Nothing was changed." in text, (path, form, text[:400])
        assert "People with no" in text  # the page it came from, filters kept
        assert changes(before, await snapshot(genie.sessionmaker)) == {}, (path, form)


async def test_a_slack_link_made_before_any_sync_can_be_moved_and_removed(genie):
    """A link made with /genie connect has no directory entry yet: the page shows it from the
    link, and changing it records the entry first, so the change goes through the same path."""
    await world(genie)
    alice = await genie.scalar("SELECT id FROM \"user\" WHERE email = 'alice@example.com'")
    async with genie.sessionmaker.begin() as s:
        link = SlackLink(
            user_id=alice,
            workspace_id=WORKSPACE,
            slack_user_id="U0ALICE",
            slack_team_id=WORKSPACE,
            workspace_name="acme",
            slack_name="Alice Smith",
            slack_email="alice@example.com",
        )
        s.add(link)
        await s.flush()
        link_id = link.id
    ada = await _admin(genie)
    page = await ada.get("/admin/people")
    row = _row(page, f"l:{link_id}")
    assert "U0ALICE" in row and "link" in row and "alice@example.com (their own link)" in row
    confirm = await ada.post("/admin/accounts/remove", {"account": f"l:{link_id}"})
    assert "Remove this connection?" in page_text(confirm)
    assert await genie.scalar("SELECT count(*) FROM external_account WHERE external_id = 'U0ALICE'") == 0
    removed = await ada.post(
        "/admin/accounts/remove", {"account": f"l:{link_id}", "from": str(alice), "confirm": "yes"}
    )
    assert removed.status_code == 303
    assert await genie.scalar("SELECT count(*) FROM slack_link WHERE slack_user_id = 'U0ALICE'") == 0
    assert (
        await genie.scalar("SELECT display_name FROM external_account WHERE external_id = 'U0ALICE'") == "Alice Smith"
    )
    assert (await _audit(genie))[-1] == (
        "account.remove",
        "ada@example.com",
        "web",
        "alice@example.com",
        "slack",
        "U0ALICE",
    )
    # Now connected to no one, it is listed as such and can be connected again.
    page = await ada.get("/admin/people?provider=slack")
    assert "U0ALICE" in _section(page, "loose-table")


async def test_moving_a_slack_account_to_someone_linked_in_that_workspace_says_so_and_replaces_it(genie):
    ids = await world(genie)
    alice_slack = await _record(
        genie,
        ReportedAccount(
            "slack",
            "U0ALICE",
            WORKSPACE,
            email="alice@example.com",
            display_name="Alice Smith",
            attrs={"team_id": WORKSPACE},
        ),
        to="alice@example.com",
        via="import",
    )
    ada = await _admin(genie)
    confirm = await ada.post("/admin/accounts/move", {"account": f"a:{ids['slack_bob']}", "email": "alice@example.com"})
    assert confirm.status_code == 200
    warning = page_text(confirm)
    assert f"This also removes alice@example.com's own Slack link to U0ALICE in {WORKSPACE}" in warning
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 2
    bob = re.search(r'name="from" value="(\d+)"', confirm.text).group(1)
    moved = await ada.post(
        "/admin/accounts/move",
        {"account": f"a:{ids['slack_bob']}", "email": "alice@example.com", "from": bob, "confirm": "yes"},
    )
    assert moved.status_code == 303
    assert [
        tuple(r)
        for r in await genie.rows('SELECT l.slack_user_id, u.email FROM slack_link l JOIN "user" u ON u.id = l.user_id')
    ] == [("U0BOB", "alice@example.com")]
    assert [a[0] + " " + a[5] for a in await _audit(genie)] == ["account.remove U0ALICE", "account.move U0BOB"]
    # The Slack user's Home tab is refreshed with the new state, after the change committed.
    await genie.fake.wait_for("views.publish", user_id="U0BOB")
    page = await ada.get("/admin/people?provider=slack")
    assert "U0ALICE" in _section(page, "loose-table") and alice_slack


async def test_two_admins_moving_one_account_at_once_one_wins_and_the_other_is_told(genie):
    ids = await world(genie)
    await genie.add_user("eve@example.com", "Eve Admin", admin=True)
    first, second = await _admin(genie), await signed_in(genie, "eve@example.com", "/admin/people")
    await second.get("/admin/people")
    alice = await genie.scalar("SELECT id FROM \"user\" WHERE email = 'alice@example.com'")
    results = await asyncio.gather(
        *(
            browser.post(
                "/admin/accounts/move",
                {"account": f"a:{ids['pd_alice']}", "email": to, "from": str(alice), "confirm": "yes"},
            )
            for browser, to in ((first, "bob@example.com"), (second, "carol@example.com"))
        )
    )
    statuses = sorted(r.status_code for r in results)
    owner = await _owner(genie, ids["pd_alice"])
    assert statuses == [303, 409], [page_text(r)[:200] for r in results]
    loser = next(r for r in results if r.status_code == 409)
    assert f"is now connected to {owner}, not to whom the page showed" in page_text(loser)
    moves = [r for r in await _audit(genie) if r[0] == "account.move"]
    assert len(moves) == 1 and moves[0][3] == owner


async def test_the_audit_page_filters_and_pages_newest_first(genie):
    await world(genie)
    async with genie.sessionmaker.begin() as s:
        for i in range(60):
            await audit.record(
                s,
                Who.cli("test"),
                "account.connect",
                provider="jira" if i % 2 else "github",
                external_id=f"X{i:02d}",
                detail=f"event number {i:02d}",
            )
    ada = await _admin(genie)
    first = page_text(await ada.get("/admin/audit"))
    assert first.index("event number 59") < first.index("event number 58")
    assert "event number 09" not in first  # 50 a page
    older_link = re.search(r'href="(/admin/audit\?before=\d+)" id="audit-older"', (await ada.get("/admin/audit")).text)
    older = page_text(await ada.get(older_link.group(1).replace("&amp;", "&")))
    assert "event number 09" in older and "event number 59" not in older
    jira = page_text(await ada.get("/admin/audit?provider=jira"))
    assert "event number 59" in jira and "event number 58" not in jira
    alice = page_text(await ada.get("/admin/audit?email=Alice@Example.com"))
    assert "PALICE1" in alice and "1001" in alice and "event number" not in alice and "og-7" not in alice
    empty = await ada.get("/admin/audit?email=nobody@example.com")
    assert 'id="no-events"' in empty.text
    assert (await ada.get("/admin/audit?before=abc&provider=%00")).status_code == 200


# --- a person's own accounts on /account -------------------------------------------------------------
async def test_a_person_sees_every_account_and_removes_their_own(genie):
    ids = await world(genie)
    bob = await signed_in(genie, "bob@example.com")
    page = page_text(await bob.get("/account"))
    assert "U0BOB" in page and "jira" in page and "bob-jira" in page and "Disconnect" in page
    assert "PALICE1" not in page
    before = await snapshot(genie.sessionmaker)
    confirm = await bob.post(f"/account/accounts/{ids['jira_bob']}/remove")
    assert confirm.status_code == 200 and "Remove this account?" in page_text(confirm)
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    done = await bob.post(f"/account/accounts/{ids['jira_bob']}/remove", {"confirm": "yes"})
    assert done.status_code == 303 and done.headers["location"] == "/account?removed=1"
    assert await _owner(genie, ids["jira_bob"]) is None
    after = page_text(await bob.get("/account?removed=1"))
    assert "Removed." in after and "bob-jira" not in after and "U0BOB" in after
    assert await _audit(genie) == [("account.remove", "bob@example.com", "web", "bob@example.com", "jira", "bob-jira")]
    assert "removed on their account page" in page_text(await (await _admin(genie)).get("/admin/audit"))


async def test_a_person_cannot_remove_anyone_elses_account_by_changing_the_id(genie):
    ids = await world(genie)
    bob = await signed_in(genie, "bob@example.com")
    await bob.get("/account")
    before = await snapshot(genie.sessionmaker)
    for target in (ids["pd_alice"], ids["gh_alice"], ids["sentry"], ids["slack_bob"], 999999):
        for form in ({}, {"confirm": "yes"}):
            response = await bob.post(f"/account/accounts/{target}/remove", form)
            assert response.status_code == 404 and "is not yours" in page_text(response), (target, form)
    for junk in ("1e3", "-1", "0x1", "9" * 30, "%20" + str(ids["jira_bob"])):
        response = await bob.post(f"/account/accounts/{junk}/remove", {"confirm": "yes"})
        assert response.status_code in (404, 405), junk
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    # Forged: no token, a bad one, another site's Origin.
    for attempt, headers in (
        ({}, None),
        ({"csrf_token": "forged"}, None),
        ({"csrf_token": bob.last_csrf}, {"Origin": "https://evil.example"}),
    ):
        response = await bob.post(
            f"/account/accounts/{ids['jira_bob']}/remove", {"confirm": "yes", **attempt}, csrf=False, headers=headers
        )
        assert response.status_code == 403
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    # Signed out: sent to sign in, nothing changes.
    stranger = genie.browser()
    await stranger.get("/login")
    response = await stranger.post(f"/account/accounts/{ids['jira_bob']}/remove", {"confirm": "yes"})
    assert response.status_code == 303 and response.headers["location"] == "/login?next=/account"
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
