"""Alerts: create (with OpsGenie de-duplication), acknowledge, close, assign, notes, and the
timeline. Every change writes its timeline row and its Slack outbox message in the caller's
transaction, so a committed change is never without its record or its Slack update.

Transitions are conditional UPDATEs (``… WHERE status = 'open' AND acknowledged = false``):
when two people click at once, exactly one row changes and the other learns who won.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import re
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    JSON,
    ColumnElement,
    String,
    and_,
    bindparam,
    case,
    cast,
    exists,
    func,
    insert,
    literal,
    literal_column,
    or_,
    select,
    text,
    union_all,
    update,
)
from sqlalchemy import delete as sa_delete
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from bot.ids import Intent, is_id
from bot.services import access, alert_people, outbox, teams, users
from bot.services.errors import GenieError, NotFound
from bot.services.slack_links import SlackIdentity
from storage import repositories as repo
from storage.base import constant, utcnow
from storage.models import (
    Alert,
    AlertAction,
    AlertEscalation,
    AlertEvent,
    AlertStatus,
    ApiRequest,
    OutboxMessage,
    Page,
    Team,
    TeamApiKey,
    TeamMember,
    TeamPostGrant,
    User,
)

PRIORITIES = outbox.PRIORITIES
LIMITS = {"message": 130, "alias": 512, "description": 15000, "entity": 512, "source": 100, "user": 100, "note": 25000}
MAX_TAGS, MAX_TAG = 20, 50
MAX_DETAILS_CHARS = 8000
MAX_RESPONDERS = 50


class ValidationFailed(GenieError):
    """Request body not processable; ``errors`` maps field → problem (OpsGenie's 422 shape)."""

    def __init__(self, errors: dict[str, str]) -> None:
        self.errors = errors
        super().__init__("Request body is not processable. Please check the errors.")


class Forbidden(GenieError):
    pass


class AlreadyDone(GenieError):
    """Allowed, but nothing to do (already acknowledged/closed/assigned): says by whom.
    ``opsgenie``: the same in OpsGenie's words ("Alert is already closed"), for the API's
    request status: clients match on them (Zabbix's media type treats "Alert is already…"
    as done)."""

    def __init__(self, text: str, opsgenie: str | None = None) -> None:
        super().__init__(text)
        self.opsgenie = opsgenie or text


# --- actors ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Actor:
    """Who is acting, as recorded on the timeline."""

    via: str  # slack, api, cli
    user: User | None = None
    identity: SlackIdentity | None = None
    anonymous: bool = False
    #: For the API: the ``user`` field of the request, else the key's team.
    label: str | None = None
    #: Acting on a click remembered while they connected their account (``actions.carry_out``):
    #: the timeline says "after linking".
    after_link: bool = False

    @property
    def name(self) -> str:
        """A plain name, never Slack markup: it is stored (``acknowledged_by``, the timeline) and
        returned by the API as it is. Slack mentions are drawn by the block builders from
        ``anonymous_slack_user``, an id Slack itself gave for the click."""
        if self.user is not None:
            return self.user.name
        if self.anonymous and self.identity is not None:
            return f"Slack user {self.identity.user_id} (anonymous)"
        if self.label:
            return self.label
        # A Slack click by someone not linked (denied): name the Slack user, not "API".
        return f"Slack user {self.identity.user_id}" if self.identity is not None else "API"

    @property
    def anonymous_slack_user(self) -> str | None:
        """The Slack user id of an anonymous Slack actor (no Genie account): what the message
        mentions for them. None for everyone else, whatever their name says."""
        if self.user is None and self.anonymous and self.identity is not None and len(self.identity.user_id) <= 32:
            return self.identity.user_id
        return None


# --- keys ------------------------------------------------------------------------------------
def _hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


async def team_key(session: AsyncSession, team: Team, rotate: bool = False) -> str:
    """The team's API key; made on first use, replaced (old one stops working) with ``rotate``."""
    current = await session.scalar(select(TeamApiKey).where(TeamApiKey.team_id == team.id))
    if current is not None and not rotate:
        return current.key
    key = str(uuid.UUID(bytes=secrets.token_bytes(16), version=4))
    if current is None:
        session.add(TeamApiKey(team_id=team.id, key=key, key_hash=_hash_key(key)))
    else:
        current.key, current.key_hash, current.created_at = key, _hash_key(key), utcnow()
    await session.flush()
    return key


async def team_for_key(session: AsyncSession, presented: str) -> Team | None:
    return (await teams_for_keys(session, [presented])).get(presented)


async def teams_for_keys(session: AsyncSession, presented: list[str]) -> dict[str, Team]:
    """The team of each presented key that is a team's current key, read in one statement (the
    key and its team in one round trip: every API request begins with it; a batch of alerts
    reads all its keys at once, ``bot.services.ingest_batch``). Read in the caller's
    transaction, never remembered across transactions: a key rotated or revoked by a commit
    before is refused, whichever process asks."""
    wanted = {_hash_key(k): k for k in presented if k and len(k) <= 200}
    if not wanted:
        return {}
    rows = await session.execute(_keys_query(), {"key_hashes": list(wanted)})
    return {
        wanted[key_hash]: team
        for key_hash, key, team in rows
        if hmac.compare_digest(key.encode(), wanted[key_hash].encode())
    }


@functools.cache
def _keys_query() -> Any:
    return (
        select(TeamApiKey.key_hash, TeamApiKey.key, Team)
        .join(Team, Team.id == TeamApiKey.team_id)
        .where(TeamApiKey.key_hash.in_(bindparam("key_hashes", expanding=True)))
    )


async def grant_post(session: AsyncSession, team: Team, for_team: Team) -> None:
    if team.id == for_team.id or await session.get(TeamPostGrant, (team.id, for_team.id)):
        return
    session.add(TeamPostGrant(team_id=team.id, for_team_id=for_team.id))
    await session.flush()


# --- validation ------------------------------------------------------------------------------
@dataclass
class CreateAlert:
    message: str
    alias: str | None = None
    description: str | None = None
    responders: list[dict[str, str]] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)
    details: dict[str, str] = field(default_factory=dict)
    entity: str | None = None
    source: str | None = None
    priority: str = "P3"
    user: str | None = None
    note: str | None = None


def _opt_str(body: dict, name: str, errors: dict[str, str]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        errors[name] = f"{name} must be a string"
        return None
    if len(value) > LIMITS[name]:
        errors[name] = f"{name} can not be longer than {LIMITS[name]} characters"
        return None
    return value


def parse_create(body: Any) -> CreateAlert:
    """Validate a create request like OpsGenie does; raise ``ValidationFailed`` listing problems."""
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "the request body must be a JSON object"})
    errors: dict[str, str] = {}
    message = body.get("message")
    if not isinstance(message, str) or not message.strip():
        errors["message"] = "Message can not be empty."
    elif len(message) > LIMITS["message"]:
        errors["message"] = f"message can not be longer than {LIMITS['message']} characters"
    data = {name: _opt_str(body, name, errors) for name in ("alias", "description", "entity", "source", "user", "note")}
    priority = body.get("priority", "P3")
    if priority is None:
        priority = "P3"
    if priority not in PRIORITIES:
        errors["priority"] = "priority must be one of P1, P2, P3, P4, P5"
    tags = body.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
        errors["tags"] = "tags must be a list of strings"
        tags = []
    elif len(tags) > MAX_TAGS or any(len(t) > MAX_TAG for t in tags):
        errors["tags"] = f"at most {MAX_TAGS} tags of at most {MAX_TAG} characters each"
    details = body.get("details") or {}
    if not isinstance(details, dict) or not all(
        isinstance(k, str) and isinstance(v, (str, int, float, bool)) for k, v in details.items()
    ):
        errors["details"] = "details must be an object of string keys and string values"
        details = {}
    else:
        details = {
            k: v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v)
            for k, v in details.items()
        }
        if sum(len(k) + len(v) for k, v in details.items()) > MAX_DETAILS_CHARS:
            errors["details"] = f"details can not be longer than {MAX_DETAILS_CHARS} characters in total"
    responders = body.get("responders") or []
    if (
        not isinstance(responders, list)
        or len(responders) > MAX_RESPONDERS
        or not all(
            isinstance(r, dict)
            and r.get("type") in {"team", "user", "escalation", "schedule"}
            and any(isinstance(r.get(k), str) and 0 < len(r[k]) <= 512 for k in ("id", "name", "username"))
            for r in responders
        )
    ):
        errors["responders"] = (
            "responders must be a list of at most 50 objects with a type (team, user, "
            "escalation, schedule) and an id, name or username"
        )
        responders = []
    if errors:
        raise ValidationFailed(errors)
    return CreateAlert(
        message=message.strip(),
        priority=priority,
        tags=list(dict.fromkeys(tags)),
        details=details,
        responders=[
            {k: v for k, v in r.items() if k in {"type", "id", "name", "username"} and isinstance(v, str)}
            for r in responders
        ],
        **data,
    )


# --- timeline and outbox ---------------------------------------------------------------------
async def record(
    session: AsyncSession,
    alert: Alert,
    action: str,
    outcome: str,
    actor: Actor,
    *,
    reason: str | None = None,
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
    flush: bool = True,
) -> AlertEvent:
    """Add a row to the alert's timeline. ``flush=False`` leaves the INSERT to the next flush
    (the commit, or the next query), so a transition's rows go to the database together."""
    event = AlertEvent(**_event_values(alert.id, action, outcome, actor, now or utcnow(), reason, note, request_id))
    session.add(event)
    if flush:
        await session.flush()
    return event


def _event_values(
    alert_id: int,
    action: str,
    outcome: str,
    actor: Actor,
    now: datetime,
    reason: str | None,
    note: str | None,
    request_id: str | None,
) -> dict[str, Any]:
    """The columns of a timeline row (``record``'s, and ``_applied``'s INSERT)."""
    if actor.after_link:  # a click remembered while the person connected their account
        reason = f"after linking: {reason}" if reason else "after linking"
        reason = reason if len(reason) <= 500 else reason[:499] + "…"
    identity = actor.identity
    return dict(
        alert_id=alert_id,
        at=now,
        action=action,
        outcome=outcome,
        reason=reason,
        via=actor.via,
        actor_user_id=actor.user.id if actor.user else None,
        actor_name=actor.name[:200],
        slack_workspace_id=identity.workspace_id if identity else None,
        slack_user_id=identity.user_id if identity else None,
        anonymous=actor.anonymous,
        note=note,
        request_id=request_id,
    )


async def refresh_in_slack(
    session: AsyncSession,
    alert: Alert,
    now: datetime | None = None,
    flush: bool = True,
    *,
    team: Team | None = None,
    orm: bool = True,
) -> None:
    """Queue an update of the alert's Slack message: in the channel's update lane once it is
    posted (never behind new posts), else behind its post, and rendered at delivery time. An
    alert collapsed into a storm digest has no message of its own: its digest is refreshed.
    ``team``: the alert's team when the caller has it at hand. ``orm=False``: the message is
    inserted at once by one Core statement (``outbox.enqueue_row``), with no ORM object for the
    unit of work to flush."""
    if alert.slack_digest_id is not None and not alert.slack_ts:
        await outbox.refresh_digest(session, alert.slack_digest_id, now)
    elif alert.slack_channel:
        if team is None or team.id != alert.team_id:
            team = await teams.team_by_id(session, alert.team_id) if alert.team_id is not None else None
        where = dict(
            alert_id=alert.id,
            slack_team_id=team.slack_team_id if team else None,
            enterprise_id=team.enterprise_id if team else None,
            lane=outbox.lane_for(alert),
        )
        if not orm:
            await outbox.enqueue_row(session, alert.slack_channel, outbox.UPDATE_ALERT, now or utcnow(), **where)
        else:
            await outbox.enqueue(session, alert.slack_channel, outbox.UPDATE_ALERT, now=now, flush=flush, **where)


async def timeline(session: AsyncSession, alert_id: int) -> list[AlertEvent]:
    return list(
        await session.scalars(select(AlertEvent).where(AlertEvent.alert_id == alert_id).order_by(AlertEvent.id))
    )


async def timeline_page(
    session: AsyncSession,
    alert_id: int,
    *,
    limit: int,
    descending: bool = False,
    cursor: int | None = None,
    backwards: bool = False,
    notes_only: bool = False,
) -> tuple[list[AlertEvent], bool]:
    """One page of the timeline, read as a page (an alert's timeline has no bound: clicks, notes
    and de-duplications pile up): at most ``limit`` events in ``id`` order (``descending``)
    after ``cursor`` — or, ``backwards``, the ``limit`` just before it — and whether more follow.
    ``notes_only``: the notes (not refused ones)."""
    query = select(AlertEvent).where(AlertEvent.alert_id == alert_id)
    if notes_only:
        query = query.where(AlertEvent.note.is_not(None), AlertEvent.note != "", AlertEvent.outcome != "denied")
    forward = not descending if not backwards else descending  # walk the ids upwards?
    if cursor is not None:
        query = query.where(AlertEvent.id > cursor if forward else AlertEvent.id < cursor)
    query = query.order_by(AlertEvent.id.asc() if forward else AlertEvent.id.desc())
    rows = list(await session.scalars(query.limit(limit if backwards else limit + 1)))
    if backwards:
        return rows[::-1], False
    return rows[:limit], len(rows) > limit


# --- create ----------------------------------------------------------------------------------
async def _owner_team(session: AsyncSession, key_team: Team, responders: list[dict[str, str]]) -> Team:
    """The first team responder, when the key may post for it (``access.key_teams``); else the
    key's own team. A team the key may not post for and one that does not exist get the same
    403, which names only what the request gave and the teams the key may post for."""
    if not any(r["type"] == "team" for r in responders):
        return key_team  # no team named: the key's own (its grants need not be read)
    allowed = await access.key_teams(session, key_team, access.KeyUse.POST)
    for responder in responders:
        if responder["type"] != "team":
            continue
        team = None
        if is_id(responder.get("id", "")):
            team = await teams.team_by_id(session, int(responder["id"]))
        if team is None and responder.get("name"):
            team = await teams.team_by_name(session, responder["name"])
        if team is None or team.id not in allowed:
            wanted = responder.get("name") or responder.get("id")
            may = sorted(t.name for t in (await teams.teams_by_id(session, allowed)).values())
            raise Forbidden(
                f"this key (team {key_team.name}) may not post alerts for team {wanted!r}; "
                f"it may post for: {', '.join(may)}"
            )
        return team
    return key_team


@dataclass
class NewAlert:
    """One create request of a batch (``create_alerts``): the key's team, the validated body and
    the API request id it is recorded under."""

    key_team: Team
    data: CreateAlert
    request_id: str


@dataclass
class Created:
    """What became of a ``NewAlert``: its alert, whether it is new (else de-duplicated), the
    channel its post or update was queued to, and whether it started an escalation (then the
    engine is woken: ``Runtime.wake_outbox(paging=True)``), and the lane of what was queued
    (``OutboxWorker.wake``: a channel delivering in that lane needs no look for it)."""

    alert_id: int
    created: bool
    channel: str | None
    escalated: bool
    #: The outbox lane of what was queued to ``channel`` (None: not one known lane).
    lane: str | None = None


async def create_alert(
    session: AsyncSession, key_team: Team, data: CreateAlert, request_id: str, now: datetime | None = None
) -> tuple[Alert, bool]:
    """``(alert, created)``: ``create_alerts`` for one alert (its refusal raised), with the
    alert read back as an object (heartbeats use it; the API needs only ``Created``)."""
    [outcome] = await create_alerts(session, [NewAlert(key_team, data, request_id)], now)
    if isinstance(outcome, GenieError):
        raise outcome
    alert = await session.get(Alert, outcome.alert_id, populate_existing=True)
    assert alert is not None
    return alert, outcome.created


#: One alert of a batch, planned (``_plan``): its index in the batch, owning team, actor, the
#: people it names, and its row's values.
_Planned = tuple[int, Team, Actor, alert_people.Found, dict[str, Any]]


async def _plan(
    session: AsyncSession, batch: list[NewAlert], now: datetime
) -> tuple[list[Created | GenieError | None], list[_Planned]]:
    """Who owns each alert of ``batch`` and the people it names (reads only; none for most
    alerts), and its row's values; a refused one (``Forbidden``) is its outcome instead."""
    outcomes: list[Created | GenieError | None] = [None] * len(batch)
    planned: list[_Planned] = []
    for i, item in enumerate(batch):
        data = item.data
        try:
            team = await _owner_team(session, item.key_team, data.responders)
            # Resolved before the write (names are rare in alerts; without any this reads
            # nothing). An alert that turns out de-duplicated does not use them.
            people = await alert_people.for_create(session, data, team)
        except GenieError as refused:
            outcomes[i] = refused
            continue
        values = _row_values(data, str(uuid.uuid4()), now, people.stored)
        values.update(team_id=team.id, slack_channel=team.slack_channel_id)
        actor = Actor(via="api", label=data.user or f"API ({item.key_team.name})")
        planned.append((i, team, actor, people, values))
    return outcomes, planned


def _row_values(data: CreateAlert, uid: str, now: datetime, people: dict[str, Any] | None) -> dict[str, Any]:
    """A new alert's columns but its team's (``team_id``, ``slack_channel``)."""
    return dict(
        uid=uid,
        message=data.message,
        alias=data.alias or uid,
        description=data.description,
        tags=data.tags,
        details=data.details,
        responders=data.responders,
        entity=data.entity,
        source=data.source,
        priority=data.priority,
        reported_by=data.user,
        status=AlertStatus.OPEN.value,
        acknowledged=False,
        count=1,
        created_at=now,
        updated_at=now,
        last_occurred_at=now,
        people=people,
    )


async def create_alerts(
    session: AsyncSession, batch: list[NewAlert], now: datetime | None = None
) -> list[Created | GenieError]:
    """Create (or de-duplicate) the alerts of ``batch`` in the caller's transaction, in order:
    for each, ``Created`` or the refusal (``Forbidden``: a team it may not post for) — a refused
    one writes nothing and does not stop the others. An open alert with the same alias (in the
    owning team) is de-duplicated: its count goes up and no second Slack message is posted.

    The alerts are written by ``INSERT … ON CONFLICT (team_id, alias) WHERE status = 'open'
    DO UPDATE SET count = count + 1 … RETURNING`` (SQLite ≥ 3.35, PostgreSQL), one statement for
    the batch (``_upsert_open_alerts``): the partial unique index ``uq_alert_open_alias`` makes
    the de-duplication exact — of concurrent requests with one alias, one inserts and the others
    count, with no read first and no savepoint. Two of the batch with one alias go in successive
    statements (one statement may not touch a row twice), so the second counts the first as a
    request after it would. The statement also returns the owning team's escalation policy, so
    an alert of a team without one costs no query for it. A new alert has ``count`` 1; a
    de-duplicated one at least 2. Then the timeline rows and the API request rows of the whole
    batch are one executemany each, and so are its Slack posts and updates (the rows
    ``outbox.enqueue`` would add one by one)."""
    now = now or utcnow()
    # 1. Who owns each alert, and the people it names (reads only; none for most alerts).
    outcomes, planned = await _plan(session, batch, now)
    # 2. The writes: one upsert per round (the n-th alert of the batch with an alias is in round n).
    rounds: list[list[int]] = []
    seen: dict[tuple[int, str], int] = {}
    for n, (_, _, _, _, values) in enumerate(planned):
        key = (values["team_id"], values["alias"])
        depth = seen.get(key, 0)
        seen[key] = depth + 1
        if depth == len(rounds):
            rounds.append([])
        rounds[depth].append(n)
    written: dict[int, Any] = {}
    for members in rounds:
        rows = await _upsert_open_alerts(session, [planned[n][4] for n in members])
        by_key = {(row.team_id, row.alias): row for row in rows}
        for n in members:
            values = planned[n][4]
            written[n] = by_key[(values["team_id"], values["alias"])]
    # 3. Their timeline rows, Slack messages and escalations, in the batch's order.
    events: list[dict[str, Any]] = []
    posts: list[dict[str, Any]] = []
    requests: list[dict[str, Any]] = []
    escalating: list[tuple[int, Alert, Team, int]] = []
    for n, (i, team, actor, people, values) in enumerate(planned):
        item, row = batch[i], written[n]
        created = row.count == 1
        queued_lane: str | None = None  # the lane of its message queued to ``row.slack_channel``
        if created:
            events.append(
                _event_row(row.id, AlertAction.CREATE, actor, now, note=item.data.note, request_id=item.request_id)
            )
            if people.summary:  # who the names in it were resolved to (the message shows them)
                events.append(
                    _event_row(
                        row.id, AlertAction.RESOLVE, actor, now, reason=people.summary, request_id=item.request_id
                    )
                )
            if team.slack_channel_id:
                posts.append(_outbox_row(team.slack_channel_id, outbox.POST_ALERT, row.id, team, outbox.POST_LANE, now))
                queued_lane = outbox.POST_LANE
        else:
            events.append(
                _event_row(
                    row.id,
                    AlertAction.DEDUPLICATE,
                    actor,
                    now,
                    reason=f"count is now {row.count}",
                    request_id=item.request_id,
                )
            )
            # ``refresh_in_slack``: its digest when it was collapsed into one, else its message.
            if row.slack_digest_id is not None and not row.slack_ts:
                await outbox.refresh_digest(session, row.slack_digest_id, now)
            elif row.slack_channel:
                queued_lane = outbox.UPDATE_LANE if row.slack_ts else outbox.POST_LANE  # outbox.lane_for
                posts.append(_outbox_row(row.slack_channel, outbox.UPDATE_ALERT, row.id, team, queued_lane, now))
        requests.append(
            dict(
                request_id=item.request_id,
                team_id=item.key_team.id,
                action="Create",
                alert_id=row.id,
                alias=values["alias"],
                success=True,
                status="Created alert" if created else "Alert is deduplicated",
                processed_at=now,
            )
        )
        outcomes[i] = Created(row.id, created, row.slack_channel, escalated=False, lane=queued_lane)
        if created and row.policy_id is not None:
            escalating.append((i, Alert(id=row.id, team_id=row.team_id), team, row.policy_id))
    await _insert_all(session, ((AlertEvent, events), (OutboxMessage, posts), (ApiRequest, requests)))
    if escalating:
        from bot.services import paging  # (it builds on this module)

        for i, alert, team, policy_id in escalating:
            started = await paging.start(session, alert, team, now, policy_id=policy_id)
            outcome = outcomes[i]
            assert isinstance(outcome, Created)
            outcome.escalated = started is not None
    return [o for o in outcomes if o is not None]


def names_nobody(data: CreateAlert) -> bool:
    """Whether ``data`` names no team and no person: its owner is its key's team and
    ``alert_people.for_create`` reads nothing for it (``Found(None, None)``)."""
    return not data.responders and alert_people.names_nobody(data)


async def create_alerts_at_once(
    session: AsyncSession, batch: list[tuple[str, CreateAlert, str]], now: datetime | None = None
) -> list[Created | None]:
    """PostgreSQL: alerts of the API (``(presented key, body, request id)`` each) written as
    **one statement** — its keys checked, its alerts, timeline rows, Slack posts and request
    records written — which PostgreSQL runs as its own transaction when ``session`` is in
    autocommit: one round trip for the whole batch, no BEGIN and COMMIT. For each of ``batch``,
    ``Created``, or None: not written — write those with ``create_alerts`` in a transaction,
    which also answers them (a wrong key: 401). Left to it: a key that is no team's current key,
    an alert that names a team or people (``names_nobody``: the owner and the names need
    reads), the second of the batch with one key and alias, an alert of a team with an
    escalation policy (``paging.start``), and a duplicate of an open alert collapsed into a
    digest (``outbox.refresh_digest``); the statement checks the key and the last two as it
    writes.

    It writes exactly what ``create_alerts`` writes for the others: the alert (or the open one
    counted once more), its timeline row, its Slack post (or its message's update) and its
    request record, each table's rows in the batch's order. The key is checked in the statement
    that writes: a key rotated by any commit before it is refused."""
    now = now or utcnow()
    outcomes: list[Created | None] = [None] * len(batch)
    members: list[tuple[int, str, CreateAlert, str, dict[str, Any]]] = []
    taken: set[tuple[str, str]] = set()
    for i, (key, data, request_id) in enumerate(batch):
        if not key or len(key) > 200 or not names_nobody(data):
            continue
        uid = str(uuid.uuid4())
        values = _row_values(data, uid, now, people=None)
        key_hash = _hash_key(key)
        if (key_hash, values["alias"]) in taken:
            continue
        taken.add((key_hash, values["alias"]))
        members.append((i, key_hash, data, request_id, values))
    if not members:
        return outcomes
    dialect = session.get_bind().dialect
    statement, columns = _pg_at_once(dialect)
    params: dict[str, Any] = {"now": now}
    for c, (name, process) in enumerate(columns):
        values = [m[4][name] for m in members]
        params[f"a{c}"] = [process(v) for v in values] if process is not None else values
    params["key_hash"] = [m[1] for m in members]
    params["note"] = [m[2].note for m in members]
    params["request_id"] = [m[3] for m in members]
    for n, alert_id, created, channel in await repo.driver_fetch(session, statement, params):
        # A new alert's post is in the post lane; a de-duplicated one's update in either.
        lane = outbox.POST_LANE if created else None
        outcomes[members[n - 1][0]] = Created(alert_id, created, channel, escalated=False, lane=lane)
    return outcomes


#: The alert's columns ``create_alerts_at_once`` writes (``_plan``'s values).
_AT_ONCE_COLUMNS = (
    "uid",
    "message",
    "alias",
    "description",
    "tags",
    "details",
    "responders",
    "entity",
    "source",
    "priority",
    "reported_by",
    "status",
    "acknowledged",
    "count",
    "created_at",
    "updated_at",
    "last_occurred_at",
    "people",
)


@functools.cache
def _pg_at_once(dialect: Any) -> tuple[Any, list[tuple[str, Any]]]:
    """``create_alerts_at_once``'s statement, built once: the batch as arrays turned back into
    rows by ``unnest``; each joined to the team whose current key it presents (``k``: a row
    whose key is no team's is not written) unless that team has an escalation policy; the
    upsert of ``_upsert_statement`` (a duplicate of an open alert collapsed into a digest is
    not counted: the conflict's WHERE); and, from its RETURNING, the timeline rows, Slack
    messages and request records ``create_alerts`` writes, as data-modifying CTEs. Returns
    ``(n, alert id, created, channel)`` per alert written (``n``: its place in the arrays, from
    1) and the alert columns' bind processors."""
    quote = dialect.identifier_preparer.quote
    arrays, selected, columns = _pg_arrays(dialect, "alert", _AT_ONCE_COLUMNS, "a", source="k")
    c_alias = _AT_ONCE_COLUMNS.index("alias")
    names = ", ".join(quote(n) for n in (*_AT_ONCE_COLUMNS, "team_id", "slack_channel"))
    at = f"CAST(:now AS {AlertEvent.__table__.c.at.type.compile(dialect=dialect)})"
    count = quote("count")
    sql = f"""
WITH u AS (
  SELECT * FROM unnest({", ".join(arrays)}, CAST(:key_hash AS TEXT[]), CAST(:note AS TEXT[]),
      CAST(:request_id AS TEXT[]))
    WITH ORDINALITY AS u({", ".join(f"c{c}" for c in range(len(arrays)))}, key_hash, note, request_id, n)
), k AS (
  SELECT u.*, team.id AS team_id, team.name AS team_name, team.slack_channel_id, team.slack_team_id,
    team.enterprise_id
  FROM u JOIN team_api_key ON team_api_key.key_hash = u.key_hash JOIN team ON team.id = team_api_key.team_id
  WHERE NOT EXISTS (SELECT 1 FROM escalation_policy WHERE escalation_policy.team_id = team.id)
), up AS (
  INSERT INTO alert ({names})
  SELECT {", ".join(selected)}, k.team_id, k.slack_channel_id FROM k
  ORDER BY k.n
  ON CONFLICT (team_id, alias) WHERE status = 'open' DO UPDATE
    SET {count} = alert.{count} + 1, last_occurred_at = excluded.last_occurred_at,
        updated_at = excluded.updated_at
    WHERE alert.slack_digest_id IS NULL OR alert.slack_ts IS NOT NULL
  RETURNING alert.id, alert.team_id, alert.alias, alert.{count}, alert.slack_channel, alert.slack_ts
), j AS (
  SELECT up.id, up.team_id, up.alias, up.{count} = 1 AS created, up.{count} AS times, up.slack_channel,
    up.slack_ts, k.n, k.team_name, k.note, k.request_id, k.slack_team_id, k.enterprise_id
  FROM up JOIN k ON k.team_id = up.team_id AND k.c{c_alias} = up.alias
), ev AS (
  INSERT INTO alert_event (alert_id, at, action, outcome, reason, via, actor_user_id, actor_name,
    slack_workspace_id, slack_user_id, anonymous, note, request_id)
  SELECT j.id, {at},
    CASE WHEN j.created THEN '{AlertAction.CREATE}' ELSE '{AlertAction.DEDUPLICATE}' END, 'applied',
    CASE WHEN j.created THEN NULL ELSE 'count is now ' || j.times END, 'api', NULL,
    substr('API (' || j.team_name || ')', 1, 200), NULL, NULL, false, CASE WHEN j.created THEN j.note END,
    j.request_id
  FROM j ORDER BY j.n
), ob AS (
  INSERT INTO outbox (channel, kind, lane, alert_id, digest_id, payload, created_at, slack_team_id,
    enterprise_id, next_attempt_at, attempts)
  SELECT j.slack_channel,
    CASE WHEN j.created THEN '{outbox.POST_ALERT}' ELSE '{outbox.UPDATE_ALERT}' END,
    CASE WHEN j.slack_ts IS NULL THEN '{outbox.POST_LANE}' ELSE '{outbox.UPDATE_LANE}' END,
    j.id, NULL, NULL, {at}, j.slack_team_id, j.enterprise_id, {at}, 0
  FROM j WHERE j.slack_channel IS NOT NULL ORDER BY j.n
), rq AS (
  INSERT INTO api_request (request_id, team_id, action, alert_id, alias, success, status, processed_at)
  SELECT j.request_id, j.team_id, 'Create', j.id, j.alias, true,
    CASE WHEN j.created THEN 'Created alert' ELSE 'Alert is deduplicated' END, {at}
  FROM j ORDER BY j.n
)
SELECT j.n, j.id, j.created, j.slack_channel FROM j"""
    now = bindparam("now", type_=AlertEvent.__table__.c.at.type)
    return text(sql).bindparams(now), columns


async def _insert_all(session: AsyncSession, groups: tuple[tuple[type, list[dict[str, Any]]], ...]) -> None:
    """Insert each group's rows (every row of a group with the same keys), in order.

    PostgreSQL: **one statement** for all of them — each table's rows as arrays, one per column,
    turned back into rows by ``unnest`` (``_pg_insert_all``), the tables but the last in
    data-modifying CTEs. An executemany is a round trip per table and, in the server, a statement
    executed per row: for a batch of alerts (timeline, Slack posts, request records) that was
    two thirds of the batch's statements' work in PostgreSQL. SQLite (inline, no round trips):
    one executemany per table, compiled once and run on the driver (``repo.insert_rows``)."""
    groups = tuple((model, rows) for model, rows in groups if rows)
    if not groups:
        return
    dialect = session.get_bind().dialect
    if dialect.name != "postgresql":
        for model, rows in groups:
            await repo.insert_rows(session, model.__table__, rows)
        return
    shape = tuple((model.__table__.name, tuple(rows[0])) for model, rows in groups)
    statement, columns = _pg_insert_all(dialect, shape)
    params: dict[str, list[Any]] = {}
    for g, (_, rows) in enumerate(groups):
        for c, (name, process) in enumerate(columns[g]):
            values = [row[name] for row in rows]
            params[f"g{g}c{c}"] = [process(v) for v in values] if process is not None else values
    await session.execute(statement, params)


@functools.cache
def _pg_insert_all(
    dialect: Any, shape: tuple[tuple[str, tuple[str, ...]], ...]
) -> tuple[Any, list[list[tuple[str, Any]]]]:
    """``INSERT … SELECT … FROM unnest(:array, …) WITH ORDINALITY ORDER BY`` for each
    ``(table, columns)`` of ``shape``, all but the last as CTEs of the last, built once per shape;
    and per table, each column's name with the bind processor its values go through (a JSON
    column's values are sent as their JSON text, as an executemany sends them). The rows keep
    their order: the ids a table's sequence gives them follow it (an outbox's order is its ids)."""
    quote = dialect.identifier_preparer.quote
    inserts: list[str] = []
    columns: list[list[tuple[str, Any]]] = []
    for g, (table_name, names) in enumerate(shape):
        arrays, selected, processed = _pg_arrays(dialect, table_name, names, f"g{g}c")
        inserts.append(
            f"INSERT INTO {quote(table_name)} ({', '.join(quote(n) for n in names)}) "
            f"SELECT {', '.join(selected)} FROM unnest({', '.join(arrays)}) WITH ORDINALITY "
            f"AS u({', '.join(f'c{c}' for c in range(len(names)))}, n) ORDER BY u.n"
        )
        columns.append(processed)
    *first, last = inserts
    sql = (f"WITH {', '.join(f'w{g} AS ({sql})' for g, sql in enumerate(first))} " if first else "") + last
    return text(sql), columns


def _pg_arrays(
    dialect: Any, table_name: str, names: tuple[str, ...], prefix: str, source: str = "u"
) -> tuple[list[str], list[str], list[tuple[str, Any]]]:
    """For ``unnest``: each of ``table_name``'s columns ``names`` as an array parameter
    (``:<prefix><c>``), what selects it from ``<source>.c<c>``, and its name with the bind processor its
    values go through (a JSON column's values are sent as their JSON text, as an executemany
    sends them; a string's as TEXT, not VARCHAR(n)[]: that cast would cut a long value short)."""
    table = Alert.metadata.tables[table_name]
    arrays, selected, processed = [], [], []
    for c, name in enumerate(names):
        kind = table.c[name].type
        if isinstance(kind, JSON):
            arrays.append(f"CAST(:{prefix}{c} AS TEXT[])")
            selected.append(f"CAST({source}.c{c} AS JSON)")
        elif isinstance(kind, String):
            arrays.append(f"CAST(:{prefix}{c} AS TEXT[])")
            selected.append(f"{source}.c{c}")
        else:
            arrays.append(f"CAST(:{prefix}{c} AS {kind.compile(dialect=dialect)}[])")
            selected.append(f"{source}.c{c}")
        processed.append((name, kind.bind_processor(dialect)))
    return arrays, selected, processed


def _event_row(
    alert_id: int,
    action: str,
    actor: Actor,
    now: datetime,
    *,
    reason: str | None = None,
    note: str | None = None,
    request_id: str | None = None,
) -> dict[str, Any]:
    """A timeline row as ``record`` writes it, for an API actor (no Genie user, no Slack
    identity), as the values of an executemany."""
    return dict(
        alert_id=alert_id,
        at=now,
        action=action,
        outcome="applied",
        reason=reason,
        via=actor.via,
        actor_user_id=None,
        actor_name=actor.name[:200],
        slack_workspace_id=None,
        slack_user_id=None,
        anonymous=False,
        note=note,
        request_id=request_id,
    )


def _outbox_row(channel: str, kind: str, alert_id: int, team: Team, lane: str, now: datetime) -> dict[str, Any]:
    """The row ``outbox.enqueue`` adds for an alert's post or update, as the values of an
    executemany: the ORM's unit of work inserted a batch's messages one statement each."""
    return outbox.message_values(
        channel,
        kind,
        now,
        alert_id=alert_id,
        slack_team_id=team.slack_team_id,
        enterprise_id=team.enterprise_id,
        lane=lane,
    )


async def _upsert_open_alerts(session: AsyncSession, rows: list[dict[str, Any]]) -> list[Any]:
    """The alerts inserted, or the open ones with their team and alias counted once more, as
    rows ``(id, team_id, alias, count, slack_channel, slack_ts, slack_digest_id, policy_id)``
    (``policy_id``: its team's escalation policy, None: none), in any order. No two ``rows``
    may share a team and alias. See ``create_alerts``."""
    dialect = session.get_bind().dialect
    if dialect.name == "postgresql":
        return list((await session.execute(_upsert_statement(dialect.name), rows)).all())
    # SQLite: the statement's SQL for this many rows, compiled once, on the driver.
    sql, columns = repo.driver_statement(
        dialect, Alert.__table__, tuple(rows[0]), _upsert_statement(dialect.name), len(rows)
    )
    values = [v for row in rows for v in repo.driver_row(columns, row)]
    return (await repo.driver_execute(session, sql, tuple(values)))[0]


@functools.cache
def _upsert_statement(dialect: str) -> Any:
    """Built once per dialect: building it cost more CPU than running it."""
    table = Alert.__table__
    statement = {"postgresql": pg_insert, "sqlite": sqlite_insert}[dialect](table)
    # Correlated with the row written: in a RETURNING clause neither database takes SQLAlchemy's
    # correlation (SQLite names RETURNING's columns unqualified), so it is written out.
    policy = literal_column(
        "(SELECT escalation_policy.id FROM escalation_policy WHERE escalation_policy.team_id = alert.team_id)"
    )
    return statement.on_conflict_do_update(
        index_elements=[table.c.team_id, table.c.alias],
        # Literally the index's own predicate: PostgreSQL infers a partial index only from
        # a WHERE it can match to it (a bound parameter does not).
        index_where=text("status = 'open'"),
        set_={
            "count": table.c.count + literal_column("1"),  # (no parameter: ``repo.driver_statement``)
            "last_occurred_at": statement.excluded.last_occurred_at,
            "updated_at": statement.excluded.updated_at,
        },
    ).returning(
        table.c.id,
        table.c.team_id,
        table.c.alias,
        table.c.count,
        table.c.slack_channel,
        table.c.slack_ts,
        table.c.slack_digest_id,
        policy.label("policy_id"),
    )


# --- finding ---------------------------------------------------------------------------------
async def find(
    session: AsyncSession, identifier: str, identifier_type: str = "id", team_ids: set[int] | None = None
) -> Alert:
    """By OpsGenie ``id``, ``tiny`` id or ``alias`` (the open one, else the latest). ``team_ids``
    limits the search to alerts a key may see; others are "not found", not "forbidden"."""
    query = select(Alert)
    if identifier_type == "id":
        query = query.where(Alert.uid == identifier)
    elif identifier_type == "tiny":
        if not is_id(identifier):
            raise NotFound("Alert with given id does not exist")
        query = query.where(Alert.id == int(identifier))
    elif identifier_type == "alias":
        query = query.where(Alert.alias == identifier).order_by(
            (Alert.status == constant(AlertStatus.OPEN)).desc(), Alert.id.desc()
        )
    else:
        raise ValidationFailed({"identifierType": "identifierType must be one of id, alias, tiny"})
    if team_ids is not None:
        query = query.where(Alert.team_id.in_(team_ids))
    alert = await session.scalar(query.limit(1))
    if alert is None:
        raise NotFound(f"Alert with given {'alias' if identifier_type == 'alias' else 'id'} does not exist")
    return alert


async def get(session: AsyncSession, alert_id: int) -> Alert:
    alert = await session.get(Alert, alert_id)
    if alert is None:
        raise NotFound("That alert does not exist (any more).")
    return alert


# --- transitions -----------------------------------------------------------------------------
async def _transition(session: AsyncSession, alert: Alert, criteria: list, values: dict[str, Any]) -> bool:
    """The conditional UPDATE of one alert: True when this call changed it (exactly one of any
    number of concurrent callers does), and then ``alert`` holds the row as updated."""
    statement = update(Alert).where(Alert.id == alert.id, *criteria).values(**values)
    return await repo.update_one(session, statement, Alert, alert.id) is not None


class _Record(NamedTuple):
    """What an applied stopping change puts on the timeline (``_applied``'s row)."""

    actor: Actor
    now: datetime
    reason: str | None
    note: str | None
    request_id: str | None


async def _stop_transition(
    session: AsyncSession, alert: Alert, kind: str, values: dict[str, Any], record: _Record
) -> tuple[bool, bool]:
    """The conditional UPDATE of a change that stops the escalation (``kind``: acknowledge or
    close, whose conditions are ``_STOPS``) and, when it changed the alert, ``record``'s timeline
    row and the update of the alert's message (``_applied``'s): ``(changed, escalated)`` —
    whether the alert has a timer or pages to stop, read in the same ``UPDATE … RETURNING``
    (without RETURNING: assumed, and ``paging.stop`` looks). When changed, ``alert`` holds the
    row as updated.

    The statement is Core, on the table, built once per kind (``_stop_statement``): the ORM's
    bulk UPDATE of the entity cost more CPU than the rest of the click's statements together.
    What the ORM did around it is done here: the session's pending changes are flushed first
    (its autoflush), and the returned row is put into ``alert`` as its loaded state (its
    ``populate_existing``).

    On PostgreSQL the UPDATE, the timeline row and the message's update are one statement
    (``_stop_and_record_statement``: the two INSERTs are data-modifying CTEs that read the
    updated row, so they are written exactly when the UPDATE changed it): one round trip instead
    of three, each of which costs the process a loopback send and the server's wake-up."""
    together = False
    if not session.get_bind().dialect.update_returning:
        statement = update(Alert).where(Alert.id == alert.id, *_STOPS[kind]).values(**values)
        changed, escalated = await repo.update_one(session, statement, Alert, alert.id) is not None, True
    else:
        if session.new or session.dirty or session.deleted:
            await session.flush()
        params = {"alert_id": alert.id, **{f"new_{key}": value for key, value in values.items()}}
        together = session.get_bind().dialect.name == "postgresql"
        if together:
            event = _event_values(
                alert.id, kind, "applied", record.actor, record.now, record.reason, record.note, record.request_id
            )
            params.update({f"event_{key}": value for key, value in event.items() if key != "alert_id"})
            params["queued_at"] = record.now
            statement = _stop_and_record_statement(kind, tuple(values))
        else:
            statement = _stop_statement(kind, tuple(values))
        row = (await repo.run(session, statement, params)).first()
        if row is None:
            return False, False
        loaded = alert.__dict__  # (the session was flushed above: nothing of it is pending)
        for key, value in zip(_alert_keys(), row, strict=False):
            if key not in loaded or loaded[key] != value:
                set_committed_value(alert, key, value)
        changed, escalated = True, bool(row[-2] if together else row[-1])
    if not changed:
        return False, False
    if not together:
        await _applied(
            session,
            alert,
            kind,
            record.actor,
            now=record.now,
            reason=record.reason,
            note=record.note,
            request_id=record.request_id,
        )
    elif row[-1] is not None:  # the channel its update was queued to, in the lane the statement chose
        outbox.note_enqueued(session, row[-1], outbox.lane_for(alert))
    elif alert.slack_digest_id is not None and not alert.slack_ts:
        await refresh_in_slack(session, alert, record.now, orm=False)  # its digest stands for it
    return True, escalated


#: The condition each stopping change needs (``_stop_transition``): only one of any number of
#: concurrent acknowledgements (or closes) changes the row.
_STOPS = {
    AlertAction.ACKNOWLEDGE: (
        Alert.__table__.c.status == constant(AlertStatus.OPEN),
        Alert.__table__.c.acknowledged.is_(False),
    ),
    AlertAction.CLOSE: (Alert.__table__.c.status == constant(AlertStatus.OPEN),),
}


@functools.cache
def _alert_keys() -> tuple[str, ...]:
    """The attribute of ``Alert`` each column of its table maps to, in the table's order."""
    mapper = Alert.__mapper__
    return tuple(mapper.get_property_by_column(column).key for column in Alert.__table__.columns)


@functools.cache
def _stop_statement(kind: str, columns: tuple[str, ...]):
    """``_stop_transition``'s UPDATE … RETURNING (every column of the row, then whether it has
    an escalation to stop), Core on the table with bind parameters, built once: building it per
    click (the clauses, the two probes, the cache key) was a tenth of a click's CPU. The probes
    ask whether the alert has an escalation timer or any page — what ``paging.stop`` would find
    — by primary key and index, in the transition's own statement, so that an alert never
    escalated (most: its team has no policy) costs no more."""
    table = Alert.__table__
    conditions = _STOPS[kind]
    timer = select(AlertEscalation.__table__.c.alert_id).where(AlertEscalation.__table__.c.alert_id == table.c.id)
    paged = select(Page.__table__.c.id).where(Page.__table__.c.alert_id == table.c.id)
    return (
        update(table)
        .where(table.c.id == bindparam("alert_id"), *conditions)
        .values({column: bindparam(f"new_{column}") for column in columns})
        .returning(*table.columns, (timer.exists() | paged.exists()).label("escalated"))
    )


@functools.cache
def _stop_and_record_statement(kind: str, columns: tuple[str, ...]):
    """PostgreSQL: ``_stop_statement`` and what ``_applied`` writes after it, in one statement —

        WITH stopped AS (UPDATE alert … RETURNING *, escalated),
             recorded AS (INSERT INTO alert_event … SELECT … FROM stopped),
             queued AS (INSERT INTO outbox … SELECT … FROM stopped LEFT JOIN team …
                        WHERE it has a channel and is not only in a digest RETURNING channel)
        SELECT stopped.*, (SELECT channel FROM queued) FROM stopped

    The timeline row's values are bound parameters (``event_*``: ``_event_values``); the
    message's are what ``refresh_in_slack`` would queue, read from the updated row: its channel,
    the update lane once its post is recorded (``outbox.lane_for``), else its post lane, and its
    team's workspace. An alert collapsed into a storm digest (no message of its own) queues
    nothing here: the caller refreshes its digest. When the UPDATE changes nothing, neither
    INSERT writes anything (they select from its empty result)."""
    stopped = _stop_statement(kind, columns).cte("stopped")
    s = stopped.c
    events = AlertEvent.__table__
    event_columns = list(_event_values(0, kind, "applied", Actor(via="slack"), utcnow(), None, None, None))
    recorded = (
        insert(events)
        .from_select(
            event_columns,
            select(
                *[
                    s.id if name == "alert_id" else bindparam(f"event_{name}", type_=events.c[name].type)
                    for name in event_columns
                ]
            ),
        )
        .cte("recorded")
    )
    messages, team = OutboxMessage.__table__, Team.__table__
    posted = and_(s.slack_ts.is_not(None), s.slack_ts != "")
    at = bindparam("queued_at", type_=messages.c.created_at.type)
    values = {
        "channel": s.slack_channel,
        "kind": literal(outbox.UPDATE_ALERT, messages.c.kind.type),
        "lane": case((posted, literal(outbox.UPDATE_LANE)), else_=literal(outbox.POST_LANE)),
        "alert_id": s.id,
        "created_at": at,
        "slack_team_id": team.c.slack_team_id,
        "enterprise_id": team.c.enterprise_id,
        "next_attempt_at": at,
        "attempts": literal(0, messages.c.attempts.type),
    }
    queued = (
        insert(messages)
        .from_select(
            list(values),
            select(*values.values())
            .select_from(stopped.outerjoin(team, team.c.id == s.team_id))
            .where(s.slack_channel.is_not(None), s.slack_channel != "", or_(s.slack_digest_id.is_(None), posted)),
        )
        .returning(messages.c.channel)
        .cte("queued")
    )
    return select(*s, select(queued.c.channel).scalar_subquery().label("queued")).add_cte(recorded)


def _ago(then: datetime | None, now: datetime) -> str:
    if then is None:
        return ""
    minutes = int((now - then).total_seconds() // 60)
    return " just now" if minutes < 1 else f" {minutes} min ago" if minutes < 120 else f" {minutes // 60} h ago"


async def _noop(
    session: AsyncSession, alert: Alert, action: str, actor: Actor, now: datetime, request_id: str | None
) -> AlreadyDone:
    await session.refresh(alert)
    if alert.status == AlertStatus.CLOSED:
        text = f"Alert #{alert.id} is already closed (by {alert.closed_by}{_ago(alert.closed_at, now)})."
        opsgenie = f"Alert is already closed by {alert.closed_by}{_ago(alert.closed_at, now)}"
    elif action == AlertAction.ACKNOWLEDGE and alert.acknowledged:
        text = (
            f"Alert #{alert.id} was already acknowledged by {alert.acknowledged_by}{_ago(alert.acknowledged_at, now)}."
        )
        opsgenie = f"Alert is already acknowledged by {alert.acknowledged_by}{_ago(alert.acknowledged_at, now)}"
    elif action == "unacknowledge" and not alert.acknowledged:
        text = f"Alert #{alert.id} is not acknowledged."
        opsgenie = "Alert is already unacknowledged"
    else:
        text = f"Nothing to do: alert #{alert.id} is already in that state."
        opsgenie = None
    await record(session, alert, action, "noop", actor, reason=text, request_id=request_id, now=now)
    return AlreadyDone(text, opsgenie)


async def _applied(
    session: AsyncSession,
    alert: Alert,
    action: AlertAction,
    actor: Actor,
    *,
    now: datetime,
    reason: str | None = None,
    note: str | None = None,
    request_id: str | None = None,
) -> None:
    """An applied change: on the timeline (``record``'s row) and the alert's Slack message
    refreshed, in this transaction. Each row is one Core INSERT built once, run at once: no ORM
    objects to build and for the unit of work to flush at the commit (a click's two rows cost
    more that way than its UPDATE). Changes pending in the session go first, as an autoflush
    would send them, so the rows keep the order the code made them in."""
    if session.new or session.dirty or session.deleted:
        await session.flush()
    await repo.insert_rows(
        session,
        AlertEvent.__table__,
        [_event_values(alert.id, action, "applied", actor, now, reason, note, request_id)],
    )
    await refresh_in_slack(session, alert, now, orm=False)


async def acknowledge(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    *,
    note: str | None = None,
    request_id: str | None = None,
    why: str | None = None,
    now: datetime | None = None,
) -> Alert:
    now = now or utcnow()
    changed, escalated = await _stop_transition(
        session,
        alert,
        AlertAction.ACKNOWLEDGE,
        dict(
            acknowledged=True,
            acknowledged_at=now,
            acknowledged_by=actor.name[:200],
            acknowledged_by_slack=actor.anonymous_slack_user,
            updated_at=now,
        ),
        record=_Record(actor, now, why, note, request_id),
    )
    if not changed:
        raise await _noop(session, alert, AlertAction.ACKNOWLEDGE, actor, now, request_id)
    if escalated:
        await _stop_paging(session, alert, actor, now, f"acknowledged by {actor.name}")
    return alert


async def _stop_paging(session: AsyncSession, alert: Alert, actor: Actor, now: datetime, why: str) -> None:
    from bot.services import paging  # (it builds on this module)

    await paging.stop(session, alert, actor, now, why)


async def close(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    *,
    note: str | None = None,
    request_id: str | None = None,
    why: str | None = None,
    now: datetime | None = None,
) -> Alert:
    now = now or utcnow()
    changed, escalated = await _stop_transition(
        session,
        alert,
        AlertAction.CLOSE,
        dict(
            status=AlertStatus.CLOSED,
            closed_at=now,
            closed_by=actor.name[:200],
            closed_by_slack=actor.anonymous_slack_user,
            updated_at=now,
        ),
        record=_Record(actor, now, why, note, request_id),
    )
    if not changed:
        raise await _noop(session, alert, AlertAction.CLOSE, actor, now, request_id)
    if escalated:
        await _stop_paging(session, alert, actor, now, f"closed by {actor.name}")
    return alert


async def assign(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    owner: User,
    *,
    note: str | None = None,
    request_id: str | None = None,
    why: str | None = None,
    named: str | None = None,
    now: datetime | None = None,
) -> Alert:
    """Make ``owner`` the assignee and DM them in Slack (through the outbox, in this
    transaction) unless they assigned themselves or have no Slack link in the alert's workspace.
    ``named``: how the request named the owner when that was another tool's identity
    ("alice-og (opsgenie)"), for the timeline."""
    now = now or utcnow()
    if alert.team_id is None or await teams.membership(session, alert.team_id, owner.id) is None or not owner.is_active:
        team = await teams.team_by_id(session, alert.team_id) if alert.team_id else None
        text = (
            f"{owner.name} is not an active member of {team.name}, so can't be assigned this alert."
            if team
            else "This alert has no owning team, so it can't be assigned."
        )
        await record(session, alert, AlertAction.ASSIGN, "denied", actor, reason=text, request_id=request_id, now=now)
        raise Forbidden(text)
    if not await _transition(
        session,
        alert,
        [
            Alert.status == constant(AlertStatus.OPEN),
            or_(Alert.owner_user_id.is_(None), Alert.owner_user_id != owner.id),
        ],
        dict(owner_user_id=owner.id, updated_at=now),
    ):
        await session.refresh(alert)
        if alert.status == AlertStatus.OPEN and alert.owner_user_id == owner.id:
            text = f"Alert #{alert.id} is already assigned to {owner.name}."
            await record(session, alert, AlertAction.ASSIGN, "noop", actor, reason=text, request_id=request_id, now=now)
            raise AlreadyDone(text)
        raise await _noop(session, alert, AlertAction.ASSIGN, actor, now, request_id)
    told = await _tell_assignee(session, alert, actor, owner, now)
    reason = f"assigned to {owner.name} ({owner.email})"
    if named:
        reason += f", named as {named}"
    if told:
        reason += f"; told in Slack ({told})"
    await _applied(
        session,
        alert,
        AlertAction.ASSIGN,
        actor,
        reason=(reason + (f"; {why}" if why else ""))[:500],
        note=note,
        request_id=request_id,
        now=now,
    )
    return alert


async def _tell_assignee(session: AsyncSession, alert: Alert, actor: Actor, owner: User, now: datetime) -> str | None:
    """Queue "You were assigned alert #12: …" to the assignee's Slack (their link in the
    workspace of the alert's channel); the Slack user id it goes to, or None."""
    if actor.user is not None and actor.user.id == owner.id:
        return None  # they assigned themselves: they know
    team = await teams.team_by_id(session, alert.team_id) if alert.team_id is not None else None
    link = (await alert_people.slack_links(session, {owner.id}, team)).get(owner.id)
    if link is None:
        return None
    # Queued as an intent and drawn by its builder at delivery (bot.blocks.messages).
    values = {
        "alert_id": alert.id,
        "message": alert.message,
        "priority": alert.priority,
        "team": team.name if team is not None else None,
        "channel": alert.slack_channel,
        "by": actor.name,
        "by_slack": actor.anonymous_slack_user,
    }
    await outbox.enqueue(
        session,
        link.slack_user_id,
        outbox.MESSAGE,
        payload=outbox.intent(Intent.ASSIGNED, **values),
        now=now,
        slack_team_id=link.slack_team_id,
        enterprise_id=link.enterprise_id,
    )
    return link.slack_user_id


async def add_note(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    note: str,
    *,
    request_id: str | None = None,
    now: datetime | None = None,
) -> AlertEvent:
    return await record(session, alert, AlertAction.NOTE, "applied", actor, note=note, request_id=request_id, now=now)


async def unacknowledge(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    *,
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> Alert:
    now = now or utcnow()
    if not await _transition(
        session,
        alert,
        [Alert.status == constant(AlertStatus.OPEN), Alert.acknowledged.is_(True)],
        dict(acknowledged=False, acknowledged_at=None, acknowledged_by=None, updated_at=now),
    ):
        raise await _noop(session, alert, AlertAction.UNACKNOWLEDGE, actor, now, request_id)
    await _applied(session, alert, AlertAction.UNACKNOWLEDGE, actor, note=note, request_id=request_id, now=now)
    return alert


async def snooze(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    until: datetime,
    *,
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> Alert:
    """Snooze an open alert until ``until`` (in the future: checked by the caller)."""
    now = now or utcnow()
    if not await _transition(
        session, alert, [Alert.status == constant(AlertStatus.OPEN)], dict(snoozed_until=until, updated_at=now)
    ):
        raise await _noop(session, alert, AlertAction.SNOOZE, actor, now, request_id)
    await _applied(
        session,
        alert,
        AlertAction.SNOOZE,
        actor,
        reason=f"until {until:%Y-%m-%d %H:%M} UTC",
        note=note,
        request_id=request_id,
        now=now,
    )
    return alert


async def _rewrite(session: AsyncSession, alert: Alert, change: Any, now: datetime) -> bool:
    """Apply ``change(alert) -> {column: value}`` (read-modify-write of the JSON columns) as an
    UPDATE conditional on ``updated_at`` being what was read, retried when another request
    changed the alert in between: no concurrent edit is lost. False when there was nothing to
    change."""
    for _ in range(5):
        values = change(alert)
        if not values:
            return False
        seen = alert.updated_at
        if await _transition(session, alert, [Alert.updated_at == seen], {**values, "updated_at": now}):
            return True
        await session.refresh(alert)
    raise GenieError("the alert changed too often to update it; please retry")


EDITABLE = {"message": "message", "description": "description", "priority": "priority"}


async def update_field(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    name: str,
    value: str,
    *,
    request_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    """PUT message / description / priority (values validated by the caller). True when it
    changed; the same value again (Alertmanager's ``update_alerts`` sends it with every
    notification) changes nothing and records nothing."""
    now = now or utcnow()
    column = EDITABLE[name]
    old = getattr(alert, column)
    if not await _rewrite(
        session,
        alert,
        lambda a: (
            {} if (getattr(a, column) or "") == value else {column: value if value or column != "description" else None}
        ),
        now,
    ):
        return False
    shown = (old or "")[:80] + ("…" if old and len(old) > 80 else "")
    await _applied(
        session,
        alert,
        AlertAction.UPDATE,
        actor,
        reason=f"{name} changed (was: {shown!r})"[:500],
        request_id=request_id,
        now=now,
    )
    return True


async def _edit(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    action: AlertAction,
    change: Callable[[Alert], dict[str, Any]],
    what: str,
    note: str | None,
    request_id: str | None,
    now: datetime,
) -> bool:
    """Rewrite the alert's list or map by ``change`` (``_rewrite``); when it changed, put
    ``what`` on the timeline and refresh the Slack message. False: nothing changed."""
    if not await _rewrite(session, alert, change, now):
        return False
    await _applied(session, alert, action, actor, reason=what[:500], note=note, request_id=request_id, now=now)
    return True


async def change_tags(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    *,
    add: list[str] = (),
    remove: list[str] = (),
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    now = now or utcnow()

    def change(a: Alert) -> dict[str, Any]:
        tags = [t for t in dict.fromkeys([*(a.tags or []), *add]) if t not in set(remove)]
        if tags == list(a.tags or []):
            return {}
        if len(tags) > MAX_TAGS:
            raise ValidationFailed({"tags": f"an alert has at most {MAX_TAGS} tags"})
        return {"tags": tags}

    what = f"tags added: {', '.join(add)}" if add else f"tags removed: {', '.join(remove)}"
    return await _edit(session, alert, actor, AlertAction.TAGS, change, what, note, request_id, now)


async def change_details(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    *,
    add: dict[str, str] | None = None,
    remove: list[str] = (),
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    now = now or utcnow()
    add = add or {}

    def change(a: Alert) -> dict[str, Any]:
        details = {k: v for k, v in {**(a.details or {}), **add}.items() if k not in set(remove)}
        if details == dict(a.details or {}):
            return {}
        if sum(len(k) + len(v) for k, v in details.items()) > MAX_DETAILS_CHARS:
            raise ValidationFailed(
                {"details": f"an alert's details are at most {MAX_DETAILS_CHARS} characters in total"}
            )
        return {"details": details}

    what = f"details added: {', '.join(add)}" if add else f"details removed: {', '.join(remove)}"
    return await _edit(session, alert, actor, AlertAction.DETAILS, change, what, note, request_id, now)


async def add_responder(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    *,
    team: Team | None = None,
    user: User | None = None,
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> bool:
    """Add a team or a person as a responder (OpsGenie's add responder / add team). A person
    shows in the Slack message (mentioned when they have a Slack link in its workspace); a team
    is listed in the API. Ownership, and so who may act on the alert, does not change."""
    now = now or utcnow()
    if team is not None:
        entry = {"type": "team", "id": str(team.id), "name": team.name}
    else:
        assert user is not None
        entry = {"type": "user", "id": str(user.id), "username": user.email}
    link = None
    if user is not None:
        owning = await teams.team_by_id(session, alert.team_id) if alert.team_id is not None else None
        link = (await alert_people.slack_links(session, {user.id}, owning)).get(user.id)

    def change(a: Alert) -> dict[str, Any]:
        current = list(a.responders or [])
        if any(r.get("type") == entry["type"] and str(r.get("id")) == entry["id"] for r in current):
            return {}
        if len(current) >= MAX_RESPONDERS:
            raise ValidationFailed({"responder": f"an alert has at most {MAX_RESPONDERS} responders"})
        values: dict[str, Any] = {"responders": [*current, entry]}
        if user is not None:
            people = dict(a.people) if isinstance(a.people, dict) else {}
            people["responders"] = [
                *(people.get("responders") or []),
                {
                    "as": user.email,
                    "user_id": user.id,
                    "name": user.name,
                    "slack": link.slack_user_id if link else None,
                },
            ]
            values["people"] = people
        return values

    if not await _rewrite(session, alert, change, now):
        return False
    who = f"team {team.name}" if team is not None else f"{user.name} ({user.email})"
    await _applied(
        session,
        alert,
        AlertAction.RESPONDER,
        actor,
        reason=f"responder added: {who}"[:500],
        note=note,
        request_id=request_id,
        now=now,
    )
    return True


async def custom_action(
    session: AsyncSession,
    alert: Alert,
    actor: Actor,
    name: str,
    *,
    note: str | None = None,
    request_id: str | None = None,
    now: datetime | None = None,
) -> AlertEvent:
    """OpsGenie's custom actions ("Restart", "Run playbook"): Genie runs nothing; the action
    is recorded on the timeline (and so in the API's logs) for whoever acts on it."""
    return await record(
        session,
        alert,
        AlertAction.CUSTOM,
        "applied",
        actor,
        reason=f"custom action {name!r}"[:500],
        note=note,
        request_id=request_id,
        now=now,
    )


async def delete(session: AsyncSession, alert: Alert, actor: Actor, *, now: datetime | None = None) -> None:
    """Delete the alert, its timeline and its pending Slack messages. A message already in
    Slack is replaced (through the outbox) by a line saying it was deleted and by whom."""
    now = now or utcnow()
    if alert.slack_digest_id is not None and not alert.slack_ts:  # its storm digest counts one fewer
        await outbox.refresh_digest(session, alert.slack_digest_id, now)
    if alert.slack_channel and alert.slack_ts:
        team = await teams.team_by_id(session, alert.team_id) if alert.team_id is not None else None
        await outbox.enqueue(
            session,
            alert.slack_channel,
            outbox.MESSAGE,
            now=now,
            payload={
                **outbox.intent(Intent.ALERT_DELETED, alert_id=alert.id, message=alert.message, by=actor.name),
                "update_ts": alert.slack_ts,
            },
            slack_team_id=team.slack_team_id if team else None,
            enterprise_id=team.enterprise_id if team else None,
        )
    await session.execute(sa_delete(Alert).where(Alert.id == alert.id).execution_options(synchronize_session=False))


async def recipients(session: AsyncSession, alert: Alert) -> list[dict[str, Any]]:
    """Who was told of the alert, and how: the owning team's active members through its
    channel message (``notified`` once it is in Slack, else ``pending``), and each person the
    alert was assigned to in a Slack DM (from the timeline), and each person the escalation paged."""
    told: dict[int, dict[str, Any]] = {}
    if alert.team_id is not None and alert.slack_channel:
        rows = await session.execute(
            select(User)
            .join(TeamMember, TeamMember.user_id == User.id)
            .where(TeamMember.team_id == alert.team_id, User.is_active.is_(True))
            .order_by(User.id)
        )
        for user in rows.scalars():
            told[user.id] = {
                "user": user,
                "state": "notified" if alert.slack_ts else "pending",
                "method": "Slack channel",
                "at": alert.created_at,
            }
    assigned = await session.scalars(
        select(AlertEvent).where(
            AlertEvent.alert_id == alert.id,
            AlertEvent.action == AlertAction.ASSIGN,
            AlertEvent.outcome == "applied",
            AlertEvent.reason.contains("told in Slack"),
        )
    )
    for event in assigned:  # reason: "assigned to NAME (EMAIL)…; told in Slack (U…)" (``assign``)
        match = re.match(r"assigned to .*? \(([^()\s]+@[^()\s]+)\)", event.reason or "")
        if match:
            user = await users.user_by_email(session, match.group(1))
            if user is not None:
                told[user.id] = {"user": user, "state": "notified", "method": "Slack DM", "at": event.at}
    pages = await session.execute(  # paged by the escalation (bot.services.paging): the latest page each
        select(Page, User).join(User, User.id == Page.user_id).where(Page.alert_id == alert.id).order_by(Page.id)
    )
    states = {"sent": "notified", "queued": "pending", "waiting": "pending", "failed": "failed"}
    methods = {"email": "E-mail (paged)", "webhook": "Webhook (paged)"}
    for page, user in pages.all():
        earlier = told.get(user.id)
        if page.status in ("queued", "waiting") and earlier and earlier["state"] == "notified":
            continue  # a later channel still waiting does not hide that a page reached them
        if page.status in states:
            told[user.id] = {
                "user": user,
                "state": states[page.status],
                "method": methods.get(page.channel, "Slack DM (paged)"),
                "at": page.settled_at or page.created_at,
            }
    return list(told.values())


async def record_api_request(
    session: AsyncSession,
    request_id: str,
    team: Team,
    action: str,
    alert: Alert | None,
    success: bool,
    status: str,
    now: datetime | None = None,
) -> None:
    session.add(
        ApiRequest(
            request_id=request_id,
            team_id=team.id,
            action=action,
            alert_id=alert.id if alert else None,
            alias=alert.alias if alert else None,
            success=success,
            status=status[:300],
            processed_at=now or utcnow(),
        )
    )
    await session.flush()


async def open_alerts_for(session: AsyncSession, user_id: int, limit: int = 10) -> list[Alert]:
    """Open alerts of the person's teams or assigned to them, newest first (App Home).

    Read as the newest ``limit`` of each team (and of the person's own), each from the index on
    (team, status, id), then the newest ``limit`` of those: one query with "team in … or owner"
    ordered by id read every open alert of the person's teams and sorted them all — on a team
    with thousands open (a storm), a Home tab drawn at each link confirm held SQLite's one
    connection for tens of milliseconds."""
    team_ids = list(
        await session.scalars(select(func.distinct(TeamMember.team_id)).where(TeamMember.user_id == user_id))
    )
    newest = [
        select(Alert.id).where(Alert.team_id == team_id, Alert.status == constant(AlertStatus.OPEN))
        for team_id in team_ids
    ] + [select(Alert.id).where(Alert.owner_user_id == user_id, Alert.status == constant(AlertStatus.OPEN))]
    parts = [select(part.order_by(Alert.id.desc()).limit(limit).subquery().c.id) for part in newest]
    ids = union_all(*parts).subquery()
    return list(
        await session.scalars(
            select(Alert).where(Alert.id.in_(select(ids.c.id))).order_by(Alert.id.desc()).limit(limit)
        )
    )


# --- the API's reads ---------------------------------------------------------------------------
#: ``search_alerts`` sort keys (OpsGenie's names) → columns.
ALERT_SORTS = {
    "createdAt": Alert.created_at,
    "updatedAt": Alert.updated_at,
    "lastOccurredAt": Alert.last_occurred_at,
    "tinyId": Alert.id,
    "alias": Alert.alias,
    "message": Alert.message,
    "status": Alert.status,
    "acknowledged": Alert.acknowledged,
    "count": Alert.count,
    "source": Alert.source,
    "priority": Alert.priority,
}


def _alert_term(dialect: str, key: str, value: Any) -> ColumnElement[bool]:
    if key == "tag":  # exact element of the JSON list
        if dialect == "postgresql":
            return cast(Alert.tags, JSONB).contains([value])
        each = func.json_each(Alert.tags).table_valued("value")
        return exists(select(literal(1)).select_from(each).where(each.c.value == value))
    if key == "message":  # substring, case-insensitive
        return func.lower(Alert.message).contains(value.lower(), autoescape=True)
    if key == "owner":
        return Alert.owner_user_id.in_(select(User.id).where(User.email == value.strip().lower()))
    if key == "teams":  # the owning team, by name (case-insensitive) or id
        return Alert.team_id.in_(
            select(Team.id).where(or_(func.lower(Team.name) == value.lower(), cast(Team.id, String) == value))
        )
    if key == "text":  # free text: in the message, alias, description or entity
        return or_(
            *(
                func.lower(column).contains(value.lower(), autoescape=True)
                for column in (Alert.message, Alert.alias, Alert.description, Alert.entity)
            )
        )
    column = {
        "status": Alert.status,
        "acknowledged": Alert.acknowledged,
        "priority": Alert.priority,
        "alias": Alert.alias,
        "source": Alert.source,
        "entity": Alert.entity,
        "tinyId": Alert.id,
    }[key]
    return column == value


async def search_alerts(
    session: AsyncSession,
    team_ids: set[int],
    terms: list[tuple[str, Any]],
    *,
    sort: str = "createdAt",
    descending: bool = True,
    offset: int = 0,
    limit: int = 20,
) -> tuple[int, list[Alert]]:
    """``(total, page)`` of the alerts of ``team_ids`` matching every ``(key, value)`` term
    (keys: status, acknowledged, priority, alias, source, entity, tinyId, tag, message, owner)."""
    dialect = session.get_bind().dialect.name
    where = [Alert.team_id.in_(team_ids), *(_alert_term(dialect, k, v) for k, v in terms)]
    total = await session.scalar(select(func.count()).select_from(Alert).where(*where))
    column = ALERT_SORTS[sort]
    order = [column.desc(), Alert.id.desc()] if descending else [column.asc(), Alert.id.asc()]
    page = await session.scalars(select(Alert).where(*where).order_by(*order).offset(offset).limit(limit))
    return total or 0, list(page)


async def api_request(session: AsyncSession, request_id: str, team_id: int) -> tuple[ApiRequest, Alert | None] | None:
    """An API request of this team's key, with its alert (if it still exists)."""
    row = await session.scalar(
        select(ApiRequest).where(ApiRequest.request_id == request_id, ApiRequest.team_id == team_id)
    )
    if row is None:
        return None
    return row, (await session.get(Alert, row.alert_id) if row.alert_id is not None else None)


# --- what the Slack side reads and records (bot.slack.render, bot.slack.delivery) -----------------
async def team_and_owner(session: AsyncSession, alert: Alert) -> tuple[Team | None, User | None]:
    """The alert's owning team and assignee (either None)."""
    team = await teams.team_by_id(session, alert.team_id) if alert.team_id is not None else None
    owner = await users.user_by_id(session, alert.owner_user_id) if alert.owner_user_id is not None else None
    return team, owner


async def assignable_names(session: AsyncSession, team_id: int | None) -> list[tuple[int, str]]:
    """``(id, name)`` of the active members of the team, by name (then id: the order
    ``bot.slack.render`` reads them in for the worker): who an alert may be assigned to (what
    ``assign`` accepts), read as plain rows — a hundred ``User`` objects cost far more to build
    than the select shows."""
    if team_id is None:
        return []
    return [
        (user_id, name)
        for user_id, name in await session.execute(
            select(User.id, User.name)
            .join(TeamMember, TeamMember.user_id == User.id)
            .where(TeamMember.team_id == team_id, User.is_active.is_(True))
            .order_by(User.name, User.id)
        )
    ]


async def owner_slack_user(session: AsyncSession, owner_id: int | None, team: Team | None) -> str | None:
    """The assignee's Slack user in the workspace of the alert's channel, to mention them
    (read at render time: a link made or removed since shows at the next update)."""
    if owner_id is None:
        return None
    link = (await alert_people.slack_links(session, {owner_id}, team)).get(owner_id)
    return link.slack_user_id if link is not None else None


async def record_slack_message(session: AsyncSession, alert_id: int, channel: str | None, ts: str | None) -> None:
    """Where the alert's Slack message is (the outbox worker, in the transaction that settles
    the post): later updates edit that message."""
    await session.execute(
        update(Alert)
        .where(Alert.id == alert_id)
        .values(slack_channel=channel, slack_ts=ts)
        .execution_options(synchronize_session=False)
    )
