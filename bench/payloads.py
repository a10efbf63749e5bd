"""Requests exactly as Slack, a monitoring tool and a browser send them, built before the clock
starts so the load generator only writes bytes.

Slack's requests are form-encoded (``payload=`` JSON for interactivity) and signed with the v0
HMAC over ``v0:{timestamp}:{body}`` (the same scheme as ``tests/slack_driver.py``).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

FORM = "application/x-www-form-urlencoded"


def signed_headers(secret: str, body: bytes, timestamp: int | None = None) -> dict[str, str]:
    ts = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), b"v0:%d:" % ts + body, hashlib.sha256).hexdigest()
    return {"Content-Type": FORM, "X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": "v0=" + digest}


def button_value(alert_id: int) -> str:
    return json.dumps({"alert": alert_id}, separators=(",", ":"))


def click(
    secret: str,
    *,
    user_id: str,
    team_id: str,
    team_domain: str,
    channel: str,
    alert_id: int,
    response_url: str,
    message: dict | None,
    action_id: str = "alert_acknowledge",
) -> tuple[bytes, dict]:
    """A ``block_actions`` click on an alert message's button, with the message as Slack sends it."""
    now = time.time()
    payload = {
        "type": "block_actions",
        "user": {"id": user_id, "username": user_id.lower(), "name": user_id.lower(), "team_id": team_id},
        "api_app_id": "A0GENIE",
        "token": "legacy-verification-token",
        "container": {
            "type": "message",
            "message_ts": f"{int(now)}.000100",
            "channel_id": channel,
            "is_ephemeral": False,
        },
        "trigger_id": f"{int(now)}.1.{alert_id}",
        "team": {"id": team_id, "domain": team_domain},
        "enterprise": None,
        "is_enterprise_install": False,
        "channel": {"id": channel, "name": "alerts"},
        "message": message,
        "state": {"values": {}},
        "response_url": response_url,
        "actions": [
            {
                "action_id": action_id,
                "block_id": "alert_actions",
                "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
                "value": button_value(alert_id),
                "style": "primary",
                "type": "button",
                "action_ts": f"{now:.6f}",
            }
        ],
    }
    body = urlencode({"payload": json.dumps(payload, separators=(",", ":"))}).encode()
    return body, signed_headers(secret, body)


def command(
    secret: str, *, user_id: str, team_id: str, team_domain: str, text: str, response_url: str
) -> tuple[bytes, dict]:
    """``/genie <text>`` as Slack posts a slash command."""
    form = {
        "token": "legacy-verification-token",
        "team_id": team_id,
        "team_domain": team_domain,
        "channel_id": "C0GENERAL",
        "channel_name": "general",
        "user_id": user_id,
        "user_name": user_id.lower(),
        "command": "/genie",
        "text": text,
        "api_app_id": "A0GENIE",
        "is_enterprise_install": "false",
        "response_url": response_url,
        "trigger_id": "1.2.3",
    }
    body = urlencode(form).encode()
    return body, signed_headers(secret, body)


def confirm(csrf_token: str, cookie_header: str) -> tuple[bytes, dict]:
    """The confirm page's form POST (CSRF token, replace chosen, and the second step — "this Slack
    account is mine" — for a Slack account whose email Slack does not vouch for), with the
    browser's cookies."""
    body = urlencode({"csrf_token": csrf_token, "replace": "yes", "mine": "yes"}).encode()
    return body, {"Content-Type": FORM, "Cookie": cookie_header}


def create_alert(key: str, *, message: str, alias: str) -> tuple[bytes, dict]:
    """``POST /v2/alerts`` as Alertmanager's OpsGenie receiver sends it (roughly)."""
    body = json.dumps(
        {
            "message": message,
            "alias": alias,
            "priority": "P2",
            "source": "bench",
            "description": "Benchmark alert: error rate above threshold for 5 minutes.",
            "tags": ["bench", "checkout"],
            "details": {"host": "web-1", "region": "eu-west-1"},
        }
    ).encode()
    return body, {"Content-Type": "application/json", "Authorization": f"GenieKey {key}"}
