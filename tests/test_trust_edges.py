"""Issue 13, items 11 and 12: nothing grows without bound, and the edges of trust — rate limits
per Slack identity, the periodic cleanup, the alert logs read a page at a time, replayed Slack
bodies, Slack Connect clickers, HSTS, trusted proxies, CSRF tokens bound to the session and
expiring, a protected /metrics, and `genie workspace set` asking where."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
import time
import uuid
from datetime import timedelta
from urllib.parse import urlencode

import httpx
import pytest
import uvicorn
from itsdangerous import TimestampSigner
from sqlalchemy import text

from bot.runtime import CSRF_SALT
from bot.server import uvicorn_config
from bot.services import alerts, slack_links, teams, users
from bot.services.alerts import CreateAlert
from bot.services.slack_links import SlackIdentity, SlackProfile
from storage.base import utcnow
from storage.models import (
    AlertEvent,
    ApiRequest,
    LinkRequest,
    OutboxMessage,
    SigninFailure,
    SlackEvent,
    SlackThrottle,
    WebSession,
)
from tests.conftest import SECRET_KEY, eventually, page_text
from tests.fake_slack import TEAM_ID
from tests.helpers import ack_json, walk
from tests.slack_driver import SlackUser
from tests.test_cli import base_env, ok, user_error
from tests.test_cli import genie as run_genie

ALICE, BOB, STRANGER = SlackUser("U0ALICE"), SlackUser("U0BOB"), SlackUser("U0STRANGER")
CHANNEL = "C0PAY"


async def _payments(genie, *, link_alice: bool = True) -> None:
    await genie.add_user("alice@example.com", "Alice Smith")
    async with genie.sessionmaker.begin() as s:
        await teams.add_team(s, "Payments", CHANNEL)
        await teams.add_member(s, "Payments", "alice@example.com")
        if link_alice:
            req = await slack_links.issue_link(s, SlackIdentity(TEAM_ID, "U0ALICE"), SlackProfile(), 600)
            await slack_links.redeem(
                s, req.nonce, await users.require_user(s, "alice@example.com"), replace=True, ownership_confirmed=True
            )


async def _fire(genie) -> int:
    async with genie.sessionmaker.begin() as s:
        team = await teams.require_team(s, "Payments")
        alert, _ = await alerts.create_alert(s, team, CreateAlert(message="Disk full on db-1"), str(uuid.uuid4()))
    return alert.id


async def _click(genie, who: SlackUser, alert_id: int, action_id: str = "alert_acknowledge"):
    response = await genie.slack.block_action(
        who,
        action_id,
        json.dumps({"alert": alert_id}),
        container="message",
        channel_id=CHANNEL,
        message_ts="1700000000.000100",
    )
    assert response.status_code == 200, response.text
    return response


# --- rate limits per Slack identity (item 11) -----------------------------------------------------
async def test_genie_connect_is_rate_limited_per_identity_in_the_database(genie):
    for _ in range(5):
        assert "blocks" in ack_json(await genie.slack.command(STRANGER, "connect"))
    refused = ack_json(await genie.slack.command(STRANGER, "connect"))
    assert refused["text"].startswith("You asked for 5 connect links in the last 10 minutes")
    assert "Try again in 10 minutes; the last link you got still works" in refused["text"]
    assert "blocks" not in refused  # no new link
    assert await genie.scalar("SELECT count(*) FROM link_request WHERE slack_user_id = 'U0STRANGER'") == 5
    # Someone else is not affected.
    assert "blocks" in ack_json(await genie.slack.command(BOB, "connect"))
    # The count is rows in the database (every process reads the same): as they age out of the
    # window, a link can be asked for again.
    async with genie.sessionmaker.begin() as s:
        await s.execute(
            text("UPDATE slack_throttle SET at = :t WHERE slack_user_id = 'U0STRANGER'"),
            {"t": utcnow() - timedelta(minutes=11)},
        )
    assert "blocks" in ack_json(await genie.slack.command(STRANGER, "connect"))


async def test_refused_clicks_are_rate_limited_per_identity_and_stop_growing_the_timeline(genie):
    await _payments(genie)
    alert_id = await _fire(genie)
    for _ in range(10):
        await _click(genie, STRANGER, alert_id)
    await genie.fake.wait_for("response_url", count=10)
    assert (
        await genie.scalar("SELECT count(*) FROM alert_event WHERE alert_id = :a AND outcome = 'denied'", a=alert_id)
        == 10
    )
    links = await genie.scalar("SELECT count(*) FROM link_request")
    await _click(genie, STRANGER, alert_id)
    told = (await genie.fake.wait_for("response_url", count=11))[-1].args
    assert told["text"].startswith("You were refused 10 times in the last 1 minute, so Genie is ignoring your clicks")
    assert not any(d.get("action_id") == "connect_link" for d in walk(told.get("blocks")))
    # Nothing written for it: no timeline row, no new link request.
    assert (
        await genie.scalar("SELECT count(*) FROM alert_event WHERE alert_id = :a AND outcome = 'denied'", a=alert_id)
        == 10
    )
    assert await genie.scalar("SELECT count(*) FROM link_request") == links
    # Allowed clicks are never counted: Alice acknowledges at once.
    await _click(genie, ALICE, alert_id)
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))


# --- the periodic cleanup (item 11) ---------------------------------------------------------------
@pytest.mark.parametrize("genie_settings", [{"GENIE_CLEANUP_INTERVAL": "1"}])
async def test_the_running_server_prunes_what_can_no_longer_matter(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    now = utcnow()
    old, fresh = now - timedelta(days=8), now - timedelta(seconds=5)
    async with genie.sessionmaker.begin() as s:
        user = await users.require_user(s, "alice@example.com")
        for tag, at in (("old", old), ("new", fresh)):
            s.add(
                LinkRequest(
                    nonce=f"{tag}-nonce-0123456789",
                    workspace_id=TEAM_ID,
                    slack_user_id="U0X",
                    slack_team_id=TEAM_ID,
                    created_at=at,
                    expires_at=at + timedelta(minutes=10),
                )
            )
            s.add(SlackEvent(event_id=f"Ev-{tag}", received_at=at))
            s.add(SlackThrottle(kind="connect", workspace_id=TEAM_ID, slack_user_id="U0X", at=at))
            s.add(SigninFailure(account="a" * 64, address=tag, at=at))
            s.add(
                WebSession(
                    token_hash=tag.ljust(64, "0"), user_id=user.id, created_at=at, expires_at=at + timedelta(hours=1)
                )
            )
            s.add(ApiRequest(request_id=f"{tag}-request", action="create", success=True, status="ok", processed_at=at))
            s.add(OutboxMessage(channel="C0X", kind="message", payload={}, created_at=at, delivered_at=at))
        s.add(
            OutboxMessage(
                channel="C0X", kind="message", payload={}, created_at=old, failed_at=old, last_error="channel_not_found"
            )
        )  # failed: kept for operators

    tables = ("link_request", "slack_event", "slack_throttle", "signin_failure", "web_session", "api_request", "outbox")

    async def pruned():
        return all([await genie.scalar(f"SELECT count(*) FROM {t}") == (2 if t == "outbox" else 1) for t in tables])

    await eventually(pruned, timeout=10)
    assert await genie.scalar("SELECT nonce FROM link_request") == "new-nonce-0123456789"
    assert await genie.scalar("SELECT event_id FROM slack_event") == "Ev-new"
    assert await genie.scalar("SELECT address FROM signin_failure") == "new"
    assert await genie.scalar("SELECT request_id FROM api_request") == "new-request"
    assert await genie.scalar("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL") == 1


# --- the alert's logs and notes, a page at a time (item 11) ---------------------------------------
async def test_logs_and_notes_are_read_a_page_at_a_time_with_opsgenie_paging(genie):
    await _payments(genie)
    alert_id = await _fire(genie)
    async with genie.sessionmaker.begin() as s:
        key = await alerts.team_key(s, await teams.require_team(s, "Payments"))
        for i in range(230):
            s.add(
                AlertEvent(
                    alert_id=alert_id,
                    action="note",
                    outcome="applied",
                    via="api",
                    actor_name="Alertmanager",
                    note=f"note {i}",
                )
            )
        s.add(AlertEvent(alert_id=alert_id, action="note", outcome="denied", via="slack", note="refused"))
    auth = {"Authorization": f"GenieKey {key}"}
    ids = [r[0] for r in await genie.rows("SELECT id FROM alert_event WHERE alert_id = :a ORDER BY id", a=alert_id)]

    async def walk_pages(path: str, **params) -> list[str]:
        seen, url = [], f"/v2/alerts/{alert_id}/{path}"
        params = {"identifierType": "tiny", **params}
        while url:
            answer = await genie.http.get(url, headers=auth, params=params if not seen else None)
            assert answer.status_code == 200, answer.text
            body = answer.json()
            assert len(body["data"]) <= int(params.get("limit", 100))
            seen += [item["offset"] for item in body["data"]]
            url = body["paging"].get("next", "").removeprefix(genie.url)
        return seen

    assert await walk_pages("logs") == [str(i) for i in reversed(ids)]  # newest first, OpsGenie's default
    assert await walk_pages("logs", limit=7, order="asc") == [str(i) for i in ids]
    notes = await walk_pages("notes", limit=50)
    assert len(notes) == 230  # the refused note is not one
    # direction=prev: the page just before an offset, in the same order.
    back = await genie.http.get(
        f"/v2/alerts/{alert_id}/logs",
        headers=auth,
        params={"offset": str(ids[100]), "direction": "prev", "limit": 5, "order": "asc", "identifierType": "tiny"},
    )
    assert [item["offset"] for item in back.json()["data"]] == [str(i) for i in ids[95:100]]
    back = await genie.http.get(
        f"/v2/alerts/{alert_id}/logs",
        headers=auth,
        params={"offset": str(ids[100]), "direction": "prev", "limit": 5, "order": "desc", "identifierType": "tiny"},
    )
    assert [item["offset"] for item in back.json()["data"]] == [str(i) for i in reversed(ids[101:106])]


# --- a signed Slack body replayed (item 12) -------------------------------------------------------
def _click_body(alert_id: int, user: str = "U0STRANGER", user_team: str = TEAM_ID, response_url: str = "") -> str:
    payload = {
        "type": "block_actions",
        "api_app_id": "A0GENIE",
        "token": "legacy",
        "trigger_id": "9.9.9",
        "team": {"id": TEAM_ID, "domain": "acme"},
        "enterprise": None,
        "is_enterprise_install": False,
        "user": {"id": user, "username": user.lower(), "team_id": user_team},
        "container": {"type": "message", "message_ts": "1700000000.000100", "channel_id": CHANNEL},
        "channel": {"id": CHANNEL, "name": "alerts"},
        "response_url": response_url,
        "actions": [
            {
                "action_id": "alert_acknowledge",
                "block_id": "b1",
                "type": "button",
                "value": json.dumps({"alert": alert_id}),
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)})


async def test_a_replayed_signed_click_or_command_is_taken_in_once(genie):
    await _payments(genie)
    alert_id = await _fire(genie)
    body = _click_body(alert_id, response_url=genie.fake.response_url("replay"))
    ts = int(time.time())
    for _ in range(3):
        assert (await genie.slack.post(body, "application/x-www-form-urlencoded", timestamp=ts)).status_code == 200
    await genie.fake.wait_for("response_url", count=1)
    assert await genie.scalar("SELECT count(*) FROM alert_event WHERE alert_id = :a", a=alert_id) == 2  # create + 1
    # Alice's link (made in _payments) and the one Connect link offered to the single click taken in …
    assert await genie.scalar("SELECT count(*) FROM link_request") == 2
    command = urlencode(
        {
            "team_id": TEAM_ID,
            "team_domain": "acme",
            "channel_id": "C0GENERAL",
            "user_id": "U0BOB",
            "user_name": "bob",
            "command": "/genie",
            "text": "connect",
            "api_app_id": "A0GENIE",
            "response_url": genie.fake.response_url("cmd"),
            "trigger_id": "1.2.3",
        }
    )
    first = await genie.slack.post(command, "application/x-www-form-urlencoded", timestamp=ts)
    assert "blocks" in ack_json(first)
    again = await genie.slack.post(command, "application/x-www-form-urlencoded", timestamp=ts)
    assert again.status_code == 200 and again.content == b""
    assert await genie.scalar("SELECT count(*) FROM link_request WHERE slack_user_id = 'U0BOB'") == 1
    # … and the same click with a new body (a real second click) is judged again.
    await genie.slack.post(
        _click_body(alert_id, response_url=genie.fake.response_url("r2")), "application/x-www-form-urlencoded"
    )
    await genie.fake.wait_for("response_url", count=2)
    assert await genie.scalar("SELECT count(*) FROM alert_event WHERE alert_id = :a", a=alert_id) == 3


async def test_a_replayed_click_on_an_unknown_alert_is_answered_once(genie):
    """The replay guard and the gate's read are one statement on PostgreSQL; a click on an alert
    that does not exist still takes its body in: the first delivery is told, the replays not."""
    await _payments(genie)
    body = _click_body(987654, response_url=genie.fake.response_url("gone"))
    ts = int(time.time())
    for _ in range(3):
        assert (await genie.slack.post(body, "application/x-www-form-urlencoded", timestamp=ts)).status_code == 200
    told = await genie.fake.wait_for("response_url", count=1)
    assert "doesn't exist" in told[0].args["text"]
    await asyncio.sleep(0.3)  # (the replays' work, had they done any, is after their acks)
    assert len(genie.fake.calls("response_url")) == 1
    assert await genie.scalar("SELECT count(*) FROM slack_event WHERE event_id LIKE 'body:%'") == 1


# --- Slack Connect clickers (item 12) -------------------------------------------------------------
async def test_a_slack_connect_clicker_is_external_even_with_a_linked_users_id(genie):
    """U0ALICE is linked in the host workspace. A click from a user of another organization in a
    shared channel carries the host's ``team`` and the clicker's own ``user.team_id``: even when
    the user id is the same string, it is not Alice, and it is refused as external."""
    await _payments(genie)
    alert_id = await _fire(genie)
    await genie.slack.post(
        _click_body(alert_id, user="U0ALICE", user_team="T0OTHERORG", response_url=genie.fake.response_url("ext")),
        "application/x-www-form-urlencoded",
    )
    told = (await genie.fake.wait_for("response_url"))[-1].args
    assert "you are in another organization (Slack Connect)" in told["text"]
    assert not any(d.get("action_id") == "connect_link" for d in walk(told.get("blocks")))
    assert await genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id) in (False, 0)
    assert await genie.rows(
        "SELECT outcome, reason, slack_workspace_id, actor_user_id FROM alert_event "
        "WHERE alert_id = :a AND action = 'acknowledge'",
        a=alert_id,
    ) == [("denied", "Slack Connect user of another organization", "T0OTHERORG", None)]
    # The same click from the host's own Alice acts.
    await genie.slack.post(
        _click_body(alert_id, user="U0ALICE", response_url=genie.fake.response_url("in")),
        "application/x-www-form-urlencoded",
    )
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=alert_id))


# --- HSTS and /metrics (item 12) ------------------------------------------------------------------
@pytest.mark.parametrize("genie_settings", [{"GENIE_BASE_URL": "https://genie.example.com"}])
async def test_hsts_is_sent_when_the_base_url_is_https(genie):
    for path in ("/", "/login", "/healthz", "/nowhere"):
        assert (await genie.http.get(path)).headers["strict-transport-security"] == "max-age=31536000"


async def test_no_hsts_over_plain_http(genie):
    assert "strict-transport-security" not in (await genie.http.get("/")).headers


METRICS_TOKEN = "metrics-token-0123456789abcdef"


@pytest.mark.parametrize("genie_settings", [{"GENIE_METRICS_TOKEN": METRICS_TOKEN}])
async def test_metrics_need_the_bearer_token_when_one_is_set(genie):
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": f"Bearer {METRICS_TOKEN}x"},
        {"Authorization": METRICS_TOKEN},
        {"Authorization": f"Basic {METRICS_TOKEN}"},
    ):
        refused = await genie.http.get("/metrics", headers=headers)
        assert refused.status_code == 401 and "genie_" not in refused.text
        assert refused.headers["www-authenticate"].startswith("Bearer")
    allowed = await genie.http.get("/metrics", headers={"Authorization": f"Bearer {METRICS_TOKEN}"})
    assert allowed.status_code == 200 and "genie_http_requests_total" in allowed.text


async def test_metrics_are_open_without_a_token(genie):
    assert "genie_http_requests_total" in (await genie.http.get("/metrics")).text


# --- trusted proxies (item 12) --------------------------------------------------------------------
async def _client_seen(settings_env: dict[str, str]) -> str:
    """Serve an app that answers with the client address it was given, through the uvicorn
    configuration ``genie serve`` uses, and ask it with an ``X-Forwarded-For`` header."""
    from bot.config import Settings

    async def echo(scope, receive, send):
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": scope["client"][0].encode()})

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn_config(
        echo, Settings.from_env(settings_env), "127.0.0.1", port, lifespan="off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        async with httpx.AsyncClient() as http:
            answer = await http.get(f"http://127.0.0.1:{port}/", headers={"X-Forwarded-For": "203.0.113.9"})
        return answer.text
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=10)
        sock.close()


async def test_x_forwarded_for_is_believed_only_from_the_configured_proxies(monkeypatch):
    monkeypatch.setenv("FORWARDED_ALLOW_IPS", "*")  # uvicorn's own variable: not Genie's setting
    assert await _client_seen({}) == "127.0.0.1"
    assert await _client_seen({"GENIE_FORWARDED_ALLOW_IPS": "10.0.0.5"}) == "127.0.0.1"
    assert await _client_seen({"GENIE_FORWARDED_ALLOW_IPS": "10.0.0.5, 127.0.0.0/8"}) == "203.0.113.9"


# --- CSRF tokens bound to the session and expiring (item 12) --------------------------------------
async def test_a_csrf_token_is_good_only_in_its_own_session(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("bob@example.com", "Bob Jones")
    alice = genie.browser()
    assert (await alice.login("alice@example.com")).status_code == 303
    await alice.get("/account")
    alice_token = alice.last_csrf
    assert alice_token
    # Bob's browser, with Alice's token and her CSRF cookie planted: refused, Bob stays signed in.
    bob = genie.browser()
    assert (await bob.login("bob@example.com")).status_code == 303
    bob.http.cookies.set("genie_csrf", alice.http.cookies["genie_csrf"])
    refused = await bob.post("/logout", {"csrf_token": alice_token})
    assert refused.status_code == 403 and "Please try again" in page_text(refused)
    assert (await bob.get("/account")).status_code == 200
    # A token drawn before signing in is no good after it (the session changed) …
    carol_page = genie.browser()
    await carol_page.get("/login")
    before = carol_page.last_csrf
    await carol_page.login("alice@example.com")
    assert (await carol_page.post("/logout", {"csrf_token": before})).status_code == 403
    # … and Alice's own token works in her own session.
    assert (await alice.post("/logout", {"csrf_token": alice_token})).status_code == 303


async def test_a_csrf_token_expires(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    alice = genie.browser()
    assert (await alice.login("alice@example.com")).status_code == 303
    await alice.get("/account")
    session = alice.http.cookies["genie_session"]
    value = f"{alice.http.cookies['genie_csrf']}:{hashlib.sha256(session.encode()).hexdigest()[:32]}"

    class Then(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - 12 * 3600 - 60

    stale = Then(SECRET_KEY, salt=CSRF_SALT).sign(value).decode()
    fresh = TimestampSigner(SECRET_KEY, salt=CSRF_SALT).sign(value).decode()
    assert (await alice.post("/logout", {"csrf_token": stale})).status_code == 403
    assert (await alice.get("/account")).status_code == 200
    assert (await alice.post("/logout", {"csrf_token": fresh})).status_code == 303


# --- genie workspace set asks where (item 12) -----------------------------------------------------
async def test_workspace_set_needs_a_workspace_or_all_workspaces(tmp_path, db_url):
    env = base_env(DATABASE_URL=db_url, GENIE_SECRET_KEY=SECRET_KEY)

    def cli(*args: str):
        return asyncio.to_thread(run_genie, tmp_path, env, *args)

    user_error(
        await cli("workspace", "set", "auto_link_by_email", "true"),
        "--workspace",
        "--all-workspaces",
        "including workspaces installed later",
    )
    assert await _settings(db_url) == []  # nothing was set
    ok(
        await cli("workspace", "set", "auto_link_by_email", "true", "--all-workspaces"),
        "auto_link_by_email = true for every workspace without a value of its own, including workspaces installed later",
    )
    ok(
        await cli("workspace", "set", "auto_link_by_email", "false", "--workspace", "T0123ABCD"),
        "auto_link_by_email = false for workspace T0123ABCD",
    )
    assert await _settings(db_url) == [
        ("*", "auto_link_by_email", "true"),
        ("T0123ABCD", "auto_link_by_email", "false"),
    ]


async def _settings(db_url: str) -> list[tuple]:
    from storage.session import make_engine, make_sessionmaker

    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine)() as s:
            rows = await s.execute(text("SELECT workspace_id, key, value FROM workspace_setting ORDER BY workspace_id"))
            return [tuple(r) for r in rows]
    finally:
        await engine.dispose()


@pytest.mark.parametrize(
    "env, variable",
    [
        ({"GENIE_FORWARDED_ALLOW_IPS": "10.0.0.5,lb.internal"}, "GENIE_FORWARDED_ALLOW_IPS"),
        ({"GENIE_METRICS_TOKEN": "short"}, "GENIE_METRICS_TOKEN"),
        ({"GENIE_CLEANUP_INTERVAL": "0"}, "GENIE_CLEANUP_INTERVAL"),
        ({"GENIE_CLEANUP_INTERVAL": "ten"}, "GENIE_CLEANUP_INTERVAL"),
    ],
)
def test_the_new_settings_refuse_bad_values_naming_the_variable(env, variable):
    from bot.config import ConfigError, Settings

    with pytest.raises(ConfigError) as refused:
        Settings.from_env(env)
    assert refused.value.variable == variable
    good = Settings.from_env({"GENIE_FORWARDED_ALLOW_IPS": " 10.0.0.5, 10.0.1.0/24 ", "GENIE_CLEANUP_INTERVAL": "60"})
    assert good.forwarded_allow_ips == ("10.0.0.5", "10.0.1.0/24") and good.cleanup_interval == 60
    assert good.metrics_token is None
