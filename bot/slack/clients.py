"""Which bot token speaks for a workspace.

Single-workspace mode has one token (``SLACK_BOT_TOKEN``). Multi-workspace (OAuth) mode looks
the bot up per workspace in slack-sdk's installation store, on Genie's own database, each
time — so a reinstall or an uninstall takes effect at once in every process.

    client = await rt.clients.for_workspace(team_id="T0123", enterprise_id=None)
"""

from __future__ import annotations

import asyncio

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

#: What a Slack Web API call can fail with: an error answer, a transport failure, a timeout.
SLACK_FAILURES = (SlackClientError, aiohttp.ClientError, asyncio.TimeoutError)


def why(err: Exception) -> str:
    """A failed call in a word: Slack's error code, or the kind of failure."""
    if isinstance(err, SlackApiError):
        return str(err.response.get("error"))
    return type(err).__name__


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

    def app_client(self) -> AsyncWebClient:
        """The client given to Bolt: Bolt copies its base URL and retry handlers per request."""
        token = self.settings.slack_bot_token if self.settings.slack_mode == "single" else None
        return AsyncWebClient(
            token=token,
            base_url=self.settings.slack_api_url,
            timeout=SLACK_TIMEOUT,
            retry_handlers=interactive_retry_handlers(),
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
