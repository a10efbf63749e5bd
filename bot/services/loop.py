"""The background loops every ``genie serve`` runs (heartbeat monitor, escalation engine,
e-mail and webhook pages, on-call hand-offs): one shape, written once.

A loop calls ``run_once()``, then sleeps ``next_delay()`` seconds (by default
``poll_interval``) or until ``wake()``. A failure — the database unreachable, a bug — is logged
with the loop's ``doing`` and backs off (2, 4 … 30 s); nothing raises out of the loop, and the
next turn tries again. ``stop()`` ends the turn in progress at its next check of ``stopping``
and waits for it."""

from __future__ import annotations

import asyncio
import logging
from abc import ABC, abstractmethod
from contextlib import suppress

logger = logging.getLogger(__name__)

#: The longest a failing loop waits before trying again.
MAX_BACKOFF = 30.0


class BackgroundLoop(ABC):
    #: The asyncio task's name.
    name = "genie-loop"
    #: What a turn does, for the log line when it fails ("fire due escalation steps").
    doing = "do its work"

    def __init__(self, poll_interval: float) -> None:
        self.poll_interval = poll_interval
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._stopping = False

    @property
    def stopping(self) -> bool:
        return self._stopping

    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            task, self._task = self._task, None
            with suppress(asyncio.CancelledError):
                await task

    def wake(self) -> None:
        self._wake.set()

    @abstractmethod
    async def run_once(self) -> object:
        """One turn of the loop's work (each loop says what it returns)."""

    async def next_delay(self) -> float:
        """Seconds to sleep after a turn that went well (a loop with timers says when the next is due)."""
        return self.poll_interval

    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            try:
                await self.run_once()
                delay = await self.next_delay()
                failures = 0
            except Exception:  # the database is unreachable or broken: say so, back off, go on
                failures += 1
                delay = min(MAX_BACKOFF, 2.0**failures)
                logging.getLogger(type(self).__module__).exception(
                    "%s could not %s; trying again in %.0f s", type(self).__name__, self.doing, delay
                )
            if self._stopping:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)
