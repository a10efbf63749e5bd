"""The signed outgoing webhook: a ``POST`` of JSON describing the alert and the page, signed
like Slack's requests, so the receiver can tell it comes from Genie and is fresh:

    X-Genie-Request-Timestamp: 1764120000
    X-Genie-Signature: v0=<hex HMAC-SHA256 of "v0:{timestamp}:{body}" keyed by the rule's secret>

The URL is checked again before every request (``notification_rules.webhook_problem``: https
only unless allowed; no loopback, private or link-local address unless
``GENIE_WEBHOOK_ALLOW_PRIVATE``); redirects are not followed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import httpx

from bot.channels.errors import Permanent, Temporary
from bot.config import Settings
from bot.services import notification_rules

TIMEOUT = 10.0
VERSION = "v0"


def sign(secret: str, timestamp: str, body: bytes) -> str:
    base = f"{VERSION}:{timestamp}:".encode() + body
    return f"{VERSION}=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def _iso(value) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value is not None else None


def page_body(settings: Settings, *, alert, team_name: str | None, page, person, step_label: str) -> dict:
    """OpsGenie-like field names (``alertId``, ``tinyId``, ``message``, ``priority`` …)."""
    return {
        "action": "Page",
        "source": {"name": "Genie", "type": "escalation"},
        "alert": {
            "alertId": alert.uid,
            "tinyId": str(alert.id),
            "alias": alert.alias,
            "message": alert.message,
            "description": alert.description,
            "priority": alert.priority,
            "status": alert.status,
            "acknowledged": alert.acknowledged,
            "tags": list(alert.tags or []),
            "entity": alert.entity,
            "source": alert.source,
            "team": team_name,
            "createdAt": _iso(alert.created_at),
            "url": f"{settings.base_url}/alerts/{alert.id}",
        },
        "page": {
            "id": page.id,
            "step": page.step + 1,
            "repeat": page.repeat_round,
            "label": step_label,
            "reason": page.reason,
            "person": {"name": person.name, "email": person.email} if person is not None else None,
        },
    }


async def send(settings: Settings, url: str, secret: str, payload: dict, *, delivery: str) -> int:
    """POST ``payload``; the status code on 2xx. ``Temporary``: a timeout, a cut connection, 5xx
    or 429; ``Permanent``: a refused URL, another 3xx/4xx."""
    problem = await notification_rules.webhook_problem(
        url, allow_http=settings.webhook_allow_http, allow_private=settings.webhook_allow_private
    )
    if problem:
        raise Permanent(problem)
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    timestamp = str(int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Genie-Webhook/1",
        "X-Genie-Request-Timestamp": timestamp,
        "X-Genie-Signature": sign(secret, timestamp, body),
        "X-Genie-Delivery": delivery,
    }
    try:
        async with httpx.AsyncClient(timeout=TIMEOUT, follow_redirects=False, trust_env=False) as client:
            response = await client.post(url, content=body, headers=headers)
    except httpx.TimeoutException:
        raise Temporary(f"the webhook did not answer within {TIMEOUT:.0f} s") from None
    except httpx.HTTPError as err:
        raise Temporary(f"the webhook could not be reached ({type(err).__name__})") from None
    if 200 <= response.status_code < 300:
        return response.status_code
    if response.status_code >= 500 or response.status_code == 429:
        raise Temporary(f"the webhook answered {response.status_code}")
    raise Permanent(f"the webhook answered {response.status_code}")
