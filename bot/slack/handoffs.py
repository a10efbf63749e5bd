"""The on-call hand-off loop (every ``genie serve``, on ``Runtime.now``): queues the reminder
DM a person gets ``GENIE_ONCALL_REMINDER_MINUTES`` before their shift starts, and at each
hand-off sets the schedule's Slack user group (``usergroups.users.update``) to the person now on
call — each once per shift (``bot.services.handoffs`` holds the rows that say so).

A group is left as it is when nobody can be put there (a gap, a person with no Slack link):
Slack refuses an empty user group, and a stale member is better than none for ``@payments-oncall``.
A Slack failure is logged and the sync tried again at the next tick."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta

from bot.runtime import Runtime
from bot.services import handoffs
from bot.services.loop import BackgroundLoop
from bot.slack.clients import SLACK_FAILURES, why

logger = logging.getLogger(__name__)

POLL_INTERVAL = 30.0


class HandoffLoop(BackgroundLoop):
    name = "genie-oncall-handoffs"
    doing = "look at on-call hand-offs"

    def __init__(self, rt: Runtime, on_queued: Callable[[], None] | None = None, poll_interval: float = POLL_INTERVAL):
        super().__init__(poll_interval)
        self.rt = rt
        self.on_queued = on_queued

    async def run_once(self, now: datetime | None = None) -> tuple[int, int]:
        """Queue the due reminders and sync the groups whose shift changed: (reminders queued,
        groups set)."""
        rt = self.rt
        now = now or rt.now()
        queued = 0
        minutes = rt.settings.oncall_reminder_minutes
        if minutes:
            async with rt.sessionmaker.begin() as session:
                queued = await handoffs.queue_reminders(session, now, timedelta(minutes=minutes))
            if queued and self.on_queued is not None:
                self.on_queued()
        async with rt.sessionmaker() as session:
            syncs = await handoffs.pending_syncs(session, now)
        synced = 0
        for sync in syncs:
            status, detail = handoffs.SKIPPED, f"group left as it was: {sync.why}"
            if sync.slack_user is not None:
                client = await rt.client_for(sync.slack_team_id, sync.enterprise_id)
                if client is None:
                    status, detail = handoffs.SKIPPED, "Genie is not installed in the team's workspace"
                else:
                    try:
                        await client.usergroups_users_update(usergroup=sync.usergroup, users=sync.slack_user)
                    except SLACK_FAILURES as err:
                        logger.warning("usergroups.users.update of %s failed: %s", sync.usergroup, why(err))
                        continue  # tried again at the next tick
                    status, detail = handoffs.DONE, sync.why
                    synced += 1
            async with rt.sessionmaker.begin() as session:
                await handoffs.record(
                    session, sync.schedule_id, handoffs.USERGROUP, sync.start, sync.user_id, status, detail
                )
        return queued, synced
