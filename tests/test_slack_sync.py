"""The Slack directory: ``genie slack sync`` reads ``users.list`` page by page from the fake
Slack, records every Slack user and links them to Genie people by email where the workspace
allows it; ``team_join`` / ``user_change`` events keep it current. What a person sees is checked:
the report, ``/genie status`` in Slack, the links and the audit log."""

from __future__ import annotations

import asyncio
import io
import json
import time

import pytest

from bot.services import access
from bot.services.errors import InvalidInput
from bot.slack import directory_sync
from tests import forkserver
from tests.conftest import ALICE, SECRET_KEY, SIGNING_SECRET, eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import ack_json, link_through_slack
from tests.processes import REPO, clean_env
from tests.slack_driver import SlackUser

WS = TEAM_ID  # the fake's workspace (single-workspace mode)


async def _auto_link(genie, on: bool = True, workspace: str = WS) -> None:
    async with genie.sessionmaker.begin() as session:
        await access.set_workspace_setting(session, workspace, "auto_link_by_email", "true" if on else "false")


async def _sync(genie, workspace: str | None = None, progress: directory_sync.Progress | None = None):
    return await directory_sync.sync(
        genie.settings,
        genie.rt.clients,
        genie.sessionmaker,
        workspace=workspace,
        progress=progress or directory_sync.Progress(io.StringIO()),
    )


async def _links(genie) -> list[tuple[str, str, str]]:
    return sorted(
        await genie.rows('SELECT l.slack_user_id, u.email, l.via FROM slack_link l JOIN "user" u ON u.id = l.user_id')
    )


async def _audit(genie, action: str | None = None) -> list[tuple]:
    sql = "SELECT action, actor, via, subject_email, external_id, detail FROM audit_event"
    if action:
        return await genie.rows(sql + " WHERE action = :a ORDER BY id", a=action)
    return await genie.rows(sql + " ORDER BY id")


def _status(response) -> str:
    return ack_json(response)["text"]


# --- paging and rate limits ---------------------------------------------------------------------
async def test_pages_through_the_whole_directory_and_records_everyone_without_linking_when_off(genie):
    fake = genie.fake
    fake.users_page_size = 2  # Slack may return fewer than asked: 6 users, 3 pages
    for n in range(3):
        fake.add_user(f"U0PAGE{n}", f"Page Person{n}", f"page{n}@example.com")
    await genie.add_user("alice@example.com", "Alice Smith")  # would match, but auto-link is off by default

    progress = io.StringIO()
    [report] = await _sync(genie, progress=directory_sync.Progress(progress))

    calls = fake.calls("users.list")
    assert [c.args.get("limit") for c in calls] == ["200"] * 3
    assert calls[0].args.get("cursor") is None
    assert len({c.args.get("cursor") for c in calls}) == 3  # each page asked for once, in order
    assert report.pages == 3 and report.users == 6 and report.error is None
    assert report.linked == [] and report.skipped == {"auto_link_off": 6} and not report.auto_link
    rows = await genie.rows("SELECT external_id, tenant, email, match FROM external_account ORDER BY external_id")
    assert rows == sorted(
        [
            ("U0ALICE", WS, "alice@example.com", "skipped"),
            ("U0BOB", WS, "bob@example.com", "skipped"),
            ("U0MALLORY", WS, "mallory@evil.example", "skipped"),
        ]
        + [(f"U0PAGE{n}", WS, f"page{n}@example.com", "skipped") for n in range(3)]
    )
    assert await _links(genie) == []
    assert "slack sync T0GENIE01:" in progress.getvalue()
    [run] = await _audit(genie, "import.run")
    assert run[1:3] == ("slack sync", "sync")
    assert "6 Slack users in 3 pages: 0 linked" in run[5] and "auto-link by email off" in run[5]


async def test_rate_limits_are_waited_out_and_the_same_page_is_asked_again(genie):
    fake = genie.fake
    fake.users_page_size = 1
    fake.add_user("U0CAROL", "Carol Jones", "carol@example.com")
    await _auto_link(genie)
    for email in ("alice@example.com", "bob@example.com", "carol@example.com"):
        await genie.add_user(email, email.split("@")[0].title())

    class SlowDownAfterFirstPage(directory_sync.Progress):
        def page(self, report):
            super().page(report)
            if report.pages == 1:  # Slack says "slow down" for page 2: HTTP 429, then the error
                fake.fail("users.list", status=429, retry_after=1)
                fake.fail("users.list", error="ratelimited")

    out = io.StringIO()
    started = time.monotonic()
    [report] = await _sync(genie, progress=SlowDownAfterFirstPage(out))
    assert time.monotonic() - started >= 2.0  # Retry-After: 1, then 1 s when Slack did not say

    cursors = [c.args.get("cursor") for c in fake.calls("users.list")]
    assert len(cursors) == 6  # 4 pages + 2 refused
    assert cursors[1] == cursors[2] == cursors[3] is not None  # page 2, asked three times
    assert len(set(cursors)) == 4
    assert report.rate_limited == 2 and report.error is None and report.users == 4
    assert "waiting 1s before page 2 again" in out.getvalue()
    assert [e.slack_user for e in report.linked] == ["U0ALICE", "U0BOB", "U0CAROL"]  # nobody missing
    assert len(await _links(genie)) == 3


async def test_a_sync_stopped_half_way_keeps_its_pages_and_a_rerun_finishes_the_job(genie):
    fake = genie.fake
    fake.users_page_size = 2
    fake.add_user("U0CAROL", "Carol Jones", "carol@example.com")
    await _auto_link(genie)
    for email in ("alice@example.com", "carol@example.com"):
        await genie.add_user(email, email.split("@")[0].title())
    fake.fail("users.list", error="invalid_auth", after=1)

    [report] = await _sync(genie)
    assert report.pages == 1 and report.users == 2
    assert report.error == (
        "Slack refused SLACK_BOT_TOKEN for workspace T0GENIE01 (Acme) (invalid_auth); "
        "reinstall the app or fix the token"
    )
    assert [e.slack_user for e in report.linked] == ["U0ALICE"]
    assert await _links(genie) == [("U0ALICE", "alice@example.com", "email")]  # page 1 is kept
    assert "stopped early" in (await _audit(genie, "import.run"))[0][5]

    [again] = await _sync(genie)
    assert again.error is None and again.pages == 2 and again.users == 4
    assert [e.slack_user for e in again.linked] == ["U0CAROL"] and again.already == 1
    assert await _links(genie) == [("U0ALICE", "alice@example.com", "email"), ("U0CAROL", "carol@example.com", "email")]


async def test_a_directory_entry_larger_than_genie_keeps_is_recorded_not_fatal(genie):
    """Slack's fields are not bounded the way Genie's columns are: a 300-character name or an
    "email" longer than any address is recorded as far as it fits (a name clipped, an address
    that cannot be one dropped, so it never matches a person) and the sync carries on."""
    fake = genie.fake
    huge = "x" * 300 + "@example.com"
    fake.add_user("U0HUGE", "Q" * 300 + " Zed", huge)
    fake.add_user("U0CAROL", "Carol Jones", "carol@example.com")
    await _auto_link(genie)
    await genie.add_user("carol@example.com", "Carol")

    [report] = await _sync(genie)
    assert report.error is None and report.users == 5
    assert [e.slack_user for e in report.linked] == ["U0CAROL"]
    [(email, name, match)] = await genie.rows(
        "SELECT email, display_name, match FROM external_account WHERE external_id = 'U0HUGE'"
    )
    assert email is None and name == "Q" * 200 and match != "linked"
    assert ("U0HUGE",) not in [(r[0],) for r in await _links(genie)]


# --- the rules -----------------------------------------------------------------------------------
async def test_every_auto_link_rule_as_the_report_the_links_and_slack_show_it(genie):
    fake = genie.fake
    await _auto_link(genie)
    people = [
        "alice@example.com",
        "carol@example.com",
        "dave@example.com",
        "guest@example.com",
        "single@example.com",
        "robot@example.com",
        "gone@example.com",
        "ext@example.com",
        "stranger@example.com",
        "frank@example.com",
        "grace@example.com",
        "hank@example.com",
        "noconfirm@example.com",
    ]
    for email in people:
        await genie.add_user(email, email.split("@")[0].title())
    # Linked by hand before the sync: Erin's Slack account carries Dave's address (so that
    # address now identifies two people); Grace has her Slack account; Ivan linked U0HANK.
    fake.add_user("U0ERINX", "Erin Example", "dave@example.com")
    await link_through_slack(genie, SlackUser("U0ERINX"), "erin@example.com", "Erin", wait_home=False)
    fake.add_user("U0GRACE1", "Grace Hopper", "grace@example.com")
    await link_through_slack(genie, SlackUser("U0GRACE1"), "grace@example.com", "Grace", wait_home=False)
    fake.add_user("U0HANK", "Hank Hill", "hank@example.com")
    await link_through_slack(genie, SlackUser("U0HANK"), "ivan@example.com", "Ivan", wait_home=False)
    before = await _links(genie)

    fake.add_user("U0CAROL", "Carol Jones", "Carol@Example.COM")  # case differs
    fake.add_user("U0DAVE", "Dave Davis", "dave@example.com")  # ambiguous: Dave, and Erin's link
    fake.add_user("U0NOBODY", "Nobody Known", "nobody@example.com")  # unmatched
    fake.add_user("U0GUEST", "Guest Multi", "guest@example.com", is_restricted=True)
    fake.add_user("U0SINGLE", "Guest Single", "single@example.com", is_restricted=True, is_ultra_restricted=True)
    fake.add_user("U0ROBOT", "Robot Bot", "robot@example.com", is_bot=True)
    fake.add_user("USLACKBOT", "Slackbot", None)
    fake.add_user("U0GONE", "Gone Away", "gone@example.com", deleted=True)
    fake.add_user("U0EXT", "Ext Partner", "ext@example.com", team_id="T0PARTNER")  # Slack Connect
    fake.add_user("U0STRANGER", "Stranger Danger", "stranger@example.com", is_stranger=True)
    fake.add_user("U0FRANK", "Frank Unconfirmed", "frank@example.com", is_email_confirmed=False)
    fake.add_user("U0NOMAIL", "No Mail", None)
    fake.add_user("U0GRACE2", "Grace Again", "grace@example.com")  # Grace already has U0GRACE1
    fake.add_user("U0NOCONF", "Not Said", "noconfirm@example.com", is_email_confirmed=None)  # field left out

    [report] = await _sync(genie)
    assert report.error is None and report.auto_link
    linked = {e.slack_user: e.person for e in report.linked}
    assert linked == {
        "U0ALICE": "alice@example.com",
        "U0CAROL": "carol@example.com",
        "U0NOCONF": "noconfirm@example.com",
    }
    [ambiguous] = report.ambiguous
    assert ambiguous.slack_user == "U0DAVE" and ambiguous.candidates == ("dave@example.com", "erin@example.com")
    assert sorted(e.slack_user for e in report.unmatched) == ["U0BOB", "U0MALLORY", "U0NOBODY"]
    [conflict] = report.conflicts
    assert (
        conflict.slack_user == "U0GRACE2" and "grace@example.com already has another slack account" in conflict.detail
    )
    assert report.skipped == {"bot": 2, "deleted": 1, "guest": 2, "external": 2, "email_unconfirmed": 1, "no_email": 1}
    assert report.already == 3  # U0ERINX, U0GRACE1, U0HANK: left as they were

    # Links: the three new ones; the hand-made ones untouched (U0HANK stays Ivan's).
    assert await _links(genie) == sorted(
        before
        + [
            ("U0ALICE", "alice@example.com", "email"),
            ("U0CAROL", "carol@example.com", "email"),
            ("U0NOCONF", "noconfirm@example.com", "email"),
        ]
    )
    assert ("U0HANK", "ivan@example.com", "link") in await _links(genie)
    flags = dict(
        ((r[0]), r[1:])
        for r in await genie.rows(
            "SELECT external_id, is_bot, is_guest, is_deleted, is_external, email_verified FROM external_account"
        )
    )
    assert flags["USLACKBOT"][0] and flags["U0ROBOT"][0] and flags["U0SINGLE"][1] and flags["U0GONE"][2]
    assert flags["U0EXT"][3] and flags["U0STRANGER"][3] and not flags["U0ALICE"][3]
    assert not flags["U0FRANK"][4] and flags["U0NOCONF"][4]

    # The person is linked as they see it in Slack, and can act.
    assert "connected to Genie as *Alice*" in _status(await genie.slack.command(ALICE, "status"))
    assert "not connected" in _status(await genie.slack.command(SlackUser("U0DAVE"), "status"))
    assert "not connected" in _status(await genie.slack.command(SlackUser("U0GUEST"), "status"))

    # The audit log has each connection, by the sync, and one run with its counts.
    connects = [r for r in await _audit(genie, "account.connect") if r[1] == "slack sync"]
    assert sorted((r[3], r[4], r[2]) for r in connects) == [
        ("alice@example.com", "U0ALICE", "sync"),
        ("carol@example.com", "U0CAROL", "sync"),
        ("noconfirm@example.com", "U0NOCONF", "sync"),
    ]
    [run] = await _audit(genie, "import.run")
    assert "3 linked, 1 ambiguous, 3 unmatched, 1 conflicts" in run[5]

    # Re-running changes nothing: no new link, no new audit line but the run's own.
    audit_before = len(await _audit(genie))
    [again] = await _sync(genie)
    assert again.linked == [] and again.already == 6 and len(again.ambiguous) == 1 and len(again.conflicts) == 1
    assert await genie.scalar("SELECT count(*) FROM external_account") == report.users
    assert len(await _audit(genie)) == audit_before + 1
    assert len(await _links(genie)) == len(before) + 3


async def test_a_deleted_slack_user_loses_their_link_whatever_the_setting(genie):
    await link_through_slack(genie, ALICE, "alice@example.com", "Alice", wait_home=False)
    assert "connected to Genie" in _status(await genie.slack.command(ALICE, "status"))
    genie.fake.users["U0ALICE"]["deleted"] = True

    [report] = await _sync(genie)  # auto-link is off here
    [gone] = report.unlinked
    assert (gone.slack_user, gone.person) == ("U0ALICE", "alice@example.com")
    assert await _links(genie) == []
    assert "not connected" in _status(await genie.slack.command(ALICE, "status"))
    [departed] = await _audit(genie, "account.departed")
    assert departed[1:5] == ("slack sync", "sync", "alice@example.com", "U0ALICE")


# --- events ----------------------------------------------------------------------------------------
def _member(fake, user_id: str, name: str, email: str | None, **fields) -> dict:
    user = fake.add_user(user_id, name, email, **fields)
    return json.loads(json.dumps(user))


async def test_team_join_links_a_new_hire_and_user_change_keeps_the_directory_current(genie):
    fake = genie.fake
    await _auto_link(genie)
    await genie.add_user("nina@example.com", "Nina New")
    nina = SlackUser("U0NINA")

    joined = await genie.slack.event(
        nina,
        {"type": "team_join", "user": _member(fake, "U0NINA", "Nina New", "nina@example.com")},
        event_id="Ev0JOIN1",
    )
    assert joined.status_code == 200
    await eventually(lambda: genie.scalar("SELECT count(*) FROM slack_link"))
    assert await _links(genie) == [("U0NINA", "nina@example.com", "email")]
    assert "connected to Genie as *Nina New*" in _status(await genie.slack.command(nina, "status"))
    [connect] = await _audit(genie, "account.connect")
    assert connect[1:5] == ("slack team_join", "slack", "nina@example.com", "U0NINA")

    # Slack re-sends the same event: taken in once.
    again = await genie.slack.event(
        nina,
        {"type": "team_join", "user": fake.users["U0NINA"]},
        event_id="Ev0JOIN1",
        headers={"X-Slack-Retry-Num": "1", "X-Slack-Retry-Reason": "http_timeout"},
    )
    assert again.status_code == 200

    # An email change is recorded; the link is never moved by it.
    changed = _member(fake, "U0NINA", "Nina New", "nina.new@example.com")
    await genie.slack.event(nina, {"type": "user_change", "user": changed}, event_id="Ev0CHANGE1")
    await eventually(lambda: genie.scalar("SELECT count(*) FROM external_account WHERE email = 'nina.new@example.com'"))
    assert await _links(genie) == [("U0NINA", "nina@example.com", "email")]

    # Deactivated: the link goes at once.
    gone = _member(fake, "U0NINA", "Nina New", "nina.new@example.com", deleted=True)
    await genie.slack.event(nina, {"type": "user_change", "user": gone}, event_id="Ev0CHANGE2")
    await eventually(lambda: genie.scalar("SELECT count(*) FROM audit_event WHERE action = 'account.departed'"))
    assert await _links(genie) == []
    assert "not connected" in _status(await genie.slack.command(nina, "status"))
    assert [r[0] for r in await _audit(genie)] == ["account.connect", "account.departed"]  # the retry did nothing


async def test_events_record_but_never_link_where_auto_link_is_off_or_the_user_is_not_eligible(genie):
    fake = genie.fake
    await genie.add_user("olga@example.com", "Olga")
    await genie.add_user("pat@example.com", "Pat")

    async def recorded():
        return await genie.rows("SELECT external_id, match, match_detail FROM external_account ORDER BY external_id")

    await genie.slack.event(
        SlackUser("U0OLGA"), {"type": "team_join", "user": _member(fake, "U0OLGA", "Olga Off", "olga@example.com")}
    )
    # Slack's ack comes before the listener runs: the setting is turned on only once Olga's
    # join is on record, or it would (rightly) apply to her too.
    await eventually(lambda: _n_rows(recorded, 1))
    await _auto_link(genie)
    await genie.slack.event(
        SlackUser("U0PAT"),
        {"type": "team_join", "user": _member(fake, "U0PAT", "Pat Guest", "pat@example.com", is_restricted=True)},
    )
    await genie.slack.event(SlackUser("U0PAT"), {"type": "user_change", "user": "not an object"})

    rows = await eventually(lambda: _n_rows(recorded, 2))
    assert rows == [("U0OLGA", "skipped", "auto-link by email is off here"), ("U0PAT", "skipped", "a guest")]
    assert await _links(genie) == []


async def _n_rows(read, n: int):
    rows = await read()
    return rows if len(rows) >= n else None


# --- several workspaces (OAuth mode) -----------------------------------------------------------------
OAUTH = {"SLACK_BOT_TOKEN": None, "SLACK_CLIENT_ID": "1234.5678", "SLACK_CLIENT_SECRET": "client-secret-0123456789"}


@pytest.mark.parametrize("genie_settings", [OAUTH])
async def test_oauth_mode_syncs_every_installed_workspace_with_its_own_token(genie):
    from tests.test_oauth import _install

    fake = genie.fake
    beta = await _install(genie, "code-beta", "T0BETA", team_name="Beta")
    gamma = await _install(genie, "code-gamma", "T0GAMMA", team_name="Gamma")
    fake.add_user("U0BALICE", "Alice Beta", "alice@example.com", team_id="T0BETA")
    fake.add_user("U0GCAROL", "Carol Gamma", "carol@example.com", team_id="T0GAMMA")
    await genie.add_user("alice@example.com", "Alice")
    await genie.add_user("carol@example.com", "Carol")
    await _auto_link(genie, workspace="T0BETA")  # Gamma is a stranger's workspace: off

    reports = await _sync(genie)
    assert [(r.workspace.workspace_id, r.workspace.name, r.users) for r in reports] == [
        ("T0BETA", "Beta", 1),
        ("T0GAMMA", "Gamma", 1),
    ]
    assert [e.slack_user for e in reports[0].linked] == ["U0BALICE"]
    assert reports[1].linked == [] and reports[1].skipped == {"auto_link_off": 1}
    assert sorted(c.token for c in fake.calls("users.list")) == sorted([beta, gamma])
    assert await genie.rows("SELECT workspace_id, slack_user_id, slack_team_id, workspace_name FROM slack_link") == [
        ("T0BETA", "U0BALICE", "T0BETA", "Beta")
    ]

    fake.clear()
    [only] = await _sync(genie, workspace="T0GAMMA")
    assert only.workspace.workspace_id == "T0GAMMA" and [c.token for c in fake.calls("users.list")] == [gamma]
    with pytest.raises(InvalidInput, match="not installed in Slack workspace T0NOPE"):
        await _sync(genie, workspace="T0NOPE")


@pytest.mark.parametrize("genie_settings", [OAUTH])
async def test_an_org_wide_grid_install_reads_each_workspace_of_the_org_and_counts_people_once(genie):
    from tests.test_oauth import _install

    fake = genie.fake
    await _install(genie, "code-org", None, enterprise_id="E0ORG", org_wide=True)
    fake.org_teams["E0ORG"] = [{"id": "T0GRIDWS", "name": "Grid WS"}, {"id": "T0GRIDTWO", "name": "Grid Two"}]
    org = {"enterprise_id": "E0ORG", "enterprise_name": "Acme Org"}
    fake.add_user(
        "W0GBOB",
        "Bob Grid",
        "bob@example.com",
        team_id="T0GRIDWS",
        enterprise_user={**org, "id": "W0GBOB", "teams": ["T0GRIDWS", "T0GRIDTWO"]},
    )
    fake.add_user(
        "W0GAMY",
        "Amy Grid",
        "amy@example.com",
        team_id="T0GRIDTWO",
        enterprise_user={**org, "id": "W0GAMY", "teams": ["T0GRIDTWO"]},
    )
    fake.add_user(
        "W0PAT",
        "Pat Partner",
        "pat@example.com",
        team_id="T0GRIDTWO",  # from another Grid org
        enterprise_user={"enterprise_id": "E0PARTNER", "id": "W0PAT", "teams": ["T0PARTNER"]},
    )
    for email in ("bob@example.com", "amy@example.com", "pat@example.com"):
        await genie.add_user(email, email.split("@")[0].title())
    await _auto_link(genie, workspace="E0ORG")

    [report] = await _sync(genie)
    assert report.workspace.workspace_id == "E0ORG" and report.error is None
    assert [c.args.get("team_id") for c in fake.calls("users.list")] == ["T0GRIDWS", "T0GRIDTWO"]
    assert report.pages == 2 and report.users == 3  # Bob is in both workspaces: once
    assert sorted(e.slack_user for e in report.linked) == ["W0GAMY", "W0GBOB"]
    assert report.skipped == {"external": 1}
    assert sorted(
        await genie.rows("SELECT workspace_id, slack_user_id, slack_team_id, enterprise_id FROM slack_link")
    ) == [("E0ORG", "W0GAMY", "T0GRIDTWO", "E0ORG"), ("E0ORG", "W0GBOB", "T0GRIDWS", "E0ORG")]
    bob = SlackUser("W0GBOB", team_id="T0GRIDWS", enterprise_id="E0ORG", team_domain="grid-ws", org_install=True)
    assert "connected to Genie as *Bob*" in _status(await genie.slack.command(bob, "status"))


async def test_a_token_without_users_read_email_is_named_in_the_report(genie):
    from bot.cli.slack import sync_lines

    genie.fake.token_scopes = "commands,chat:write,im:write,users:read"
    [report] = await _sync(genie)
    assert report.error is None
    assert "  warning: the bot token lacks the users:read.email scope" in "\n".join(sync_lines(report))


# --- the command, as an operator runs it ---------------------------------------------------------------
async def _cli(tmp_path, env: dict[str, str], *args: str):
    """``genie ARGS`` as a process; in a thread, so that the in-process Genie serving the same
    database keeps running (and is never holding SQLite's lock while the loop is stalled)."""
    done = await asyncio.to_thread(forkserver.run, args, cwd=tmp_path, env=env, timeout=120)
    assert "Traceback" not in done.stderr, done.stderr
    for secret in (SECRET_KEY, SIGNING_SECRET, "xoxb-test-token"):
        assert secret not in done.stdout + done.stderr
    return done


def _one_error_line(done, *words: str) -> None:
    assert done.returncode == 1, (done.stdout, done.stderr)
    last = done.stderr.splitlines()[-1]
    assert last.startswith("genie: "), done.stderr
    for word in words:
        assert word in last, last


async def test_genie_slack_sync_as_a_process_prints_the_report(genie, db_url, tmp_path):
    assert REPO.exists()
    fake = genie.fake
    fake.users_page_size = 2
    fake.add_user("U0GUEST", "Guest Person", "guest@example.com", is_restricted=True)
    env = clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN="xoxb-test-token",
        SLACK_API_URL=fake.api_url,
    )
    ok = await _cli(tmp_path, env, "workspace", "set", "auto_link_by_email", "true", "--workspace", WS)
    assert ok.returncode == 0, ok.stderr
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("guest@example.com", "Guest")

    done = await _cli(tmp_path, env, "slack", "sync")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == (
        "Slack workspace T0GENIE01 (Acme): 4 Slack users in 2 pages: 1 linked, 0 ambiguous, "
        "2 unmatched, 0 conflicts, 0 unlinked (deleted), 0 already connected, 1 skipped (guest 1); "
        "auto-link by email on"
    )
    assert "  linked     U0ALICE @alice alice@example.com -> alice@example.com" in lines
    assert "  unmatched  U0MALLORY @mallory mallory@evil.example: no person has mallory@evil.example" in lines
    assert "  skipped    guests: 1" in lines
    assert "slack sync T0GENIE01: [#" in done.stderr  # progress, on stderr only

    as_json = await _cli(tmp_path, env, "slack", "sync", "--json")
    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)["workspaces"][0]
    assert report["workspace"] == WS and report["complete"] and report["counts"]["already"] == 1
    assert report["counts"]["linked"] == 0 and report["skipped"] == {"guest": 1}
    assert {e["slack_user"] for e in report["unmatched"]} == {"U0BOB", "U0MALLORY"}

    _one_error_line(
        await _cli(tmp_path, env, "slack", "sync", "--workspace", "T0OTHER"),
        "SLACK_BOT_TOKEN belongs to workspace T0GENIE01 (Acme), not T0OTHER",
    )
    _one_error_line(await _cli(tmp_path, env, "slack", "sync", "--workspace", "x; drop"), "is not a Slack workspace id")
    fake.fail("auth.test", error="token_revoked")
    _one_error_line(await _cli(tmp_path, env, "slack", "sync"), "Slack refused SLACK_BOT_TOKEN (token_revoked)")
    fake.fail("users.list", error="missing_scope")
    _one_error_line(await _cli(tmp_path, env, "slack", "sync"), "lacks the users:read scope (missing_scope)")
    unconfigured = {k: v for k, v in env.items() if not k.startswith("SLACK_")}
    none = await _cli(tmp_path, unconfigured, "slack", "sync")
    _one_error_line(none, "Slack is not configured")
    assert none.stdout == "" and len(none.stderr.splitlines()) == 1
    runs = await genie.scalar("SELECT count(*) FROM audit_event WHERE action = 'import.run'")
    assert runs == 3  # two full runs and the one refused for its scope
