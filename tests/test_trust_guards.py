"""Deterministic tests for the guards of the trust core that a mutation trial (issue 13) found
unguarded or guarded only by chance: each fails when its guard is removed (SECURITY.md,
"Mutation testing", lists which mutant each one kills).

- a sign-in with a hostile ``next`` lands on a local page (``pages.safe_next``);
- Bolt refuses a well-formed unsigned request on its own, behind Genie's screen
  (``request_verification_enabled``);
- GitHub, Jira and Sentry emails never auto-link (``external_accounts.EMAIL_TRUSTED_PROVIDERS``);
- a person cannot disconnect another person's Slack link on /account
  (``linking.unlink_for_user``);
- a team's key cannot read or act on another team's alert, by every identifier form.
"""

from __future__ import annotations

import hashlib
import json
import time
from urllib.parse import urlencode

import pytest
from slack_bolt.request.async_request import AsyncBoltRequest

from bot.blocks.alerts import ButtonValue
from bot.ids import Action
from bot.importers import Directory
from bot.server import build_bolt_app
from bot.services import imports
from bot.services.audit import Who
from bot.services.external_accounts import ReportedAccount
from bot.slack.screening import screen
from tests.conftest import PASSWORD, SIGNING_SECRET, Genie, eventually
from tests.fake_slack import TEAM_DOMAIN, TEAM_ID
from tests.slack_driver import sign
from tests.test_alert_api import Api, api, counts, envelope  # noqa: F401 - the fixture
from tests.test_alert_gate import _fire, world  # noqa: F401 - the fixture

#: Where a browser would go: off-site, scheme-relative, backslash tricks, other schemes.
HOSTILE_NEXT = [
    "https://evil.example/x",
    "//evil.example/x",
    "/\\evil.example/x",
    "\\\\evil.example",
    "/\\/evil.example",
    "http:evil.example",
    "javascript:alert(1)",
    " //evil.example",
    "evil.example",
    "///evil.example",
    "https:/evil.example",
]


async def test_sign_in_with_a_hostile_next_lands_on_a_local_page(genie: Genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    for target in HOSTILE_NEXT:
        browser = genie.browser()
        await browser.get("/login")
        answer = await browser.post("/login", {"email": "alice@example.com", "password": PASSWORD, "next": target})
        assert answer.status_code == 303, (target, answer.status_code)
        assert answer.headers["location"] == "/account", target  # signed in, and kept on Genie
    # A local target is kept (the guard is not simply "always /account").
    browser = genie.browser()
    await browser.get("/login")
    answer = await browser.post(
        "/login", {"email": "alice@example.com", "password": PASSWORD, "next": "/account?welcome=1"}
    )
    assert answer.status_code == 303 and answer.headers["location"] == "/account?welcome=1"


def _click_body(alert_id: int, user: str = "U0ALICE") -> str:
    payload = {
        "type": "block_actions",
        "api_app_id": "A0GENIE",
        "token": "legacy-verification-token",
        "trigger_id": "1.2.3",
        "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
        "user": {"id": user, "username": user.lower(), "team_id": TEAM_ID},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": "C0PAY"},
        "channel": {"id": "C0PAY", "name": "alerts"},
        "actions": [
            {
                "action_id": Action.ALERT_ACKNOWLEDGE,
                "block_id": "b",
                "type": "button",
                "value": ButtonValue(alert_id).encode(),
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


async def test_bolt_refuses_a_well_formed_unsigned_click_on_its_own(world):
    """Genie's screen checks the signature first; Bolt checks it again behind it. Each layer is
    held to it alone: a well-formed acknowledge by a member, unsigned or wrongly signed, is 401
    from the server and from the Bolt app the server hands screened requests to."""
    genie = world
    alert_id, _ = await _fire(genie)
    body = _click_body(alert_id)
    ts = int(time.time())
    unsigned = [
        {"content-type": "application/x-www-form-urlencoded", "x-slack-request-timestamp": str(ts)},
        {
            "content-type": "application/x-www-form-urlencoded",
            "x-slack-request-timestamp": str(ts),
            "x-slack-signature": sign("an-attackers-guess", ts, body),
        },
    ]
    bolt = build_bolt_app(genie.rt)
    for headers in unsigned:
        assert (await genie.http.post("/slack/events", content=body.encode(), headers=headers)).status_code == 401
        assert screen(body.encode(), headers, SIGNING_SECRET) == (401, '{"error": "invalid request"}')
        answer = await bolt.async_dispatch(AsyncBoltRequest(body=body, headers=headers))
        assert answer.status == 401, answer.body
    assert await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id) in (False, 0)
    # The same click, signed, goes through both layers: the request itself was good.
    signed = {
        "content-type": "application/x-www-form-urlencoded",
        "x-slack-request-timestamp": str(ts),
        "x-slack-signature": sign(SIGNING_SECRET, ts, body),
    }
    request = screen(body.encode(), signed, SIGNING_SECRET)
    assert isinstance(request, AsyncBoltRequest)
    assert (await bolt.async_dispatch(request)).status == 200

    async def acknowledged() -> bool:
        return bool(await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))

    await eventually(acknowledged)


@pytest.mark.parametrize("provider", ["github", "jira", "sentry", "gitlab"])
async def test_emails_of_tools_that_do_not_vouch_for_them_never_auto_link(genie: Genie, provider: str):
    """A GitHub (Jira, Sentry, GitLab) account reporting Alice's exact email, marked verified,
    with auto-linking allowed: recorded, skipped with the reason, connected to nobody. The same
    account from PagerDuty links (the guard, not the data, makes the difference)."""
    await genie.add_user("alice@example.com", "Alice Smith")
    reported = ReportedAccount(
        provider=provider,
        external_id="x-1",
        tenant="acme",
        handle="alice-x",
        email="alice@example.com",
        email_verified=True,
        display_name="Alice Smith",
    )
    async with genie.sessionmaker.begin() as s:
        report = await imports.apply_directory(
            s, Directory(provider, provider.title(), "acme", [reported]), allowed=True, who=Who.cli("test")
        )
    assert report.linked == [] and list(report.skipped) == [
        f"{provider} emails do not identify a person; connect it by hand or from a file"
    ]
    assert await genie.scalar("SELECT count(*) FROM external_account WHERE user_id IS NOT NULL") == 0
    trusted = ReportedAccount(
        provider="pagerduty",
        external_id="P1",
        tenant="acme",
        handle="alice-x",
        email="alice@example.com",
        email_verified=True,
        display_name="Alice Smith",
    )
    async with genie.sessionmaker.begin() as s:
        report = await imports.apply_directory(
            s, Directory("pagerduty", "PagerDuty", "acme", [trusted]), allowed=True, who=Who.cli("test")
        )
    assert [e["person"] for e in report.linked] == ["alice@example.com"]


async def test_a_person_cannot_disconnect_another_persons_slack_link(world):
    genie = world
    links = dict(await genie.rows('SELECT u.email, l.id FROM slack_link l JOIN "user" u ON u.id = l.user_id'))
    browser = genie.browser()
    assert (await browser.login("alice@example.com")).status_code == 303
    await browser.get("/account")
    for email in ("bob@example.com", "root@example.com", "mallory@example.com"):
        answer = await browser.post(f"/account/links/{links[email]}/disconnect")
        assert answer.status_code == 404, (email, answer.status_code)
        assert "is not yours" in answer.text
    assert await genie.scalar("SELECT count(*) FROM slack_link") == len(links)
    # Her own link, the same way: gone (the refusal above was not a broken form).
    answer = await browser.post(f"/account/links/{links['alice@example.com']}/disconnect")
    assert answer.status_code == 303 and answer.headers["location"] == "/account?disconnected=1"
    assert dict(await genie.rows('SELECT u.email, l.id FROM slack_link l JOIN "user" u ON u.id = l.user_id')) == {
        e: i for e, i in links.items() if e != "alice@example.com"
    }


async def test_a_key_cannot_read_or_act_on_another_teams_alert_by_any_identifier(api: Api):
    """Search's key against Payments' alert — by uuid, alias and tiny id, every read and action:
    "not found", nothing written; the same requests with Payments' key work (control)."""
    status = await api.create(alias="payments-private", description="the secret runbook", note="secret note")
    alert = await api.get(status["alertId"])
    before = await counts(api.genie)
    forms = [(alert["id"], "id"), ("payments-private", "alias"), (alert["tinyId"], "tiny")]
    requests = [
        ("GET", "", None),
        ("GET", "/notes", None),
        ("GET", "/logs", None),
        ("POST", "/acknowledge", {}),
        ("POST", "/close", {}),
        ("POST", "/notes", {"note": "x"}),
        ("POST", "/assign", {"owner": {"username": "mallory@example.com"}}),
    ]
    for identifier, kind in forms:
        for method, action, body in requests:
            response = await api.genie.http.request(
                method,
                f"/v2/alerts/{identifier}{action}",
                params={"identifierType": kind},
                headers={"Authorization": f"GenieKey {api.keys['Search']}"},
                **({"json": body} if body is not None else {}),
            )
            answer = envelope(response, 404)
            assert "secret" not in response.text and alert["id"] not in response.text
            assert answer["message"].startswith("Alert with given"), (identifier, action)
    for query in ("", "alias:payments-private", f"tinyId:{alert['tinyId']}", "status:open"):
        assert (await api.list(team="Search", query=query))["data"] == []
    assert await counts(api.genie) == before
    # Control: the owning team's key reads the same alert by each form.
    for identifier, kind in forms:
        assert (await api.get(identifier, kind))["description"] == "the secret runbook"


async def test_a_linked_slack_user_id_from_another_workspace_or_org_is_not_the_linked_person(world):
    """Alice is linked as U0ALICE in Genie's workspace. The same user id arriving from another
    workspace, or from a foreign Enterprise Grid org, is someone else: refused as not connected
    (offered a link of its own), the alert untouched."""
    from tests.slack_driver import SlackUser
    from tests.test_alert_gate import CHANNEL

    genie = world
    alert_id, _ = await _fire(genie)
    for who in (SlackUser("U0ALICE", team_id="T0OTHERWS1"), SlackUser("U0ALICE", enterprise_id="E0EVILORG1")):
        genie.fake.clear()
        answer = await genie.slack.block_action(
            who, Action.ALERT_ACKNOWLEDGE, ButtonValue(alert_id).encode(), container="message", channel_id=CHANNEL
        )
        assert answer.status_code == 200
        [said] = await genie.fake.wait_for("response_url")
        assert "your Slack account isn't connected to a Genie account" in said.args["text"], said.args
    assert await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id) in (False, 0)
    assert (
        await genie.rows(
            "SELECT outcome, reason FROM alert_event WHERE alert_id = :a AND action = 'acknowledge'", a=alert_id
        )
        == [("denied", "Slack account not linked")] * 2
    )
    # Alice herself, from her own workspace, may.
    answer = await genie.slack.block_action(
        SlackUser("U0ALICE"),
        Action.ALERT_ACKNOWLEDGE,
        ButtonValue(alert_id).encode(),
        container="message",
        channel_id=CHANNEL,
    )
    assert answer.status_code == 200

    async def acknowledged() -> bool:
        return bool(await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))

    await eventually(acknowledged)


async def test_a_csrf_token_must_be_signed_by_genie_not_just_equal_to_the_cookie(world):
    """The form token is the CSRF cookie's value *signed* with Genie's key. A token equal to
    the cookie (what a page could copy if it could read or plant the cookie — a tossed cookie
    from a sibling subdomain) is refused, so signing out or disconnecting needs Genie's page."""
    genie = world
    browser = genie.browser()
    assert (await browser.login("alice@example.com")).status_code == 303
    await browser.get("/account")
    links = await genie.scalar("SELECT count(*) FROM slack_link")
    alice_link = await genie.scalar(
        "SELECT l.id FROM slack_link l JOIN \"user\" u ON u.id = l.user_id WHERE u.email = 'alice@example.com'"
    )
    cookie = browser.http.cookies.get("genie_csrf")
    assert cookie and cookie != browser.last_csrf
    # The value a token signs is the cookie bound to the session; that value unsigned is refused too.
    bound = hashlib.sha256(browser.http.cookies.get("genie_session").encode()).hexdigest()[:32]
    for path in ("/logout", f"/account/links/{alice_link}/disconnect"):
        for unsigned in (cookie, f"{cookie}:{bound}"):
            answer = await browser.post(path, {"csrf_token": unsigned})
            assert answer.status_code == 403, (path, unsigned)
    browser.http.cookies.set("genie_csrf", "planted-by-a-sibling")  # a tossed cookie and its twin token
    answer = await browser.post(f"/account/links/{alice_link}/disconnect", {"csrf_token": "planted-by-a-sibling"})
    assert answer.status_code == 403
    assert await genie.scalar("SELECT count(*) FROM slack_link") == links
    assert (await browser.get("/account")).status_code == 200  # still signed in
