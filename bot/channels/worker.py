"""The channel worker (every ``genie serve``): delivers e-mail and webhook pages when they are
due (``bot.services.paging`` made them, ``waiting`` with a ``due_at``).

Each due page is claimed by a conditional UPDATE that takes a lease (one worker wins, across
processes), sent with no transaction open, and settled only if the lease is still held: sent;
retried with backoff on a temporary failure (SMTP unreachable, the webhook's 5xx or timeout —
each on the alert's timeline); failed on a permanent one, and then the person's next channel is
due at once. An alert acknowledged or closed first cancels the page. Nothing raises out of the
loop: a failure is recorded and the loop backs off. The clock is ``Runtime.now`` (tests move it).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from contextlib import suppress
from datetime import datetime

from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.channels import email, webhook
from bot.channels.errors import Permanent, Temporary
from bot.config import Settings
from bot.services import notification_rules, paging
from bot.services.loop import BackgroundLoop
from storage.base import utcnow

logger = logging.getLogger(__name__)
POLL_INTERVAL = 2.0
_UNREAD = object()


class ChannelWorker(BackgroundLoop):
    name = "genie-channel-worker"
    doing = "deliver e-mail and webhook pages"

    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        settings: Settings,
        now: Callable[[], datetime] = utcnow,
        poll_interval: float = POLL_INTERVAL,
        on_failed: Callable[[], None] | None = None,
    ) -> None:
        self.sessionmaker = sessionmaker
        #: Called after a page failed for good: the person's next channel is due now (a
        #: delayed Slack DM is released by the escalation engine, which this wakes).
        self.on_failed = on_failed
        self.settings = settings
        self.now = now
        #: The next due page as the last idle turn read it (``_UNREAD``: read again).
        self._next_due: object = _UNREAD
        super().__init__(poll_interval)

    async def run_once(self) -> int:
        """Deliver every e-mail and webhook page due now; how many were claimed. A read first:
        an idle turn (nothing due) writes nothing — on SQLite a write transaction takes the
        process's one connection and the write lock, every ``poll_interval``."""
        now = self.now()
        async with self.sessionmaker() as session:
            due = await paging.next_channel_due(session)
        if due is None or due > now:
            self._next_due = due  # what next_delay sleeps on (a local first: turns may overlap)
            return 0
        self._next_due = _UNREAD
        async with self.sessionmaker.begin() as session:
            claimed = await paging.claim_channel_pages(session, now)
        await asyncio.gather(*(self._deliver(page_id, held) for page_id, held in claimed))
        return len(claimed)

    async def _deliver(self, page_id: int, held: datetime) -> None:
        async with self.sessionmaker() as session:
            found = await paging.channel_page(session, page_id)
        if found is None:
            return
        page, alert, person = found.page, found.alert, found.person
        how = notification_rules.describe(page.channel)
        whom = f"{how} to {person.name}" if person is not None else how
        status, text = paging.SENT, f"{whom} delivered"
        try:
            if alert.status != "open" or alert.acknowledged:
                state = "closed" if alert.status != "open" else "acknowledged"
                status, text = paging.CANCELLED, f"{whom} not sent: the alert was {state} first"
            else:
                await self._send(found)
        except Temporary as err:
            with suppress(Exception):
                async with self.sessionmaker.begin() as session:
                    await paging.retry_channel_page(
                        session, page_id, held, page.attempts, f"{whom} failed ({err})", self.now()
                    )
            return
        except Permanent as err:
            status, text = paging.FAILED, f"{whom} failed: {err}"
        except Exception as err:  # a bug or an unexpected library error: retried, never raised
            logger.exception("Could not send page %s (%s)", page_id, page.channel)
            with suppress(Exception):
                async with self.sessionmaker.begin() as session:
                    await paging.retry_channel_page(
                        session, page_id, held, page.attempts, f"{whom} failed ({type(err).__name__})", self.now()
                    )
            return
        async with self.sessionmaker.begin() as session:
            settled = await paging.settle_channel_page(session, page_id, held, status, text, self.now())
        if settled and status == paging.FAILED and self.on_failed is not None:
            self.on_failed()

    async def _send(self, found: paging.ChannelPage) -> None:
        page, alert, person, rule = found.page, found.alert, found.person, found.rule
        team_name = found.team.name if found.team is not None else None
        label = paging.step_label(page.step, page.repeat_round)
        if person is None or not person.is_active:
            raise Permanent("the person no longer has an active Genie account")
        if page.channel == paging.EMAIL:
            if not notification_rules.email_verified(person):
                raise Permanent("their e-mail address is not verified")
            subject, body = email.page_email(
                self.settings, alert=alert, team_name=team_name, step_label=label, why=page.reason
            )
            await email.send(self.settings, person.email, subject, body)
            return
        if rule is None or not rule.webhook_url or not rule.webhook_secret:
            raise Permanent("the webhook rule was removed")
        payload = webhook.page_body(
            self.settings, alert=alert, team_name=team_name, page=page, person=person, step_label=label
        )
        await webhook.send(self.settings, rule.webhook_url, rule.webhook_secret, payload, delivery=f"page-{page.id}")

    async def next_delay(self) -> float:
        due, self._next_due = self._next_due, _UNREAD
        if due is _UNREAD:  # the turn delivered: look again
            async with self.sessionmaker() as session:
                due = await paging.next_channel_due(session)
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.05, (due - self.now()).total_seconds()))
