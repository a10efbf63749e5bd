"""What every request handler needs, built once by the app factory and shared."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from itsdangerous import TimestampSigner
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.services.click_batch import ClickBatcher
from bot.services.slack_links import LinkTokens
from bot.services.users import Invites
from storage.base import utcnow

CSRF_SALT = "genie.csrf.v2"
#: The longest a Slack delivery waits for queued clicks to go first (``Runtime.background_turn``).
BACKGROUND_YIELD_S = 0.1


@dataclass
class Runtime:
    settings: Settings
    sessionmaker: async_sessionmaker[AsyncSession]
    secret_keys: tuple[str, ...]
    tokens: LinkTokens
    #: Signs CSRF tokens (the double-submit cookie bound to the session, with a timestamp:
    #: ``bot.web.pages``); first key signs, all verify.
    csrf: TimestampSigner
    #: Signs invitation links (set a password): ``genie user invite``.
    invites: Invites | None = None
    #: Bot-token client for calls not triggered by a Slack request (web confirm, disconnect).
    slack: AsyncWebClient | None = None
    #: Bot tokens per workspace (``bot.slack.clients``); None only in unit tests.
    clients: Any = None
    #: The outbox worker of this process, if it runs one (``bot.slack.delivery``).
    worker: Any = None
    #: The heartbeat monitor of this process (``bot.services.heartbeats``).
    heartbeats: Any = None
    #: The escalation engine of this process (``bot.services.paging``).
    paging: Any = None
    #: The e-mail and webhook page sender of this process (``bot.channels.worker``).
    channels: Any = None
    #: The on-call hand-off loop of this process (``bot.slack.handoffs``).
    handoffs: Any = None
    #: In a process that runs no background loops (``genie serve --no-worker``): wakes the
    #: ``genie worker`` process(es) after a commit (``bot.wakeup``).
    wakeup: Any = None
    #: The clock heartbeats are judged by (pings, due times, expiry), and escalation steps fall
    #: due by (``bot.services.paging``). Tests set their own to
    #: move time on; everything else uses the real one.
    now: Callable[[], datetime] = utcnow
    #: How many clicks' after-ack work (the gate's transaction) runs at once in this process
    #: (``after_ack``); the rest wait their turn, holding nothing.
    after_ack_limit: int = 4
    _after_ack: asyncio.Semaphore | None = field(default=None, repr=False)
    #: Clicks taken in whose work is not done yet (running or waiting for their turn).
    clicks_pending: int = 0
    _clicks_caught_up: asyncio.Event | None = field(default=None, repr=False)
    _click_batcher: ClickBatcher | None = field(default=None, repr=False)

    @property
    def clicks(self) -> ClickBatcher:
        """This process's click writer: the clicks of one moment share a transaction
        (``bot.services.click_batch``)."""
        if self._click_batcher is None:
            self._click_batcher = ClickBatcher(lambda: self.sessionmaker)
        return self._click_batcher

    @contextlib.asynccontextmanager
    async def after_ack(self):
        """The turn a click's work takes after Slack got its ack. On one event loop, every click
        whose transaction is in progress slows every other request's turn through the loop: at
        more clicks than the process commits per second, 20–30 transactions in step (PostgreSQL's
        pool) made the next click's *ack* wait over a second (bench/RESULTS.md, "Clicks take
        their turn after the ack"). With a few at a time the excess waits here, costing nothing,
        and acks (and API 202s) keep their latency; a transaction runs no slower for it."""
        if self._after_ack is None:
            self._after_ack = asyncio.Semaphore(self.after_ack_limit)
            self._clicks_caught_up = asyncio.Event()
        self.clicks_pending += 1
        if self.clicks_pending > self.after_ack_limit:
            self._clicks_caught_up.clear()
        try:
            async with self._after_ack:
                yield
        finally:
            self.clicks_pending -= 1
            if self.clicks_pending <= self.after_ack_limit:
                self._clicks_caught_up.set()

    async def background_turn(self) -> None:
        """Before background work in this process (a Slack delivery): while clicks are queued
        for their turn (more pending than run at once), let them go first, for at most
        ``BACKGROUND_YIELD_S`` — a person's action is on record sooner, and deliveries still
        flow (at least one per channel per ``BACKGROUND_YIELD_S``) however busy the process is.
        A ``genie worker`` process takes no clicks and never waits here."""
        if self.clicks_pending <= self.after_ack_limit:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._clicks_caught_up.wait(), BACKGROUND_YIELD_S)

    @classmethod
    def create(
        cls,
        settings: Settings,
        sessionmaker,
        secret_keys: tuple[str, ...],
        slack: AsyncWebClient | None,
        clients: Any = None,
    ):
        return cls(
            clients=clients,
            settings=settings,
            sessionmaker=sessionmaker,
            secret_keys=secret_keys,
            tokens=LinkTokens(secret_keys, settings.link_ttl),
            csrf=TimestampSigner(list(reversed(secret_keys)), salt=CSRF_SALT),
            invites=Invites(secret_keys),
            slack=slack,
        )

    async def client_for(self, team_id: str | None, enterprise_id: str | None) -> AsyncWebClient | None:
        """The bot client for that workspace (None: Slack not configured, or not installed there)."""
        if self.clients is None:
            return self.slack
        return await self.clients.for_workspace(team_id, enterprise_id)

    def wake_outbox(self, channel: str | None = None, *, paging: bool = True, lane: str | None = None) -> None:
        """After committing outbox rows (to ``channel``, when known): deliver now rather than at
        the worker's next poll. With ``paging`` (the default) the escalation engine and the
        channel worker look too (a new alert may start an escalation). The hot paths — a click,
        an API alert that started no escalation — pass ``paging=False``: a woken engine and
        worker each run a turn of two or three transactions, which on a busy process was more
        database work than the click itself (bench/RESULTS.md, "Statements per request").
        ``lane``: the outbox lane of what was queued, when it is one known lane
        (``OutboxWorker.wake``)."""
        if self.worker is not None:
            self.worker.wake(channel, lane)
        if self.wakeup is not None:  # a worker in another process (genie serve --no-worker)
            self.wakeup.send(channel)
        if not paging:
            return
        if self.paging is not None:
            self.paging.wake()
        if self.channels is not None:
            self.channels.wake()

    def link_url(self, token: str) -> str:
        """Built from GENIE_BASE_URL, never from a request's Host header."""
        return f"{self.settings.base_url}/link/{token}"
