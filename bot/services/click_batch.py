"""Group commit for clicks: the Acknowledge / Close / Assign clicks of one moment share one
transaction (``group_commit.GroupCommit``, as the alert API's requests do).

Each click's work after its ack hands the click to the process's ``ClickBatcher`` and waits.
The writer runs the batch's clicks one after the other, each exactly as alone
(``actions.act``: its replay guard, the gate's facts read now, the decision, the transition, the
timeline and outbox rows), in one transaction, commits, and only then answers each click: the
listener wakes the outbox for the channels that click queued to, or tells the clicker why
nothing changed — both after the commit, as before.

Clicks of one batch see each other's writes in order, as clicks one after the other would: two
Acknowledges of one alert give one ``applied`` and one ``noop``; the same signed body twice is
taken in once. The gate's facts are read by each click when it runs (the gate's query refreshes
what the session loaded for an earlier click: ``access._gate_statement``), so a person removed
from a team is refused from the next click on, batched or not.

A batch that fails as a whole is rolled back and its clicks are run one by one
(``GroupCommit``): the bad one fails alone, with the error it would have had alone; running a
click again is safe because nothing of the rolled-back batch was written, its replay key
included.

What it saves: a click's transaction's fixed cost — the session, SQLite's lock and WAL commit —
shared by the batch (bench/RESULTS.md, "Issue 14, fifth round"). How many clicks run at once
(and so the largest batch) is still ``Runtime.after_ack``'s limit.

**SQLite only.** There every transaction already waits for the process's one connection, so a
batch costs a click no time. On PostgreSQL clicks run in transactions of their own, at once,
on the pool's connections: each statement is a round trip, and a batch would run its clicks'
round trips one after the other — measured, four clicks a batch saved ~6 % of a click's CPU
but committed them 10 ms later at 200 clicks/s (p50 5 → 15 ms) and took fewer per second.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bot.services import actions, outbox
from bot.services.actions import ActionResult
from bot.services.group_commit import GroupCommit
from bot.services.slack_links import SlackIdentity


@dataclass(frozen=True)
class Click:
    identity: SlackIdentity
    action: str
    alert_id: int
    anonymous_default: bool
    assignee_id: int | None = None
    #: The click's replay key (``slack_events.body_key``); None in Socket Mode.
    replay: str | None = None


@dataclass(frozen=True)
class Acted:
    result: ActionResult
    #: The channels this click queued messages to, with their lane (None: both or not known): the
    #: worker is woken for each after the commit (``outbox.enqueued_channels``).
    channels: Mapping[str, str | None]


class ClickBatcher(GroupCommit[Click, Acted]):
    """``await batcher.act(Click(...))`` → ``Acted`` once committed; raises what ``actions.act``
    would (or the database's error)."""

    name = "genie-click-writer"
    what = "clicks"
    max_batch = 64

    #: Batch only where transactions queue anyway (SQLite: one connection; see the module).
    _batches: bool | None = None

    async def act(self, click: Click) -> Acted:
        if self._batches is None:
            bind = getattr(self._sessionmaker(), "kw", {}).get("bind")
            self._batches = bind is None or bind.dialect.name != "postgresql"
        if not self._batches:  # its own transaction, at once, beside the others'
            (acted,) = await self._transaction([click])
            return acted  # type: ignore[return-value]  # (a failure raises)
        return await self.submit(click)

    async def _transaction(self, batch: list[Click]) -> list[Acted | Exception]:
        done: list[Acted | Exception] = []
        async with self._sessionmaker().begin() as session:
            for click in batch:
                result = await actions.act(
                    session,
                    click.identity,
                    click.action,
                    click.alert_id,
                    anonymous_default=click.anonymous_default,
                    assignee_id=click.assignee_id,
                    replay=click.replay,
                )
                done.append(Acted(result, outbox.enqueued_channels(session)))
        return done
