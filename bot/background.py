"""The background loops of a Genie process: what ``genie worker`` runs, and what ``genie serve``
runs beside serving unless told ``--no-worker``.

- the outbox worker (``bot.slack.delivery``: Slack messages, page DMs), when Slack is configured;
- the heartbeat monitor (``bot.services.heartbeats``);
- the escalation engine (``bot.services.paging``);
- the channel worker (``bot.channels.worker``: e-mail and webhook pages);
- the on-call hand-off loop (``bot.slack.handoffs``);
- the periodic cleanup (``bot.services.cleanup``);
- a listener for the wake-ups of web processes that run none of these (``bot.wakeup``).

    background = Background(rt)     # sets rt.worker, rt.heartbeats, rt.paging, rt.channels, rt.handoffs
    await background.start()
    ...
    await background.stop()         # lets the Slack calls in flight finish

Every loop claims its work from the database (leases, conditional updates), so several processes
may run them at once; none needs the HTTP side.
"""

from __future__ import annotations

import logging

from bot import wakeup
from bot.channels.worker import ChannelWorker
from bot.runtime import Runtime
from bot.services.cleanup import Cleanup
from bot.services.heartbeats import HeartbeatMonitor
from bot.services.paging import PagingEngine
from bot.slack.delivery import OutboxWorker, make_delivery_client
from bot.slack.handoffs import HandoffLoop

logger = logging.getLogger(__name__)


class Background:
    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        if rt.settings.slack_mode in ("single", "oauth") and rt.worker is None:
            # Delivers the outbox to Slack; handlers call rt.wake_outbox() after committing.
            rt.worker = OutboxWorker(rt, make_delivery_client(rt.settings))
        # Late heartbeats raise alerts (with or without Slack: the alert is kept either way).
        rt.heartbeats = HeartbeatMonitor(rt.sessionmaker, lambda: rt.now(), on_raised=rt.wake_outbox)
        # Due escalation steps fire (the pages wait in the outbox when Slack is not configured).
        rt.paging = PagingEngine(
            rt.sessionmaker,
            lambda: rt.now(),
            on_paged=lambda channel: rt.worker.wake(channel) if rt.worker is not None else None,
        )
        # Due e-mail and webhook pages are sent (``bot.channels.worker``).
        rt.channels = ChannelWorker(rt.sessionmaker, rt.settings, lambda: rt.now(), on_failed=rt.wake_outbox)
        # On-call hand-offs: reminder DMs through the outbox, Slack user groups.
        rt.handoffs = HandoffLoop(rt, on_queued=lambda: rt.worker.wake() if rt.worker is not None else None)
        self.cleanup = Cleanup(rt.sessionmaker, rt.settings.cleanup_interval)
        self.listener = wakeup.listener(rt.settings.database_url, self._woken)

    def _woken(self, channel: str | None) -> None:
        """A web process committed something (to ``channel``): look now, as after a local commit."""
        rt = self.rt
        if rt.worker is not None:
            rt.worker.wake(channel)
        for loop in (rt.paging, rt.channels):
            if loop is not None:
                loop.wake()

    async def start(self) -> None:
        rt = self.rt
        if rt.worker is not None:
            rt.worker.start()
        rt.heartbeats.start()
        rt.paging.start()
        rt.channels.start()
        rt.handoffs.start()
        self.cleanup.start()
        if self.listener is not None:
            await self.listener.start()

    async def stop(self) -> None:
        """Stop claiming; the outbox worker lets its Slack calls in flight finish (``OutboxWorker.stop``)."""
        rt = self.rt
        if self.listener is not None:
            await self.listener.stop()
        await rt.heartbeats.stop()
        await rt.paging.stop()
        await rt.channels.stop()
        await rt.handoffs.stop()
        await self.cleanup.stop()
        if rt.worker is not None:
            await rt.worker.stop()
