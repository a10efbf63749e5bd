"""Sends requests to Genie exactly as Slack does: form-encoded bodies (``payload=`` JSON for
interactivity), JSON for events, and the v0 signature headers."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx

from tests.fake_slack import TEAM_DOMAIN, TEAM_ID


def sign(secret: str, timestamp: int, body: str) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


@dataclass
class SlackUser:
    user_id: str
    team_id: str = TEAM_ID
    enterprise_id: str | None = None
    team_domain: str = TEAM_DOMAIN
    #: The app is installed org-wide on Enterprise Grid (Slack then says so in every request).
    org_install: bool = False


class SlackDriver:
    def __init__(self, http: httpx.AsyncClient, signing_secret: str, fake) -> None:
        self.http = http
        self.secret = signing_secret
        self.fake = fake
        self._n = 0

    async def post(
        self,
        body: str,
        content_type: str,
        *,
        timestamp: int | None = None,
        secret: str | None = None,
        signature: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        ts = int(time.time()) if timestamp is None else timestamp
        all_headers = {
            "Content-Type": content_type,
            "X-Slack-Request-Timestamp": str(ts),
            "X-Slack-Signature": signature if signature is not None else sign(secret or self.secret, ts, body),
        }
        all_headers.update(headers or {})
        return await self.http.post("/slack/events", content=body.encode(), headers=all_headers)

    def _rid(self) -> str:
        self._n += 1
        return f"r{self._n}-{time.monotonic_ns()}"

    async def command(self, who: SlackUser, text: str, **kw) -> httpx.Response:
        form = {
            "token": "legacy-verification-token",
            "team_id": who.team_id,
            "team_domain": who.team_domain,
            "channel_id": "C0GENERAL",
            "channel_name": "general",
            "user_id": who.user_id,
            "user_name": who.user_id.lower(),
            "command": "/genie",
            "text": text,
            "api_app_id": "A0GENIE",
            "is_enterprise_install": "true" if who.org_install else "false",
            "response_url": self.fake.response_url(self._rid()),
            "trigger_id": "1.2.3",
        }
        if who.enterprise_id:
            form["enterprise_id"] = who.enterprise_id
            form["enterprise_name"] = "Acme Org"
        return await self.post(urlencode(form), "application/x-www-form-urlencoded", **kw)

    async def block_action(
        self,
        who: SlackUser,
        action_id: str,
        value: str | None = None,
        *,
        container: str = "view",
        url: str | None = None,
        selected_option: dict | None = None,
        channel_id: str = "C0GENERAL",
        message_ts: str = "1.2",
        block_id: str = "b1",
        message: dict | None = None,
        **kw,
    ) -> httpx.Response:
        action: dict[str, Any] = {
            "action_id": action_id,
            "block_id": block_id,
            "type": "button",
            "action_ts": f"{time.time():.6f}",
            "text": {"type": "plain_text", "text": "x"},
        }
        if value is not None:
            action["value"] = value
        if selected_option is not None:
            action = {
                "action_id": action_id,
                "block_id": block_id,
                "type": "static_select",
                "action_ts": f"{time.time():.6f}",
                "selected_option": selected_option,
            }
        if url is not None:
            action["url"] = url
        payload: dict[str, Any] = {
            "type": "block_actions",
            "api_app_id": "A0GENIE",
            "token": "legacy-verification-token",
            "trigger_id": "1.2.3",
            "team": {
                "id": who.team_id,
                "domain": who.team_domain,
                **({"enterprise_id": who.enterprise_id} if who.enterprise_id else {}),
            },
            "enterprise": {"id": who.enterprise_id, "name": "Acme Org"} if who.enterprise_id else None,
            "is_enterprise_install": who.org_install,
            "user": {"id": who.user_id, "username": who.user_id.lower(), "team_id": who.team_id},
            "actions": [action],
        }
        if container == "view":
            payload["container"] = {"type": "view", "view_id": "V0001"}
            payload["view"] = {"id": "V0001", "type": "home", "team_id": who.team_id, "blocks": []}
        else:
            payload["container"] = {
                "type": "message",
                "message_ts": message_ts,
                "channel_id": channel_id,
                "is_ephemeral": container == "ephemeral",
            }
            payload["channel"] = {"id": channel_id, "name": "alerts"}
            if message is not None:
                payload["message"] = message
            payload["response_url"] = self.fake.response_url(self._rid())
        return await self.post(urlencode({"payload": json.dumps(payload)}), "application/x-www-form-urlencoded", **kw)

    async def event(self, who: SlackUser, event: dict[str, Any], event_id: str | None = None, **kw) -> httpx.Response:
        self._n += 1
        envelope = {
            "token": "legacy-verification-token",
            "team_id": who.team_id,
            "enterprise_id": who.enterprise_id,
            "api_app_id": "A0GENIE",
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{self._n:08d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": who.enterprise_id,
                    "team_id": who.team_id,
                    "user_id": "U0GENIEBOT",
                    "is_bot": True,
                    "is_enterprise_install": who.org_install,
                }
            ],
            "is_ext_shared_channel": False,
        }
        return await self.post(json.dumps(envelope), "application/json", **kw)

    async def open_home(self, who: SlackUser, **kw) -> httpx.Response:
        return await self.event(
            who,
            {
                "type": "app_home_opened",
                "user": who.user_id,
                "channel": "D0HOME",
                "tab": "home",
                "event_ts": f"{time.time():.6f}",
            },
            **kw,
        )
