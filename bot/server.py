"""Builds the one ASGI app: Slack (Bolt) + web pages + health, around one Runtime.

    rt = await make_runtime(settings, sessionmaker)
    asgi = build_asgi_app(rt)          # served by uvicorn in `genie serve`, and by the tests

Nothing happens at import time; everything is made by these factories.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler, to_starlette_response
from slack_bolt.async_app import AsyncApp
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_sdk.oauth.state_store.sqlalchemy import AsyncSQLAlchemyOAuthStateStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot import metrics, wakeup
from bot.background import Background
from bot.config import SLACK_SETUP_HINT, Settings
from bot.listeners import register_listeners
from bot.logs import AccessLog, install_log_redaction
from bot.runtime import Runtime
from bot.services import users
from bot.services.keys import resolve_secret_keys
from bot.slack.clients import BOT_SCOPES, SlackClients
from bot.slack.screening import screen
from bot.web.admin import routes as admin_routes
from bot.web.alert_api import not_supported as api_not_supported
from bot.web.alert_api import routes as api_routes
from bot.web.alert_pages import routes as alert_page_routes
from bot.web.heartbeat_api import routes as heartbeat_routes
from bot.web.limits import BodyLimit
from bot.web.notification_pages import routes as notification_routes
from bot.web.oncall_pages import routes as oncall_page_routes
from bot.web.pages import routes as page_routes
from bot.web.reports import routes as report_routes
from bot.web.slack_signin import routes as slack_signin_routes

if TYPE_CHECKING:
    import uvicorn

logger = logging.getLogger(__name__)

#: Seconds ``/readyz`` waits for the database before answering 503.
READY_TIMEOUT = 5.0

#: Sent on every response. The link pages carry the token in their URL, so no page may leak
#: it through a Referer header, and nothing is loaded from anywhere but Genie itself.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'self'; script-src 'none'; object-src 'none'; base-uri 'none'; "
        b"form-action 'self'; frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
]


#: With an https GENIE_BASE_URL: browsers that once reached Genie over https never try plain
#: http again for a year (no includeSubDomains: Genie does not own its domain's other hosts).
HSTS = (b"strict-transport-security", b"max-age=31536000")


class SecurityHeaders:
    def __init__(self, app: ASGIApp, hsts: bool = False) -> None:
        self.app = app
        self.headers = SECURITY_HEADERS + ([HSTS] if hsts else [])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                present = {name.lower() for name, _ in message.get("headers", [])}
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (name, value) for name, value in self.headers if name not in present
                ]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class RequestMetrics:
    """Counts every HTTP request in ``genie_http_requests_total{method, route, status}`` (and its
    duration), labelled with the matched route's *template* — ``/link/{token}``, never the path:
    link tokens and alert ids are in paths, and a label per path would grow without end. And
    notes it in the access log (``logs.AccessLog``)."""

    def __init__(self, app: ASGIApp, routes: list[BaseRoute], access_log: AccessLog | None = None) -> None:
        self.app = app
        self.routes = routes
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # an exception that escapes becomes a 500 further out

        async def send_and_note_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            metrics.count_request(scope["method"], self.template(scope), status, time.perf_counter() - started)
            if self.access_log is not None:
                self.access_log.answered(scope, status)

    def template(self, scope: Scope) -> str:
        # Starlette's router notes the route it chose in the scope; match here when it did not
        # (an older Starlette, or a request that never reached the router).
        route = scope.get("route")
        if route is None:
            partial = None
            for candidate in self.routes:
                match, _ = candidate.matches(scope)
                if match is Match.FULL:
                    route = candidate
                    break
                if match is Match.PARTIAL and partial is None:
                    partial = candidate  # the path matched, the method did not (405)
            route = route or partial
        if isinstance(route, Mount):
            return f"{route.path}/{{path}}"
        return getattr(route, "path", None) or metrics.UNMATCHED


def make_slack_client(settings: Settings) -> AsyncWebClient:
    """The one configured client: Bolt copies base_url and retry handlers into its per-request clients."""
    return SlackClients(settings).app_client()


async def make_runtime(settings: Settings, sessionmaker: async_sessionmaker[AsyncSession]) -> Runtime:
    users.use_password_hashing(settings.password_hashing)
    keys, generated = await resolve_secret_keys(sessionmaker, settings.secret_keys)
    if generated:
        logger.warning(
            "GENIE_SECRET_KEY is not set: using a key generated once and kept in the database. "
            "Set GENIE_SECRET_KEY so that a copy of the database cannot be used to forge links."
        )
    clients = SlackClients(settings, sessionmaker.kw.get("bind"))
    slack = clients.app_client() if settings.slack_mode != "none" else None
    return Runtime.create(settings, sessionmaker, keys, slack, clients=clients)


def build_bolt_app(rt: Runtime) -> AsyncApp:
    """Single workspace: the bot token. OAuth: installs at /slack/install, tokens looked up per
    request in slack-sdk's installation store on Genie's database."""
    assert rt.slack is not None
    oauth_settings = None
    if rt.settings.slack_mode == "oauth":
        store = rt.clients.installation_store
        engine = rt.sessionmaker.kw.get("bind")
        oauth_settings = AsyncOAuthSettings(
            client_id=rt.settings.slack_client_id,
            client_secret=rt.settings.slack_client_secret,
            scopes=list(BOT_SCOPES),
            installation_store=store,
            # slack-sdk's state store (its consume is not race-safe: fine for OAuth state only).
            state_store=AsyncSQLAlchemyOAuthStateStore(expiration_seconds=600, engine=engine),
            install_path="/slack/install",
            redirect_uri_path="/slack/oauth_redirect",
            redirect_uri=f"{rt.settings.base_url}/slack/oauth_redirect",
            installation_store_bot_only=True,
        )
    app = AsyncApp(
        client=rt.slack,
        signing_secret=rt.settings.slack_signing_secret,
        oauth_settings=oauth_settings,
        # Bolt acks first and finishes listeners in the background (Slack's 3 seconds).
        process_before_response=False,
        # Socket Mode: requests come over the WebSocket opened with the app-level token, unsigned.
        request_verification_enabled=not rt.settings.socket_mode,
        raise_error_for_unhandled_request=False,
    )
    register_listeners(app, rt)
    return app


def health_routes(rt: Runtime) -> list[Route]:
    """``/healthz``, ``/readyz`` and ``/metrics``: the app's, and ``genie worker --port``'s."""

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def readyz(request: Request) -> Response:
        """For a load balancer: 503 while the database cannot be reached, so traffic goes to
        processes that can serve it. Bounded, because a health check that hangs is no answer."""
        try:
            async with asyncio.timeout(READY_TIMEOUT):
                async with rt.sessionmaker() as session:
                    await session.execute(text("SELECT 1"))
        except Exception as err:  # any database failure means "not ready", with the reason
            return PlainTextResponse(f"database unreachable: {type(err).__name__}", status_code=503)
        return PlainTextResponse("ready")

    async def metrics_endpoint(request: Request) -> Response:
        token = rt.settings.metrics_token
        if token is not None:
            presented = request.headers.get("authorization", "")
            expected = f"Bearer {token}"
            if not hmac.compare_digest(presented.encode(), expected.encode()):
                return PlainTextResponse(
                    "metrics need Authorization: Bearer <GENIE_METRICS_TOKEN>",
                    status_code=401,
                    headers={"WWW-Authenticate": 'Bearer realm="genie metrics"'},
                )
        body, content_type = metrics.exposition()
        return Response(body, media_type=content_type)

    return [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/readyz", readyz, methods=["GET"]),
        Route("/metrics", metrics_endpoint, methods=["GET"]),
    ]


def build_worker_app(rt: Runtime) -> Starlette:
    """What ``genie worker --port`` serves: health and metrics only (the outbox depth, deliveries,
    escalations … are counted in the worker's process)."""
    app = Starlette(routes=health_routes(rt))
    app.add_middleware(SecurityHeaders, hsts=rt.settings.secure_cookies)
    return app


def build_asgi_app(rt: Runtime, *, run_background: bool = True) -> Starlette:
    """The app. ``run_background=False`` (``genie serve --no-worker``): serve only, and wake the
    ``genie worker`` process(es) after each commit instead of running the loops here."""
    install_log_redaction()  # before anything logs a link URL or a query with its parameters
    # The alert API first: Starlette tries the routes in order, and POST /v2/alerts is the path a
    # storm takes (it was the 72nd route tried: 66 µs a request, 2–3 µs now). Heartbeats before the
    # API's two catch-alls, which answer every other /v2 path. No other route starts with /v2 or
    # the JSM prefix, so the order decides nothing else.
    catch_all = [r for r in api_routes if getattr(r, "endpoint", None) is api_not_supported]
    routes: list = (
        [r for r in api_routes if r not in catch_all]
        + list(heartbeat_routes)
        + catch_all
        + list(page_routes)
        + list(admin_routes)
        + list(alert_page_routes)
        + list(oncall_page_routes)
        + list(report_routes)
        + list(notification_routes)
        + list(slack_signin_routes)
    )
    socket_mode = None
    if rt.settings.slack_mode in ("single", "oauth"):
        bolt = build_bolt_app(rt)
        handler = AsyncSlackRequestHandler(bolt)

        if rt.settings.socket_mode:
            from bot.slack.socket_mode import SocketModeConnection

            socket_mode = SocketModeConnection(bolt, rt.settings)

            async def slack_events(request: Request) -> Response:  # unsigned by design: nothing gets in
                return JSONResponse(
                    {"error": "Socket Mode: Slack requests arrive over the WebSocket, not here"}, status_code=404
                )
        else:

            async def slack_events(request: Request) -> Response:
                screened = screen(
                    await request.body(), request.headers, rt.settings.slack_signing_secret, request.query_params
                )
                if isinstance(screened, tuple):
                    return PlainTextResponse(screened[1], status_code=screened[0])
                return to_starlette_response(await bolt.async_dispatch(screened))

        if rt.settings.slack_mode == "oauth":

            async def slack_oauth(request: Request) -> Response:
                return await handler.handle(request)

            routes += [
                Route("/slack/install", slack_oauth, methods=["GET"]),
                Route("/slack/oauth_redirect", slack_oauth, methods=["GET"]),
            ]
    else:
        logger.warning("%s.", SLACK_SETUP_HINT)

        async def slack_events(request: Request) -> Response:
            return JSONResponse({"error": SLACK_SETUP_HINT}, status_code=503)

    # The background loops (outbox worker, heartbeats, escalations, e-mail and webhook pages,
    # hand-offs, cleanup) run here unless another process runs them (``genie worker``): then a
    # commit here wakes that process instead (``bot.wakeup``).
    background = Background(rt) if run_background else None
    if background is None:
        rt.wakeup = wakeup.sender(rt.settings.database_url)
    access_log = AccessLog()

    @asynccontextmanager
    async def lifespan(app: Starlette):
        if rt.clients is not None:  # one kept-alive HTTP session for every Slack call (bot.slack.clients)
            await rt.clients.open(rt.slack, rt.worker.client if rt.worker is not None else None)
        if background is not None:
            await background.start()
        if socket_mode is not None:
            await socket_mode.start()
        try:
            yield
        finally:
            if socket_mode is not None:
                await socket_mode.stop()
            if background is not None:
                await background.stop()
            if rt.wakeup is not None:
                await rt.wakeup.close()
            if rt.clients is not None:
                await rt.clients.close()
            access_log.flush()  # (uvicorn lets the requests in flight finish first)

    # Slack's requests first too (every click; no other route is /slack/events): behind the
    # 190-odd others, finding it cost ~0.1 ms of a click's CPU.
    routes = [
        Route("/slack/events", slack_events, methods=["POST"]),
        *routes,
        *health_routes(rt),
        Mount("/static", StaticFiles(directory=Path(__file__).parent / "web" / "static"), name="static"),
    ]
    app = Starlette(routes=routes, lifespan=lifespan)
    # No "add the missing slash" redirects: they are built from the request's Host header, and
    # a link path must never be sent anywhere but GENIE_BASE_URL (a 404 instead).
    app.router.redirect_slashes = False
    app.state.runtime = rt
    app.state.socket_mode = socket_mode
    app.state.cleanup = background.cleanup if background is not None else None
    # Innermost: every body is capped while it streams in, before any handler parses or verifies it.
    app.add_middleware(BodyLimit)
    app.add_middleware(SecurityHeaders, hsts=rt.settings.secure_cookies)
    app.add_middleware(RequestMetrics, routes=app.routes, access_log=access_log)
    app.state.access_log = access_log
    return app


def uvicorn_config(app: ASGIApp, settings: Settings, host: str, port: int, **options) -> uvicorn.Config:
    """How ``genie serve`` runs uvicorn. ``X-Forwarded-For`` (and ``-Proto``) is believed only from
    the proxies in ``GENIE_FORWARDED_ALLOW_IPS``; with none set, the client address is the
    connection's (uvicorn's own default would trust any process on the host).

    An idle keep-alive connection stays open 75 s, longer than the proxies in front of Genie keep
    theirs (nginx and AWS's load balancers: 60 s). uvicorn's default of 5 s closes a connection at
    the moment a client or proxy may be sending the next request on it: that request fails with
    a reset (a 502 behind a proxy; seen as `httpx.ReadError` in the suite under load)."""
    import uvicorn

    trusted = list(settings.forwarded_allow_ips)
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        server_header=False,
        proxy_headers=bool(trusted),
        forwarded_allow_ips=trusted or [],
        timeout_keep_alive=75,
        access_log=False,  # Genie writes its own, in batches (``logs.AccessLog``)
        **options,
    )
