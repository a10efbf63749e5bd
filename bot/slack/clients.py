"""Which bot token speaks for a workspace.

Single-workspace mode has one token (``SLACK_BOT_TOKEN``). Multi-workspace (OAuth) mode looks
the bot up per workspace in slack-sdk's installation store, on Genie's own database, each
time — so a reinstall or an uninstall takes effect at once in every process.

    client = await rt.clients.for_workspace(team_id="T0123", enterprise_id=None)

**One kept-alive HTTP session per process.** slack-sdk's ``AsyncWebClient`` opens a new aiohttp
session — a new TCP (and TLS) connection — for every call unless it is given one. The app's
lifespan opens one (``await clients.open(rt.slack, worker.client)``): Bolt's client (Bolt copies
its session into the client of every request), the outbox worker's, and every client
``for_workspace`` makes while it is open share its pool of kept-alive connections; ``close()`` at
shutdown, after the worker's last call. A session belongs to the event loop it was opened in: on
any other loop (a CLI command, a test's second app) the clients make their own per call, as
slack-sdk does by default.
"""

from __future__ import annotations

import asyncio
import logging

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.oauth.installation_store.sqlalchemy import AsyncSQLAlchemyInstallationStore
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncEngine

from bot import jsontext
from bot.config import Settings

#: The bot scopes Genie asks for (manifest.yml's, and OAuth mode's install request).
BOT_SCOPES = (
    "commands",
    "chat:write",
    "im:write",
    "im:history",
    "users:read",
    "users:read.email",
    "channels:history",
    "groups:history",
    "usergroups:read",
    "usergroups:write",
)
SLACK_TIMEOUT = 10
#: Connections the shared session keeps to Slack (one host): the outbox worker's concurrent
#: deliveries plus the interactive calls (DMs, Home, users.info) of a busy minute.
HTTP_CONNECTIONS = 32
#: Seconds an idle connection is kept: shorter than the server's own idle timeout (uvicorn's
#: default is 5 s), so a call never goes out on a connection the other end is closing — a
#: ``chat.postMessage`` that fails that way is not retried blindly.
HTTP_KEEPALIVE = 4.0

#: What a Slack Web API call can fail with: an error answer, a transport failure, a timeout.
SLACK_FAILURES = (SlackClientError, aiohttp.ClientError, asyncio.TimeoutError)


def why(err: Exception) -> str:
    """A failed call in a word: Slack's error code, or the kind of failure."""
    if isinstance(err, SlackApiError):
        return str(err.response.get("error"))
    return type(err).__name__


def client_logger() -> logging.Logger:
    """The logger of Genie's slack-sdk clients (Bolt's copies it to each request's client): a
    child of slack-sdk's, so its records go where slack-sdk's go, with its level set. slack-sdk
    formats every request and every answer for its debug log — the JSON body whole, a message's
    blocks with 100 Assign… options included — whenever its logger's *own* level is DEBUG or
    unset (it tests ``logger.level``, not whether debug is enabled): 0.3–0.4 ms of CPU per
    ``chat.update`` formatted and thrown away (bench/RESULTS.md, "Round three"). Here the level
    is INFO unless debug is enabled where the records go."""
    logger = logging.getLogger("slack_sdk.web.genie")
    if logger.level == logging.NOTSET:
        logger.setLevel(logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.INFO)
    return logger


def interactive_retry_handlers() -> list:
    """For calls made while a person waits (DMs, Home, users.info): slack-sdk retries briefly."""
    return [
        AsyncConnectionErrorRetryHandler(max_retry_count=2),
        AsyncRateLimitErrorRetryHandler(max_retry_count=2),
        AsyncServerErrorRetryHandler(max_retry_count=2),
    ]


class SlackClients:
    def __init__(self, settings: Settings, engine: AsyncEngine | None = None) -> None:
        self.settings = settings
        self.installation_store: AsyncSQLAlchemyInstallationStore | None = None
        if settings.slack_mode == "oauth" and engine is not None and settings.slack_client_id:
            self.installation_store = AsyncSQLAlchemyInstallationStore(
                client_id=settings.slack_client_id, engine=engine
            )
        self._http: aiohttp.ClientSession | None = None
        self._http_loop: asyncio.AbstractEventLoop | None = None

    # --- the shared HTTP session -----------------------------------------------------------------
    async def open(self, *clients: AsyncWebClient | None) -> aiohttp.ClientSession:
        """Open this process's HTTP session for Slack in the running loop (the app's lifespan)
        and give it to ``clients`` (made before the loop ran: Bolt's, the outbox worker's)."""
        loop = asyncio.get_running_loop()
        if self._http is None or self._http.closed or self._http_loop is not loop:
            self._http = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=HTTP_CONNECTIONS, keepalive_timeout=HTTP_KEEPALIVE),
                # slack-sdk applies its timeout only to sessions it makes: the same one here.
                timeout=aiohttp.ClientTimeout(total=SLACK_TIMEOUT),
                # slack-sdk sends a chat.postMessage / chat.update as JSON, which aiohttp encodes
                # with this: orjson's text, read back as json.dumps' (``bot.jsontext``).
                json_serialize=jsontext.dumps,
            )
            self._http_loop = loop
        for client in clients:
            if client is not None:
                client.session = self._http
        return self._http

    def session(self) -> aiohttp.ClientSession | None:
        """The open shared session, if it belongs to the running loop (else None: slack-sdk makes
        a session per call)."""
        if self._http is None or self._http.closed:
            return None
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return self._http if loop is self._http_loop else None

    async def close(self) -> None:
        """At shutdown, after the last call: clients given the session fall back to one per call."""
        if self._http is not None and not self._http.closed and self._http_loop is asyncio.get_running_loop():
            await self._http.close()
        self._http = None
        self._http_loop = None

    def app_client(self) -> AsyncWebClient:
        """The client given to Bolt: Bolt copies its base URL and retry handlers per request."""
        token = self.settings.slack_bot_token if self.settings.slack_mode == "single" else None
        return AsyncWebClient(
            token=token,
            base_url=self.settings.slack_api_url,
            timeout=SLACK_TIMEOUT,
            retry_handlers=interactive_retry_handlers(),
            logger=client_logger(),
        )

    async def token_for(self, team_id: str | None, enterprise_id: str | None) -> str | None:
        if self.settings.slack_mode == "single":
            return self.settings.slack_bot_token
        if self.installation_store is None:
            return None
        store = self.installation_store
        bot = None
        if team_id:
            bot = await store.async_find_bot(enterprise_id=enterprise_id, team_id=team_id, is_enterprise_install=False)
        if bot is None and enterprise_id:  # an Enterprise Grid org-wide install
            bot = await store.async_find_bot(enterprise_id=enterprise_id, team_id=None, is_enterprise_install=True)
        return bot.bot_token if bot is not None else None

    async def for_workspace(
        self, team_id: str | None, enterprise_id: str | None, *, retries: bool = True
    ) -> AsyncWebClient | None:
        """A client with that workspace's bot token, or None if Genie is not installed there.
        ``retries=False`` gives a client without slack-sdk's retries (the outbox retries itself)."""
        token = await self.token_for(team_id, enterprise_id)
        if token is None:
            return None
        return AsyncWebClient(
            token=token,
            base_url=self.settings.slack_api_url,
            timeout=SLACK_TIMEOUT,
            retry_handlers=interactive_retry_handlers() if retries else [],
            session=self.session(),
            logger=client_logger(),
        )

    async def only_installation(self) -> tuple[str | None, str | None] | None:
        """``(team_id, enterprise_id)`` when Genie is installed in exactly one workspace or org."""
        if self.installation_store is None:
            return None
        from sqlalchemy import distinct, select

        bots = self.installation_store.bots
        async with self.installation_store.engine.connect() as conn:
            rows = (
                await conn.execute(
                    select(distinct(bots.c.team_id), bots.c.enterprise_id)
                    .where(bots.c.client_id == self.settings.slack_client_id, bots.c.bot_token.is_not(None))
                    .limit(2)
                )
            ).all()
        return (rows[0][0], rows[0][1]) if len(rows) == 1 else None
