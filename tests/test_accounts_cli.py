"""``genie accounts import|list|connect|remove`` and ``genie audit``, as an operator runs them:
a file is checked whole and applied all or nothing; every change is on the audit log with who
made it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bot.services import external_accounts, imports, users
from bot.services.audit import Who
from bot.services.errors import InvalidInput
from bot.services.external_accounts import ReportedAccount
from tests.test_cli import Cli, _with_session, as_json, cli, ok, user_error  # noqa: F401 (cli: the fixture)

HEADER = "email,provider,external_id,tenant,handle,display_name,account_email\n"


def write(cli: Cli, name: str, text: str) -> str:
    path = Path(cli.cwd) / name
    path.write_text(text, encoding="utf-8")
    return name


def snapshot(cli: Cli) -> tuple[list, list]:
    return as_json(cli("accounts", "list", "--json")), as_json(cli("audit", "--json"))


async def seed(db_url: str) -> None:
    async def work(session):
        for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
            await users.add_user(session, email, email.split("@")[0].title())

    await _with_session(db_url, work)


async def test_import_file_all_or_nothing_then_connect_move_remove_and_the_audit_log(cli: Cli, db_url: str):
    await seed(db_url)
    csv_file = write(
        cli,
        "accounts.csv",
        HEADER + "alice@example.com,github,1234,,alice-s,Alice S,alice@users.noreply.github.com\n"
        "Bob@Example.com,jira,5b10ac8d,acme.atlassian.net,bob,Bob Jones,\n"
        "\n"
        "alice@example.com,pagerduty,PALICE1,acme.pagerduty.com,,,\n",
    )
    run = ok(cli("accounts", "import", csv_file), "accounts.csv: 3 connected, 0 moved, 0 already")
    assert "line 2: connected github account 1234 to alice@example.com" in run.stdout
    assert "line 3: connected jira account 5b10ac8d in acme.atlassian.net to bob@example.com" in run.stdout
    assert "line 5: connected pagerduty account PALICE1 in acme.pagerduty.com to alice@example.com" in run.stdout
    listed = {a["external_id"]: a for a in as_json(cli("accounts", "list", "--json"))}
    assert set(listed) == {"1234", "5b10ac8d", "PALICE1"}
    assert (listed["1234"]["person"], listed["1234"]["via"], listed["1234"]["handle"], listed["1234"]["email"]) == (
        "alice@example.com",
        "import",
        "alice-s",
        "alice@users.noreply.github.com",
    )
    assert listed["5b10ac8d"]["person"] == "bob@example.com"
    # Running the same file again changes nothing and says so.
    ok(cli("accounts", "import", csv_file), "accounts.csv: 0 connected, 0 moved, 3 already")

    # Every bad file: exit 1, one line naming the rows, and nothing changed.
    before = snapshot(cli)
    bad = write(
        cli,
        "bad.csv",
        HEADER + "carol@example.com,github,octocat,,,,\n"
        "nobody@example.com,github,ghost,,,,\n"
        "carol@example.com,GitHub,octocat,,,,\n"
        "bob@example.com,github,1234,,,,\n"
        "bob@example.com,Git Hub!,x,,,,\n"
        "bob@example.com,slack,U0BOB,T0123,,,\n"
        "bob@example.com,jira,,acme.atlassian.net,,,\n",
    )
    line = user_error(cli("accounts", "import", bad), "bad.csv: nothing imported, 6 problems")
    assert "line 7: Slack accounts are connected by their owner" in line
    assert "line 3: no person with email nobody@example.com" in line
    assert "line 2 and line 4 name the same github account octocat" in line
    assert "line 5: github account 1234 (alice-s) is connected to alice@example.com (--move moves it)" in line
    assert "line 6: 'Git Hub!' is not a provider name" in line
    assert "; and 1 more" in line  # line 8: no external_id
    user_error(
        cli("accounts", "import", write(cli, "noid.csv", HEADER + "bob@example.com,jira,,acme.atlassian.net,,,\n")),
        "line 2: external_id is empty",
    )
    user_error(
        cli("accounts", "import", write(cli, "slack.csv", HEADER + "bob@example.com,slack,U0BOB,T0123,,,\n")),
        "line 2: Slack accounts are connected by their owner",
    )
    user_error(
        cli("accounts", "import", write(cli, "cols.csv", "email,provider,id\nbob@example.com,github,x\n")),
        "unknown column 'id'",
    )
    user_error(cli("accounts", "import", "missing.csv"), "cannot read missing.csv")
    assert snapshot(cli) == before

    # A JSON file with --move moves the account (and keeps what was known about it).
    moving = write(
        cli,
        "move.json",
        json.dumps(
            [
                {"email": "bob@example.com", "provider": "github", "external_id": "1234"},
                {
                    "email": "carol@example.com",
                    "provider": "gitlab",
                    "external_id": "77",
                    "handle": "carol",
                    "account_email": None,
                },
            ]
        ),
    )
    run = ok(cli("accounts", "import", moving, "--move"), "move.json: 1 connected, 1 moved, 0 already")
    assert "item 1: moved github account 1234 from alice@example.com to bob@example.com" in run.stdout
    github = as_json(cli("accounts", "list", "--provider", "github", "--json"))
    assert [(a["external_id"], a["handle"], a["person"]) for a in github] == [("1234", "alice-s", "bob@example.com")]

    # By hand: connect records an account Genie has not seen; by handle once it is known.
    ok(
        cli("accounts", "connect", "github", "octocat", "Carol@Example.com"),
        "connected github account octocat to carol@example.com",
    )
    ok(
        cli("accounts", "connect", "github", "octocat", "carol@example.com"),
        "was already connected to carol@example.com",
    )
    user_error(
        cli("accounts", "connect", "github", "alice-s", "carol@example.com"),
        "github account 1234 (alice-s) is already connected to bob@example.com; move it instead",
    )
    ok(
        cli("accounts", "connect", "github", "alice-s", "carol@example.com", "--move"),
        "moved github account 1234 (alice-s) from bob@example.com to carol@example.com",
    )
    user_error(cli("accounts", "connect", "github", "x", "nobody@example.com"), "no user with email nobody@example.com")
    user_error(cli("accounts", "connect", "slack", "U0NEW", "carol@example.com"), "no Slack account U0NEW is known")
    user_error(cli("accounts", "connect", "Bad Provider", "x", "carol@example.com"), "is not a provider name")

    ok(cli("accounts", "remove", "github", "octocat"), "removed github account octocat from carol@example.com")
    user_error(cli("accounts", "remove", "github", "octocat"), "github account octocat is not connected to anyone")
    user_error(cli("accounts", "remove", "github", "nope"), "no github account nope is known to Genie")
    user_error(
        cli("accounts", "remove", "jira", "5b10ac8d", "--tenant", "other.atlassian.net"),
        "no jira account 5b10ac8d in other.atlassian.net",
    )

    # The filters.
    assert [a["external_id"] for a in as_json(cli("accounts", "list", "--unlinked", "--json"))] == ["octocat"]
    assert sorted(
        a["external_id"] for a in as_json(cli("accounts", "list", "--email", "carol@example.com", "--json"))
    ) == ["1234", "77"]
    assert [
        a["external_id"]
        for a in as_json(cli("accounts", "list", "--email", "alice@users.noreply.github.com", "--json"))
    ] == ["1234"]
    table = ok(cli("accounts", "list", "--provider", "jira")).stdout.splitlines()
    assert table[0].split() == ["PROVIDER", "TENANT", "EXTERNAL_ID", "HANDLE", "EMAIL", "PERSON", "VIA", "MATCH"]
    assert table[1].split()[:3] == ["jira", "acme.atlassian.net", "5b10ac8d"] and len(table) == 2
    # A list that is cut says so (on stderr: the JSON stays valid), and only then.
    cut = cli("accounts", "list", "--limit", "1", "--json")
    assert cut.returncode == 0 and len(json.loads(cut.stdout)) == 1, str(cut)
    assert "showing the first 1 accounts" in cut.stderr, str(cut)
    user_error(cli("accounts", "list", "--limit", "0"), "--limit")

    # The audit log: newest first, who did it and how.
    log = as_json(cli("audit", "--json"))
    assert [(e["action"], e["person"], e["external_id"]) for e in log[:3]] == [
        ("account.remove", "carol@example.com", "octocat"),
        ("account.move", "carol@example.com", "1234"),
        ("account.connect", "carol@example.com", "octocat"),
    ]
    assert log[0]["actor"].startswith("genie accounts remove (") and log[0]["via"] == "cli"
    assert log[1]["detail"] == "moved from bob@example.com (admin)"
    imports = [e for e in log if e["action"] == "import.run"]
    assert [e["detail"] for e in imports] == [
        "move.json: 1 connected, 1 moved, 0 already",
        "accounts.csv: 0 connected, 0 moved, 3 already",
        "accounts.csv: 3 connected, 0 moved, 0 already",
    ]
    assert imports[0]["actor"].startswith("genie accounts import move.json (")
    bob = as_json(cli("audit", "--email", "bob@example.com", "--json"))
    assert [(e["action"], e["external_id"], e["detail"]) for e in bob] == [
        ("account.move", "1234", "moved from alice@example.com by move.json, item 1"),
        ("account.connect", "5b10ac8d", "by accounts.csv, line 3"),
    ]
    assert len(as_json(cli("audit", "--action", "account.move", "--limit", "1", "--json"))) == 1
    user_error(cli("audit", "--action", "account.stolen"), "--action 'account.stolen' is not one of")
    user_error(cli("audit", "--limit", "0"), "--limit must be between 1 and 10000")
    table = ok(cli("audit", "--provider", "jira")).stdout.splitlines()
    assert table[0].split() == ["AT", "ACTION", "PERSON", "ACCOUNT", "ACTOR", "VIA", "DETAIL"]
    assert "jira/acme.atlassian.net/5b10ac8d" in table[1]


async def test_accounts_list_ambiguous_and_unlinked_slack(cli: Cli, db_url: str):
    async def work(session):
        for email in ("sam@example.com", "dana@example.com"):
            await users.add_user(session, email, "X")
        dana = await users.require_user(session, "dana@example.com")
        github = await external_accounts.upsert(session, ReportedAccount("github", "dana-gh", email="sam@example.com"))
        await external_accounts.connect(session, github, dana, via="admin", who=Who.cli("test"))
        shared = await external_accounts.upsert(
            session,
            ReportedAccount(
                "pagerduty", "PSAM", tenant="acme.pagerduty.com", email="sam@example.com", email_verified=True
            ),
        )
        await external_accounts.auto_link(session, shared, allowed=True, who=Who.cli("test"))
        await external_accounts.upsert(
            session, ReportedAccount("slack", "U0SAM", tenant="T0123", email="sam@example.com")
        )

    await _with_session(db_url, work)

    assert [(a["external_id"], a["match"]) for a in as_json(cli("accounts", "list", "--ambiguous", "--json"))] == [
        ("PSAM", "ambiguous")
    ]
    assert [a["external_id"] for a in as_json(cli("accounts", "list", "--unlinked", "--json"))] == ["PSAM", "U0SAM"]
    ok(
        cli("accounts", "connect", "slack", "U0SAM", "sam@example.com"),
        "connected slack account U0SAM (sam@example.com) in T0123 to sam@example.com",
    )
    assert [a["external_id"] for a in as_json(cli("accounts", "list", "--unlinked", "--json"))] == ["PSAM"]
    assert as_json(cli("link", "list", "--email", "sam@example.com", "--json"))[0]["slack_user"] == "U0SAM"
    listed = as_json(cli("accounts", "list", "--email", "sam@example.com", "--json"))
    assert [(a["external_id"], a["person"], a["via"]) for a in listed] == [
        ("dana-gh", "dana@example.com", "admin"),
        ("PSAM", None, None),
        ("U0SAM", "sam@example.com", "admin"),
    ]


@pytest.mark.parametrize(
    ("name", "content", "problem"),
    [
        ("short.csv", "email,provider\nbob@example.com,github\n", "no 'external_id' column"),
        ("twice.csv", "email,provider,external_id,email\n", "a column appears twice"),
        ("empty.csv", "", "the file is empty"),
        ("header.csv", HEADER, "no rows to import"),
        ("a.json", '{"email": "bob@example.com"}', "expected a JSON list of objects"),
        ("c.json", "[{", "not valid JSON"),
    ],
)
def test_files_that_cannot_be_read_as_rows(name: str, content: str, problem: str):
    with pytest.raises(InvalidInput, match=problem):
        imports.parse_file(name, content)


def test_rows_with_a_problem_of_their_own():
    rows = imports.parse_file(
        "x.csv",
        "\ufeff" + HEADER.upper() + "bob@example.com,github,x,,,,,extra\n"
        "bob@example.com,github,,,,,\n" + "bob@example.com,github," + "y" * 201 + ",,,,\n"
        "bob@example.com,github,ok,,,,\n",
    )
    assert [r.problem for r in rows] == [
        "line 2: 8 cells but the header has 7",
        "line 3: external_id is empty",
        "line 4: external_id is longer than 200 characters or has a NUL",
        None,
    ]
    rows = imports.parse_file(
        "x.json",
        json.dumps(
            [
                {"email": "bob@example.com", "provider": "github", "external_id": 42},
                ["not", "an", "object"],
                {"email": "bob@example.com", "provider": "github", "id": "x"},
                {"email": "bob@example.com", "provider": "github", "external_id": "x", "tenant": None},
            ]
        ),
    )
    assert [r.problem for r in rows] == [
        "item 1: external_id must be a string",
        "item 2: not an object",
        "item 3: unknown field 'id' (fields: " + ", ".join(imports.COLUMNS) + ")",
        None,
    ]
    assert rows[3].values["tenant"] == ""
