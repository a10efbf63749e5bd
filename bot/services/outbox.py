"""Durable delivery of Slack messages: the database side.

A change and the Slack message that reports it are committed together (``enqueue`` takes the
caller's session). The worker (``bot.slack.delivery``) then claims due messages and delivers them:

- **per-channel order, in two lanes**: a channel's messages travel in two lanes, ``post``
  (new messages: alert posts, DMs, digests) and ``update`` (edits of alerts already in Slack,
  ``refresh_in_slack``); only the oldest pending message of a channel's lane is ever due, so an
  acknowledgement is never queued behind a channel's backlog of new posts. An update goes to the
  update lane only once its alert's post is recorded (``Alert.slack_ts``): before that it
  waits behind the post in the post lane, so an update never precedes its alert's post;
- **one deliverer**: a claim is a conditional UPDATE that takes a lease (``locked_until``), so
  any number of workers and processes can share the outbox; a worker that dies leaves a lease
  that expires and the message is taken over. (On PostgreSQL the worker runs a claim as a
  data-modifying CTE, ``claim_cte``, in the statement that reads what it claimed: one round
  trip, no transaction);
- **retries**: failures reschedule with exponential backoff (or Slack's ``Retry-After``), and
  a channel waits while its head message waits; permanent errors mark the message failed
  (visible to operators) and the channel moves on;
- **no double post**: ``first_attempt_at`` is when the earliest attempt whose outcome is unknown
  started (a worker that died mid-call, a timeout). While it is set from an earlier attempt, the
  worker asks Slack whether that attempt posted before posting again; an attempt that certainly
  did not post (a rate limit, an error answer) clears it;
- **storms** (``storm``): when more alert posts wait in a channel's post lane than Slack takes in
  a few seconds, they are collapsed into one *digest* message (``SlackDigest``) instead of being
  posted one by one — each collapsed alert records the digest it was delivered in
  (``Alert.slack_digest_id``, its outbox rows ``delivered_at`` with ``digest_id``), so nothing
  waits forever and nothing is posted twice. The rule is ``storm``'s docstring.
"""

from __future__ import annotations

import functools
import random
from collections import namedtuple
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from typing import Any

from sqlalchemy import (
    ARRAY,
    Integer,
    String,
    and_,
    any_,
    bindparam,
    case,
    cast,
    exists,
    func,
    literal_column,
    select,
    union_all,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ids import Intent
from bot.services.errors import InvalidInput, NotFound
from storage import repositories as repo
from storage.base import utcnow
from storage.models import Alert, OutboxMessage, SlackDigest

#: How long a claim holds a message. The worker renews it while a call lasts, so it only has to
#: outlive a stall; after a crash the message is taken over when it runs out
#: (``GENIE_OUTBOX_LEASE_SECONDS``).
LEASE = timedelta(seconds=60)
MAX_BACKOFF = timedelta(minutes=5)
#: Failed attempts (rate limits do not count) before a message is given up: about a day at the
#: five-minute cap, so a Slack outage delays alerts but does not drop them.
MAX_ATTEMPTS = 300

POST_ALERT = "alert.post"
UPDATE_ALERT = "alert.update"
MESSAGE = "message"
#: Posts (first time) or refreshes a storm digest (``digest_id``), drawn at delivery.
DIGEST = "digest"

POST_LANE = "post"
UPDATE_LANE = "update"
LANES = (POST_LANE, UPDATE_LANE)
#: Most urgent first (``alerts.PRIORITIES``; this module is below it). They sort as strings.
PRIORITIES = ("P1", "P2", "P3", "P4", "P5")


#: The outbox table itself: the worker's hot statements (the look, the claims, the settle) are
#: Core statements on it, built once, and return plain rows of its columns — which read like an
#: ``OutboxMessage`` (``row.id``, ``row.channel`` …) without the ORM building an instance and
#: refreshing the identity map for each (``_BulkORMUpdate`` and ``instances()`` were a good
#: part of a delivered update's CPU: bench/RESULTS.md, "Round three").
_T = OutboxMessage.__table__


def _pending(o=OutboxMessage):
    """``o``: the entity, an alias of it, or a table's columns (``_T.c``)."""
    return and_(o.delivered_at.is_(None), o.failed_at.is_(None))


def _heads(lane: str):
    """Each channel's oldest pending message in ``lane`` (its head), as a recursive CTE
    ``(channel, id)``.

    A loose index scan of ``ix_outbox_pending_lane`` (pending messages by lane, channel, id):
    the first pending entry after the previous channel's is the next channel's head, so each
    step is one index probe and the cost grows with the number of channels with pending
    messages, not with how many messages wait in them."""

    def first_after(previous_channel):
        o = _T.alias().c
        query = select(o.id).where(_pending(o), o.lane == lane)
        if previous_channel is not None:
            query = query.where(o.channel > previous_channel)
        return query.order_by(o.channel, o.id).limit(1).scalar_subquery()

    head = _T.alias()
    heads = (
        select(head.c.channel, head.c.id)
        .where(head.c.id == first_after(None))
        .cte(f"outbox_head_{lane}", recursive=True)
    )
    previous = heads.alias(f"previous_{lane}")
    following = _T.alias()
    return heads.union_all(
        select(following.c.channel, following.c.id)
        .select_from(previous)
        .join(following, following.c.id == first_after(previous.c.channel))
    )


def _ready_at(o=_T.c):
    """When a pending message may be claimed: when it is due, or its lease runs out if later."""
    return case((o.locked_until > o.next_attempt_at, o.locked_until), else_=o.next_attempt_at)


def intent(name: Intent, /, **values: Any) -> dict[str, Any]:
    """The payload of a message that the builder of ``name`` draws from ``values`` (plain JSON
    values) when the worker delivers it (``bot.blocks.messages``): no text is composed here."""
    return {"intent": str(name), "values": values}


def message_values(
    channel: str,
    kind: str,
    now: datetime,
    *,
    alert_id: int | None = None,
    payload: dict[str, Any] | None = None,
    slack_team_id: str | None = None,
    enterprise_id: str | None = None,
    lane: str = POST_LANE,
    digest_id: int | None = None,
) -> dict[str, Any]:
    """The columns of a new outbox message, due now: ``enqueue``'s row, and each row of a batch
    written with one executemany (``alerts.create_alerts``)."""
    return dict(
        channel=channel,
        kind=kind,
        lane=lane,
        alert_id=alert_id,
        digest_id=digest_id,
        payload=payload,
        created_at=now,
        slack_team_id=slack_team_id,
        enterprise_id=enterprise_id,
        next_attempt_at=now,
        attempts=0,
    )


async def enqueue(
    session: AsyncSession,
    channel: str,
    kind: str,
    *,
    alert_id: int | None = None,
    payload: dict[str, Any] | None = None,
    now: datetime | None = None,
    slack_team_id: str | None = None,
    enterprise_id: str | None = None,
    flush: bool = True,
    lane: str = POST_LANE,
    digest_id: int | None = None,
) -> OutboxMessage:
    message = OutboxMessage(
        **message_values(
            channel,
            kind,
            now or utcnow(),
            alert_id=alert_id,
            payload=payload,
            slack_team_id=slack_team_id,
            enterprise_id=enterprise_id,
            lane=lane,
            digest_id=digest_id,
        )
    )
    session.add(message)
    note_enqueued(session, channel, lane)
    if flush:
        await session.flush()
    return message


async def enqueue_row(
    session: AsyncSession, channel: str, kind: str, now: datetime, *, alert_id: int | None = None, **values: Any
) -> None:
    """``enqueue``'s message inserted at once by one Core INSERT built once, with no ORM object
    (none to build, none for the unit of work to flush at the commit): for a hot path that needs
    nothing back — a click's update of its alert's message (``alerts._applied``)."""
    row = message_values(channel, kind, now, alert_id=alert_id, **values)
    await repo.insert_rows(session, OutboxMessage.__table__, [row])
    note_enqueued(session, channel, row["lane"])


def note_enqueued(session: AsyncSession, channel: str, lane: str | None = None) -> None:
    """``session`` queued a message to ``channel`` in ``lane`` (None: not known) — ``enqueue``,
    ``enqueue_row``, or a click's transition on PostgreSQL, ``alerts._stop_and_record_statement``:
    the worker is woken for it after the commit (``enqueued_channels``)."""
    queued = session.info.setdefault(_ENQUEUED, {})
    queued[channel] = lane if queued.get(channel, lane) == lane else None  # two lanes: None


_ENQUEUED = "genie_outbox_channels"


def enqueued_channels(session: AsyncSession) -> dict[str, str | None]:
    """The channels ``session`` queued messages to since it was last asked, each with the lane
    its messages are in (None: both, or not known), forgotten once told — to wake the worker for
    each after the commit (``OutboxWorker.wake``: a channel delivering in that lane needs no
    look). A click also redraws page DMs and tells an assignee, in channels other than the
    alert's; each of several clicks sharing a transaction learns its own: ``click_batch``."""
    return session.info.pop(_ENQUEUED, {})


async def heads(session: AsyncSession, now: datetime, limit: int = 20) -> tuple[list[Any], datetime | None]:
    """``(due, next_at)``: up to ``limit`` channel heads that are due and not leased, soonest
    first (rows: ``id``, ``channel``, ``lane``, ``next_attempt_at``, ``locked_until``), and when
    the next head becomes claimable (None: nothing pending). One query: the worker's whole look
    at the outbox on each pass."""
    rows = (await repo.run(session, _heads_query(), {"heads_limit": limit + 1})).all()
    due = [row for row in rows if _due(row, now)][:limit]
    later = [row.ready_at for row in rows if not _due(row, now)]
    next_at = min(later) if later else (rows[-1].ready_at if len(rows) > limit else None)
    return due, next_at


@functools.cache
def _heads_query():
    """The heads query, built once (building the two recursive CTEs cost as much CPU as running
    them: during a storm the worker looks on every wake); its limit is a bound parameter. It
    reads what ``_due`` needs of each head and what the worker claims by."""
    post_heads, update_heads = (_heads(lane) for lane in LANES)
    head = union_all(select(post_heads.c.id), select(update_heads.c.id)).subquery("outbox_heads")
    ready_at = _ready_at().label("ready_at")
    c = _T.c
    return (
        select(c.id, c.channel, c.lane, c.next_attempt_at, c.locked_until, ready_at)
        .select_from(_T.join(head, c.id == head.c.id))
        .order_by(ready_at, c.id)
        .limit(bindparam("heads_limit"))
    )


def _due(message: Any, now: datetime) -> bool:
    return message.next_attempt_at <= now and (message.locked_until is None or message.locked_until < now)


def _claim_values(now: datetime, lease: timedelta) -> dict[str, Any]:
    return dict(
        locked_until=now + lease,
        attempts=OutboxMessage.attempts + 1,
        first_attempt_at=func.coalesce(OutboxMessage.first_attempt_at, now),
    )


def _lease_free(now: Any, o=OutboxMessage):
    return (o.locked_until.is_(None)) | (o.locked_until < now)


async def claim(
    session: AsyncSession, message_id: int, now: datetime, lease: timedelta = LEASE
) -> OutboxMessage | None:
    """Take the lease; exactly one worker wins. Returns the claimed message (with its attempts,
    lease and first attempt as now recorded), or None when another worker got it first."""
    statement = (
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, _pending(), _lease_free(now))
        .values(**_claim_values(now, lease))
    )
    return await repo.update_one(session, statement, OutboxMessage, message_id)


async def claim_many(
    session: AsyncSession, message_ids: list[int], now: datetime, lease: timedelta = LEASE
) -> list[Any]:
    """``claim`` of several channel heads in one statement (a pass of the worker claims every
    due head it has room for at once): the ones this worker won, in the order of
    ``message_ids``, as rows of the outbox's columns (as now updated); another worker's are
    left out."""
    if not message_ids:
        return []
    if not session.get_bind().dialect.update_returning:
        claimed = [await claim(session, message_id, now, lease) for message_id in message_ids]
        return [row for row in claimed if row is not None]
    await _flushed(session)
    rows = (await repo.run(session, _claim_many(), claim_params(message_ids, now, lease))).all()
    won = {row.id: row for row in rows}
    return [won[message_id] for message_id in message_ids if message_id in won]


def claim_params(message_ids: list[int], now: datetime, lease: timedelta = LEASE) -> dict[str, Any]:
    """The bound values of ``claim_many``'s statement (and of ``claim_cte("claim")``)."""
    return {"claim_ids": list(message_ids), "claim_now": now, "claim_until": now + lease}


@functools.cache
def _claim_many(as_array: bool = False):
    """``claim_many``'s statement: a Core ``UPDATE … RETURNING`` of the table's columns, built
    once, its values bound parameters (the ids an expanding one). Only a message that is still
    due: the look that found the heads may be another statement's snapshot (on PostgreSQL the
    worker looks and claims in two autocommit statements), and a head rescheduled since by its
    own worker (``mark_retry``) must wait for its time. ``as_array`` (PostgreSQL): the ids as one
    array parameter (``id = ANY(…)``), not an expanding one whose list is rendered into the
    statement's text at each execution."""
    c = _T.c
    now = bindparam("claim_now", type_=c.locked_until.type)
    if as_array:
        wanted = c.id == any_(bindparam("claim_ids", type_=ARRAY(Integer())))
    else:
        wanted = c.id.in_(bindparam("claim_ids", expanding=True))
    return (
        update(_T)
        .where(
            wanted,
            _pending(c),
            c.next_attempt_at <= now,
            _lease_free(now, c),
        )
        .values(
            locked_until=bindparam("claim_until", type_=c.locked_until.type),
            attempts=c.attempts + 1,
            first_attempt_at=func.coalesce(c.first_attempt_at, now),
        )
        .returning(*c)
    )


async def _flushed(session: AsyncSession) -> None:
    """Flush the session's pending ORM changes before a Core statement (which, unlike an ORM
    one, does not autoflush): what it reads or writes must see them."""
    if session.new or session.dirty or session.deleted:
        await session.flush()


async def claim_next(
    session: AsyncSession, channel: str, now: datetime, lease: timedelta = LEASE, lane: str = POST_LANE
) -> OutboxMessage | None:
    """Claim the head of the channel's ``lane`` if it is due and not leased (a worker that has
    just settled the lane's previous message goes straight on, in the same transaction)."""
    head = (
        select(func.min(OutboxMessage.id))
        .where(OutboxMessage.lane == lane, OutboxMessage.channel == channel, _pending())
        .scalar_subquery()
    )
    statement = (
        update(OutboxMessage)
        .where(OutboxMessage.id == head, _pending(), OutboxMessage.next_attempt_at <= now, _lease_free(now))
        .values(**_claim_values(now, lease))
    )

    async def message_id_of() -> int | None:
        return await session.scalar(select(head))

    return await repo.update_one(session, statement, OutboxMessage, message_id_of)


#: How far past a channel's head the worker looks for more updates of the same alert.
COALESCE_WINDOW = 50


async def later_updates(session: AsyncSession, message: OutboxMessage) -> list[int]:
    """Pending updates of ``message``'s alert (or refreshes of its digest) queued behind it in
    its channel's lane (among the next ``COALESCE_WINDOW`` messages). Read *before* the alert is
    rendered: the render then shows every change they report, so delivering it delivers them
    too (``mark_delivered(also=…)``)."""
    if message.kind == DIGEST and message.digest_id is not None:
        same = and_(OutboxMessage.kind == DIGEST, OutboxMessage.digest_id == message.digest_id)
    elif message.alert_id is not None and message.kind in (POST_ALERT, UPDATE_ALERT):
        same = and_(OutboxMessage.alert_id == message.alert_id, OutboxMessage.kind == UPDATE_ALERT)
    else:
        return []
    window = (
        select(OutboxMessage.id)
        .where(
            OutboxMessage.lane == message.lane,
            OutboxMessage.channel == message.channel,
            _pending(),
            OutboxMessage.id > message.id,
        )
        .order_by(OutboxMessage.id)
        .limit(COALESCE_WINDOW)
        .scalar_subquery()
    )
    return list(await session.scalars(select(OutboxMessage.id).where(OutboxMessage.id.in_(window), same)))


@dataclass(frozen=True)
class Lanes:
    """What the worker reads about a claimed alert message's lanes, in the statement that reads
    the alert (``lane_columns``): one snapshot with the picture it draws."""

    #: ``later_updates``: the updates of the alert that this delivery covers.
    later: list[int]
    #: ``post_lane_in_flight`` (for an update-lane update; else False).
    post_in_flight: bool


@functools.cache
def lane_columns() -> tuple:
    """``later_updates`` and ``post_lane_in_flight`` as scalar columns with bound parameters
    (``lane_params``), built once, to read in the same statement as the alert
    (``render.with_team_and_owner``)."""
    lane, channel = bindparam("lane_lane", type_=String()), bindparam("lane_channel", type_=String())
    head, alert_id = bindparam("lane_head", type_=Integer()), bindparam("lane_alert", type_=Integer())
    return _lane_columns(lane, channel, head, alert_id)


def claimed_lane_columns(claimed: Any, when: Any) -> tuple:
    """``lane_columns`` of each row of ``claimed`` (a CTE of the outbox's columns: the messages
    a statement has just claimed, ``claim_cte``) for which ``when`` holds (else NULL),
    correlated to it rather than bound: read in the statement that claims them. ``lane_now`` is
    still a bound parameter."""
    c = claimed.c
    later, in_flight = _lane_columns(c.lane, c.channel, c.id, c.alert_id, correlate=claimed)
    # The statement's read sees the outbox as it was before its claim: a post-lane message of
    # the same alert claimed by the same statement (a pass claims every due head at once) is in
    # flight too, though the read sees it unleased.
    also = claimed.alias(f"{claimed.name}_too").c
    claimed_too = (
        select(also.id)
        .where(also.lane == POST_LANE, also.channel == c.channel, also.alert_id == c.alert_id, also.id != c.id)
        .correlate(claimed)
        .limit(1)
        .scalar_subquery()
    )
    return (
        case((when, later)).label("lane_later"),
        case((when, func.coalesce(in_flight, claimed_too))).label("lane_in_flight"),
    )


def _lane_columns(lane: Any, channel: Any, head: Any, alert_id: Any, correlate: Any = None) -> tuple:
    def correlated(query):
        return query if correlate is None else query.correlate(correlate)

    now = bindparam("lane_now", type_=OutboxMessage.locked_until.type)
    w = _T.alias("lane_window").c
    window = (
        select(w.id)
        .where(w.lane == lane, w.channel == channel, _pending(w), w.id > head)
        .order_by(w.id)
        .limit(COALESCE_WINDOW)
    )
    later_o = _T.alias("later_update").c
    later = correlated(
        # The separator as SQL text: a Python string would be a literal-execute parameter,
        # which makes SQLAlchemy render the statement's text anew on every execution.
        select(func.aggregate_strings(cast(later_o.id, String), literal_column("','"))).where(
            later_o.id.in_(correlated(window)), later_o.alert_id == alert_id, later_o.kind == UPDATE_ALERT
        )
    ).scalar_subquery()
    p = _T.alias("post_in_flight").c
    in_flight = correlated(
        select(p.id)
        .where(p.lane == POST_LANE, p.channel == channel, _pending(p), p.alert_id == alert_id, p.locked_until >= now)
        .limit(1)
    ).scalar_subquery()
    return (later.label("lane_later"), in_flight.label("lane_in_flight"))


def lane_params(message: OutboxMessage, now: datetime) -> dict[str, Any]:
    return {
        "lane_lane": message.lane,
        "lane_channel": message.channel,
        "lane_head": message.id,
        "lane_alert": message.alert_id,
        "lane_now": now,
    }


def draws_alert(message: Any) -> Any:
    """SQL: the message (a row of ``claim_cte``'s) draws its alert (a post or an update). (Not
    ``IN``: a list is an expanding parameter, the statement's text rendered at each execution.)"""
    return ((message.kind == POST_ALERT) | (message.kind == UPDATE_ALERT)) & message.alert_id.is_not(None)


def lanes_of(message: OutboxMessage, values: tuple) -> Lanes:
    """``lane_columns``' values, as read for ``message``."""
    later, in_flight = values
    covers = [int(i) for i in later.split(",")] if later else []
    if message.kind not in (POST_ALERT, UPDATE_ALERT):
        covers = []
    return Lanes(
        later=covers,
        post_in_flight=message.kind == UPDATE_ALERT and message.lane == UPDATE_LANE and in_flight is not None,
    )


async def renew(
    session: AsyncSession, message_id: int, held_until: datetime, now: datetime, lease: timedelta = LEASE
) -> datetime | None:
    """Extend a lease this worker still holds (its ``locked_until`` is unchanged); the new
    expiry, or None when the lease was lost (expired and taken over, or the message settled)."""
    until = now + lease
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, _pending(), OutboxMessage.locked_until == held_until)
        .values(locked_until=until)
        .execution_options(synchronize_session=False)
    )
    return until if result.rowcount == 1 else None


async def mark_delivered(session: AsyncSession, message_id: int, now: datetime, also: list[int] | tuple = ()) -> int:
    """Record delivery; ``also``: later updates of the same alert that this delivery covered
    (``later_updates``), marked delivered too if still pending and not leased by another
    worker. Returns how many of those were."""
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id)
        .values(delivered_at=now, locked_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    if not also:
        return 0
    result = await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id.in_(list(also)), _pending(), _lease_free(now))
        .values(delivered_at=now, locked_until=None, last_error=None)
        .execution_options(synchronize_session=False)
    )
    return result.rowcount


async def deliver_and_claim_next(
    session: AsyncSession, message_id: int, channel: str, lane: str, now: datetime, lease: timedelta = LEASE
) -> Any | None:
    """``mark_delivered(message_id)`` (covering nothing) and ``claim_next`` of its lane in one
    statement: the message settled, and its lane's next message claimed if it is due and not
    leased — returned, or None. (The next head is the lane's oldest pending message other than
    this one: the subquery sees the lane as it was before the statement.) The next message is a
    row of the outbox's columns, as ``claim_many``'s are."""
    if not session.get_bind().dialect.update_returning:
        await mark_delivered(session, message_id, now)
        return await claim_next(session, channel, now, lease, lane=lane)
    await _flushed(session)
    rows = (
        await repo.run(session, _deliver_and_claim_next(), settle_params(message_id, channel, lane, now, lease))
    ).all()
    return next((row for row in rows if row.id != message_id), None)


def settle_params(message_id: int, channel: str, lane: str, now: datetime, lease: timedelta = LEASE) -> dict[str, Any]:
    """The bound values of ``deliver_and_claim_next``'s statement (and of ``claim_cte("settle")``)."""
    return {
        "settle_id": message_id,
        "settle_lane": lane,
        "settle_channel": channel,
        "settle_now": now,
        "settle_until": now + lease,
    }


def claim_cte(which: str) -> Any:
    """A claiming statement as a data-modifying CTE (PostgreSQL only) of the outbox's columns,
    for a statement that claims and reads what it claimed at once (``bot.slack.delivery``):
    ``"claim"``, ``claim_many``'s (``claim_params``), or ``"settle"``,
    ``deliver_and_claim_next``'s (``settle_params``: its rows are the settled message and the
    lane's next one if it was claimed; ``settled_id`` tells them apart). The statement's other
    parts see the tables as they were before it (one snapshot): a claimed row as the CTE
    returns it, every other row unchanged by it."""
    return _claim_cte(which)


@functools.cache
def _claim_cte(which: str) -> Any:
    statements = {"claim": partial(_claim_many, as_array=True), "settle": _deliver_and_claim_next}
    return statements[which]().cte(f"outbox_{which}")


#: ``claim_cte("settle")``'s settled message (bound: ``settle_params``' ``settle_id``).
settled_id = bindparam("settle_id", type_=Integer())


#: A row of the outbox's columns read by position out of a wider row (``claim_cte``'s reads):
#: ``row.id``, ``row.channel`` … as on an ``OutboxMessage``, like the rows ``claim_many`` returns.
MessageRow = namedtuple("MessageRow", _T.c.keys())
#: How many columns a ``MessageRow`` has (the first of a ``claim_cte`` read's row).
MESSAGE_COLUMNS = len(_T.c)


@functools.cache
def _deliver_and_claim_next():
    """``deliver_and_claim_next``'s statement, built once (building it cost more CPU than running
    it: every delivered message runs it), its values bound parameters; a Core statement on the
    table (``_T``), returning its columns."""
    message_id = settled_id
    lane, channel = bindparam("settle_lane", type_=String()), bindparam("settle_channel", type_=String())
    c = _T.c
    now = bindparam("settle_now", type_=c.next_attempt_at.type)
    until = bindparam("settle_until", type_=c.locked_until.type)
    settled = c.id == message_id
    o = _T.alias("lane_next").c
    following = (
        select(func.min(o.id)).where(o.lane == lane, o.channel == channel, _pending(o), o.id != message_id)
    ).scalar_subquery()
    return (
        update(_T)
        .where(settled | and_(c.id == following, _pending(c), c.next_attempt_at <= now, _lease_free(now, c)))
        .values(
            delivered_at=case((settled, now), else_=c.delivered_at),
            locked_until=case((settled, None), else_=until),
            last_error=case((settled, None), else_=c.last_error),
            attempts=case((settled, c.attempts), else_=c.attempts + 1),
            first_attempt_at=case((settled, c.first_attempt_at), else_=func.coalesce(c.first_attempt_at, now)),
        )
        .returning(*c)
    )


def backoff(attempts: int) -> timedelta:
    """2, 4, 8 … seconds, at most ``MAX_BACKOFF``, plus up to 20 % jitter so channels that
    failed together do not retry in lockstep."""
    base = min(MAX_BACKOFF, timedelta(seconds=2 ** min(max(attempts, 1), 10)))
    return base * (1 + random.random() * 0.2)


async def mark_retry(
    session: AsyncSession,
    message_id: int,
    attempts: int,
    error: str,
    now: datetime,
    retry_after: float | None = None,
    *,
    may_have_delivered: bool = True,
) -> bool:
    """Reschedule: after ``retry_after`` seconds (Slack's rate limit, which is not counted as a
    failure), else with backoff; returns False (and marks it failed) when it has run out of
    attempts. ``may_have_delivered=False`` says no attempt so far can have reached Slack, so
    the next one need not look for an earlier post."""
    if retry_after is None and attempts >= MAX_ATTEMPTS:
        await mark_failed(session, message_id, f"gave up after {attempts} attempts: {error}", now)
        return False
    delay = timedelta(seconds=retry_after) if retry_after is not None else backoff(attempts)
    values: dict[str, Any] = {"next_attempt_at": now + delay, "locked_until": None, "last_error": error[:300]}
    if not may_have_delivered:
        values["first_attempt_at"] = None
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, _pending())
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    return True


async def mark_failed(session: AsyncSession, message_id: int, error: str, now: datetime) -> None:
    await session.execute(
        update(OutboxMessage)
        .where(OutboxMessage.id == message_id, _pending())
        .values(failed_at=now, locked_until=None, last_error=error[:300])
        .execution_options(synchronize_session=False)
    )


@dataclass(frozen=True)
class OutboxStats:
    pending: int
    oldest_pending_age: float
    failed: int


async def stats(session: AsyncSession, now: datetime | None = None) -> OutboxStats:
    now = now or utcnow()
    pending, oldest = (
        await session.execute(select(func.count(), func.min(OutboxMessage.created_at)).where(_pending()))
    ).one()
    failed = await session.scalar(select(func.count()).where(OutboxMessage.failed_at.is_not(None)))
    age = (now - oldest).total_seconds() if oldest else 0.0
    return OutboxStats(pending=pending, oldest_pending_age=age, failed=failed or 0)


# --- for operators (``genie outbox list`` / ``genie outbox retry``) -----------------------------
async def undelivered(session: AsyncSession, *, failed_only: bool = False, limit: int = 200) -> list[OutboxMessage]:
    """Messages not delivered, oldest first: pending ones (with their last error, if any) and
    failed ones, which stay until an operator retries them — nothing is dropped silently."""
    query = select(OutboxMessage).where(OutboxMessage.delivered_at.is_(None))
    if failed_only:
        query = query.where(OutboxMessage.failed_at.is_not(None))
    return list(await session.scalars(query.order_by(OutboxMessage.id).limit(limit)))


async def retry_failed(session: AsyncSession, message_id: int, now: datetime | None = None) -> OutboxMessage:
    """Make a failed message pending again, due now, with a fresh count of attempts (after the
    cause was fixed: the app invited to the channel, the channel id corrected …). If an earlier
    attempt may have posted, the worker still looks in the channel before posting again."""
    now = now or utcnow()
    message = await session.get(OutboxMessage, message_id)
    if message is None:
        raise NotFound(f"no outbox message {message_id}")
    if message.delivered_at is not None:
        raise InvalidInput(f"outbox message {message_id} was delivered already")
    result = await session.execute(
        update(OutboxMessage)
        .where(
            OutboxMessage.id == message_id, OutboxMessage.failed_at.is_not(None), OutboxMessage.delivered_at.is_(None)
        )
        .values(failed_at=None, next_attempt_at=now, attempts=0, locked_until=None)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InvalidInput(f"outbox message {message_id} has not failed: it is pending, and is retried on its own")
    await session.refresh(message)
    return message


# --- storms: one digest message instead of one message per alert --------------------------------
@dataclass(frozen=True)
class StormRule:
    """When a channel's alerts are collapsed into a digest (``GENIE_SLACK_DIGEST_*``)."""

    #: More alert posts than this waiting in a channel's post lane is a storm.
    threshold: int = 10
    #: An open digest closes (posting returns to one message per alert) once no alert has been
    #: collapsed into it for this long and no more than ``threshold`` posts wait.
    quiet: timedelta = timedelta(seconds=10)


@dataclass(frozen=True)
class Collapse:
    digest_id: int
    #: Alerts collapsed into the digest by this look (the head's included, if it was).
    collapsed: int
    #: The head itself was collapsed: there is nothing of its own to post.
    head_collapsed: bool


def storm_priority(counts: dict[str, int], threshold: int) -> str:
    """The storm's priority: the most urgent level ``p`` at which more than ``threshold`` alerts
    of priority ``p`` or more urgent wait. Alerts more urgent than it are few (at most
    ``threshold``, so not a storm of their own) and each is still posted on its own."""
    running = 0
    for priority in PRIORITIES:
        running += counts.get(priority, 0)
        if running > threshold:
            return priority
    return PRIORITIES[-1]


async def open_digest_count(session: AsyncSession) -> int:
    """How many digests are open (a read: the worker's cheap look before closing any)."""
    return await session.scalar(select(func.count()).where(SlackDigest.closed_at.is_(None))) or 0


async def open_digest(session: AsyncSession, channel: str) -> SlackDigest | None:
    return await session.scalar(
        select(SlackDigest).where(SlackDigest.channel == channel, SlackDigest.closed_at.is_(None))
    )


def _waiting_posts(channel: str) -> tuple:
    """Alert posts waiting in ``channel``'s post lane (what a storm counts and collapses)."""
    return (
        OutboxMessage.lane == POST_LANE,
        OutboxMessage.channel == channel,
        _pending(),
        OutboxMessage.kind == POST_ALERT,
    )


async def storm(session: AsyncSession, head: OutboxMessage, now: datetime, rule: StormRule) -> Collapse | None:
    """The storm rule, applied by the worker that has just claimed ``head`` (an ``alert.post``
    at the head of its channel's post lane), in the claiming transaction; None: post ``head``
    on its own as usual.

    - **A storm starts** when more than ``rule.threshold`` alert posts wait in the channel's
      post lane: a digest opens for the channel, with the storm's priority (``storm_priority``).
    - **While a digest is open**, every waiting alert post of the storm's priority or less
      urgent is collapsed into it: the alert records the digest (``slack_digest_id``), its post
      and its pending updates are marked delivered *in* that digest, and the digest message is
      queued (posted the first time, then refreshed in place) — the digest's message counts and
      lists them and links to each. A more urgent alert (a P1 during a storm of P3s) is posted
      on its own at once, ahead of the digest. A bigger storm of more urgent alerts raises the
      storm's priority.
    - **The storm has passed** when no alert was collapsed for ``rule.quiet`` and at most
      ``rule.threshold`` posts wait: the digest closes (refreshed once more; here, or by
      ``close_quiet_digests`` when nothing more comes) and posting returns to one message per
      alert. Later changes to a collapsed alert refresh its digest."""
    counts = dict(
        (
            await session.execute(
                select(Alert.priority, func.count())
                .select_from(OutboxMessage)
                .join(Alert, Alert.id == OutboxMessage.alert_id)
                .where(*_waiting_posts(head.channel))
                .group_by(Alert.priority)
            )
        ).all()
    )
    waiting = sum(counts.values())
    digest = await open_digest(session, head.channel)
    if digest is None:
        if waiting <= rule.threshold:
            return None
        alert = await session.get(Alert, head.alert_id) if head.alert_id is not None else None
        digest = SlackDigest(
            channel=head.channel,
            slack_team_id=head.slack_team_id,
            enterprise_id=head.enterprise_id,
            team_id=alert.team_id if alert is not None else None,
            storm_priority=storm_priority(counts, rule.threshold),
            opened_at=now,
            last_collapsed_at=now,
        )
        session.add(digest)
        await session.flush()  # a concurrent opener fails here (one open digest per channel)
    elif waiting <= rule.threshold and now - digest.last_collapsed_at >= rule.quiet:
        digest.closed_at = now  # the storm has passed
        await ensure_digest_message(session, digest, now)
        return None
    elif waiting > rule.threshold:
        digest.storm_priority = min(digest.storm_priority, storm_priority(counts, rule.threshold))
    priority = await session.scalar(select(Alert.priority).where(Alert.id == head.alert_id))
    head_collapsed = priority is not None and priority >= digest.storm_priority  # "P1" < "P2" …: not more urgent
    waiting_posts = (
        select(OutboxMessage.alert_id)
        .join(Alert, Alert.id == OutboxMessage.alert_id)
        .where(
            *_waiting_posts(head.channel),
            Alert.priority >= digest.storm_priority,
            _lease_free(now) | (OutboxMessage.id == head.id) if head_collapsed else _lease_free(now),
        )
    )
    collapsed = (
        await session.execute(
            update(Alert)
            .where(
                Alert.id.in_(waiting_posts),
                Alert.slack_ts.is_(None),
                Alert.slack_digest_id.is_(None),
            )
            .values(slack_digest_id=digest.id)
            .execution_options(synchronize_session=False)
        )
    ).rowcount
    if collapsed:
        # Their posts, and any update queued behind a post: delivered in the digest.
        await session.execute(
            update(OutboxMessage)
            .where(
                OutboxMessage.lane == POST_LANE,
                OutboxMessage.channel == head.channel,
                _pending(),
                OutboxMessage.kind.in_((POST_ALERT, UPDATE_ALERT)),
                # Per waiting message, its alert by primary key: "alert_id IN (every alert of
                # the digest)" read the whole storm so far on every look, growing with it. The
                # digest is compared through coalesce() so that no index serves it: with the
                # column's statistics from before the storm (all NULL), PostgreSQL's planner
                # took ``ix_alert_slack_digest_id`` as the inner side and scanned every alert of
                # the digest once per waiting message (158 ms a look at 3,000 alerts).
                exists().where(
                    Alert.id == OutboxMessage.alert_id, func.coalesce(Alert.slack_digest_id, 0) == digest.id
                ),
                _lease_free(now) | (OutboxMessage.id == head.id) if head_collapsed else _lease_free(now),
            )
            .values(delivered_at=now, digest_id=digest.id, locked_until=None, last_error=None)
            .execution_options(synchronize_session=False)
        )
        digest.last_collapsed_at = now
        await ensure_digest_message(session, digest, now)
    return Collapse(digest.id, collapsed, head_collapsed)


async def close_quiet_digests(session: AsyncSession, now: datetime, rule: StormRule) -> list[str]:
    """Close the open digests whose storm has passed while nothing more came (no alert
    collapsed for ``rule.quiet``, no alert post waiting in the channel): each is refreshed once
    more to say so. (When an alert does come, ``storm`` closes it first.) The channels closed,
    to wake their delivery; of workers doing this at once, one closes each digest."""
    quiet = await session.scalars(
        select(SlackDigest).where(SlackDigest.closed_at.is_(None), SlackDigest.last_collapsed_at <= now - rule.quiet)
    )
    closed = []
    for digest in list(quiet):
        waiting = await session.scalar(select(OutboxMessage.id).where(*_waiting_posts(digest.channel)).limit(1))
        if waiting is not None:
            continue  # the channel's next post decides (``storm``)
        result = await session.execute(
            update(SlackDigest)
            .where(SlackDigest.id == digest.id, SlackDigest.closed_at.is_(None))
            .values(closed_at=now)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount == 1:
            await ensure_digest_message(session, digest, now)
            closed.append(digest.channel)
    return closed


async def ensure_digest_message(session: AsyncSession, digest: SlackDigest, now: datetime) -> None:
    """Queue the digest's message (its post, or a refresh once posted) unless one is already
    waiting and not yet taken: that one draws the digest as it is when it is delivered."""
    waiting = await session.scalar(
        select(OutboxMessage.id)
        .where(
            OutboxMessage.lane == POST_LANE,
            OutboxMessage.channel == digest.channel,
            _pending(),
            OutboxMessage.kind == DIGEST,
            OutboxMessage.digest_id == digest.id,
            OutboxMessage.locked_until.is_(None),
        )
        .limit(1)
    )
    if waiting is None:
        await enqueue(
            session,
            digest.channel,
            DIGEST,
            digest_id=digest.id,
            now=now,
            slack_team_id=digest.slack_team_id,
            enterprise_id=digest.enterprise_id,
        )


async def refresh_digest(session: AsyncSession, digest_id: int, now: datetime | None = None) -> None:
    """A collapsed alert changed (acknowledged, closed, assigned …): refresh its digest, which
    stands for it in Slack (a collapsed alert never gets a chat.update of its own)."""
    digest = await session.get(SlackDigest, digest_id)
    if digest is not None:
        await ensure_digest_message(session, digest, now or utcnow())


async def post_lane_in_flight(session: AsyncSession, message: OutboxMessage, now: datetime) -> bool:
    """An update-lane ``message`` whose alert still has a message in flight in the post lane
    (an update queued before the post was recorded, leased and being sent, drawn from an
    earlier state): it waits for that one, so the older picture cannot land last."""
    if message.lane != UPDATE_LANE or message.alert_id is None:
        return False
    found = await session.scalar(
        select(OutboxMessage.id)
        .where(
            OutboxMessage.lane == POST_LANE,
            OutboxMessage.channel == message.channel,
            _pending(),
            OutboxMessage.alert_id == message.alert_id,
            OutboxMessage.locked_until >= now,
        )
        .limit(1)
    )
    return found is not None


def lane_for(alert: Alert) -> str:
    """Where an update of ``alert``'s message goes: the update lane once its post is recorded,
    else behind its post in the post lane (so it never precedes it)."""
    return UPDATE_LANE if alert.slack_ts else POST_LANE


async def record_digest_message(session: AsyncSession, digest_id: int, ts: str) -> None:
    """Where the digest's message is (in the transaction that settles its post)."""
    await session.execute(
        update(SlackDigest)
        .where(SlackDigest.id == digest_id)
        .values(slack_ts=ts)
        .execution_options(synchronize_session=False)
    )
