"""Socket Mode (``genie serve --socket-mode``): Slack's requests come over a WebSocket that
Genie opens with the app-level token (``SLACK_APP_TOKEN``), for teams that cannot expose a
public URL to Slack. The same Bolt app (same listeners) answers them; the web pages, the alert
API and health still serve over HTTP.

    connection = SocketModeConnection(bolt_app, settings)
    await connection.start()     # in the ASGI lifespan, next to the outbox worker
    ...
    await connection.stop()

The WebSocket URL comes from ``apps.connections.open`` through Bolt's own client, so it goes to
``SLACK_API_URL`` like every other call. slack-sdk's client reconnects by itself when Slack asks
it to (``disconnect``) or the connection goes stale.
"""

from __future__ import annotations

import asyncio
import logging

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp

from bot.config import Settings

logger = logging.getLogger(__name__)


class SocketModeConnection:
    def __init__(self, app: AsyncApp, settings: Settings) -> None:
        assert settings.slack_app_token, "Settings.from_env(socket_mode=True) requires SLACK_APP_TOKEN"
        self.app = app
        self.settings = settings
        self.handler: AsyncSocketModeHandler | None = None
        self._connecting: asyncio.Task | None = None
        #: Set once the first WebSocket session is established.
        self.connected = asyncio.Event()

    async def start(self) -> None:
        """Connect in the background: HTTP (health, pages, API) serves meanwhile, and an
        unreachable Slack is retried (and logged) by slack-sdk instead of blocking the start."""
        # Made here, in the running loop: slack-sdk's client starts tasks and an aiohttp session.
        self.handler = AsyncSocketModeHandler(
            self.app, app_token=self.settings.slack_app_token, web_client=self.app.client
        )
        self._connecting = asyncio.create_task(self._connect(), name="genie-socket-mode-connect")

    async def _connect(self) -> None:
        assert self.handler is not None
        await self.handler.connect_async()
        if not self.handler.client.closed:
            self.connected.set()
            logger.info(
                "Genie is connected to Slack over Socket Mode (requests arrive over the WebSocket; "
                "POST /slack/events is off)"
            )

    async def stop(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            try:
                await self._connecting
            except asyncio.CancelledError:
                pass
        if self.handler is not None:
            await self.handler.close_async()
            logger.info("Socket Mode connection to Slack closed")
