"""The outbox worker: delivers committed Slack messages (DESIGN.md §3, "Nothing accepted is lost").

    worker = OutboxWorker(rt, make_delivery_client(rt.settings))
    worker.start()                 # in the app's lifespan (bot.server)
    rt.wake_outbox(channel)        # after a commit that enqueued something: deliver now
    await worker.stop()            # lets the calls in flight finish

The loop claims due lane heads (``bot.services.outbox``: every due head it has room for in one
short transaction — the look, one ``UPDATE … RETURNING`` and, for each, a read of what to send —
with a lease that is renewed while a call lasts; on PostgreSQL no transaction: the look, then
one statement that claims and reads, in autocommit — ``_claiming_read``), delivers different
channels — and the two lanes of a channel, ``post`` and ``update`` — concurrently (at most
``concurrency`` at once, not counting those waiting for their channel's pace) and one lane
strictly in ``id`` order — settling a message claims the lane's next one in the same
transaction, and the deliveries that finish while a settle runs are settled together in the next
(``_settle_batches``), so a busy worker is less than one transaction per message. On PostgreSQL
a settle that records nothing but its delivery (``_settles_alone``: an update, a DM) is one
statement in autocommit that also claims the lane's next message and reads what it draws: one
round trip per message. A delivery whose settle found nothing more due in its lane, with nothing
queued to its channel since it was claimed (``wake`` counts), does not make the loop look again:
a click's update is two transactions (on PostgreSQL three statements and none). The loop then
sleeps until the next message is due, ``wake()`` is called, or ``poll_interval`` passes (other
processes enqueue too, and wake this one: ``bot.wakeup``).

**Pacing.** Slack takes about one ``chat.postMessage`` per second per channel, with short
bursts. Rather than learn that from 429s (each costs a round trip and a ``Retry-After`` wait for
the whole channel), each lane of each channel has a local token bucket (``TokenBucket``:
``GENIE_SLACK_CHANNEL_RATE``/``_BURST`` for posts, ``GENIE_SLACK_UPDATE_RATE``/``_BURST`` for
updates) and a call waits for its token. A 429 is still honoured: the bucket is emptied for
``Retry-After`` and the message rescheduled. The buckets are per process: several processes
sharing a channel each pace their own calls, and Slack's 429s pace the rest.

**Storms.** When more alert posts wait in a channel than it takes in a few seconds, the claim
of the lane's head collapses them into one digest message (``outbox.storm``, rule and knobs
there), which is posted and then refreshed in place through the post lane like any message.

Retries belong to the worker and are durable: its Slack client has no slack-sdk retry handlers.
A rate limit (HTTP 429 or ``ratelimited``) reschedules the channel's head after ``Retry-After``,
so the whole channel waits; 5xx answers, connection errors and timeouts back off exponentially;
a permanent error (``channel_not_found``, ``not_in_channel``, ``invalid_auth`` …) marks the
message failed, is logged as an error, and the channel moves on.

**No double post.** An alert post carries metadata naming its outbox message. If an earlier
attempt may have posted and died before recording it (a crash, a timeout), the worker first
looks for that message in the channel's history (``channels:history``/``groups:history``) and
adopts it. If the history cannot be read, it posts anyway: a rare duplicate beats a lost alert.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import partial
from typing import Any, NamedTuple

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot import metrics
from bot.blocks.alerts import alert_message_json
from bot.blocks.digest import DigestView, digest_message
from bot.blocks.messages import draw, intent_of
from bot.config import Settings
from bot.runtime import Runtime
from bot.services import alerts, outbox, slack_directory
from bot.services.paging import PAGE
from bot.slack.clients import client_logger
from bot.slack.paging import send_page
from bot.slack.render import READ_COLUMNS, AlertRead, digest_view, read_at, reads_of_each, view_of, with_team_and_owner
from storage.base import utcnow
from storage.models import Alert, SlackDigest

logger = logging.getLogger(__name__)

CONCURRENCY = 8
#: Deliveries in flight at most, those waiting for their channel's pace included.
MAX_IN_FLIGHT = 1000
POLL_INTERVAL = 2.0
SLACK_TIMEOUT = 10
#: ``event_type`` of the metadata on alert posts; ``event_payload`` names the alert and the outbox row.
EVENT_TYPE = "genie_alert"
#: … and on storm digests: ``event_payload`` names the digest, the outbox row and how many alerts it stands for.
DIGEST_EVENT_TYPE = "genie_alert_digest"
#: Slack's clock and ours differ a little: look this much further back for an earlier post.
HISTORY_MARGIN = timedelta(seconds=5)
HISTORY_PAGES = 10
GAUGE_INTERVAL = 1.0

RATE_LIMITED = {"ratelimited", "rate_limited"}
#: Error answers Slack documents as temporary; every other error answer is permanent.
TRANSIENT = {"internal_error", "fatal_error", "service_unavailable", "request_timeout"}
#: What an operator should do about a permanent error (said in the log line).
HINTS = {
    "channel_not_found": "check the team's channel id (genie team set-channel)",
    "not_in_channel": "invite the Genie app to the channel",
    "is_archived": "the channel is archived; set another one (genie team set-channel)",
    "invalid_auth": "check SLACK_BOT_TOKEN",
    "not_authed": "check SLACK_BOT_TOKEN",
    "token_revoked": "the app was uninstalled or its token revoked; reinstall it and update SLACK_BOT_TOKEN",
    "account_inactive": "the app was uninstalled or its token revoked; reinstall it and update SLACK_BOT_TOKEN",
    "missing_scope": "reinstall the app from manifest.yml so it has every scope",
}


def make_delivery_client(settings: Settings) -> AsyncWebClient:
    """The worker's own client. No retry handlers (``[]``; None would mean slack-sdk's default
    connection retry): backoff and ``Retry-After`` are the worker's, recorded in the database."""
    return AsyncWebClient(
        token=settings.slack_bot_token,
        base_url=settings.slack_api_url,
        timeout=SLACK_TIMEOUT,
        retry_handlers=[],
        logger=client_logger(),  # not slack-sdk's debug formatting of every call (clients.client_logger)
    )


# --- pacing ------------------------------------------------------------------------------------
class TokenBucket:
    """``rate`` calls a second on average, at most ``burst`` at once: ``take()`` waits for a
    token. ``block(seconds)``: Slack said to wait (429 ``Retry-After``), so no token until then."""

    def __init__(self, rate: float, burst: int, clock=time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, max(1, burst), clock
        self.tokens = float(self.burst)
        self.stamp = clock()

    def _refill(self, now: float) -> None:
        if now > self.stamp:
            self.tokens = min(float(self.burst), self.tokens + (now - self.stamp) * self.rate)
            self.stamp = now

    def wait_time(self) -> float:
        """Seconds until a token is free (0: one is)."""
        now = self.clock()
        self._refill(now)
        if self.stamp > now:  # blocked
            return self.stamp - now + max(0.0, 1.0 - self.tokens) / self.rate
        return max(0.0, 1.0 - self.tokens) / self.rate

    async def take(self) -> float:
        """Wait for a token and take it; the seconds waited."""
        waited = 0.0
        while (delay := self.wait_time()) > 0:
            await asyncio.sleep(delay)
            waited += delay
        self.tokens -= 1.0
        return waited

    def block(self, seconds: float) -> None:
        self.tokens = 0.0
        self.stamp = max(self.stamp, self.clock() + seconds)


# --- errors ------------------------------------------------------------------------------------
class Undeliverable(Exception):
    """Retrying cannot help (the alert was never posted, so there is nothing to update …)."""


class WaitFor(Exception):
    """Not now: try again in ``seconds`` (not a failure; nothing was sent)."""

    def __init__(self, seconds: float) -> None:
        super().__init__(f"wait {seconds} s")
        self.seconds = seconds


#: How long an update waits for its alert's message in flight in the post lane.
POST_WAIT = 0.5


@dataclass(frozen=True)
class Failure:
    kind: str  # rate_limited, transient, permanent, wait (nothing sent; not an error)
    code: str  # Slack's error code, http_NNN, timeout, connection, unexpected
    retry_after: float | None = None
    #: This attempt certainly changed nothing in Slack (an error answer, no connection).
    certain: bool = True


def _retry_after(headers: Any) -> float | None:
    try:
        value = float((headers or {}).get("Retry-After"))
    except (TypeError, ValueError):
        return None
    return min(max(value, 1.0), 900.0)


def classify(err: BaseException) -> Failure | None:
    """What a failed Web API call means for the message; None for anything unexpected."""
    if isinstance(err, SlackApiError):
        response = err.response
        status = getattr(response, "status_code", 200)
        data = response.data if isinstance(getattr(response, "data", None), dict) else {}
        code = str(data.get("error") or f"http_{status}")
        if status == 429 or code in RATE_LIMITED:
            return Failure("rate_limited", "ratelimited", _retry_after(getattr(response, "headers", None)))
        if status >= 500:
            # Slack may have acted before failing: the outcome is unknown.
            return Failure("transient", f"http_{status}", certain=False)
        if code in TRANSIENT:
            return Failure("transient", code, certain=False)
        return Failure("permanent", code if status == 200 else f"http_{status}")
    if isinstance(err, aiohttp.ClientConnectorError):  # never reached Slack
        return Failure("transient", "connection")
    if isinstance(err, TimeoutError):
        return Failure("transient", "timeout", certain=False)
    if isinstance(err, aiohttp.ClientError):
        return Failure("transient", "connection", certain=False)
    return None


# --- one claimed message -------------------------------------------------------------------
@dataclass
class Claim:
    id: int
    channel: str
    kind: str
    alert_id: int | None
    payload: dict | None
    attempts: int
    locked_until: datetime
    #: When an earlier attempt whose outcome is unknown started (it may have posted); else None.
    maybe_posted_since: datetime | None
    #: This attempt sent a call that changes Slack and does not know how it ended.
    in_doubt: bool = False
    #: Settling (delivered/retry/failed); the lease keeper stops complaining.
    done: bool = False
    #: Whose bot delivers it (multi-workspace mode).
    slack_team_id: str | None = None
    enterprise_id: str | None = None
    #: The Web API client for that workspace, resolved when delivery starts.
    client: Any = None
    #: An alert post or update: the alert as it was read in the claiming transaction (a row of
    #: its columns: ``render.with_team_and_owner``), and what to draw (``render.view_of``);
    #: ``render_error`` if reading it failed.
    alert: Any = None
    view: Any = None
    render_error: BaseException | None = None
    #: Later updates of the same alert that this delivery covers (``outbox.later_updates``), if
    #: it sends the alert as drawn now; emptied when it sends nothing new (an adopted post).
    covers: list[int] = field(default_factory=list)
    #: How many of them were still pending when this one was settled, and so delivered with it.
    covered: int = 0
    #: The lane of its channel it travels in (``outbox.POST_LANE`` / ``UPDATE_LANE``).
    lane: str = outbox.POST_LANE
    #: A digest message: the digest, as read in the claiming transaction (its view, its ts).
    digest_id: int | None = None
    digest: DigestView | None = None
    digest_ts: str | None = None
    #: The storm rule collapsed this alert post into a digest when it was claimed: it is
    #: delivered already (in the digest), nothing of its own is sent.
    collapsed: outbox.Collapse | None = None
    #: An update of an alert collapsed into a digest (queued before the collapse): its digest
    #: is refreshed instead (in the settling transaction).
    refresh_digest: int | None = None
    #: An update-lane message whose alert has a post-lane message in flight: it waits for it.
    wait_for_post: bool = False
    #: The channel's next message, claimed when this one was settled.
    next: Claim | None = None
    #: The worker's wake count when the look that claimed it began (``OutboxWorker.wake``).
    gen: int = 0
    #: Claimed by a statement of its own, the transaction that was to read the rest of what it
    #: sends (a digest, the storm rule) failed: delivering it raises this (it is retried).
    claim_error: BaseException | None = None
    #: Settled, and its lane had nothing more due.
    quiet: bool = False

    @property
    def key(self) -> tuple[str, str]:
        return (self.channel, self.lane)


class OutboxWorker:
    def __init__(
        self,
        rt: Runtime,
        client: AsyncWebClient,
        *,
        concurrency: int = CONCURRENCY,
        poll_interval: float = POLL_INTERVAL,
    ) -> None:
        self.rt = rt
        self.sessionmaker = rt.sessionmaker
        self.client = client
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.lease = timedelta(seconds=rt.settings.outbox_lease_seconds)
        settings = rt.settings
        self.storm_rule = outbox.StormRule(
            threshold=settings.slack_digest_threshold, quiet=timedelta(seconds=settings.slack_digest_quiet_seconds)
        )
        self._paces = {
            outbox.POST_LANE: (settings.slack_channel_rate, settings.slack_channel_burst),
            outbox.UPDATE_LANE: (settings.slack_update_rate, settings.slack_update_burst),
        }
        self._buckets: dict[tuple[str, str], TokenBucket] = {}  # (channel, lane) -> its pace
        self._pacing: set[tuple[str, str]] = set()  # deliveries waiting for their token
        self._wake = asyncio.Event()
        self._inflight: dict[tuple[str, str], asyncio.Task] = {}  # (channel, lane) -> its delivery
        self._task: asyncio.Task | None = None
        self._stopping = False
        self._gauges_at = 0.0
        self._digests_at = 0.0
        self._next_due: datetime | None = None
        # Wakes, counted: a claim remembers the count when its look began, so settling it knows
        # whether anything was queued to its channel since (``_woken_since``).
        self._gen = 0
        self._woken: dict[str, int] = {}  # channel -> the count at its last wake
        self._woken_any = 0  # the count at the last wake for no channel in particular
        self._truncated = False  # the last look had more due heads than places
        self._capped = False  # the loop sleeps its poll interval because every place is busy
        self._settles: list[_Settle] = []  # deliveries waiting for the next settling transaction
        # PostgreSQL: claim and read what is claimed in one statement, in autocommit
        # (``_claiming_read``); SQLite keeps its transactions (BEGIN IMMEDIATE serialises them).
        bind = getattr(self.sessionmaker, "kw", {}).get("bind")
        self._one_statement = bind is not None and bind.dialect.name == "postgresql"
        self._settler: asyncio.Task | None = None

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> None:
        if self._task is None:
            self._stopping = False
            self._task = asyncio.create_task(self._loop(), name="genie-outbox-worker")
            logger.info("Outbox worker started (lease %d s)", self.lease.total_seconds())

    async def stop(self, timeout: float = 3 * SLACK_TIMEOUT) -> None:
        """Stop claiming; let the calls in flight finish and record their outcome. A call still
        running after ``timeout`` is cancelled: its message keeps its lease and is taken over
        (after a look at the channel's history) when the lease runs out."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
            self._task = None
        tasks = list(self._inflight.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            if pending:
                logger.warning(
                    "Outbox worker stopped with %d Slack call(s) unfinished; they are retried when "
                    "their lease runs out",
                    len(pending),
                )
            await asyncio.gather(*pending, return_exceptions=True)

    def wake(self, channel: str | None = None, lane: str | None = None) -> None:
        """Something was committed to the outbox (to ``channel``, when known): look now rather
        than at the next poll. A channel this worker is delivering needs no look: settling its
        current message claims the next one, and when that finds none the delivery ends with a
        look of its own (``_finished``). So a burst of clicks on one channel's alerts is not one
        pass over the outbox per click, each a transaction. Only when the lane of the new message
        (``lane``, when the caller knows it: an API alert's post) is, or both lanes are: during a
        storm each batch of new alerts woke a look that found the post lane paced (bench/RESULTS.md,
        "Issue 14, eighth round"). Every wake is counted, per channel: a delivery that ends
        with nothing more due in its lane makes the loop look again only if its channel was
        woken since it was claimed (``_woken_since``: such a wake may have been skipped)."""
        self._gen += 1
        if channel is None:
            self._woken_any = self._gen
        else:
            if len(self._woken) >= 10_000:  # forget them all: every claim then counts as woken
                self._woken.clear()
                self._woken_any = self._gen
            self._woken[channel] = self._gen
        lanes = outbox.LANES if lane is None else (lane,)
        if channel is not None and all((channel, each) in self._inflight for each in lanes):
            return
        self._wake.set()

    def bucket(self, channel: str, lane: str) -> TokenBucket:
        """The pace of ``lane`` in ``channel`` (made on first use; a process keeps at most one
        per channel and lane it has delivered to)."""
        found = self._buckets.get((channel, lane))
        if found is None:
            rate, burst = self._paces.get(lane, self._paces[outbox.POST_LANE])
            if len(self._buckets) > 10_000:  # DMs to many people: forget the full (idle) ones
                for key in [k for k, b in self._buckets.items() if b.wait_time() == 0 and b.tokens >= b.burst]:
                    del self._buckets[key]
            found = self._buckets[(channel, lane)] = TokenBucket(rate, burst)
        return found

    # --- the loop ------------------------------------------------------------------------------
    async def _loop(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()  # before looking: a wake() from now on is not lost
            try:
                await self._fill()
                await self._update_gauges()
                await self._close_quiet_digests()
                delay = await self._idle_delay()
                failures = 0
            except Exception:  # the database is unreachable or broken: say so, back off, go on
                failures += 1
                delay = min(30.0, 2.0**failures)
                logger.exception("Outbox worker could not read the outbox; trying again in %.0f s", delay)
            if self._stopping:
                break
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=delay)

    async def _paced(self, claim: Claim) -> None:
        """Wait for the channel lane's token. A delivery that waits does not hold one of the
        ``concurrency`` places: another channel is started meanwhile (with 50 channels each
        behind in its pace, holding them capped delivery at ``concurrency`` posts a second)."""
        bucket = self.bucket(claim.channel, claim.lane)
        if bucket.wait_time() <= 0:
            await bucket.take()
            return
        self._pacing.add(claim.key)
        self._wake.set()  # a place is free: look for another channel's head
        try:
            await bucket.take()
        finally:
            self._pacing.discard(claim.key)

    def _busy(self) -> int:
        """Deliveries holding a place: in flight and not waiting for their channel's token."""
        return len(self._inflight) - len(self._pacing)

    def _woken_since(self, channel: str, gen: int) -> bool:
        """Was ``channel`` woken (or everything) since the wake count was ``gen``?"""
        return max(self._woken_any, self._woken.get(channel, 0)) > gen

    async def _fill(self) -> list[asyncio.Task]:
        """Claim the due channel heads (channels not already in flight here) and start delivering
        them. SQLite: one transaction that looks, claims them all in one statement and reads
        what each sends (``_claimed``). PostgreSQL: two statements in autocommit, no
        transaction — the look, then (only if something is due) one statement that claims them
        all and reads what each draws (``_claiming_read``); in READ COMMITTED each statement
        of a transaction had its own snapshot anyway, and the claim is conditional (pending,
        due, not leased), so the look is a hint either way."""
        free = min(self.concurrency - self._busy(), MAX_IN_FLIGHT - len(self._inflight))
        if free <= 0 or self._stopping:
            return []
        gen, now = self._gen, utcnow()
        if self._one_statement:
            async with self.sessionmaker() as session:
                await _autocommit(session)
                heads, self._next_due = await outbox.heads(session, now, limit=free)
                wanted = [head.id for head in heads if (head.channel, head.lane) not in self._inflight]
                read = await self._claim_and_read(session, "claim", outbox.claim_params(wanted, now, self.lease), now)
            order = {message_id: i for i, message_id in enumerate(wanted)}
            read.sort(key=lambda claimed: order[claimed[0].id])
            claims = [await self._claimed_alone(row, now, drawn) for row, drawn in read]
        else:
            async with self.sessionmaker.begin() as session:
                heads, self._next_due = await outbox.heads(session, now, limit=free)
                wanted = [head.id for head in heads if (head.channel, head.lane) not in self._inflight]
                rows = await outbox.claim_many(session, wanted, now, self.lease)  # others' are left out
                claims = [await self._claimed(session, row, now) for row in rows]
        self._truncated = len(heads) >= free
        started = []
        for claim in claims:  # committed: those leases are ours (delivered even if stopping)
            claim.gen = gen
            state = _Run()
            task = asyncio.create_task(self._deliver(claim, state), name=f"genie-outbox-{claim.id}")
            self._inflight[claim.key] = task
            task.add_done_callback(partial(self._finished, claim.key, state))
            started.append(task)
        return started

    async def _claim_and_read(
        self, session: AsyncSession, which: str, params: dict[str, Any], now: datetime
    ) -> list[tuple[Any, Drawn]]:
        """PostgreSQL: run ``_claiming_read(which)`` in ``session`` (in autocommit: one round
        trip; or in a settling transaction, after what it recorded) — each claimed message (a
        ``outbox.MessageRow``) with what it draws; for ``"settle"`` the settled message is among
        them (``params["settle_id"]``)."""
        if which == "claim" and not params["claim_ids"]:
            return []
        if session.new or session.dirty or session.deleted:
            await session.flush()  # a Core statement does not autoflush: it must see them
        result = await session.execute(_claiming_read(which), {**params, "lane_now": now})
        n = outbox.MESSAGE_COLUMNS
        return [
            (outbox.MessageRow._make(row[:n]), Drawn(read_at(row, n), tuple(row[n + READ_COLUMNS :]))) for row in result
        ]

    def _claim_of(self, row: Any, now: datetime) -> Claim:
        """A claim of ``row`` (just leased) with only what the row itself says."""
        assert row.locked_until is not None
        earlier = row.first_attempt_at is not None and row.first_attempt_at < now - timedelta(milliseconds=1)
        return Claim(
            slack_team_id=row.slack_team_id,
            enterprise_id=row.enterprise_id,
            id=row.id,
            channel=row.channel,
            kind=row.kind,
            alert_id=row.alert_id,
            payload=row.payload,
            attempts=row.attempts,
            locked_until=row.locked_until,
            maybe_posted_since=row.first_attempt_at if earlier else None,
            lane=row.lane or outbox.POST_LANE,
            digest_id=row.digest_id,
        )

    def _storm_candidate(self, claim: Claim) -> bool:
        """The storm rule looks at this claim (an alert post at the head of its post lane)."""
        return (
            claim.kind == outbox.POST_ALERT
            and claim.lane == outbox.POST_LANE
            and claim.alert_id is not None
            and self.storm_rule.threshold > 0
            and not claim.maybe_posted_since  # it may be in Slack already: post (or adopt) it
        )

    async def _claimed_alone(self, row: Any, now: datetime, drawn: Drawn) -> Claim:
        """A claim of ``row``, claimed (and committed) by a statement of its own that read what
        it draws (``_claim_and_read``). What that statement cannot do — a digest's view, the
        storm rule — is done in a transaction of its own now, the lease being ours; if that
        fails the claim carries the error and is retried (``Claim.claim_error``)."""
        claim = self._claim_of(row, now)
        try:
            if not (claim.kind == outbox.DIGEST and claim.digest_id is not None) and not self._storm_candidate(claim):
                return await self._claimed(None, row, now, drawn, claim)
            async with self.sessionmaker.begin() as session:
                return await self._claimed(session, row, now, drawn, claim)
        except Exception as err:  # committed, so ours: delivering it fails and it is retried
            claim.claim_error = err
            return claim

    async def _claimed(
        self,
        session: AsyncSession | None,
        row: Any,
        now: datetime,
        drawn: Drawn | None = None,
        claim: Claim | None = None,
    ) -> Claim:
        """A claim of ``row`` (just leased in ``session``'s transaction), with the alert it posts
        or updates read in that same transaction: the later updates it covers first, then the
        alert, so the picture drawn includes every change those updates report (one statement:
        one snapshot). ``drawn``: that read, already made by the statement that claimed it
        (``_claim_and_read``; ``session`` is then only needed for a digest or the storm rule)."""
        if claim is None:
            claim = self._claim_of(row, now)
        if claim.kind == outbox.DIGEST and claim.digest_id is not None:
            claim.covers = await outbox.later_updates(session, row)
            claim.digest = await digest_view(session, claim.digest_id)
            claim.digest_ts = await session.scalar(
                select(SlackDigest.slack_ts).where(SlackDigest.id == claim.digest_id)
            )
            return claim
        if self._storm_candidate(claim):
            claim.collapsed = await outbox.storm(session, row, now, self.storm_rule)
            if claim.collapsed is not None:
                if claim.collapsed.head_collapsed:
                    return claim
                drawn = None  # it collapsed others: drawn after that, as it left them
            # (None: it collapsed nothing and changed neither this alert nor its updates.)
        if claim.kind in (outbox.POST_ALERT, outbox.UPDATE_ALERT) and claim.alert_id is not None:
            # One statement: the alert, all it draws, and its lanes (one snapshot: the picture
            # drawn includes every change the updates it covers report).
            if drawn is not None:
                found, lanes = drawn.found, outbox.lanes_of(row, drawn.lanes)
            else:
                found = await with_team_and_owner(
                    session, claim.alert_id, outbox.lane_columns(), outbox.lane_params(row, now)
                )
                lanes = outbox.lanes_of(row, found.extra) if found is not None else None
            if lanes is not None and lanes.post_in_flight:
                claim.wait_for_post = True
                return claim
            if found is None:
                if (
                    drawn is None
                    and claim.kind == outbox.UPDATE_ALERT
                    and await outbox.post_lane_in_flight(session, row, now)
                ):
                    claim.wait_for_post = True
                return claim
            claim.covers = lanes.later
            try:
                claim.view = view_of(found)
            except Exception as err:  # a bug drawing this alert: this message is retried with backoff
                claim.render_error, claim.covers = err, []
            else:
                claim.alert = found.alert
        return claim

    def _finished(self, key: tuple[str, str], run: _Run, task: asyncio.Task) -> None:
        if self._inflight.get(key) is task:
            del self._inflight[key]
        # The channel's next message may be due now, or a place is free for a head the last look
        # had no room for, or the loop sleeps its poll interval: look. Not after a delivery whose
        # settle found nothing more due in its lane, with nothing queued to its channel since it
        # was claimed (a wake skipped while the lane was in flight): a click's update — that look
        # would find nothing new.
        quiet = run.quiet and run.channel is not None and not self._woken_since(run.channel, run.gen)
        if not (quiet and not self._truncated and not self._capped):
            self._wake.set()
        if not task.cancelled() and task.exception() is not None:
            logger.error("Outbox delivery task crashed", exc_info=task.exception())

    async def _idle_delay(self) -> float:
        self._capped = self._busy() >= self.concurrency or len(self._inflight) >= MAX_IN_FLIGHT
        if self._capped:
            return self.poll_interval  # a finishing delivery wakes the loop
        due = self._next_due  # from _fill's look at the outbox, a moment ago
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(0.0, (due - utcnow()).total_seconds() + 0.01))

    async def _close_quiet_digests(self) -> None:
        """At most once a second: close the digests whose storm has passed with nothing more
        coming (``outbox.close_quiet_digests``), so their message says so without waiting for
        the channel's next alert."""
        if self.storm_rule.threshold <= 0 or time.monotonic() - self._digests_at < GAUGE_INTERVAL:
            return
        self._digests_at = time.monotonic()
        async with self.sessionmaker() as session:
            if self._one_statement:
                await _autocommit(session)  # a read: no BEGIN, no ROLLBACK
            if await outbox.open_digest_count(session) == 0:
                return
        async with self.sessionmaker.begin() as session:
            channels = await outbox.close_quiet_digests(session, utcnow(), self.storm_rule)
        if channels:
            self._wake.set()

    async def _update_gauges(self, force: bool = False) -> None:
        if not force and time.monotonic() - self._gauges_at < GAUGE_INTERVAL:
            return
        self._gauges_at = time.monotonic()
        async with self.sessionmaker() as session:
            if self._one_statement:
                await _autocommit(session)  # reads: no BEGIN, no ROLLBACK
            stats = await outbox.stats(session)
        metrics.OUTBOX_DEPTH.set(stats.pending)
        metrics.OUTBOX_OLDEST_AGE.set(stats.oldest_pending_age)
        metrics.OUTBOX_FAILED_MESSAGES.set(stats.failed)

    # --- one message ---------------------------------------------------------------------------
    async def _deliver(self, claim: Claim | None, run: _Run | None = None) -> int:
        """Deliver a channel's messages in order, from the claimed one on, for as long as the
        next one is due when one is settled (settling claims it); the number delivered."""
        delivered = 0
        while claim is not None:
            outcome = await self._deliver_one(claim)
            if outcome == "delivered":
                delivered += 1 + claim.covered
            if run is not None:
                run.quiet, run.channel, run.gen = outcome == "delivered" and claim.quiet, claim.channel, claim.gen
            claim = claim.next
        return delivered

    async def _deliver_one(self, claim: Claim) -> str:
        """Deliver and record the outcome: delivered, retry, failed, or abandoned (the outcome
        could not be recorded; the lease runs out and the message is tried again)."""
        keeper = asyncio.create_task(self._keep_lease(claim))
        try:
            try:
                await self.rt.background_turn()  # clicks queued in this process go first
                await self._send(claim)
            except Undeliverable as err:
                claim.done = True
                return await self._give_up(claim, str(err), logging.WARNING)
            except WaitFor as wait:
                claim.done = True
                return await self._after_failure(claim, Failure("wait", "waits_for_post", wait.seconds))
            except (SlackApiError, aiohttp.ClientError, TimeoutError) as err:
                claim.done = True
                failure = classify(err)
                if failure is None:
                    logger.exception("Unexpected Slack client failure delivering outbox message %s", claim.id)
                    failure = Failure("transient", "unexpected", certain=False)
                return await self._after_failure(claim, failure)
            except Exception:  # a bug or a database failure: in full in the log, then retried
                claim.done = True
                logger.exception(
                    "Delivering outbox message %s (%s, alert #%s) to %s failed unexpectedly",
                    claim.id,
                    claim.kind,
                    claim.alert_id,
                    claim.channel,
                )
                return await self._after_failure(claim, Failure("transient", "unexpected", certain=False))
            if claim.collapsed is not None and claim.collapsed.collapsed:
                metrics.OUTBOX_DELIVERED.labels(kind="alert.post.digest").inc(claim.collapsed.collapsed)
            if claim.collapsed is None or not claim.collapsed.head_collapsed:
                metrics.OUTBOX_DELIVERED.labels(kind=claim.kind).inc()
            if claim.covered:
                metrics.OUTBOX_DELIVERED.labels(kind=outbox.UPDATE_ALERT).inc(claim.covered)
            return "delivered"
        finally:
            keeper.cancel()
            with suppress(asyncio.CancelledError):
                await keeper

    async def _keep_lease(self, claim: Claim) -> None:
        """Renew the lease while a delivery lasts, so a slow call is not taken over."""
        while True:
            await asyncio.sleep(self.lease.total_seconds() / 3)
            try:
                async with self.sessionmaker.begin() as session:
                    until = await outbox.renew(session, claim.id, claim.locked_until, utcnow(), self.lease)
            except Exception:
                logger.exception("Could not renew the lease on outbox message %s", claim.id)
                continue
            if until is None:
                if not claim.done:
                    logger.warning(
                        "Lost the lease on outbox message %s (alert #%s, channel %s) while delivering "
                        "it; another worker may take it over",
                        claim.id,
                        claim.alert_id,
                        claim.channel,
                    )
                return
            claim.locked_until = until

    async def _send(self, claim: Claim) -> None:
        if claim.claim_error is not None:
            raise claim.claim_error
        if claim.collapsed is not None and claim.collapsed.head_collapsed:
            await self._settle(claim)  # delivered in the digest when it was claimed
            return
        if claim.wait_for_post:  # per-alert order across the lanes: after the one in flight
            raise WaitFor(POST_WAIT)
        claim.client = await self._client_for(claim)
        if claim.kind == outbox.UPDATE_ALERT and claim.alert is not None and _in_digest(claim.alert):
            claim.refresh_digest = claim.alert.slack_digest_id
            await self._settle(claim)  # queued before its alert was collapsed: the digest stands for it
            return
        await self._paced(claim)
        if claim.kind == outbox.DIGEST:
            await self._send_digest(claim)
        elif claim.kind == outbox.POST_ALERT:
            await self._post_alert(claim)
        elif claim.kind == outbox.UPDATE_ALERT:
            await self._update_alert(claim)
        elif claim.kind == outbox.MESSAGE:
            await self._post_message(claim)
        elif claim.kind == PAGE:  # escalation (bot.services.paging): a page DM drawn now
            await send_page(self, claim)
        else:
            raise Undeliverable(f"unknown outbox kind {claim.kind!r}")

    async def _client_for(self, claim: Claim) -> AsyncWebClient:
        """Single workspace: the one bot. Several: that workspace's bot, looked up now (a
        reinstall or an uninstall takes effect at once); with no workspace recorded and exactly
        one installation, that one."""
        if self.rt.settings.slack_mode != "oauth" or self.rt.clients is None:
            return self.client
        team_id, enterprise_id = claim.slack_team_id, claim.enterprise_id
        if team_id is None and enterprise_id is None:
            only = await self.rt.clients.only_installation()
            if only is None:
                raise Undeliverable(
                    "this team's channel has no workspace and Genie is installed in several "
                    "(or none): run `genie team set-channel NAME CHANNEL --workspace TEAM_ID`"
                )
            team_id, enterprise_id = only
        client = await self.rt.clients.for_workspace(team_id, enterprise_id, retries=False)
        if client is None:
            raise Undeliverable(
                f"Genie is not installed in workspace {enterprise_id or ''}{'/' if enterprise_id and team_id else ''}"
                f"{team_id or ''} (install it at /slack/install)"
            )
        return client

    def _render(self, claim: Claim) -> tuple[Any, str, str]:
        """The alert as it was when the message was claimed (so a late message still shows the
        current state): the alert's row, the fallback text, and the blocks as JSON text
        (``alert_message_json``: slack-sdk sends it as it is)."""
        if claim.render_error is not None:
            raise claim.render_error
        if claim.alert is None:
            raise Undeliverable("the alert no longer exists")
        text, blocks = alert_message_json(claim.view, f"{self.rt.settings.base_url.rstrip('/')}/alerts/{claim.view.id}")
        return claim.alert, text, blocks

    async def _post_alert(self, claim: Claim) -> None:
        alert, text, blocks = self._render(claim)
        if alert.slack_ts:  # an earlier attempt posted and recorded it: never post twice
            logger.info(
                "Alert #%s is already in Slack (%s); outbox message %s needs no post",
                alert.id,
                alert.slack_ts,
                claim.id,
            )
            claim.covers = []  # nothing drawn now: later updates still have to be sent
            await self._settle(claim)
            return
        channel, ts = claim.channel, None
        if claim.maybe_posted_since is not None:
            ts = await self._earlier_post(claim)
            if ts is not None:
                claim.covers = []  # adopted a post drawn earlier: later updates still have to be sent
        if ts is None:
            claim.in_doubt = True
            response = await claim.client.chat_postMessage(
                channel=claim.channel,
                text=text,
                blocks=blocks,
                metadata={"event_type": EVENT_TYPE, "event_payload": {"alert_id": alert.id, "outbox_id": claim.id}},
            )
            channel, ts = response.get("channel") or claim.channel, response["ts"]
        await self._settle(claim, alert_id=alert.id, channel=channel, ts=ts)

    async def _earlier_post(
        self, claim: Claim, history_channel: str | None = None, event_type: str = EVENT_TYPE
    ) -> str | None:
        """The ts of this message's post by an earlier attempt, if Slack has it (looked for in
        ``history_channel``, by default the message's channel; a DM's is its IM channel).

        A rate limit or an outage here propagates (retry later rather than risk a duplicate);
        a permanent error (missing scope, not in channel) means we cannot know, so post."""
        assert claim.maybe_posted_since is not None
        oldest = f"{(claim.maybe_posted_since - HISTORY_MARGIN).timestamp():.6f}"
        cursor: str | None = None
        for _ in range(HISTORY_PAGES):
            try:
                response = await claim.client.conversations_history(
                    channel=history_channel or claim.channel,
                    oldest=oldest,
                    include_all_metadata=True,
                    limit=100,
                    cursor=cursor,
                )
            except SlackApiError as err:
                failure = classify(err)
                if failure is None or failure.kind != "permanent":
                    raise
                metrics.OUTBOX_ERRORS.labels(error=metrics.error_label(failure.code)).inc()
                logger.warning(
                    "Cannot read the history of channel %s to see whether alert #%s was already posted "
                    "(%s%s); posting it, so it may appear twice",
                    claim.channel,
                    claim.alert_id,
                    failure.code,
                    _hint(failure.code),
                )
                claim.maybe_posted_since = None
                return None
            for message in response.get("messages") or []:
                meta = message.get("metadata") if isinstance(message, dict) else None
                payload = meta.get("event_payload") if isinstance(meta, dict) else None
                if (
                    isinstance(payload, dict)
                    and meta.get("event_type") == event_type
                    and str(payload.get("outbox_id")) == str(claim.id)
                    and (event_type != EVENT_TYPE or str(payload.get("alert_id")) == str(claim.alert_id))
                    and message.get("ts")
                ):
                    logger.info(
                        "Alert #%s was already posted to %s by an earlier attempt (ts %s); adopting it",
                        claim.alert_id,
                        claim.channel,
                        message["ts"],
                    )
                    return str(message["ts"])
            cursor = (response.get("response_metadata") or {}).get("next_cursor")
            if not response.get("has_more") or not cursor:
                break
        claim.maybe_posted_since = None  # looked, and it is not there
        return None

    async def _send_digest(self, claim: Claim) -> None:
        """Post the storm digest the first time, then refresh it in place (drawn as it is now)."""
        if claim.digest is None:
            raise Undeliverable("the digest no longer exists")
        text, blocks = digest_message(claim.digest, self.rt.settings.base_url)
        metadata = {
            "event_type": DIGEST_EVENT_TYPE,
            "event_payload": {"digest_id": claim.digest.id, "outbox_id": claim.id, "alerts": claim.digest.total},
        }
        if claim.digest_ts:
            claim.in_doubt = True
            await claim.client.chat_update(
                channel=claim.channel, ts=claim.digest_ts, text=text, blocks=blocks, metadata=metadata
            )
            await self._settle(claim)
            return
        ts = None
        if claim.maybe_posted_since is not None:
            ts = await self._earlier_post(claim, event_type=DIGEST_EVENT_TYPE)
            if ts is not None:
                claim.covers = []  # adopted a digest drawn earlier: refresh it
                claim.refresh_digest = claim.digest.id
        if ts is None:
            claim.in_doubt = True
            response = await claim.client.chat_postMessage(
                channel=claim.channel, text=text, blocks=blocks, metadata=metadata
            )
            ts = response["ts"]
        await self._settle(claim, digest_ts=ts)

    async def _update_alert(self, claim: Claim) -> None:
        alert, text, blocks = self._render(claim)
        if not alert.slack_ts or not alert.slack_channel:
            raise Undeliverable("no Slack message to update")
        claim.in_doubt = True
        await claim.client.chat_update(channel=alert.slack_channel, ts=alert.slack_ts, text=text, blocks=blocks)
        await self._settle(claim)

    async def _post_message(self, claim: Claim) -> None:
        payload = claim.payload or {}
        if intent_of(payload) is not None:  # an intent: drawn now, by its builder
            drawn = draw(payload)
            if drawn is None:
                raise Undeliverable(f"a message Genie cannot draw ({str(intent_of(payload))[:40]!r})")
            payload = {**payload, "text": drawn[0], "blocks": drawn[1]}
        # else a row queued before intents, its text composed in advance: sent as it is
        if not isinstance(payload.get("text"), str) or not payload["text"]:
            raise Undeliverable("a message without text")
        kwargs: dict[str, Any] = {"channel": claim.channel, "text": payload["text"]}
        if payload.get("blocks"):
            kwargs["blocks"] = payload["blocks"]
        if payload.get("owner_email"):
            await self._check_owner(claim, str(payload["owner_email"]), payload.get("workspace_id"))
        claim.in_doubt = True
        if isinstance(payload.get("update_ts"), str):  # replaces a message (a deleted alert's)
            await claim.client.chat_update(ts=payload["update_ts"], **kwargs)
        else:
            await claim.client.chat_postMessage(**kwargs)
        await self._settle(claim)

    async def _check_owner(self, claim: Claim, email: str, workspace_id: Any) -> None:
        """A DM only the person's own Slack account may receive (``notify.queue_owner_dm``): ask
        Slack now whose account this is. A failing ``users.info`` is retried like any call."""
        answer = await claim.client.users_info(user=claim.channel)
        workspace = slack_directory.Workspace(
            str(workspace_id or claim.enterprise_id or claim.slack_team_id or ""),
            claim.slack_team_id,
            claim.enterprise_id,
        )
        problem = slack_directory.owner_problem(answer.get("user") or {}, workspace, email)
        if problem is not None:
            raise Undeliverable(
                f"not sent to Slack user {claim.channel}: {problem} — only a Slack account whose "
                f"confirmed email is the person's own receives this"
            )

    async def _settle(
        self,
        claim: Claim,
        *,
        alert_id: int | None = None,
        channel: str | None = None,
        ts: str | None = None,
        digest_ts: str | None = None,
    ) -> None:
        """Record delivery (and where the alert's or the digest's message is), and claim the
        lane's next message if it is due, in one transaction — shared: the deliveries that
        finish while a settling transaction runs are settled together in the next one
        (``_settle_batches``), so a busy worker spends one transaction on several messages.
        Returns once committed (raises if it was not)."""
        claim.done = True
        settle = _Settle(claim, alert_id, channel, ts, digest_ts, asyncio.get_running_loop().create_future())
        self._settles.append(settle)
        if self._settler is None or self._settler.done():
            self._settler = asyncio.create_task(self._settle_batches(), name="genie-outbox-settle")
        await settle.committed

    async def _settle_batches(self) -> None:
        """Settle what is waiting, in one transaction, until nothing is. If that transaction
        fails, each is tried again in its own (one bad settle must not fail the others)."""
        batch: list[_Settle] = []
        try:
            while self._settles:
                batch, self._settles = self._settles, []
                gen = self._gen
                together = batch
                if self._one_statement:
                    alone = [settle for settle in batch if self._settles_alone(settle)]
                    if alone:
                        together = [settle for settle in batch if not self._settles_alone(settle)]
                        await self._settle_alone(alone, gen)
                    if not together:
                        continue
                try:
                    async with self.sessionmaker.begin() as session:
                        now = utcnow()
                        results = [await self._settle_one(session, settle, now) for settle in together]
                except Exception as err:
                    if len(together) == 1:
                        _resolve(together[0], error=err)
                        continue
                    for settle in together:
                        gen = self._gen
                        try:
                            async with self.sessionmaker.begin() as session:
                                result = await self._settle_one(session, settle, utcnow())
                        except Exception as one_err:
                            _resolve(settle, error=one_err)
                        else:
                            _resolve(settle, result, gen)
                    continue
                for settle, result in zip(together, results, strict=True):
                    _resolve(settle, result, gen)
        except BaseException as err:  # cancelled (shutdown): nobody may wait for ever
            for settle in [*batch, *self._settles]:
                _resolve(settle, error=err if isinstance(err, Exception) else asyncio.CancelledError())
            self._settles = []
            raise

    def _settles_alone(self, settle: _Settle) -> bool:
        """PostgreSQL: this settle is one statement that needs no transaction — a delivery that
        records nothing beside itself (no alert post's ts, no digest, no later updates covered):
        ``deliver_and_claim_next`` with the read of what the lane's next message draws
        (``_claiming_read("settle")``), in autocommit: one round trip instead of BEGIN, two
        statements and COMMIT. One statement is atomic on its own."""
        claim = settle.claim
        return (
            settle.alert_id is None
            and settle.digest_ts is None
            and claim.refresh_digest is None
            and not claim.covers
            and not self._stopping
        )

    async def _settle_alone(self, settles: list[_Settle], gen: int) -> None:
        """Settle each of ``settles`` (``_settles_alone``) by its one statement, in autocommit,
        on one connection; one that fails is told so and the others go on (on a fresh one)."""
        settled: list[tuple[_Settle, list, datetime]] = []
        waiting = list(settles)
        while waiting:
            try:
                async with self.sessionmaker() as session:
                    await _autocommit(session)
                    while waiting:
                        claim, now = waiting[0].claim, utcnow()
                        params = outbox.settle_params(claim.id, claim.channel, claim.lane, now, self.lease)
                        rows = await self._claim_and_read(session, "settle", params, now)
                        settled.append((waiting.pop(0), rows, now))
            except Exception as err:
                if waiting:
                    _resolve(waiting.pop(0), error=err)
        for settle, rows, now in settled:
            following = next(((row, drawn) for row, drawn in rows if row.id != settle.claim.id), None)
            if following is None:
                # Nothing more due in its lane: the loop need not look again for it (``_finished``).
                _resolve(settle, (0, None, True), gen)
                continue
            try:
                claim = await self._claimed_alone(following[0], now, following[1])
            except Exception:  # a bug: the settle is committed; the next message's lease runs out
                logger.exception(
                    "Could not take up outbox message %s after settling %s", following[0].id, settle.claim.id
                )
                _resolve(settle, (0, None, False), gen)
            else:
                _resolve(settle, (0, claim, False), gen)

    async def _settle_one(self, session: AsyncSession, settle: _Settle, now: datetime) -> tuple:
        """One delivery's part of a settling transaction: ``(covered, next claim, quiet)``."""
        claim = settle.claim
        if settle.alert_id is not None:
            await alerts.record_slack_message(session, settle.alert_id, settle.channel, settle.ts)
        if settle.digest_ts is not None and claim.digest_id is not None:
            await outbox.record_digest_message(session, claim.digest_id, settle.digest_ts)
        if claim.refresh_digest is not None:
            await outbox.refresh_digest(session, claim.refresh_digest, now)
        if self._stopping:
            return await outbox.mark_delivered(session, claim.id, now, also=claim.covers), None, False
        if claim.covers:
            covered = await outbox.mark_delivered(session, claim.id, now, also=claim.covers)
            row = await outbox.claim_next(session, claim.channel, now, self.lease, lane=claim.lane)
        elif self._one_statement:  # one statement: settled, the next claimed and read
            params = outbox.settle_params(claim.id, claim.channel, claim.lane, now, self.lease)
            rows = await self._claim_and_read(session, "settle", params, now)
            following = next(((row, drawn) for row, drawn in rows if row.id != claim.id), None)
            if following is not None:
                return 0, await self._claimed(session, following[0], now, following[1]), False
            return 0, None, True
        else:  # one statement
            covered = 0
            row = await outbox.deliver_and_claim_next(session, claim.id, claim.channel, claim.lane, now, self.lease)
        if row is not None:
            return covered, await self._claimed(session, row, now), False
        # Nothing more due in its lane: the loop need not look again for it (``_finished``).
        return covered, None, True

    async def _after_failure(self, claim: Claim, failure: Failure) -> str:
        if failure.kind == "wait":
            try:
                async with self.sessionmaker.begin() as session:
                    await outbox.mark_retry(
                        session,
                        claim.id,
                        claim.attempts,
                        failure.code,
                        utcnow(),
                        failure.retry_after,
                        may_have_delivered=claim.maybe_posted_since is not None,
                    )
            except Exception:
                logger.exception(
                    "Could not reschedule outbox message %s; it is retried when its lease runs out", claim.id
                )
                return "abandoned"
            return "retry"
        metrics.OUTBOX_ERRORS.labels(error=metrics.error_label(failure.code)).inc()
        if failure.kind == "permanent":
            return await self._give_up(claim, failure.code, logging.ERROR)
        retry_after = failure.retry_after
        if failure.kind == "rate_limited" and retry_after is None:
            retry_after = outbox.backoff(claim.attempts).total_seconds()
        if failure.kind == "rate_limited" and retry_after is not None:
            self.bucket(claim.channel, claim.lane).block(retry_after)  # Slack's word beats our pace
        may_have_delivered = claim.maybe_posted_since is not None or (claim.in_doubt and not failure.certain)
        try:
            async with self.sessionmaker.begin() as session:
                kept = await outbox.mark_retry(
                    session,
                    claim.id,
                    claim.attempts,
                    failure.code,
                    utcnow(),
                    retry_after,
                    may_have_delivered=may_have_delivered,
                )
        except Exception:
            logger.exception("Could not reschedule outbox message %s; it is retried when its lease runs out", claim.id)
            return "abandoned"
        if not kept:
            metrics.OUTBOX_FAILED.inc()
            logger.error(
                "Gave up on Slack message %s (%s, alert #%s) to channel %s after %d attempts: %s",
                claim.id,
                claim.kind,
                claim.alert_id,
                claim.channel,
                claim.attempts,
                failure.code,
            )
            return "failed"
        if failure.kind == "rate_limited":
            logger.info(
                "Slack rate-limited channel %s; outbox message %s waits %.1f s", claim.channel, claim.id, retry_after
            )
        else:
            logger.warning(
                "Slack message %s (%s, alert #%s) to channel %s failed (%s, attempt %d); retrying with backoff",
                claim.id,
                claim.kind,
                claim.alert_id,
                claim.channel,
                failure.code,
                claim.attempts,
            )
        return "retry"

    async def _give_up(self, claim: Claim, error: str, level: int) -> str:
        try:
            async with self.sessionmaker.begin() as session:
                await outbox.mark_failed(session, claim.id, error, utcnow())
        except Exception:
            logger.exception("Could not mark outbox message %s failed; it is retried when its lease runs out", claim.id)
            return "abandoned"
        metrics.OUTBOX_FAILED.inc()
        logger.log(
            level,
            "Slack message %s (%s, alert #%s) to channel %s failed permanently: %s%s",
            claim.id,
            claim.kind,
            claim.alert_id,
            claim.channel,
            error,
            _hint(error),
        )
        return "failed"


class Drawn(NamedTuple):
    """What the statement that claimed a message read for it (``OutboxWorker._claim_and_read``):
    its alert as ``render.with_team_and_owner`` reads it (None: not an alert message, or the
    alert no longer exists), and the values of ``outbox.claimed_lane_columns``."""

    found: AlertRead | None
    lanes: tuple


@functools.cache
def _claiming_read(which: str) -> Any:
    """PostgreSQL: ``outbox.claim_cte(which)`` — the claim of a pass's heads (``"claim"``) or a
    settle and its lane's next message (``"settle"``) — and, for each message it claims, the
    read of what it draws (``render.reads_of_each``: the alert, its team, owner, members, and
    its lanes, ``outbox.claimed_lane_columns``), in ONE statement: the worker's claim and read
    are one round trip, and need no transaction (atomic on its own). The read sees the tables
    as they were before the claim (a data-modifying CTE's effects are not visible to the rest of
    its statement) — one snapshot, as the separate read of the alert was (READ COMMITTED: a
    statement's own); the claim changes only outbox rows the read does not count (the claimed
    message, and the settled one before it: ``later`` counts only messages after the one
    claimed, ``in_flight`` only the other lane's). Built once."""
    claimed = outbox.claim_cte(which)
    on = outbox.draws_alert(claimed.c)
    if which == "settle":
        on = on & (claimed.c.id != outbox.settled_id)
    return reads_of_each(claimed, on, "postgresql", outbox.claimed_lane_columns(claimed, on))


async def _autocommit(session: AsyncSession) -> None:
    """Make ``session``'s statements each commit on their own (PostgreSQL; before its first):
    SQLAlchemy's asyncpg adapter then sends no BEGIN and no COMMIT."""
    await session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})


@dataclass
class _Settle:
    """A delivery waiting to be recorded (``OutboxWorker._settle``)."""

    claim: Claim
    alert_id: int | None
    channel: str | None
    ts: str | None
    digest_ts: str | None
    committed: asyncio.Future


def _resolve(settle: _Settle, result: tuple | None = None, gen: int = 0, *, error: BaseException | None = None) -> None:
    """Tell the delivery waiting for ``settle`` how it went (its claim then holds what was
    settled: how many later updates it covered, the lane's next message, whether it was quiet)."""
    if error is None and result is not None:
        claim = settle.claim
        claim.covered, claim.next, claim.quiet = result  # committed: that lease is ours
        if claim.next is not None:
            claim.next.gen = gen
    if settle.committed.done():  # its delivery was cancelled (a stop that timed out)
        return
    if error is not None:
        settle.committed.set_exception(error)
    else:
        settle.committed.set_result(None)


@dataclass
class _Run:
    """One delivery task's run of a lane (``_deliver``), as its end tells ``_finished``."""

    #: Its last message was delivered and its settle found nothing more due in its lane
    #: (``Claim.quiet``); that message's channel, and the wake count when it was claimed.
    quiet: bool = False
    channel: str | None = None
    gen: int = 0


def _in_digest(alert: Alert) -> bool:
    return alert.slack_digest_id is not None and not alert.slack_ts


def _hint(code: str) -> str:
    return f" — {HINTS[code]}" if code in HINTS else ""
