"""A fake Slack Web API on loopback (DESIGN.md §6).

It answers the Web API methods Genie calls, plus ``response_url`` posts, records every call,
and can be told to fail. Genie reaches it through ``SLACK_API_URL`` exactly as it reaches
Slack; nothing of Genie's own is mocked.

    fake = FakeSlack().start()            # its own thread and event loop
    settings = {"SLACK_API_URL": fake.api_url, ...}
    ...
    fake.calls("chat.postMessage")        # what Genie said
    fake.messages("C0PAY")                # what the channel shows now (posts, as updated)
    fake.fail("views.publish", status=500, times=1)
    fake.fail("chat.postMessage", delay=5)  # slow: the post is in the channel at once, the answer late
    fake.fail("chat.update", drop="before")  # the connection is cut, no answer; "after": Slack acted first
    fake.fail("response_url", status=500)   # response_url posts can fail too
    fake.limit_per_channel(1.0, burst=3)    # Slack's pace: chat.postMessage ~1/s per channel, else 429
    fake.limited                            # how many 429s it answered
    fake.stop()

Socket Mode: ``apps.connections.open`` (with an ``xapp-`` token) hands out ``ws://…/socket``;
the fake greets each connection with ``hello`` and lets a test push envelopes and read the acks:

    await fake.socket_connected()                              # an app has connected
    ack = await fake.socket_request("slash_commands", {...})   # {"envelope_id": ..., "payload": {...}}
    await fake.socket_disconnect()                             # "disconnect": the app reconnects
"""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from tests.loopback import LoopbackServer

TEAM_ID = "T0GENIE01"
#: What Slack limits per channel (``limit_per_channel``): posting, about once a second.
LIMITED_METHODS = ("chat.postMessage",)
TEAM_DOMAIN = "acme"
BOT_USER_ID = "U0GENIEBOT"


@dataclass
class Call:
    method: str
    args: dict[str, Any]
    token: str | None
    at: float = field(default_factory=time.monotonic)
    #: The client's ``host:port``: calls with one peer came over one (kept-alive) connection.
    peer: str | None = None


@dataclass
class _Failure:
    status: int = 200
    error: str | None = None
    retry_after: int | None = None
    delay: float = 0.0
    times: int = 1
    #: Close the connection without answering: "before" acting, or "after" (Slack acted).
    drop: str | None = None
    #: Calls to let through (answered normally) before failing.
    after: int = 0


#: Where the fake keeps uvicorn's transport in the ASGI scope, so a failure can cut it.
_TRANSPORT = "fake_slack.transport"


class _KeepTransport:
    """Outermost ASGI layer: notes the connection's transport in the scope (uvicorn's ``send``
    is a method of its request cycle, which holds the transport)."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        transport = getattr(getattr(send, "__self__", None), "transport", None)
        if scope["type"] == "http" and transport is not None:
            scope[_TRANSPORT] = transport
        await self.app(scope, receive, send)


async def _drop(request: Request) -> Response:
    """Cut the connection: the client sees it closed with no answer (a reset)."""
    request.scope[_TRANSPORT].abort()
    await asyncio.sleep(0.05)  # let uvicorn see the disconnect, so it does not answer after all
    return Response(status_code=500)


class FakeSlack(LoopbackServer):
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: list[Call] = []
        #: oauth.v2.access answers by code (see grant()).
        self.oauth_grants: dict[str, dict[str, Any]] = {}
        self._failures: dict[str, list[_Failure]] = {}
        self._ts = itertools.count(1)
        #: users.info answers: Slack user id -> user object (as Slack returns it).
        self.users: dict[str, dict[str, Any]] = {}
        #: User groups: id -> member user ids (``usergroups.users.update`` / ``usergroups.users.list``;
        #: only groups added here exist).
        self.usergroups: dict[str, list[str]] = {}
        #: users.list returns at most this many per page, whatever ``limit`` asks (Slack may
        #: return fewer than asked); None: up to ``limit``.
        self.users_page_size: int | None = None
        #: auth.teams.list answers for an org-wide install's token: org id -> [{"id", "name"}].
        self.org_teams: dict[str, list[dict[str, Any]]] = {}
        #: When set, every Web API answer carries ``X-OAuth-Scopes`` (as Slack's do).
        self.token_scopes: str | None = None
        #: What each channel shows: the messages posted there (oldest first), as since updated.
        self._history: dict[str, list[dict[str, Any]]] = {}
        self.api_url = ""
        #: Socket Mode: the open WebSocket connections (newest last), acks by envelope id.
        self._sockets: list[WebSocket] = []
        self._acks: dict[str, dict[str, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._envelopes = itertools.count(1)
        #: Sign in with Slack (OpenID Connect): who is signed in to Slack in "the browser" (the
        #: ID token's claims beyond the standard ones, see ``oidc_sign_in_as``); None: the
        #: authorize endpoint answers ``error=access_denied``.
        self.oidc_user: dict[str, Any] | None = None
        #: client id -> secret of the apps allowed to use it.
        self.oidc_clients: dict[str, str] = {}
        #: Sign ID tokens with a key that is not the published one (a forgery).
        self.oidc_forge = False
        self._oidc_codes: dict[str, dict[str, Any]] = {}
        self._oidc_keys: tuple[Any, Any] | None = None
        #: Slack's per-channel limit on posting (``limit_per_channel``); off by default.
        self._rate: float | None = None
        self._burst = 1
        self._buckets: dict[str, tuple[float, float]] = {}  # channel -> (tokens, at)
        self.limited = 0

    def limit_per_channel(self, per_second: float | None, burst: int = 1) -> None:
        """Answer ``chat.postMessage`` beyond ``per_second`` per channel (bursts of ``burst``)
        with HTTP 429 and ``Retry-After``, as Slack does; None: no limit. Refused posts are not
        recorded (``limited`` counts them)."""
        with self._lock:
            self._rate, self._burst = per_second, max(1, burst)
            self._buckets.clear()
            self.limited = 0

    def _rate_limited(self, method: str, args: dict[str, Any]) -> int | None:
        """Seconds to wait (the 429's ``Retry-After``) if this call is over the limit, else None
        (and the call takes its token)."""
        if not self._rate or method not in LIMITED_METHODS:
            return None
        channel, now = str(args.get("channel", "")), time.monotonic()
        with self._lock:
            tokens, at = self._buckets.get(channel, (float(self._burst), now))
            tokens = min(float(self._burst), tokens + (now - at) * self._rate)
            if tokens < 1.0:
                self._buckets[channel] = (tokens, now)
                self.limited += 1
                return max(1, math.ceil((1.0 - tokens) / self._rate))
            self._buckets[channel] = (tokens - 1.0, now)
            return None

    # --- directory ---------------------------------------------------------------------------
    def add_user(
        self, user_id: str, real_name: str, email: str | None, team_id: str = TEAM_ID, **fields: Any
    ) -> dict[str, Any]:
        """A member of the directory (``users.info``, ``users.list``), as Slack describes one;
        ``fields`` sets or overrides Slack's flags: ``deleted``, ``is_bot``, ``is_restricted``,
        ``is_ultra_restricted``, ``is_stranger``, ``is_email_confirmed``, ``enterprise_user`` …
        (``is_email_confirmed=None`` leaves the field out, as some payloads do)."""
        profile = {"real_name": real_name, "display_name": real_name.split()[0], "team": team_id}
        if email:
            profile["email"] = email
        user = {
            "id": user_id,
            "team_id": team_id,
            "name": real_name.split()[0].lower(),
            "real_name": real_name,
            "deleted": False,
            "is_bot": False,
            "is_app_user": False,
            "is_restricted": False,
            "is_ultra_restricted": False,
            "is_email_confirmed": True,
            "updated": int(time.time()),
            "profile": profile,
        }
        user.update(fields)
        user = {k: v for k, v in user.items() if v is not None}
        self.users[user_id] = user
        return user

    def _users_list(self, args: dict[str, Any], where: str | None = None) -> dict[str, Any]:
        """Paged like Slack: ``limit`` (fewer may come back: ``users_page_size``), an opaque
        ``cursor`` from the last page's ``response_metadata.next_cursor``, "" after the last.
        A token made by ``grant()`` lists its own workspace's (or org's) members; the default
        test token lists every member the test added."""
        try:
            limit = int(args.get("limit") or 0)
            start = int(base64.b64decode(args["cursor"]).decode().removeprefix("users:")) if args.get("cursor") else 0
        except (ValueError, UnicodeDecodeError):
            return {"ok": False, "error": "invalid_cursor"}
        size = min(limit or 1000, self.users_page_size or 1000)
        with self._lock:
            org_teams = {t["id"] for t in self.org_teams.get(where or "", [])}
            members = [
                u
                for u in self.users.values()
                if where is None
                or u.get("team_id") in org_teams
                or where in (u.get("team_id"), (u.get("enterprise_user") or {}).get("enterprise_id"))
            ]
        if args.get("team_id"):  # an org-level token: that workspace of the org
            members = [
                u
                for u in members
                if args["team_id"] == u.get("team_id")
                or args["team_id"] in (u.get("enterprise_user") or {}).get("teams", [])
            ]
        page = members[start : start + size]
        more = start + size < len(members)
        cursor = base64.b64encode(f"users:{start + size}".encode()).decode() if more else ""
        return {"ok": True, "members": page, "cache_ts": int(time.time()), "response_metadata": {"next_cursor": cursor}}

    # --- recording ---------------------------------------------------------------------------
    def calls(self, method: str | None = None) -> list[Call]:
        with self._lock:
            return [c for c in self._calls if method is None or c.method == method]

    def clear(self) -> None:
        with self._lock:
            self._calls.clear()
            self._history.clear()

    def messages(self, channel: str) -> list[dict[str, Any]]:
        """The messages in ``channel`` (oldest first), with their metadata, as last updated."""
        with self._lock:
            return [dict(m) for m in self._history.get(channel, [])]

    async def wait_for(self, method: str, count: int = 1, timeout: float = 5.0, **match: Any) -> list[Call]:
        """The recorded calls of ``method`` (matching ``match`` on args) once there are ``count``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [c for c in self.calls(method) if all(c.args.get(k) == v for k, v in match.items())]
            if len(found) >= count:
                return found
            if time.monotonic() > deadline:
                raise AssertionError(f"fake Slack: expected {count} {method} call(s) matching {match}, got {found}")
            await asyncio.sleep(0.02)

    def fail(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        retry_after: int | None = None,
        delay: float = 0.0,
        times: int = 1,
        drop: str | None = None,
        after: int = 0,
    ) -> None:
        """Make the next ``times`` calls of ``method`` fail (HTTP status, Slack error, slowness, or
        ``drop`` = "before"/"after": the connection is closed without an answer, before or after
        Slack acted). ``method`` "response_url" makes response_url posts fail. ``after``: answer
        that many calls normally first (e.g. fail the second page of ``users.list``)."""
        assert drop in (None, "before", "after")
        with self._lock:
            self._failures.setdefault(method, []).append(
                _Failure(status, error, retry_after, delay, times, drop, after)
            )

    def _take_failure(self, method: str) -> _Failure | None:
        with self._lock:
            queue = self._failures.get(method) or []
            if not queue:
                return None
            failure = queue[0]
            if failure.after > 0:
                failure.after -= 1
                return None
            failure.times -= 1
            if failure.times <= 0:
                queue.pop(0)
            return failure

    # --- HTTP ----------------------------------------------------------------------------------
    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        args: dict[str, Any] = dict(request.query_params)
        body = await request.body()
        ctype = request.headers.get("content-type", "")
        if body:
            if "json" in ctype:
                args.update(json.loads(body))
            else:
                args.update(dict(parse_qsl(body.decode())))
        for key in ("blocks", "view", "attachments", "metadata"):
            if isinstance(args.get(key), str):
                try:
                    args[key] = json.loads(args[key])
                except ValueError:
                    pass
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ") if auth else args.get("token")
        if (wait := self._rate_limited(method, args)) is not None:
            return JSONResponse(
                {"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": str(wait)}
            )
        if method == "oauth.v2.access":  # client credentials, not a token
            with self._lock:
                self._calls.append(Call(method, args, None))
            grant = self.oauth_grants.pop(args.get("code", ""), None)
            return JSONResponse(grant or {"ok": False, "error": "invalid_code"})
        if method == "openid.connect.token":  # client credentials and the code, not a token
            with self._lock:
                self._calls.append(Call(method, args, None))
            return JSONResponse(self._oidc_token(args))
        if method == "apps.connections.open":  # Socket Mode: an app-level token, not a bot token
            with self._lock:
                self._calls.append(Call(method, args, token))
            failure = self._take_failure(method)
            if failure is not None and (failure.status != 200 or failure.error):
                return JSONResponse(
                    {"ok": False, "error": failure.error or "fake_http_error"}, status_code=failure.status
                )
            if not token or not token.startswith("xapp-"):
                return JSONResponse({"ok": False, "error": "not_allowed_token_type" if token else "not_authed"})
            return JSONResponse({"ok": True, "url": f"ws://{self.url.removeprefix('http://')}/socket"})
        peer = f"{request.client.host}:{request.client.port}" if request.client else None
        with self._lock:
            self._calls.append(Call(method, args, token, peer=peer))
        failure = self._take_failure(method)
        if failure is not None and failure.drop:
            await asyncio.sleep(failure.delay)
            if failure.drop == "after" and token and token.startswith("xoxb-"):
                self._answer(method, args)
            return await _drop(request)
        if failure is not None and failure.status == 200 and not failure.error and token and token.startswith("xoxb-"):
            # Slow but successful: Slack acts at once (a post is in the channel) and answers late.
            answer = self._answer(method, args)
            await asyncio.sleep(failure.delay)
            return JSONResponse(answer)
        if failure is not None:
            if failure.delay:
                await asyncio.sleep(failure.delay)
            if failure.status != 200:
                headers = {"Retry-After": str(failure.retry_after)} if failure.retry_after is not None else {}
                return JSONResponse(
                    {"ok": False, "error": "fake_http_error"}, status_code=failure.status, headers=headers
                )
            if failure.error:
                return JSONResponse({"ok": False, "error": failure.error})
        if not token or not token.startswith("xoxb-"):
            return JSONResponse({"ok": False, "error": "not_authed"})
        headers = {"X-OAuth-Scopes": self.token_scopes} if self.token_scopes is not None else None
        return JSONResponse(self._answer(method, args, token), headers=headers)

    def grant(
        self,
        code: str,
        team_id: str | None,
        *,
        team_name: str = "Beta",
        enterprise_id: str | None = None,
        org_wide: bool = False,
        installer: str = "U0INSTALLER",
    ) -> str:
        """Make ``oauth.v2.access`` with ``code`` install the app there; returns the bot token."""
        where = enterprise_id if org_wide else team_id
        token = f"xoxb-{where}-{code}"
        self.oauth_grants[code] = {
            "ok": True,
            "access_token": token,
            "token_type": "bot",
            "scope": "commands,chat:write",
            "bot_user_id": f"U0BOT{where}",
            "app_id": "A0GENIE",
            "team": None if org_wide else {"id": team_id, "name": team_name},
            "enterprise": {"id": enterprise_id, "name": "Acme Org"} if enterprise_id else None,
            "authed_user": {"id": installer},
            "is_enterprise_install": org_wide,
        }
        return token

    def _answer(self, method: str, args: dict[str, Any], token: str | None = None) -> dict[str, Any]:
        # Tokens made by grant() are "xoxb-<team or org id>-<code>": answer for that workspace.
        where = token.split("-")[1] if token and token.count("-") >= 2 and token.split("-")[1][:1] in "TE" else None
        if method == "auth.test" and where:
            org = where.startswith("E")
            return {
                "ok": True,
                "url": "https://beta.slack.com/",
                "team": "Beta",
                "user": "genie",
                "team_id": None if org else where,
                "enterprise_id": where if org else None,
                "user_id": f"U0BOT{where}",
                "bot_id": f"B0{where}",
                "is_enterprise_install": org,
            }
        if method == "auth.test":
            return {
                "ok": True,
                "url": f"https://{TEAM_DOMAIN}.slack.com/",
                "team": "Acme",
                "user": "genie",
                "team_id": TEAM_ID,
                "user_id": BOT_USER_ID,
                "bot_id": "B0GENIE",
                "is_enterprise_install": False,
            }
        if method == "users.info":
            user = self.users.get(args.get("user", ""))
            return {"ok": True, "user": user} if user else {"ok": False, "error": "user_not_found"}
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(self._ts):06d}"
            channel = args.get("channel", "")
            if channel.startswith("U"):
                channel = "D" + channel[1:]
            message = {
                "type": "message",
                "ts": ts,
                "user": BOT_USER_ID,
                "bot_id": "B0GENIE",
                "text": args.get("text"),
                "blocks": args.get("blocks"),
            }
            if isinstance(args.get("metadata"), dict):
                message["metadata"] = args["metadata"]
            with self._lock:
                self._history.setdefault(channel, []).append(message)
            return {
                "ok": True,
                "channel": channel,
                "ts": ts,
                "message": {"text": args.get("text"), "blocks": args.get("blocks"), "ts": ts},
            }
        if method == "chat.update":
            with self._lock:
                for message in self._history.get(args.get("channel", ""), []):
                    if message["ts"] == args.get("ts"):
                        message.update(text=args.get("text"), blocks=args.get("blocks"), edited={"user": BOT_USER_ID})
                        if isinstance(args.get("metadata"), dict):
                            message["metadata"] = args["metadata"]
        if method in {"chat.update", "chat.postEphemeral"}:
            return {"ok": True, "channel": args.get("channel"), "ts": args.get("ts") or f"{time.time():.6f}"}
        if method == "conversations.history":
            return self._conversation_history(args)
        if method in {"views.publish", "views.open", "views.update"}:
            return {"ok": True, "view": {"id": "V0001", **(args.get("view") or {})}}
        if method == "conversations.open":
            return {"ok": True, "channel": {"id": "D" + str(args.get("users", "X"))[1:]}}
        if method == "users.list":
            return self._users_list(args, where)
        if method in {"usergroups.users.update", "usergroups.users.list"}:
            with self._lock:
                group = args.get("usergroup", "")
                if group not in self.usergroups:
                    return {"ok": False, "error": "no_such_subteam"}
                if method == "usergroups.users.update":
                    users = [u for u in str(args.get("users") or "").split(",") if u]
                    if not users:
                        return {"ok": False, "error": "invalid_users"}
                    self.usergroups[group] = users
                    return {"ok": True, "usergroup": {"id": group, "users": users}}
                return {"ok": True, "users": list(self.usergroups[group])}
        if method == "auth.teams.list":
            return {
                "ok": True,
                "teams": list(self.org_teams.get(where or "", [])),
                "response_metadata": {"next_cursor": ""},
            }
        return {"ok": False, "error": "unknown_method"}

    def _conversation_history(self, args: dict[str, Any]) -> dict[str, Any]:
        """Newest first, between ``oldest`` and ``latest``, paged with ``cursor``; metadata
        only with ``include_all_metadata`` (as Slack does)."""
        oldest, latest = float(args.get("oldest") or 0), float(args.get("latest") or "inf")
        inclusive = str(args.get("inclusive", "")).lower() in {"1", "true"}
        with_metadata = str(args.get("include_all_metadata", "")).lower() in {"1", "true"}
        limit, start = min(int(args.get("limit") or 100), 999), int(args.get("cursor") or 0)
        with self._lock:
            found = [
                dict(m)
                for m in reversed(self._history.get(args.get("channel", ""), []))
                if (oldest <= float(m["ts"]) if inclusive else oldest < float(m["ts"])) and float(m["ts"]) <= latest
            ]
        page = found[start : start + limit]
        if not with_metadata:
            for message in page:
                message.pop("metadata", None)
        more = start + limit < len(found)
        return {
            "ok": True,
            "messages": page,
            "has_more": more,
            "response_metadata": {"next_cursor": str(start + limit) if more else ""},
        }

    async def _response_url(self, request: Request) -> Response:
        body = await request.body()
        try:
            args = json.loads(body) if body else {}
        except ValueError:
            args = {"raw": body.decode(errors="replace")}
        args["response_id"] = request.path_params["rid"]
        with self._lock:
            self._calls.append(Call("response_url", args, None))
        failure = self._take_failure("response_url")
        if failure is not None:
            await asyncio.sleep(failure.delay)
            if failure.drop:
                return await _drop(request)
            if failure.status != 200:
                return Response("fake_http_error", status_code=failure.status)
        return JSONResponse({"ok": True})

    def response_url(self, rid: str = "r1") -> str:
        return f"{self.url}/response/{rid}"

    # --- Socket Mode -----------------------------------------------------------------------------
    async def _socket(self, websocket: WebSocket) -> None:
        """Slack's side of a Socket Mode connection: ``hello``, then envelopes pushed by the test;
        every text frame the app sends is an ack (``{"envelope_id", "payload"?}``). WebSocket
        pings are answered by the server (uvicorn) itself, as Slack does."""
        await websocket.accept()
        self._loop = asyncio.get_running_loop()
        await websocket.send_text(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(self._sockets) + 1,
                    "debug_info": {"host": "fake-slack", "build_number": 1, "approximate_connection_time": 18060},
                    "connection_info": {"app_id": "A0GENIE"},
                }
            )
        )
        with self._lock:
            self._sockets.append(websocket)
        try:
            while True:
                message = json.loads(await websocket.receive_text())
                if isinstance(message, dict) and message.get("envelope_id"):
                    with self._lock:
                        self._acks[message["envelope_id"]] = message
        except WebSocketDisconnect:
            pass
        finally:
            with self._lock:
                if websocket in self._sockets:
                    self._sockets.remove(websocket)

    async def socket_connected(self, count: int = 1, timeout: float = 15.0) -> None:
        """Until ``count`` apps are connected over Socket Mode (and were sent ``hello``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if len(self._sockets) >= count:
                    return
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"fake Slack: expected {count} Socket Mode connection(s), got {len(self._sockets)}"
                )
            await asyncio.sleep(0.02)

    async def _send_socket(self, message: dict[str, Any]) -> None:
        """Send on the newest connection, from the fake's own event loop (its thread)."""
        with self._lock:
            if not self._sockets:
                raise AssertionError("fake Slack: no app is connected over Socket Mode")
            websocket = self._sockets[-1]
        assert self._loop is not None
        await asyncio.wrap_future(
            asyncio.run_coroutine_threadsafe(websocket.send_text(json.dumps(message)), self._loop)
        )

    async def send_envelope(
        self,
        kind: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool | None = None,
        retry_attempt: int | None = None,
    ) -> str:
        """Push a request (``slash_commands``, ``interactive`` or ``events_api``) as Slack does;
        returns its ``envelope_id``."""
        envelope_id = f"env-{next(self._envelopes)}-{time.monotonic_ns()}"
        if accepts_response_payload is None:
            accepts_response_payload = kind != "events_api"
        message: dict[str, Any] = {
            "type": kind,
            "envelope_id": envelope_id,
            "payload": payload,
            "accepts_response_payload": accepts_response_payload,
        }
        if kind == "events_api":
            message.update(retry_attempt=retry_attempt or 0, retry_reason="")
        await self._send_socket(message)
        return envelope_id

    async def socket_ack(self, envelope_id: str, timeout: float = 10.0) -> dict[str, Any]:
        """The app's ack of that envelope (``{"envelope_id": ..., "payload": {...}}``)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                ack = self._acks.get(envelope_id)
            if ack is not None:
                return ack
            if time.monotonic() > deadline:
                raise AssertionError(f"fake Slack: no ack for Socket Mode envelope {envelope_id}")
            await asyncio.sleep(0.02)

    async def socket_request(self, kind: str, payload: dict[str, Any], **kw: Any) -> dict[str, Any]:
        """Push an envelope and return the app's ack."""
        return await self.socket_ack(await self.send_envelope(kind, payload, **kw))

    async def socket_disconnect(self, reason: str = "refresh_requested") -> None:
        """Slack's ``disconnect`` message: the app is to open a new connection."""
        with self._lock:
            self._replaced = self._sockets[-1] if self._sockets else None
        await self._send_socket({"type": "disconnect", "reason": reason, "debug_info": {"host": "fake-slack"}})

    async def socket_reconnected(self, timeout: float = 15.0) -> None:
        """Until the app, told to disconnect, is connected again and has closed the old
        connection (an envelope sent before that could go down the closing one)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                old = getattr(self, "_replaced", None)
                if self._sockets and (old is None or old not in self._sockets):
                    return
            if time.monotonic() > deadline:
                raise AssertionError("fake Slack: the app did not replace its Socket Mode connection")
            await asyncio.sleep(0.02)

    # --- Sign in with Slack (OpenID Connect) ---------------------------------------------------
    def oidc_sign_in_as(
        self,
        user_id: str,
        team_id: str = TEAM_ID,
        *,
        email: str | None = None,
        email_verified: bool = True,
        name: str | None = None,
        **claims: Any,
    ) -> None:
        """The Slack user signed in to Slack in the browser: what the next authorize answers for."""
        self.oidc_user = {
            "https://slack.com/user_id": user_id,
            "https://slack.com/team_id": team_id,
            "https://slack.com/team_name": "Genie Test",
            "email": email,
            "email_verified": email_verified,
            "name": name or user_id,
            **claims,
        }

    def _oidc_key(self, forged: bool = False):
        from joserfc.jwk import RSAKey

        if self._oidc_keys is None:
            self._oidc_keys = (
                RSAKey.generate_key(2048, parameters={"kid": "fake-slack-1"}),
                RSAKey.generate_key(2048, parameters={"kid": "fake-slack-1"}),
            )
        return self._oidc_keys[1 if forged else 0]

    async def _oidc_authorize(self, request: Request) -> Response:
        q = request.query_params
        with self._lock:
            self._calls.append(Call("openid.connect.authorize", dict(q), None))
        redirect = q.get("redirect_uri", "")
        if q.get("client_id") not in self.oidc_clients or q.get("response_type") != "code" or not redirect:
            return JSONResponse({"ok": False, "error": "invalid_client"}, status_code=400)
        sep = "&" if "?" in redirect else "?"
        if self.oidc_user is None:
            return RedirectResponse(f"{redirect}{sep}error=access_denied&state={q.get('state', '')}", status_code=302)
        code = secrets.token_urlsafe(16)
        self._oidc_codes[code] = {
            "client_id": q["client_id"],
            "redirect_uri": redirect,
            "nonce": q.get("nonce"),
            "claims": dict(self.oidc_user),
        }
        return RedirectResponse(f"{redirect}{sep}code={code}&state={q.get('state', '')}", status_code=302)

    def _oidc_token(self, args: dict[str, Any]) -> dict[str, Any]:
        from joserfc import jwt

        grant = self._oidc_codes.pop(args.get("code", ""), None)
        if (
            grant is None
            or self.oidc_clients.get(args.get("client_id", "")) != args.get("client_secret")
            or grant["client_id"] != args.get("client_id")
            or grant["redirect_uri"] != args.get("redirect_uri")
        ):
            return {"ok": False, "error": "invalid_code"}
        now = int(time.time())
        claims = {
            "iss": self.url,
            "aud": grant["client_id"],
            "sub": grant["claims"]["https://slack.com/user_id"],
            "iat": now,
            "exp": now + 300,
            "auth_time": now,
            "nonce": grant["nonce"],
            **{k: v for k, v in grant["claims"].items() if v is not None},
        }
        token = jwt.encode({"alg": "RS256", "kid": "fake-slack-1"}, claims, self._oidc_key(forged=self.oidc_forge))
        return {
            "ok": True,
            "access_token": "xoxp-oidc-" + secrets.token_hex(4),
            "token_type": "Bearer",
            "id_token": token,
        }

    async def _oidc_keys_endpoint(self, request: Request) -> Response:
        return JSONResponse({"keys": [self._oidc_key().as_dict(private=False)]})

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> FakeSlack:
        self.serve(
            _KeepTransport(
                Starlette(
                    routes=[
                        Route("/openid/connect/authorize", self._oidc_authorize, methods=["GET"]),
                        Route("/openid/connect/keys", self._oidc_keys_endpoint, methods=["GET"]),
                        Route("/api/{method}", self._api, methods=["GET", "POST"]),
                        Route("/response/{rid}", self._response_url, methods=["POST"]),
                        WebSocketRoute("/socket", self._socket),
                    ]
                )
            )
        )
        self.api_url = f"{self.url}/api/"
        return self
