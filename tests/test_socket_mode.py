"""Socket Mode (``genie serve --socket-mode``), from the outside: the real ``genie serve`` as a
subprocess with an app-level token and no signing secret, Slack as the fake Web API plus its
Socket Mode WebSocket. Slack's requests arrive over the WebSocket and are acked there; the link
pages, the alert API and health still serve over HTTP; ``POST /slack/events`` takes nothing in.
"""

from __future__ import annotations

import subprocess
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests import forkserver
from tests.conftest import SECRET_KEY, SIGNING_SECRET
from tests.fake_slack import TEAM_DOMAIN, TEAM_ID, FakeSlack
from tests.helpers import block_text, buttons
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackDriver, SlackUser

APP_TOKEN = "xapp-1-A0GENIE-1-socketmodetoken"
BOT_TOKEN = "xoxb-socket-mode-token"
ALICE = SlackUser("U0ALICE")


@pytest.fixture
def slack() -> FakeSlack:
    fake = FakeSlack().start()
    fake.add_user("U0ALICE", "Alice Smith", "alice@example.com")
    yield fake
    fake.stop()


def genie_cli(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess:
    return forkserver.run(args, env=env, cwd=cwd, timeout=60)


def socket_env(db_url: str, slack: FakeSlack, port: int, **extra: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_API_URL=slack.api_url,
        **extra,
    )


@pytest.fixture
def serve_socket_mode(request, tmp_path: Path):
    def start(env: dict[str, str], port: int) -> GenieServer:
        server = GenieServer.start(env, port, cwd=tmp_path, args=("--socket-mode",))
        request.addfinalizer(server.stop)
        return server

    return start


def command_payload(who: SlackUser, text: str, slack: FakeSlack) -> dict:
    """A slash command as Slack sends it over Socket Mode: the form fields, as JSON."""
    return {
        "token": "legacy-verification-token",
        "team_id": who.team_id,
        "team_domain": TEAM_DOMAIN,
        "channel_id": "C0GENERAL",
        "channel_name": "general",
        "user_id": who.user_id,
        "user_name": who.user_id.lower(),
        "command": "/genie",
        "text": text,
        "api_app_id": "A0GENIE",
        "is_enterprise_install": "false",
        "response_url": slack.response_url(uuid.uuid4().hex),
        "trigger_id": "1.2.3",
    }


def event_payload(who: SlackUser, event: dict) -> dict:
    return {
        "token": "legacy-verification-token",
        "team_id": who.team_id,
        "api_app_id": "A0GENIE",
        "event": event,
        "type": "event_callback",
        "event_id": f"Ev{uuid.uuid4().hex[:12].upper()}",
        "event_time": int(time.time()),
        "authorizations": [
            {
                "enterprise_id": None,
                "team_id": who.team_id,
                "user_id": "U0GENIEBOT",
                "is_bot": True,
                "is_enterprise_install": False,
            }
        ],
        "is_ext_shared_channel": False,
    }


async def test_socket_mode_serves_slack_over_the_websocket_and_the_rest_over_http(
    db_url, slack, serve_socket_mode, tmp_path
):
    port = free_port()
    env = socket_env(db_url, slack, port)
    assert "SLACK_SIGNING_SECRET" not in env
    added = genie_cli(env, tmp_path, "team", "add", "payments", "--channel", "C0PAY")
    assert added.returncode == 0, added.stderr
    key = genie_cli(env, tmp_path, "team", "key", "payments").stdout.strip()

    genie = serve_socket_mode(env, port)
    await genie.wait_healthy()
    await slack.socket_connected()
    # The WebSocket URL came from apps.connections.open, asked with the app-level token only.
    opened = slack.calls("apps.connections.open")
    assert opened and all(c.token == APP_TOKEN for c in opened)

    # /genie connect over the WebSocket: the ack carries the ephemeral Connect button.
    ack = await slack.socket_request("slash_commands", command_payload(ALICE, "connect", slack))
    payload = ack["payload"]
    assert payload["response_type"] == "ephemeral"
    url = buttons(payload["blocks"])["connect_link"]["url"]
    assert url.startswith(f"{genie.url}/link/")
    await slack.wait_for("users.info", user="U0ALICE", timeout=10)  # looked up after the ack, with the bot token
    assert all(c.token == BOT_TOKEN for c in slack.calls("users.info"))

    async with httpx.AsyncClient(base_url=genie.url, timeout=30) as http:
        # The link page is served over HTTP as usual.
        page = await http.get(url.removeprefix(genie.url))
        assert page.status_code == 200, page.text
        assert "Connect your Slack account" in page.text

        # App Home over the WebSocket: Genie publishes the Home tab.
        event = event_payload(
            ALICE,
            {
                "type": "app_home_opened",
                "user": "U0ALICE",
                "channel": "D0HOME",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
        )
        ack = await slack.socket_request("events_api", event)
        assert "payload" not in ack or not ack["payload"]
        published = await slack.wait_for("views.publish", user_id="U0ALICE", timeout=10)
        assert published[0].token == BOT_TOKEN

        # Interactivity over the WebSocket: Disconnect on the Home tab is acked there, Home republished.
        click = {
            "type": "block_actions",
            "api_app_id": "A0GENIE",
            "token": "legacy-verification-token",
            "trigger_id": "1.2.3",
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "is_enterprise_install": False,
            "user": {"id": "U0ALICE", "username": "u0alice", "team_id": TEAM_ID},
            "container": {"type": "view", "view_id": "V0001"},
            "view": {"id": "V0001", "type": "home", "team_id": TEAM_ID, "blocks": []},
            "actions": [
                {
                    "action_id": "home_disconnect",
                    "block_id": "b1",
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                    "text": {"type": "plain_text", "text": "x"},
                }
            ],
        }
        ack = await slack.socket_request("interactive", click)
        assert not ack.get("payload")
        await slack.wait_for("views.publish", count=2, user_id="U0ALICE", timeout=10)

        # HTTP Slack requests are refused, signed or not: nothing unsigned may get in.
        for secret in (SIGNING_SECRET, ""):
            refused = await SlackDriver(http, secret, slack).command(ALICE, "connect")
            assert refused.status_code in (404, 503), refused.text
        assert len(slack.calls("users.info")) == 1

        # The OpsGenie API still works over HTTP, and the outbox worker posts the alert.
        created = await http.post(
            "/v2/alerts",
            json={"message": "Checkout is down", "alias": "checkout"},
            headers={"Authorization": f"GenieKey {key}"},
        )
        assert created.status_code == 202, created.text
        posted = await slack.wait_for("chat.postMessage", channel="C0PAY", timeout=15)
        assert "Checkout is down" in (posted[0].args.get("text") or "") + block_text(posted[0].args.get("blocks"))
        assert posted[0].token == BOT_TOKEN

        # A gated click over the WebSocket: Alice (not connected: she never confirmed) clicks
        # Acknowledge on the posted alert. The gate refuses her — the ack is empty, the refusal
        # comes to her response_url, the timeline has the denial — and the alert is untouched.
        value = buttons(posted[0].args["blocks"])["alert_acknowledge"]["value"]
        click = {
            "type": "block_actions",
            "api_app_id": "A0GENIE",
            "token": "legacy-verification-token",
            "trigger_id": "1.2.4",
            "team": {"id": TEAM_ID, "domain": TEAM_DOMAIN},
            "is_enterprise_install": False,
            "user": {"id": "U0ALICE", "username": "u0alice", "team_id": TEAM_ID},
            "container": {"type": "message", "message_ts": posted[0].args.get("ts", "1.2"), "channel_id": "C0PAY"},
            "channel": {"id": "C0PAY", "name": "payments"},
            "response_url": slack.response_url("socket-ack"),
            "actions": [
                {
                    "action_id": "alert_acknowledge",
                    "block_id": "b1",
                    "type": "button",
                    "value": value,
                    "action_ts": f"{time.time():.6f}",
                    "text": {"type": "plain_text", "text": "x"},
                }
            ],
        }
        ack = await slack.socket_request("interactive", click)
        assert not ack.get("payload")
        [said] = await slack.wait_for("response_url", timeout=10)
        assert "your Slack account isn't connected to a Genie account" in said.args["text"], said.args
        logs = (
            await http.get(
                "/v2/alerts/checkout/logs",
                params={"identifierType": "alias"},
                headers={"Authorization": f"GenieKey {key}"},
            )
        ).json()["data"]
        assert "Acknowledge by Slack user U0ALICE via Slack was denied — Slack account not linked" in [
            e["log"] for e in logs
        ]
        alert = (
            await http.get(
                "/v2/alerts/checkout", params={"identifierType": "alias"}, headers={"Authorization": f"GenieKey {key}"}
            )
        ).json()["data"]
        assert alert["acknowledged"] is False

        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/metrics")).status_code == 200

    genie.stop()
    log = genie.log()
    assert "connected to Slack over Socket Mode" in log, log
    assert APP_TOKEN not in log and BOT_TOKEN not in log


async def test_socket_mode_reconnects_when_slack_asks(db_url, slack, serve_socket_mode):
    port = free_port()
    genie = serve_socket_mode(socket_env(db_url, slack, port), port)
    await genie.wait_healthy()
    await slack.socket_connected()
    assert len(slack.calls("apps.connections.open")) == 1

    # Slack's "disconnect" (e.g. refresh_requested): the app asks for a new URL and reconnects.
    await slack.socket_disconnect()
    await slack.wait_for("apps.connections.open", count=2, timeout=15)
    await slack.socket_reconnected()
    ack = await slack.socket_ack(
        await slack.send_envelope("slash_commands", command_payload(ALICE, "help", slack)), timeout=15
    )
    assert ack["payload"]["response_type"] == "ephemeral"
    assert "connect" in block_text(ack["payload"].get("blocks")) + ack["payload"].get("text", "")


@pytest.mark.parametrize(
    "extra, variable",
    [
        ({"SLACK_APP_TOKEN": ""}, "SLACK_APP_TOKEN"),
        ({"SLACK_APP_TOKEN": "xoxb-not-an-app-token"}, "SLACK_APP_TOKEN"),
        ({"SLACK_BOT_TOKEN": ""}, "SLACK_BOT_TOKEN"),
        (
            {"SLACK_BOT_TOKEN": "", "SLACK_CLIENT_ID": "123.456", "SLACK_CLIENT_SECRET": "client-secret-xyz"},
            "SLACK_CLIENT_ID",
        ),
    ],
)
def test_socket_mode_stops_at_start_naming_the_variable(extra, variable, tmp_path):
    env = clean_env(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path / 'genie.db'}",
        SLACK_APP_TOKEN=APP_TOKEN,
        SLACK_BOT_TOKEN=BOT_TOKEN,
    )
    env.update(extra)
    done = forkserver.run(["serve", "--socket-mode", "--port", "0"], cwd=tmp_path, env=env, timeout=30)
    assert done.returncode == 1, (done.stdout, done.stderr)
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("genie: ") and variable in lines[0], done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "genie.db").exists()
