"""OpsGenie's Heartbeat API v2: same paths, fields, status codes and envelopes (``data``,
``took``, ``requestId``), so cron jobs, Alertmanager's Watchdog and scripts on OpsGenie's SDKs
keep pinging by changing only the host.

    curl -X POST https://genie.example.com/v2/heartbeats -H "Authorization: GenieKey $KEY" \\
         -H "Content-Type: application/json" -d '{"name": "nightly-backup", "interval": 1, "intervalUnit": "days"}'
    curl https://genie.example.com/v2/heartbeats/nightly-backup/ping -H "Authorization: GenieKey $KEY"
    curl https://any:$KEY@genie.example.com/v2/heartbeats/nightly-backup/ping     # HTTP Basic, key as password

Every route is served with and without a trailing slash, and under the JSM operations prefix
(``/jsm/ops/integration/v2/heartbeats…``). A key sees and pings only its own team's heartbeats.
Errors, helpers and envelopes are the alert API's (``bot.web.alert_api``); the logic is
``bot.services.heartbeats``.

Where Genie differs from OpsGenie, on purpose:

- **A ping of an unknown heartbeat is a 404** (OpsGenie answers "PONG" to any name): a
  misspelt name in a cron job is found the first time it runs, not when nobody is alerted.
- **The key's team owns the heartbeat**: ``ownerTeam`` is accepted and ignored, as OpsGenie
  does for a key that belongs to a team. ``enabled`` may be left out on create (true).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route

from bot.services import heartbeats
from bot.web.alert_api import ApiError, Call, endpoint, iso, key_team, parse_json, presented_key, read_body, storable
from storage.models import Heartbeat, Team

#: Atlassian's path for OpsGenie's API once moved to Jira Service Management.
JSM_PREFIX = "/jsm/ops/integration"
PONG = "PONG - Heartbeat received"


def heartbeat_key(request: Request) -> str:
    """``Authorization: GenieKey <key>``, or HTTP Basic with the key as the password (how
    Alertmanager's webhook receiver and ``curl https://x:KEY@host/…`` send it; OpsGenie's own
    ``Basic base64(key)`` without a user works too). 401 when missing or malformed."""
    scheme, _, value = request.headers.get("authorization", "").strip().partition(" ")
    if scheme.lower() != "basic":
        return presented_key(request)
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        raise ApiError(401, "Key format is not valid!") from None
    key = (decoded.partition(":")[2] if ":" in decoded else decoded).strip()
    if not key or len(key) > 200 or not storable(key):
        raise ApiError(401, "Key format is not valid!")
    return key


def _name(request: Request) -> str:
    return request.path_params["name"]


def present(heartbeat: Heartbeat, team: Team, now) -> dict:
    """OpsGenie's heartbeat object (``GET /v2/heartbeats/{name}``)."""
    shown = {
        "name": heartbeat.name,
        "description": heartbeat.description or "",
        "interval": heartbeat.interval,
        "enabled": heartbeat.enabled,
        "intervalUnit": heartbeat.interval_unit,
        "expired": heartbeats.is_late(heartbeat, now),
        "ownerTeam": {"id": str(team.id), "name": team.name},
        "alertMessage": heartbeat.alert_message or heartbeats.default_message(heartbeat.name),
        "alertTags": list(heartbeat.alert_tags or []),
        "alertPriority": heartbeat.alert_priority,
    }
    if heartbeat.last_ping_at is not None:
        shown["lastPingTime"] = iso(heartbeat.last_ping_at)
    return shown


def meta(heartbeat: Heartbeat, now) -> dict:
    """What update, enable and disable answer: ``{name, enabled, expired}``."""
    return {"name": heartbeat.name, "enabled": heartbeat.enabled, "expired": heartbeats.is_late(heartbeat, now)}


# --- handlers --------------------------------------------------------------------------------
@asynccontextmanager
async def _named(request: Request, *, write: bool) -> AsyncIterator[tuple[AsyncSession, Team, Heartbeat]]:
    """The key's team and the heartbeat the path names (404 for another team's or none), in a
    transaction (``write``) or a read-only session."""
    key = heartbeat_key(request)
    sessionmaker = request.app.state.runtime.sessionmaker
    async with sessionmaker.begin() if write else sessionmaker() as session:
        team = await key_team(session, key)
        yield session, team, await heartbeats.find(session, team, _name(request))


@endpoint
async def ping(request: Request, call: Call) -> Response:
    rt = request.app.state.runtime
    async with _named(request, write=True) as (session, team, heartbeat):
        closed = await heartbeats.ping(
            session, heartbeat, rt.now(), how=f"{request.method} ping", request_id=call.request_id
        )
    if closed is not None:  # committed: the alert's Slack message shows it closed now
        rt.wake_outbox(closed.slack_channel)
    return call.answer(202, result=PONG)


@endpoint
async def create_heartbeat(request: Request, call: Call) -> Response:
    key = heartbeat_key(request)
    raw = await read_body(request)
    rt = request.app.state.runtime
    async with rt.sessionmaker.begin() as session:
        team = await key_team(session, key)
        data = heartbeats.parse_fields(parse_json(raw), create=True)
        now = rt.now()
        heartbeat = await heartbeats.create(session, team, data, now)
        shown = present(heartbeat, team, now)
    return call.answer(201, data=shown)


@endpoint
async def list_heartbeats(request: Request, call: Call) -> Response:
    key = heartbeat_key(request)
    rt = request.app.state.runtime
    async with rt.sessionmaker() as session:
        team = await key_team(session, key)
        now = rt.now()
        shown = [present(h, t, now) for h, t in await heartbeats.of_team(session, team.id)]
    return call.answer(200, data={"heartbeats": shown})


@endpoint
async def get_heartbeat(request: Request, call: Call) -> Response:
    async with _named(request, write=False) as (session, team, heartbeat):
        shown = present(heartbeat, team, request.app.state.runtime.now())
    return call.answer(200, data=shown)


@endpoint
async def update_heartbeat(request: Request, call: Call) -> Response:
    key = heartbeat_key(request)
    raw = await read_body(request)
    rt = request.app.state.runtime
    async with rt.sessionmaker.begin() as session:
        team = await key_team(session, key)
        data = heartbeats.parse_fields(parse_json(raw), create=False)
        heartbeat = await heartbeats.find(session, team, _name(request))
        now = rt.now()
        await heartbeats.update_fields(session, heartbeat, data, now)
        shown = meta(heartbeat, now)
    return call.answer(200, data=shown)


def _switch(enabled: bool):
    async def handler(request: Request, call: Call) -> Response:
        async with _named(request, write=True) as (session, team, heartbeat):
            now = request.app.state.runtime.now()
            await heartbeats.set_enabled(session, heartbeat, enabled, now)
            shown = meta(heartbeat, now)
        return call.answer(200, data=shown)

    handler.__name__ = "enable_heartbeat" if enabled else "disable_heartbeat"
    return endpoint(handler)


@endpoint
async def delete_heartbeat(request: Request, call: Call) -> Response:
    async with _named(request, write=True) as (session, team, heartbeat):
        await heartbeats.remove(session, heartbeat)
    return call.answer(200, result="Deleted")


@endpoint
async def not_supported(request: Request, call: Call) -> Response:
    """Another method on a heartbeat path: 405 with ``Allow``; an unknown heartbeat path: 404."""
    allowed = sorted({m for r in _served if r.matches(request.scope)[0] is Match.PARTIAL for m in r.methods or ()})
    missing = f"Genie does not implement {request.method} {request.url.path}"
    if allowed:
        raise ApiError(
            405, f"{missing} (this path answers {', '.join(allowed)}).", headers={"Allow": ", ".join(allowed)}
        )
    raise ApiError(404, f"{missing}.")


def _everywhere(path: str, handler, methods: list[str]) -> list[Route]:
    """``path`` with and without its trailing slash, under ``/v2`` and the JSM prefix."""
    return [
        Route(f"{prefix}{path}{slash}", handler, methods=methods) for prefix in ("", JSM_PREFIX) for slash in ("", "/")
    ]


_ONE = "/v2/heartbeats/{name}"
_served: list[Route] = [
    *_everywhere("/v2/heartbeats", create_heartbeat, ["POST"]),
    *_everywhere("/v2/heartbeats", list_heartbeats, ["GET"]),
    *_everywhere(f"{_ONE}/ping", ping, ["GET", "HEAD", "POST", "PUT", "PATCH"]),
    *_everywhere(f"{_ONE}/enable", _switch(True), ["POST"]),
    *_everywhere(f"{_ONE}/disable", _switch(False), ["POST"]),
    *_everywhere(_ONE, get_heartbeat, ["GET"]),
    *_everywhere(_ONE, update_heartbeat, ["PATCH"]),
    *_everywhere(_ONE, delete_heartbeat, ["DELETE"]),
]
_ALL = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
routes: list[Route] = [
    *_served,
    Route("/v2/heartbeats{rest:path}", not_supported, methods=_ALL),
    Route(f"{JSM_PREFIX}/v2/heartbeats{{rest:path}}", not_supported, methods=_ALL),
]
