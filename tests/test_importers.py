"""``genie pagerduty import`` and ``genie opsgenie import`` against fakes of those APIs on
loopback: every page read (and a rate-limited page asked again, never skipped), accounts
recorded, linked only where one person has the email, the rest reported; a bad key, a server
that keeps failing or a body that is not JSON stops the run with one line and changes nothing.
The API keys never appear in anything Genie prints."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import func, select

from bot.importers import opsgenie, pagerduty
from bot.importers.http import SourceError
from bot.services import external_accounts, users
from bot.services.audit import Who
from bot.services.external_accounts import ReportedAccount
from storage.models import AuditEvent, ExternalAccount, User
from tests.fake_opsgenie import FakeOpsGenie
from tests.fake_pagerduty import FakePagerDuty
from tests.test_cli import Cli, Run, _with_session, as_json, ok, user_error

PD_KEY = "pd-secret-key-never-printed-7f3a"
OG_KEY = "og-secret-key-never-printed-91c2"


@pytest.fixture(scope="session")
def pd_server():
    fake = FakePagerDuty(PD_KEY, max_limit=2).start()
    yield fake
    fake.stop()


@pytest.fixture
def pd(pd_server: FakePagerDuty) -> FakePagerDuty:
    pd_server.reset()
    return pd_server


@pytest.fixture(scope="session")
def og_server():
    fake = FakeOpsGenie(OG_KEY, max_limit=2).start()
    yield fake
    fake.stop()


@pytest.fixture
def og(og_server: FakeOpsGenie) -> FakeOpsGenie:
    og_server.reset()
    return og_server


class ImportCli(Cli):
    """``genie`` with the API keys in its environment; fails a test that prints a key."""

    def __call__(self, *args: str, stdin: str | None = None, **env: str) -> Run:
        saved = dict(self.env)
        self.env.update(env)
        try:
            run = super().__call__(*args, stdin=stdin)
        finally:
            self.env = saved
        for key in (PD_KEY, OG_KEY, "wrong-key-also-secret"):
            assert key not in run.stdout and key not in run.stderr, f"an API key was printed:\n{run}"
        return run


@pytest.fixture
def cli(db_url: str, tmp_path: Path) -> ImportCli:
    work = tmp_path / "work"
    work.mkdir()
    c = ImportCli(db_url, work)
    c.env["PAGERDUTY_API_KEY"] = PD_KEY
    c.env["OPSGENIE_API_KEY"] = OG_KEY
    return c


async def add_people(db_url: str, *emails: str) -> None:
    async def work(session):
        for email in emails:
            await users.add_user(session, email, email.split("@")[0].title())

    await _with_session(db_url, work)


async def count(db_url: str, model, *where) -> int:
    async def work(session):
        return await session.scalar(select(func.count()).select_from(model).where(*where))

    return await _with_session(db_url, work)


async def connections(db_url: str, provider: str) -> dict[str, tuple[str | None, str | None]]:
    """external_id -> (person's email, via)."""

    async def work(session):
        rows = await session.execute(
            select(ExternalAccount, User.email)
            .outerjoin(User, User.id == ExternalAccount.user_id)
            .where(ExternalAccount.provider == provider)
        )
        return {a.external_id: (email, a.connected_via) for a, email in rows}

    return await _with_session(db_url, work)


def line_with(run: Run, *words: str) -> str:
    lines = [line for line in run.stdout.splitlines() if all(w in line for w in words)]
    assert len(lines) == 1, f"expected one line with {words}:\n{run}"
    return lines[0]


def seed_pagerduty(pd: FakePagerDuty) -> None:
    pd.add_user("PALICE1", "Alice Smith", "alice@example.com", role="admin")
    pd.add_user("PBOB001", "Bob Jones", "Bob@Example.COM")  # case differs from Genie's bob@example.com
    pd.add_user("PCAROL1", "Carol Responder", "carol@example.com", role="limited_user")  # Responder: a member
    pd.add_user("PSAM001", "Sam Shared", "sam@example.com")  # two people have this email
    pd.add_user("PERIN01", "Erin New", "erin@example.com")  # nobody has it
    pd.add_user("POLIVE1", "Olive Observer", "olive@example.com", role="observer")
    pd.add_user("PGRACE1", "Grace Invited", "grace@example.com", invitation_sent=True)


async def seed_people(db_url: str) -> None:
    await add_people(
        db_url,
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
        "sam@example.com",
        "dana@example.com",
        "olive@example.com",
        "grace@example.com",
    )

    async def dana_reports_sams_email(session):  # an admin connected a GitHub account reporting sam's email
        dana = await users.require_user(session, "dana@example.com")
        account = await external_accounts.upsert(session, ReportedAccount("github", "dana-gh", email="sam@example.com"))
        await external_accounts.connect(session, account, dana, via="admin", who=Who.cli("test"))

    await _with_session(db_url, dana_reports_sams_email)


# --- PagerDuty -------------------------------------------------------------------------------
async def test_pagerduty_import_records_every_user_links_unique_emails_and_reports_the_rest(
    cli: ImportCli, pd: FakePagerDuty, db_url: str
):
    seed_pagerduty(pd)
    await seed_people(db_url)

    # Turned off: everyone is recorded, nobody is connected, and the report says why.
    off = ok(
        cli("pagerduty", "import", "--url", pd.url, "--no-auto-link"), "PagerDuty acme.pagerduty.com: 7 users read"
    )
    assert "linked 0," in off.stdout
    assert "auto-link by email is off here" in line_with(off, "PALICE1")
    assert await connections(db_url, "pagerduty") == {
        u: (None, None) for u in ("PALICE1", "PBOB001", "PCAROL1", "PSAM001", "PERIN01", "POLIVE1", "PGRACE1")
    }

    # On, with the first page rate-limited once: the same page is asked for again.
    pd.reset()
    seed_pagerduty(pd)
    pd.fail(
        "/users",
        status=429,
        headers={"ratelimit-reset": "1"},
        body='{"error": {"message": "Rate Limit Exceeded", "code": 2020}}',
    )
    run = ok(cli("pagerduty", "import", "--url", pd.url), "7 users read (5 requests, waited out 1 rate limits)")
    assert [r.query["offset"] for r in pd.seen("/users")] == ["0", "0", "2", "4", "6"]
    assert all(r.headers["accept"] == "application/vnd.pagerduty+json;version=2" for r in pd.seen("/users"))
    assert "linked 3, already 0, ambiguous 1, unmatched 1, conflict 0, unlinked 0, skipped 2" in run.stdout
    assert line_with(run, "linked ", "PALICE1").endswith("-> alice@example.com")
    assert line_with(run, "linked ", "PBOB001").endswith("-> bob@example.com")
    assert line_with(run, "linked ", "PCAROL1").endswith("-> carol@example.com")
    assert "2 people have that email: dana@example.com, sam@example.com" in line_with(run, "ambiguous", "PSAM001")
    assert "no person has that email" in line_with(run, "unmatched", "PERIN01")
    assert line_with(run, "skipped", "POLIVE1").endswith(": a guest")
    assert line_with(run, "skipped", "PGRACE1").endswith(": email not confirmed by the provider")

    linked = await connections(db_url, "pagerduty")
    assert linked["PALICE1"] == ("alice@example.com", "email")
    assert linked["PBOB001"] == ("bob@example.com", "email")
    assert linked["PCAROL1"] == ("carol@example.com", "email")
    assert {linked[u] for u in ("PSAM001", "PERIN01", "POLIVE1", "PGRACE1")} == {(None, None)}

    # The next run: the linked ones are "already"; a user PagerDuty no longer lists has departed
    # and loses the link; the ambiguous one is shown in `accounts list --ambiguous`.
    pd.remove_user("PBOB001")
    report = as_json(cli("pagerduty", "import", "--url", pd.url, "--json"))
    assert report["tenant"] == "acme.pagerduty.com" and report["read"] == 6
    assert sorted(e["id"] for e in report["already"]) == ["PALICE1", "PCAROL1"]
    assert report["linked"] == []
    assert report["departed"] == [
        {
            "id": "PBOB001",
            "handle": None,
            "name": "Bob Jones",
            "email": "bob@example.com",
            "link_removed": True,
            "person": "bob@example.com",
        }
    ]
    assert report["ambiguous"][0]["candidates"] == ["dana@example.com", "sam@example.com"]
    assert (await connections(db_url, "pagerduty"))["PBOB001"] == (None, None)
    assert [a["external_id"] for a in as_json(cli("accounts", "list", "--ambiguous", "--json"))] == ["PSAM001"]

    # The audit log says who did it: the command, by the operator, via the CLI.
    log = as_json(cli("audit", "--provider", "pagerduty", "--json"))
    assert [e["action"] for e in log] == [
        "import.run",
        "account.departed",
        "import.run",
        "account.connect",
        "account.connect",
        "account.connect",
        "import.run",
    ]
    assert all(e["actor"].startswith("genie pagerduty import (") and e["via"] == "cli" for e in log)
    assert log[0]["detail"].startswith("PagerDuty acme.pagerduty.com: 6 users read: 0 linked, 2 already")
    assert {e["person"] for e in log if e["action"] == "account.connect"} == {
        "alice@example.com",
        "bob@example.com",
        "carol@example.com",
    }


async def test_pagerduty_bad_key_failing_server_or_garbage_change_nothing(
    cli: ImportCli, pd: FakePagerDuty, db_url: str
):
    seed_pagerduty(pd)
    await add_people(db_url, "alice@example.com")

    user_error(
        cli("pagerduty", "import", "--url", pd.url, PAGERDUTY_API_KEY="wrong-key-also-secret"),
        "PagerDuty refused the API key (HTTP 401: Unauthorized)",
        "check PAGERDUTY_API_KEY",
    )
    user_error(
        cli("pagerduty", "import", "--url", pd.url, "--key-env", "MY_PD_KEY", MY_PD_KEY="wrong-key-also-secret"),
        "refused the API key",
        "check MY_PD_KEY",
    )
    user_error(cli("pagerduty", "import", "--url", pd.url, PAGERDUTY_API_KEY=""), "no API key: set PAGERDUTY_API_KEY")
    user_error(cli("pagerduty", "import", "--url", pd.url, "--key", "not-a-real-key"), "unrecognized arguments")
    user_error(cli("pagerduty", "import", "--url", "http://pagerduty.example.com"), "must use https")
    user_error(cli("pagerduty", "import", "--url", pd.url, "--tenant", "t" * 101), "tenant", "100 characters")

    # Page 1 arrives, then page 2 keeps failing: page 1 is not written either.
    pd.fail("/users", status=503, times=10, after=1)
    user_error(
        cli("pagerduty", "import", "--url", pd.url),
        "PagerDuty kept failing",
        "HTTP 503 after 4 attempts",
        "nothing was imported",
    )
    pd.reset()
    seed_pagerduty(pd)
    pd.fail("/users", status=200, body="<html>Service Unavailable</html>", after=1)
    user_error(cli("pagerduty", "import", "--url", pd.url), "not JSON", "GET /users")

    assert await count(db_url, ExternalAccount) == 0
    assert await count(db_url, AuditEvent) == 0

    # The key on standard input (and none in the environment) works.
    ok(
        cli("pagerduty", "import", "--url", pd.url, "--key-stdin", stdin=PD_KEY + "\n", PAGERDUTY_API_KEY=""),
        "7 users read",
        "linked 1,",
    )
    assert await count(db_url, ExternalAccount) == 7


async def test_pagerduty_reader_retries_a_5xx_and_refuses_odd_answers(pd: FakePagerDuty):
    seed_pagerduty(pd)
    pd.fail("/users", status=500, after=2)
    directory = await pagerduty.fetch(PD_KEY, base_url=pd.url)
    assert [a.external_id for a in directory.accounts][:2] == ["PALICE1", "PBOB001"]
    assert len(directory.accounts) == 7 and directory.requests == 5
    alice = directory.accounts[0]
    assert (alice.email, alice.email_verified, alice.is_guest, alice.tenant) == (
        "alice@example.com",
        True,
        False,
        "acme.pagerduty.com",
    )
    assert {a.external_id for a in directory.accounts if a.is_guest} == {"POLIVE1"}

    pd.fail("/users", status=200, body='{"users": "not a list"}')
    with pytest.raises(SourceError, match="no 'users' list"):
        await pagerduty.fetch(PD_KEY, base_url=pd.url)
    pd.fail("/users", status=200, body="[1, 2]")
    with pytest.raises(SourceError, match="not a JSON object"):
        await pagerduty.fetch(PD_KEY, base_url=pd.url)
    pd.fail("/users", status=400, body='{"error": {"message": "Invalid Input Provided", "code": 2001}}')
    with pytest.raises(SourceError, match="HTTP 400: Invalid Input Provided"):
        await pagerduty.fetch(PD_KEY, base_url=pd.url)
    with pytest.raises(SourceError, match="contains spaces or control characters"):
        await pagerduty.fetch("abc\r\nX-Evil: 1", base_url=pd.url)
    with pytest.raises(SourceError, match="cannot reach PagerDuty"):
        await pagerduty.fetch(PD_KEY, base_url="http://127.0.0.1:9")
    directory = await pagerduty.fetch(PD_KEY, base_url=pd.url, tenant="acme-eu")
    assert {a.tenant for a in directory.accounts} == {"acme-eu"}


async def test_pagerduty_reader_reads_up_to_the_api_ceiling_and_refuses_a_partial_list():
    """Classic pagination serves offset + limit ≤ 10,000: an account of exactly 10,000 users is
    read whole; one more cannot be, and a partial list must not be imported (it would mark the
    users past the ceiling as departed)."""
    fake = FakePagerDuty(PD_KEY).start()
    try:
        for n in range(10_000):
            fake.add_user(f"P{n:06d}", f"Person {n}", f"p{n}@example.com")
        directory = await pagerduty.fetch(PD_KEY, base_url=fake.url)
        assert len(directory.accounts) == 10_000 and directory.requests == 100
        fake.add_user("PLAST01", "One Too Many", "last@example.com")
        with pytest.raises(SourceError, match="at most 10,000 users .* nothing was imported"):
            await pagerduty.fetch(PD_KEY, base_url=fake.url)
        assert not [r for r in fake.seen("/users") if int(r.query["offset"]) + int(r.query["limit"]) > 10_000]
    finally:
        fake.stop()


# --- OpsGenie --------------------------------------------------------------------------------
def seed_opsgenie(og: FakeOpsGenie) -> None:
    og.add_user("u-alice", "alice@example.com", "Alice Smith", role="Admin")
    og.add_user("u-bob", "Bob@Example.com", "Bob Jones")  # nobody in Genie yet
    og.add_user("u-carol", "carol@example.com", "Carol Unverified", verified=False)
    og.add_user("u-dave", "dave@example.com", "Dave Blocked", blocked=True)
    og.add_user("u-stan", "stan@example.com", "Stan Stakeholder", role="Stakeholder")
    og.add_team(
        "t-pay",
        "Payments",
        [("u-alice", "alice@example.com", "admin"), (None, "bob@example.com", "user"), ("u-carol", None, "user")],
    )
    og.add_team("t-search", "Search", [("u-stan", "stan@example.com", "user")])


async def test_opsgenie_team_moves_to_genie_in_one_command(cli: ImportCli, og: FakeOpsGenie, db_url: str):
    seed_opsgenie(og)
    await add_people(db_url, "alice@example.com")

    user_error(
        cli("opsgenie", "import", "--url", og.url, "--create-people", "--no-auto-link"),
        "--create-people",
        "--no-auto-link",
    )
    og.fail(
        "/v2/users", status=429, after=1, headers={"X-RateLimit-State": "THROTTLED", "X-RateLimit-Period-In-Sec": "1"}
    )
    run = ok(
        cli("opsgenie", "import", "--url", og.url, "--teams", "--create-people"),
        "OpsGenie acme-ops: 5 users read",
        "waited out 1 rate limits",
    )
    # Every page from the --url given (never from the host in paging.next), the throttled one twice.
    assert [r.query["offset"] for r in og.seen("/v2/users")] == ["0", "2", "2", "4"]
    assert line_with(run, "linked ", "u-alice").endswith("-> alice@example.com")
    assert "created    bob@example.com (no password" in line_with(run, "created ", "u-bob")
    assert line_with(run, "skipped", "u-carol").endswith("email not confirmed by the provider")
    assert line_with(run, "skipped", "u-dave").endswith("deleted or deactivated")
    assert line_with(run, "skipped", "u-stan").endswith("a guest")
    assert "team       Payments created with alice@example.com, bob@example.com" in run.stdout
    assert "team       Search created with no members" in run.stdout
    assert "Payments: u-carol left out (not connected to a Genie person)" in run.stdout
    assert "Search: stan@example.com left out (not connected to a Genie person)" in run.stdout

    users = cli.users()
    assert set(users) == {"alice@example.com", "bob@example.com"}
    assert users["bob@example.com"]["can_sign_in"] is False and users["bob@example.com"]["name"] == "Bob Jones"
    assert as_json(cli("team", "list", "--json")) == [
        {"name": "Payments", "channel": None, "members": ["alice@example.com", "bob@example.com"]},
        {"name": "Search", "channel": None, "members": []},
    ]
    assert await connections(db_url, "opsgenie") == {
        "u-alice": ("alice@example.com", "email"),
        "u-bob": ("bob@example.com", "import"),
        "u-carol": (None, None),
        "u-dave": (None, None),
        "u-stan": (None, None),
    }

    # Again: nothing new; the teams are as they were.
    report = as_json(cli("opsgenie", "import", "--url", og.url, "--teams", "--create-people", "--json"))
    assert sorted(e["id"] for e in report["already"]) == ["u-alice", "u-bob"]
    assert report["people_created"] == [] and report["teams_created"] == []
    assert report["teams_unchanged"] == ["Payments", "Search"]
    assert all(r.headers["authorization"] == f"GenieKey {OG_KEY}" for r in og.seen())
    assert [e["action"] for e in as_json(cli("audit", "--action", "import.run", "--json"))] == ["import.run"] * 2


async def test_opsgenie_errors_change_nothing(cli: ImportCli, og: FakeOpsGenie, db_url: str):
    seed_opsgenie(og)
    user_error(
        cli("opsgenie", "import", "--url", og.url, OPSGENIE_API_KEY="wrong-key-also-secret"),
        "OpsGenie refused the API key (HTTP 401: Could not authenticate)",
        "OPSGENIE_API_KEY",
    )
    og.fail("/v2/teams/t-search", status=502, times=10)
    user_error(
        cli("opsgenie", "import", "--url", og.url, "--teams"),
        "OpsGenie kept failing",
        "GET /v2/teams/t-search: HTTP 502",
    )
    assert await count(db_url, ExternalAccount) == 0
    assert await count(db_url, AuditEvent) == 0
    assert cli.users() == {}


async def test_opsgenie_reader(og: FakeOpsGenie):
    seed_opsgenie(og)
    og.fail("/v2/account", status=403, body='{"message": "Forbidden", "took": 0.0}')
    with pytest.raises(SourceError, match="give --tenant NAME"):
        await opsgenie.fetch(OG_KEY, base_url=og.url)
    directory = await opsgenie.fetch(OG_KEY, base_url=og.url, tenant="ops-eu", teams=True)
    assert directory.tenant == "ops-eu" and not og.seen("/v2/account")[1:]
    bob = next(a for a in directory.accounts if a.external_id == "u-bob")
    assert (bob.handle, bob.email, bob.email_verified, bob.display_name) == (
        "Bob@Example.com",
        "Bob@Example.com",
        True,
        "Bob Jones",
    )
    assert [(t.name, [m.username or m.user_id for m in t.members]) for t in directory.teams] == [
        ("Payments", ["alice@example.com", "bob@example.com", "u-carol"]),
        ("Search", ["stan@example.com"]),
    ]
    og.fail(
        "/v2/users", status=200, body='{"data": [], "paging": {"next": "https://api.opsgenie.com/v2/users?offset=0"}}'
    )
    with pytest.raises(SourceError, match="does not move forward"):
        await opsgenie.fetch(OG_KEY, base_url=og.url, tenant="x")
    with pytest.raises(SourceError, match="not a web address of the OpsGenie API"):
        await opsgenie.fetch(OG_KEY, base_url="ftp://api.opsgenie.com")
    assert json.dumps([a.external_id for a in directory.accounts]) == json.dumps(
        ["u-alice", "u-bob", "u-carol", "u-dave", "u-stan"]
    )


def test_log_redaction_knows_both_key_headers():
    from bot.logs import redact

    line = redact(f"headers: Authorization: Token token={PD_KEY}, authorization: GenieKey {OG_KEY}")
    assert PD_KEY not in line and OG_KEY not in line and line.count("[redacted]") == 2
