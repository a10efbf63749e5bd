"""The OpsGenie-compatible Alert API v2: same paths, JSON bodies, status codes, envelopes and
``Authorization: GenieKey <key>`` auth, so Alertmanager's ``opsgenie_configs``, Grafana's
OpsGenie contact point and OpsGenie scripts work by changing only the base URL.

    curl -X POST https://genie.example.com/v2/alerts -H "Authorization: GenieKey $KEY" \\
         -H "Content-Type: application/json" -d '{"message": "Disk full on db-1", "alias": "db-1-disk"}'
    → 202 {"result": "Request will be processed", "took": 0.012, "requestId": "…"}

Handlers only parse HTTP and call ``bot.services.alerts`` in one transaction (a created alert
in the transaction of its moment's batch: ``bot.services.ingest_batch``); every response,
errors included, carries ``took`` and ``requestId`` (also in ``X-Request-ID``).

Where Genie differs from OpsGenie, on purpose:

- **202 means done.** OpsGenie queues actions; Genie commits them before answering, so
  ``GET /v2/alerts/requests/{id}`` answers at once and a 202 alert is never lost.
- **Unknown alerts are 404 on actions too** (``Alert with given id does not exist``), where
  OpsGenie answers 202 and reports "Alert does not exist" in the request status: a script
  learns of its mistake without polling. Alertmanager logs such a 404 and does not retry it.
- **Already done is still 202**, like OpsGenie: acknowledging an acknowledged alert, closing
  a closed one. The request status says ``isSuccess: false`` and who got there first.
- **Assigning to someone who may not own the alert is 422** (message and ``errors.owner``),
  not a silent 202: clients check the status code, few poll the request status. The refusal
  is still recorded: it is on the alert's timeline (``denied``) and in the request status.
- ``apiKey`` in the query string is not accepted: keys in URLs end up in access logs.
- Escalate fires the next step of the team's escalation policy at once (``bot.services.paging``);
  an alert of a team with no policy is a 422. Saved searches and attachments are 404s. Every route
  is also served with a trailing slash and under JSM's ``/jsm/ops/integration`` prefix (see
  ``_served``). Query language: see ``parse_query``.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from bot.ids import is_id
from bot.services import access, alert_people, alerts, ingest_batch, paging, teams, users
from bot.services.alerts import Actor, AlreadyDone, Forbidden, ValidationFailed
from bot.services.errors import AlreadyExists, GenieError, InvalidInput, NotFound
from storage.base import utcnow
from storage.models import Alert, AlertAction, AlertEvent, AlertStatus, Team

logger = logging.getLogger(__name__)

#: Large enough for every field at its limit even when JSON-escaped (25,000 characters of note
#: as \uXXXX escapes alone is 150 KB); anything bigger is not an alert.
MAX_BODY = 1024 * 1024
MAX_LIMIT = 100
MAX_QUERY_TERMS = 20
MAX_QUERY_LENGTH = 2000
ACCEPTED = "Request will be processed"


class ApiError(Exception):
    def __init__(
        self, status: int, message: str, errors: dict[str, str] | None = None, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


@dataclass
class Call:
    """One API request: its id (answered in ``requestId``) and when it started (``took``)."""

    request_id: str
    started: float
    #: The Slack channel a handler queued a message to, when it knows (``Runtime.wake_outbox``),
    #: and its outbox lane, when it knows that.
    outbox_channel: str | None = None
    outbox_lane: str | None = None
    #: Whether the escalation engine and channel worker should look too (``Runtime.wake_outbox``):
    #: a created alert says whether it started an escalation.
    paging: bool = True

    def answer(self, status: int, headers: dict[str, str] | None = None, **fields: Any) -> JSONResponse:
        took = round(time.monotonic() - self.started, 3)
        return JSONResponse(
            {**fields, "took": took, "requestId": self.request_id},
            status_code=status,
            headers={
                "X-Request-ID": self.request_id,
                "X-Response-Time": str(took),
                "Cache-Control": "no-store",
                **(headers or {}),
            },
        )

    def accepted(self) -> JSONResponse:
        return self.answer(202, result=ACCEPTED)


Handler = Callable[[Request, Call], Awaitable[Response]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Gives the handler its ``Call`` and turns every failure into an OpsGenie-style answer."""

    async def run(request: Request) -> Response:
        call = Call(str(uuid.uuid4()), time.monotonic())
        try:
            response = await handler(request, call)
            if request.method in ("POST", "PUT", "DELETE") and response.status_code < 300:
                # Committed: let Slack hear of it now.
                request.app.state.runtime.wake_outbox(call.outbox_channel, paging=call.paging, lane=call.outbox_lane)
            return response
        except ApiError as err:
            extra = {"errors": err.errors} if err.errors else {}
            return call.answer(err.status, err.headers, message=err.message, **extra)
        except ValidationFailed as err:
            return call.answer(422, message=str(err), errors=err.errors)
        except NotFound as err:
            return call.answer(404, message=str(err))
        except Forbidden as err:
            return call.answer(403, message=str(err))
        except InvalidInput as err:
            return call.answer(422, message=str(err))
        except AlreadyExists as err:
            return call.answer(409, message=str(err))
        except GenieError as err:  # e.g. "please retry" after lost races: clients retry 5xx
            return call.answer(503, message=str(err))
        except DBAPIError:
            logger.exception("database error in %s %s (request %s)", request.method, request.url.path, call.request_id)
            return call.answer(503, message="Genie could not reach its database; please retry.")
        except Exception:
            logger.exception(
                "unexpected error in %s %s (request %s)", request.method, request.url.path, call.request_id
            )
            return call.answer(500, message="Internal error; the request id is in Genie's log.")

    run.__name__ = handler.__name__
    return run


# --- request parsing -------------------------------------------------------------------------
def presented_key(request: Request) -> str:
    """The key from ``Authorization: GenieKey <key>``; 401 when missing or malformed."""
    scheme, _, key = request.headers.get("authorization", "").strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "geniekey" or not key or len(key) > 200 or not storable(key):
        raise ApiError(401, "Key format is not valid!")
    return key


async def key_team(session: AsyncSession, key: str) -> Team:
    team = await alerts.team_for_key(session, key)
    if team is None:
        raise ApiError(401, "Could not authenticate")
    return team


@asynccontextmanager
async def keyed(request: Request) -> AsyncIterator[tuple[AsyncSession, Team]]:
    """A transaction and the team of the key the request presents (401/403 when there is no
    such key): how a route that reads no body begins."""
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        yield session, await key_team(session, key)


async def read_body(request: Request) -> bytes:
    """The raw body, at most ``MAX_BODY`` bytes (413 beyond), read before any transaction opens."""
    length = request.headers.get("content-length", "")
    if re.fullmatch(r"[0-9]{1,20}", length) and int(length) > MAX_BODY:
        raise ApiError(413, f"Request body is too large (at most {MAX_BODY // 1024} KiB).")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY:
            raise ApiError(413, f"Request body is too large (at most {MAX_BODY // 1024} KiB).")
    return bytes(body)


def storable(text: str) -> bool:
    """Text a database can keep: no NUL (PostgreSQL refuses it), no lone surrogates (JSON's
    ``"\\ud800"`` is valid JSON but not UTF-8)."""
    if "\x00" in text:
        return False
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _all_storable(value: Any) -> bool:
    if isinstance(value, str):
        return storable(value)
    if isinstance(value, dict):
        return all(_all_storable(k) and _all_storable(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_all_storable(v) for v in value)
    return True


#: Where a body's text might not be storable: a ``\\u`` escape (the only way JSON text holds a NUL
#: or a lone surrogate, but for the next two), a NUL byte (a raw one is refused by the parser;
#: UTF-16 and UTF-32 bodies hold them), a surrogate encoded as UTF-8 (``json`` decodes bytes with
#: ``surrogatepass``). A body with none has only storable text: ``parse_json`` need not look.
_MAYBE_UNSTORABLE = re.compile(rb"\\u|\x00|\xed[\xa0-\xbf]")


def parse_json(raw: bytes) -> dict[str, Any]:
    """A JSON object; an empty body is ``{}``. 400 for invalid JSON (OpsGenie's "syntax error
    only"), 422 for valid JSON that is not an object or holds text that can't be stored."""
    if not raw.strip():
        return {}
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, "Could not parse request body: it is not valid JSON.") from None
    if not isinstance(body, dict):
        raise ValidationFailed({"body": "the request body must be a JSON object"})
    if _MAYBE_UNSTORABLE.search(raw) is None:
        return body
    bad = {
        str(k) if storable(str(k)) else "body": "text must be valid Unicode without NUL characters"
        for k, v in body.items()
        if not (_all_storable(k) and _all_storable(v))
    }
    if bad:
        raise ValidationFailed(bad)
    return body


@dataclass(frozen=True)
class ActionFields:
    user: str | None
    source: str | None
    note: str | None


def action_fields(body: dict[str, Any], note_required: bool = False) -> ActionFields:
    """``user``, ``source`` and ``note`` of an action body, within OpsGenie's limits."""
    errors: dict[str, str] = {}
    values: dict[str, str | None] = {}
    for name in ("user", "source", "note"):
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            errors[name] = f"{name} must be a string"
        elif value is not None and len(value) > alerts.LIMITS[name]:
            errors[name] = f"{name} can not be longer than {alerts.LIMITS[name]} characters"
        values[name] = value if isinstance(value, str) and value.strip() else None
    if note_required and "note" not in errors and values["note"] is None:
        errors["note"] = "Note can not be empty."
    if errors:
        raise ValidationFailed(errors)
    return ActionFields(**values)


def int_param(request: Request, name: str, default: int, low: int, high: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not re.fullmatch(r"-?\d{1,9}", raw.strip()):
        raise ValidationFailed({name: f"{name} must be an integer"})
    value = int(raw)
    if value < low or (high is not None and value > high):
        raise ValidationFailed(
            {name: f"{name} must be between {low} and {high}" if high is not None else f"{name} must be at least {low}"}
        )
    return value


def order_param(request: Request) -> bool:
    """``order=desc`` (default) → True."""
    order = request.query_params.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise ValidationFailed({"order": "order must be asc or desc"})
    return order == "desc"


# --- the query language ----------------------------------------------------------------------
QUERY_KEYS = (
    "status",
    "acknowledged",
    "priority",
    "alias",
    "tag",
    "tags",
    "source",
    "entity",
    "message",
    "tinyId",
    "owner",
    "teams",
)
_TERM = re.compile(r"^([A-Za-z]+)[:=](.*)$", re.S)


def parse_query(query: str) -> list[tuple[str, Any]]:
    """``status:open AND priority:P1 tag:db message:"disk full"`` → ``[(key, value), …]``.

    Whitespace-separated ``key:value`` (or ``key=value``) terms, all of which must hold; ``AND``
    between them is optional; double quotes keep spaces in a value. Keys: status (open,
    closed), acknowledged (true, false), priority (P1–P5), alias, tag (or tags), source,
    entity, message (case-insensitive substring), tinyId, owner (the assignee's email), teams
    (the owning team's name or id). A word without a key is free text: found (ignoring case)
    in the message, alias, description or entity. Anything else is a 422 that says what is
    supported."""
    if len(query) > MAX_QUERY_LENGTH or not storable(query):
        raise ValidationFailed({"query": f"the query must be valid text of at most {MAX_QUERY_LENGTH} characters"})
    try:
        words = shlex.split(query)
    except ValueError:
        raise ValidationFailed({"query": "the query has an unbalanced quote"}) from None
    if len([w for w in words if w.upper() != "AND"]) > MAX_QUERY_TERMS:
        raise ValidationFailed({"query": f"the query may have at most {MAX_QUERY_TERMS} terms"})
    known = {k.lower(): k for k in QUERY_KEYS}
    terms: list[tuple[str, Any]] = []
    for word in words:
        if word.upper() == "AND":
            continue
        if word.upper() in ("OR", "NOT"):
            raise ValidationFailed({"query": f"{word.upper()} is not supported; terms are combined with AND"})
        match = _TERM.match(word)
        if match is None and word.strip():
            terms.append(("text", word))
            continue
        if match is None or match.group(1).lower() not in known:
            raise ValidationFailed(
                {"query": f"{word!r} is not a supported term; use key:value with a key among {', '.join(QUERY_KEYS)}"}
            )
        key, value = known[match.group(1).lower()], match.group(2)
        if key == "tags":
            key = "tag"
        if key == "status":
            if value.lower() not in tuple(AlertStatus):
                raise ValidationFailed({"query": "status must be open or closed"})
            value = value.lower()
        elif key == "acknowledged":
            if value.lower() not in ("true", "false"):
                raise ValidationFailed({"query": "acknowledged must be true or false"})
            value = value.lower() == "true"
        elif key == "priority":
            if value.upper() not in alerts.PRIORITIES:
                raise ValidationFailed({"query": "priority must be one of P1, P2, P3, P4, P5"})
            value = value.upper()
        elif key == "tinyId":
            if not is_id(value):
                raise ValidationFailed({"query": "tinyId must be a number"})
            value = int(value)
        elif not value:
            raise ValidationFailed({"query": f"{key} needs a value ({key}:something)"})
        terms.append((key, value))
    return terms


# --- presenting ------------------------------------------------------------------------------
def iso(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(since: datetime, until: datetime | None) -> int | None:
    return None if until is None else max(0, int((until - since).total_seconds() * 1000))


async def present(session: AsyncSession, found: list[Alert], full: bool) -> list[dict[str, Any]]:
    """OpsGenie's alert objects (``full``: with description and details, as ``GET`` one)."""
    teams_by_id = await teams.teams_by_id(session, {a.team_id for a in found if a.team_id is not None})
    owners = await users.users_by_id(session, {a.owner_user_id for a in found if a.owner_user_id is not None})
    named_teams = await teams.teams_by_name(
        session,
        {
            r["name"]
            for a in found
            for r in a.responders or []
            if isinstance(r, dict) and r.get("type") == "team" and not r.get("id") and isinstance(r.get("name"), str)
        },
    )
    named_users = await users.users_by_email(
        session,
        {
            r["username"].strip().lower()
            for a in found
            for r in a.responders or []
            if isinstance(r, dict)
            and r.get("type") == "user"
            and not r.get("id")
            and isinstance(r.get("username"), str)
        },
    )
    now = utcnow()
    shown = []
    for a in found:
        team = teams_by_id.get(a.team_id) if a.team_id is not None else None
        owner = owners.get(a.owner_user_id) if a.owner_user_id is not None else None
        responders = [_responder(r, named_teams, named_users) for r in a.responders or [] if isinstance(r, dict)]
        if team is not None and not any(r["type"] == "team" and r["id"] == str(team.id) for r in responders):
            responders.insert(0, {"type": "team", "id": str(team.id), "name": team.name})
        snoozed = a.status == AlertStatus.OPEN and a.snoozed_until is not None and a.snoozed_until > now
        report = {
            "ackTime": _ms(a.created_at, a.acknowledged_at),
            "closeTime": _ms(a.created_at, a.closed_at),
            "acknowledgedBy": a.acknowledged_by,
            "closedBy": a.closed_by,
        }
        item = {
            "id": a.uid,
            "tinyId": str(a.id),
            "alias": a.alias,
            "message": a.message,
            "status": a.status,
            "acknowledged": a.acknowledged,
            "isSeen": False,
            "tags": list(a.tags or []),
            "snoozed": snoozed,
            "count": a.count,
            "lastOccurredAt": iso(a.last_occurred_at),
            "createdAt": iso(a.created_at),
            "updatedAt": iso(a.updated_at),
            "source": a.source or "",
            "owner": owner.email if owner else "",
            "priority": a.priority,
            "responders": responders,
            "ownerTeamId": str(team.id) if team else "",
            "integration": {"id": str(team.id) if team else "", "name": team.name if team else "", "type": "API"},
            "report": {k: v for k, v in report.items() if v is not None},
            "entity": a.entity or "",
        }
        if snoozed:
            item["snoozedUntil"] = iso(a.snoozed_until)
        if full:
            item.update(description=a.description or "", details=dict(a.details or {}), actions=[])
        shown.append(item)
    return shown


def _responder(stored: dict[str, Any], named_teams: dict[str, Team], named_users: dict[str, Any]) -> dict[str, Any]:
    """A stored responder as OpsGenie returns it: always a ``type`` and an ``id`` (clients
    that model responders require both); a team's ``name``, a person's ``username``. A team
    or a person named at create time gets its Genie id (else the id is the name given)."""
    kind = stored.get("type") if stored.get("type") in ("team", "user", "escalation", "schedule") else "team"
    given = {k: stored[k] for k in ("id", "name", "username") if isinstance(stored.get(k), str) and stored[k]}
    if kind == "team" and "id" not in given and given.get("name") in named_teams:
        given["id"] = str(named_teams[given["name"]].id)
    if kind == "user" and "id" not in given and given.get("username", "").strip().lower() in named_users:
        given["id"] = str(named_users[given["username"].strip().lower()].id)
    shown = {"type": kind, "id": given.get("id") or given.get("username") or given.get("name") or ""}
    if kind == "user":
        shown["username"] = given.get("username") or given.get("name") or shown["id"]
    elif "name" in given:
        shown["name"] = given["name"]
    return shown


_VIA = {"api": "the API", "slack": "Slack", "cli": "the CLI", "web": "the web"}
_DONE = {
    AlertAction.CREATE: "created",
    AlertAction.DEDUPLICATE: "de-duplicated",
    AlertAction.ACKNOWLEDGE: "acknowledged",
    AlertAction.CLOSE: "closed",
    AlertAction.ASSIGN: "assigned",
    AlertAction.UNACKNOWLEDGE: "unacknowledged",
    AlertAction.SNOOZE: "snoozed",
    AlertAction.UPDATE: "updated",
    AlertAction.TAGS: "tags changed",
    AlertAction.DETAILS: "details changed",
    AlertAction.RESPONDER: "responder added",
    AlertAction.CUSTOM: "custom action run",
}


def log_line(event: AlertEvent) -> str:
    """One readable timeline line: what, who (and their Slack identity), how, outcome, why."""
    who = event.actor_name or "someone"
    if event.slack_user_id and event.slack_user_id not in who:
        who += f" (Slack {event.slack_user_id})"
    via = _VIA.get(event.via, event.via)
    if event.action == "note" and event.outcome == "applied":
        return f"Note added by {who} via {via}: {event.note}"
    if event.action == "page":  # bot.services.paging: who was paged, how, and what became of it
        return f"Paging ({event.outcome}) by {who}: {event.reason}"
    if event.action == "resolve":  # bot.services.alert_people: who the names were resolved to
        return f"People named by {who} via {via}: {event.reason}"
    if event.outcome == "applied":
        line = f"Alert {_DONE.get(event.action, event.action)} by {who} via {via}"
    elif event.outcome == "denied":
        line = f"{event.action.capitalize()} by {who} via {via} was denied"
    else:
        line = f"{event.action.capitalize()} by {who} via {via} changed nothing"
    if event.reason:
        line += f" — {event.reason}"
    if event.note:
        line += f" — note: {event.note}"
    return line


async def _event_owners(session: AsyncSession, events: list[AlertEvent]) -> dict[int, str]:
    actors = await users.users_by_id(session, {e.actor_user_id for e in events if e.actor_user_id is not None})
    return {uid: u.email for uid, u in actors.items()}


async def _page_of_events(
    session: AsyncSession, request: Request, alert_id: int, notes_only: bool = False
) -> tuple[list[AlertEvent], dict[str, str]]:
    """OpsGenie's cursor paging for notes and logs: ``offset`` is an item's ``offset``;
    ``direction=next`` (default) continues after it in ``order``, ``prev`` goes back. Only the
    page is read from the database (``alerts.timeline_page``)."""
    descending = order_param(request)
    limit = int_param(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    direction = request.query_params.get("direction", "next").lower()
    if direction not in ("next", "prev"):
        raise ValidationFailed({"direction": "direction must be next or prev"})
    offset = request.query_params.get("offset", "")
    if offset and not is_id(offset):
        raise ValidationFailed({"offset": "offset must be the offset of an item of a previous page"})
    page, more = await alerts.timeline_page(
        session,
        alert_id,
        limit=limit,
        descending=descending,
        cursor=int(offset) if offset else None,
        backwards=bool(offset) and direction == "prev",
        notes_only=notes_only,
    )
    paging: dict[str, str] = {}
    if more and page:
        params = dict(request.query_params) | {"offset": str(page[-1].id), "direction": "next", "limit": str(limit)}
        paging["next"] = f"{_base(request)}{quote(request.url.path)}?{urlencode(params)}"
    return page, paging


def _base(request: Request) -> str:
    return request.app.state.runtime.settings.base_url.rstrip("/")


# --- handlers --------------------------------------------------------------------------------
async def _find(session: AsyncSession, request: Request, team: Team) -> Alert:
    """The one gate of every call on an alert: the alert the path names, among those the key's
    team may see and act on (``access.key_teams``: its own team only; a grant is for posting); any other is "does not exist"."""
    if not storable(request.path_params["identifier"]):
        raise NotFound("Alert with given id does not exist")
    return await alerts.find(
        session,
        request.path_params["identifier"],
        request.query_params.get("identifierType", "id") or "id",
        team_ids=await access.key_teams(session, team, access.KeyUse.READ_AND_ACT),
    )


@endpoint
async def create_alert(request: Request, call: Call) -> Response:
    """Written with the other alerts of the moment in one transaction (``ingest_batch``): the
    202 comes once that transaction committed, as it always did."""
    key = presented_key(request)
    raw = await read_body(request)
    data: alerts.CreateAlert | Exception
    try:
        data = alerts.parse_create(parse_json(raw))
    except (ApiError, ValidationFailed) as err:  # answered once the key is known good (else 401)
        data = err
    try:
        done = await _batcher(request).create(key, data, call.request_id)
    except ingest_batch.UnknownKey:
        raise ApiError(401, "Could not authenticate") from None
    call.outbox_channel = done.channel  # its post (or, de-duplicated, its update) goes there
    call.outbox_lane = done.lane
    call.paging = done.escalated  # the engine looks only when a timer was set
    return call.accepted()  # committed: a 202 alert is never lost


def _batcher(request: Request) -> ingest_batch.IngestBatcher:
    """The process's one ingest writer (made with the app's first alert)."""
    state = request.app.state
    batcher = getattr(state, "ingest_batcher", None)
    if batcher is None:
        runtime = state.runtime
        batcher = state.ingest_batcher = ingest_batch.IngestBatcher(lambda: runtime.sessionmaker)
    return batcher


@endpoint
async def request_status(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        request_id = request.path_params["requestId"]
        found = (
            await alerts.api_request(session, request_id, team.id)
            if len(request_id) <= 36 and storable(request_id)
            else None
        )
    if found is None:
        raise ApiError(404, "Request does not exist")
    row, alert = found
    return call.answer(
        200,
        data={
            "success": row.success,
            "action": row.action,
            "processedAt": iso(row.processed_at),
            "integrationId": str(row.team_id),
            "isSuccess": row.success,
            "status": row.status,
            "alertId": alert.uid if alert else "",
            "alias": row.alias or "",
        },
    )


@endpoint
async def get_alert(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        alert = await _find(session, request, team)
        [shown] = await present(session, [alert], full=True)
    return call.answer(200, data=shown)


@endpoint
async def list_alerts(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
        offset = int_param(request, "offset", 0, 0)
        sort = request.query_params.get("sort", "createdAt")
        if sort not in alerts.ALERT_SORTS:
            raise ValidationFailed({"sort": f"sort must be one of {', '.join(alerts.ALERT_SORTS)}"})
        descending = order_param(request)
        terms = parse_query(request.query_params.get("query", ""))
        total, page = await alerts.search_alerts(
            session,
            await access.key_teams(session, team, access.KeyUse.READ_AND_ACT),
            terms,
            sort=sort,
            descending=descending,
            offset=offset,
            limit=limit,
        )
        shown = await present(session, page, full=False)

    def url(at: int) -> str:
        params = {
            "query": request.query_params.get("query", ""),
            "offset": at,
            "limit": limit,
            "sort": sort,
            "order": "desc" if descending else "asc",
        }
        return f"{_base(request)}/v2/alerts?{urlencode(params)}"

    paging = {"first": url(0), "last": url(max(0, (total - 1) // limit * limit))}
    if offset + limit < total:
        paging["next"] = url(offset + limit)
    if offset > 0:
        paging["prev"] = url(max(0, offset - limit))
    return call.answer(200, data=shown, paging=paging)


ActionFn = Callable[..., Awaitable[Any]]


def _transition(action: str, status: str, fn: ActionFn) -> Callable[[Request], Awaitable[Response]]:
    """Acknowledge / Close: applied before the 202; "already done" is a 202 whose request
    status says ``isSuccess: false`` and why, in OpsGenie's words ("Alert is already
    closed"), as OpsGenie does."""

    async def handler(request: Request, call: Call) -> Response:
        key = presented_key(request)
        raw = await read_body(request)
        async with request.app.state.runtime.sessionmaker.begin() as session:
            team = await key_team(session, key)
            fields = action_fields(parse_json(raw))
            alert = await _find(session, request, team)
            actor = Actor(via="api", label=fields.user or f"API ({team.name})")
            try:
                await fn(session, alert, actor, note=fields.note, request_id=call.request_id)
                success, text = True, status
            except AlreadyDone as err:
                success, text = False, err.opsgenie
            await alerts.record_api_request(session, call.request_id, team, action, alert, success, text)
        return call.accepted()

    handler.__name__ = action.lower()
    return endpoint(handler)


async def _assignee(session: AsyncSession, owner: Any, alert: Alert) -> tuple[Any, str | None]:
    """``{"id": …}`` or ``{"username": …}`` → ``(user, how it was named)``; 422 otherwise.

    Looked up among the alert's team only (``access.team_people``): anyone else — another
    team's person or nobody at all — is a 422 in the same words that names only what the
    request gave and writes nothing, so a key learns nothing about people outside its team.

    ``id``: a Genie user id (a number), else an OpsGenie user id; ``username``: a Genie email,
    else an OpsGenie username, else an email of one person's connected account; either may be
    ``provider:value`` (``github:alice-s``, ``pagerduty:PXPGF42``). Never a guess: a name that
    fits two people, or nobody, is "User does not exist" (``bot.services.alert_people``)."""
    if not isinstance(owner, dict):
        raise ValidationFailed({"owner": 'owner must be an object: {"id": "<user id>"} or {"username": "<email>"}'})
    user, named = None, None
    user_id, username = owner.get("id"), owner.get("username")
    among = access.team_people(alert.team_id) if alert.team_id is not None else None
    members = await access.team_people_ids(session, alert.team_id)
    team = await teams.team_by_id(session, alert.team_id) if alert.team_id is not None else None
    if (isinstance(user_id, int) and not isinstance(user_id, bool)) or (
        isinstance(user_id, str) and re.fullmatch(r"[0-9]+", user_id.strip())
    ):
        given = str(user_id).strip()
        user = await users.user_by_id(session, int(user_id)) if is_id(str(user_id).strip()) else None
    elif isinstance(username, str) and 0 < len(username) <= 254:
        given = username
        user = await users.user_by_email(session, username)
        if user is None or user.id not in members:
            user, named = None, await alert_people.name_owner(session, {"username": username}, among)
    elif isinstance(user_id, str) and 0 < len(user_id.strip()) <= 254:
        given = user_id
        named = await alert_people.name_owner(session, {"id": user_id}, among)
    else:
        raise ValidationFailed(
            {
                "owner": 'owner needs an "id" (Genie or OpsGenie user id) or a "username" '
                "(email, OpsGenie username, or provider:name)"
            }
        )
    shown = given if len(given) <= 100 else given[:99] + "…"
    text = (
        f"{shown} is not an active member of {team.name}, so can't be assigned this alert."
        if team is not None
        else "This alert has no owning team, so it can't be assigned."
    )
    outsider = ValidationFailed({"owner": text})
    if user is not None and user.id not in members:
        raise outsider
    if named is not None:
        if named.person is None and named.why == "nobody":
            raise outsider
        if named.person is None:
            text = (
                f"User does not exist: {named.given!r} does not name exactly one active member of "
                f"{team.name if team else 'the team'} (it names {named.why or 'nobody'})"
            )
            raise ValidationFailed({"owner": text})
        user = named.person
        if named.given.strip().lower() != user.email:
            return user, f"{named.given} ({named.provider or 'email'})"
    if user is None:
        raise outsider
    return user, None


@endpoint
async def assign_alert(request: Request, call: Call) -> Response:
    key = presented_key(request)
    raw = await read_body(request)
    refused: str | None = None
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        body = parse_json(raw)
        fields = action_fields(body)
        alert = await _find(session, request, team)
        owner, named = await _assignee(session, body.get("owner"), alert)
        actor = Actor(via="api", label=fields.user or f"API ({team.name})")
        try:
            await alerts.assign(session, alert, actor, owner, note=fields.note, request_id=call.request_id, named=named)
            success, text = True, f"Assigned alert to {owner.email}"
        except AlreadyDone as err:
            success, text = False, err.opsgenie
        except Forbidden as err:  # kept: the denial is on the timeline and in the request status
            success, text = False, str(err)
            refused = text
        await alerts.record_api_request(session, call.request_id, team, "Assign", alert, success, text)
    if refused is not None:
        raise ApiError(422, refused, errors={"owner": refused})
    return call.accepted()


@endpoint
async def add_note(request: Request, call: Call) -> Response:
    key = presented_key(request)
    raw = await read_body(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        fields = action_fields(parse_json(raw), note_required=True)
        alert = await _find(session, request, team)
        actor = Actor(via="api", label=fields.user or f"API ({team.name})")
        await alerts.add_note(session, alert, actor, fields.note or "", request_id=call.request_id)
        await alerts.record_api_request(session, call.request_id, team, "AddNote", alert, True, "Added note")
    return call.accepted()


@endpoint
async def list_notes(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        alert = await _find(session, request, team)
        page, paging = await _page_of_events(session, request, alert.id, notes_only=True)
        owners = await _event_owners(session, page)
    data = [
        {
            "note": e.note,
            "owner": owners.get(e.actor_user_id or 0, e.actor_name or ""),
            "createdAt": iso(e.at),
            "offset": str(e.id),
        }
        for e in page
    ]
    return call.answer(200, data=data, paging=paging)


@endpoint
async def list_logs(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        alert = await _find(session, request, team)
        page, paging = await _page_of_events(session, request, alert.id)
        owners = await _event_owners(session, page)
    data = [
        {
            "log": log_line(e),
            "type": "note" if e.action == "note" else "system",
            "owner": owners.get(e.actor_user_id or 0, e.actor_name or ""),
            "createdAt": iso(e.at),
            "offset": str(e.id),
        }
        for e in page
    ]
    return call.answer(200, data=data, paging=paging)


def _actor(team: Team, fields: ActionFields) -> Actor:
    return Actor(via="api", label=fields.user or f"API ({team.name})")


Change = Callable[[AsyncSession, Team, Alert, Actor, dict[str, Any], ActionFields, str], Awaitable[str | None]]


async def _change(
    request: Request, call: Call, action: str, change: Change, *, body_in_query: bool = False
) -> Response:
    """An asynchronous action on one alert (OpsGenie's 202 + ``requestId``): the key's team,
    the body (for DELETE: ``user``, ``source``, ``note`` in the query), the alert through
    ``_find``, then ``change`` — which validates first and raises on bad input, so a refusal
    rolls the whole transaction back — and its request status. ``AlreadyDone`` is a 202 whose
    status says why, as OpsGenie does."""
    key = presented_key(request)
    raw = b"" if body_in_query else await read_body(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        body = (
            {k: request.query_params[k] for k in ("user", "source", "note") if k in request.query_params}
            if body_in_query
            else parse_json(raw)
        )
        if body_in_query and not all(storable(v) for v in body.values()):
            raise ValidationFailed({k: "text must be valid Unicode without NUL characters" for k in body})
        fields = action_fields(body)
        alert = await _find(session, request, team)
        call.outbox_channel = alert.slack_channel
        try:
            success, text = (
                True,
                await change(session, team, alert, _actor(team, fields), body, fields, call.request_id),
            )
        except AlreadyDone as err:
            success, text = False, err.opsgenie
        if text is not None:  # None: ``change`` recorded it (delete does, before the alert goes)
            await alerts.record_api_request(session, call.request_id, team, action, alert, success, text)
    return call.accepted()


def _text_field(body: dict[str, Any], name: str, limit: int, required: bool = True) -> str:
    value = body.get(name)
    if value is None and not required:
        return ""
    if value is not None and not isinstance(value, str):
        raise ValidationFailed({name: f"{name} must be a string"})
    if value is None or (required and not value.strip()):
        raise ValidationFailed({name: f"{name.capitalize()} can not be empty."})
    if len(value) > limit:
        raise ValidationFailed({name: f"{name} can not be longer than {limit} characters"})
    return value.strip() if name == "message" else value


def _update(name: str) -> Change:
    """PUT message / description / priority."""

    async def change(session, team, alert, actor, body, fields, request_id) -> str:
        if name == "priority":
            value = body.get("priority")
            if value not in alerts.PRIORITIES:
                raise ValidationFailed({"priority": "priority must be one of P1, P2, P3, P4, P5"})
        else:  # Alertmanager sends {} when its description renders empty: the description is cleared
            value = _text_field(body, name, alerts.LIMITS[name], required=name == "message")
        changed = await alerts.update_field(session, alert, actor, name, value, request_id=request_id)
        return f"Updated {name}" if changed else f"Alert {name} is already that"

    change.__name__ = f"update_{name}"
    return change


def _string_list(value: Any, name: str, limit: int, each: int) -> list[str]:
    if (
        not isinstance(value, list)
        or not value
        or len(value) > limit
        or not all(isinstance(v, str) and v.strip() and len(v) <= each for v in value)
    ):
        raise ValidationFailed(
            {name: f"{name} must be a list of 1 to {limit} non-empty strings of at most {each} characters"}
        )
    return [v.strip() for v in value]


def _query_list(request: Request, name: str, each: int) -> list[str]:
    raw = request.query_params.get(name, "")
    if not storable(raw):
        raise ValidationFailed({name: "text must be valid Unicode without NUL characters"})
    return _string_list([v for v in raw.split(",") if v.strip()], name, 50, each)


async def _tags_add(session, team, alert, actor, body, fields, request_id) -> str:
    tags = _string_list(body.get("tags"), "tags", alerts.MAX_TAGS, alerts.MAX_TAG)
    await alerts.change_tags(session, alert, actor, add=tags, note=fields.note, request_id=request_id)
    return "Added tags"


def _tags_remove(request: Request) -> Change:
    async def change(session, team, alert, actor, body, fields, request_id) -> str:
        tags = _query_list(request, "tags", alerts.MAX_TAG)
        await alerts.change_tags(session, alert, actor, remove=tags, note=fields.note, request_id=request_id)
        return "Removed tags"

    return change


async def _details_add(session, team, alert, actor, body, fields, request_id) -> str:
    details = body.get("details")
    if (
        not isinstance(details, dict)
        or not details
        or not all(
            isinstance(k, str) and k.strip() and isinstance(v, (str, int, float, bool)) for k, v in details.items()
        )
    ):
        raise ValidationFailed({"details": "details must be a non-empty object of string keys and string values"})
    as_text = {
        k: v if isinstance(v, str) else str(v).lower() if isinstance(v, bool) else str(v) for k, v in details.items()
    }
    await alerts.change_details(session, alert, actor, add=as_text, note=fields.note, request_id=request_id)
    return "Added details"


def _details_remove(request: Request) -> Change:
    async def change(session, team, alert, actor, body, fields, request_id) -> str:
        keys = _query_list(request, "keys", 1000)
        await alerts.change_details(session, alert, actor, remove=keys, note=fields.note, request_id=request_id)
        return "Removed details"

    return change


async def _named_team(session: AsyncSession, given: Any, name: str) -> Team:
    """``{"id": …}`` or ``{"name": …}`` → a Genie team; 422 when it names none."""
    if not isinstance(given, dict):
        raise ValidationFailed({name: f'{name} must be an object: {{"id": "<team id>"}} or {{"name": "<team name>"}}'})
    team_id, team_name = given.get("id"), given.get("name")
    team = None
    if isinstance(team_id, str) and is_id(team_id.strip()):
        team = await teams.team_by_id(session, int(team_id.strip()))
    elif isinstance(team_name, str) and 0 < len(team_name) <= 100:
        team = await teams.team_by_name(session, team_name)
    if team is None:
        raise ValidationFailed({name: "Team does not exist"})
    return team


async def _add_team(session, team, alert, actor, body, fields, request_id) -> str:
    added = await _named_team(session, body.get("team"), "team")
    await alerts.add_responder(session, alert, actor, team=added, note=fields.note, request_id=request_id)
    return "Added team"


async def _add_responder(session, team, alert, actor, body, fields, request_id) -> str:
    responder = body.get("responder")
    if not isinstance(responder, dict) or responder.get("type") not in ("team", "user"):
        raise ValidationFailed({"responder": 'responder must be {"type": "team" or "user", "id" or "name"/"username"}'})
    if responder["type"] == "team":
        added = await _named_team(session, responder, "responder")
        await alerts.add_responder(session, alert, actor, team=added, note=fields.note, request_id=request_id)
    else:
        try:
            # Among the alert's team only, as for assign: a key learns nothing of other teams' people.
            user, _ = await _assignee(session, {k: v for k, v in responder.items() if k in ("id", "username")}, alert)
        except ValidationFailed as err:
            said = err.errors.get("owner", "User does not exist").replace(
                "be assigned this alert", "be a responder of this alert"
            )
            raise ValidationFailed({"responder": said}) from None
        if not user.is_active:
            raise ValidationFailed({"responder": "User does not exist"})
        await alerts.add_responder(session, alert, actor, user=user, note=fields.note, request_id=request_id)
    return "Added responder"


MAX_SNOOZE = timedelta(days=366)


async def _snooze(session, team, alert, actor, body, fields, request_id) -> str:
    raw, now = body.get("endTime"), utcnow()
    try:
        end = (
            datetime.fromisoformat(raw.strip().replace("Z", "+00:00"))
            if isinstance(raw, str) and len(raw) < 60
            else None
        )
        if end is not None and end.tzinfo is None:
            end = end.replace(tzinfo=UTC)
        end = end.astimezone(UTC) if end is not None else None
    except (ValueError, OverflowError):
        end = None
    if end is None:
        raise ValidationFailed({"endTime": "endTime must be a date and time in ISO 8601 (2026-11-25T10:00:00Z)"})
    if not now < end <= now + MAX_SNOOZE:
        raise ValidationFailed({"endTime": "endTime must be in the future, at most 366 days ahead"})
    await alerts.snooze(session, alert, actor, end, note=fields.note, request_id=request_id)
    return "Snoozed alert"


def _custom_action(request: Request) -> Change:
    async def change(session, team, alert, actor, body, fields, request_id) -> str:
        name = request.path_params["action"]
        if not name.strip() or len(name) > 100 or not storable(name):
            raise ValidationFailed({"action": "the action name must be 1 to 100 characters"})
        await alerts.custom_action(session, alert, actor, name, note=fields.note, request_id=request_id)
        return f"Executed custom action {name}"

    return change


@endpoint
async def unacknowledge_alert(request: Request, call: Call) -> Response:
    return await _transition_call(request, call, "UnAcknowledge", "Unacknowledged alert", alerts.unacknowledge)


async def _transition_call(request: Request, call: Call, action: str, status: str, fn: ActionFn) -> Response:
    async def change(session, team, alert, actor, body, fields, request_id) -> str:
        await fn(session, alert, actor, note=fields.note, request_id=request_id)
        return status

    return await _change(request, call, action, change)


@endpoint
async def snooze_alert(request: Request, call: Call) -> Response:
    return await _change(request, call, "Snooze", _snooze)


def _escalate(now: datetime) -> Change:
    """The next step of the alert's escalation fires now (``paging.escalate_now``); an alert of
    a team with no escalation policy is a 422 that changes nothing."""

    async def change(session, team, alert, actor, body, fields, request_id) -> str:
        try:
            fired = await paging.escalate_now(
                session, alert, actor, now, named=body.get("escalation"), note=fields.note, request_id=request_id
            )
        except InvalidInput as err:  # no policy, or not this one: 422 naming the field, nothing changed
            raise ApiError(422, f"escalation: {err}", errors={"escalation": str(err)}) from None
        return f"Escalated alert to next ({fired})"

    return change


def _changing(
    action: str, change: Any, *, per_request: bool = False, body_in_query: bool = False
) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of an asynchronous action on one alert (``_change``): ``change`` is the
    ``Change``, or with ``per_request`` a function of the request that makes it."""

    async def handler(request: Request, call: Call) -> Response:
        return await _change(
            request, call, action, change(request) if per_request else change, body_in_query=body_in_query
        )

    return endpoint(handler)


add_responder = _changing("AddResponder", _add_responder)
add_team = _changing("AddTeam", _add_team)
add_tags = _changing("AddTags", _tags_add)
remove_tags = _changing("RemoveTags", _tags_remove, per_request=True, body_in_query=True)
add_details = _changing("AddDetails", _details_add)
remove_details = _changing("RemoveDetails", _details_remove, per_request=True, body_in_query=True)
update_message = _changing("UpdateMessage", _update("message"))
update_description = _changing("UpdateDescription", _update("description"))
update_priority = _changing("UpdatePriority", _update("priority"))
escalate_alert = _changing(
    "EscalateToNext", lambda request: _escalate(request.app.state.runtime.now()), per_request=True
)
custom_action = _changing("ExecuteCustomAction", _custom_action, per_request=True)


@endpoint
async def delete_alert(request: Request, call: Call) -> Response:
    """Gone for good (GET answers 404 after); its request status keeps the alias."""

    async def change(session, team, alert, actor, body, fields, request_id) -> None:
        await alerts.record_api_request(session, request_id, team, "Delete", alert, True, "Deleted alert")
        await alerts.delete(session, alert, actor)

    return await _change(request, call, "Delete", change, body_in_query=True)


@endpoint
async def count_alerts(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        terms = parse_query(request.query_params.get("query", ""))
        total, _ = await alerts.search_alerts(
            session, await access.key_teams(session, team, access.KeyUse.READ_AND_ACT), terms, limit=0
        )
    return call.answer(200, data={"count": total})


@endpoint
async def list_recipients(request: Request, call: Call) -> Response:
    async with keyed(request) as (session, team):
        alert = await _find(session, request, team)
        told = await alerts.recipients(session, alert)
    data = [
        {
            "user": {"id": str(r["user"].id), "username": r["user"].email},
            "state": r["state"],
            "method": r["method"],
            "createdAt": iso(r["at"]),
            "updatedAt": iso(r["at"]),
        }
        for r in told
    ]
    return call.answer(200, data=data)


@endpoint
async def not_supported(request: Request, call: Call) -> Response:
    """Anything else under ``/v2`` (and the JSM prefix): 405 for a path served with another
    method, else 404. Asks the whole app's routes, so routes mounted before this catch-all by
    other modules (heartbeats) are reported too."""
    allowed = sorted(
        {
            m
            for r in request.app.routes
            if getattr(r, "endpoint", None) not in (not_supported, not_served)
            and r.matches(request.scope)[0] is Match.PARTIAL
            for m in getattr(r, "methods", None) or ()
        }
    )
    missing = f"Genie does not implement {request.method} {request.url.path}"
    if allowed:
        raise ApiError(
            405, f"{missing} (this path answers {', '.join(allowed)}).", headers={"Allow": ", ".join(allowed)}
        )
    raise ApiError(404, f"{missing}.")


@endpoint
async def not_served(request: Request, call: Call) -> Response:
    """OpsGenie features Genie does not have (saved searches, attachments), whose paths would
    otherwise read as an alert's id: an OpsGenie-style 404 that says so (to a valid key)."""
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        await key_team(session, key)
    raise ApiError(
        404,
        f"Genie does not implement {request.method} {request.url.path} "
        "(saved searches and attachments are not supported).",
    )


_ANY = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]

#: Atlassian's Jira Service Management moves OpsGenie's API under this prefix; Genie serves
#: both, so a client already moved to JSM can be pointed at Genie too.
JSM_PREFIX = "/jsm/ops/integration"


def _served(path: str, handler: Callable[[Request], Awaitable[Response]], methods: list[str]) -> list[Route]:
    """``path`` with and without a trailing slash (served directly, never redirected: clients
    drop ``Authorization`` on a redirect), under ``/v2`` and under the JSM prefix. The slashed
    form comes first: ``{identifier:path}`` would otherwise take the slash into the id."""
    return [
        Route(f"{prefix}{path}{slash}", handler, methods=methods) for prefix in ("", JSM_PREFIX) for slash in ("/", "")
    ]


_ID = "/v2/alerts/{identifier:path}"
routes = [
    *_served("/v2/alerts", create_alert, ["POST"]),
    *_served("/v2/alerts", list_alerts, ["GET"]),
    *_served("/v2/alerts/count", count_alerts, ["GET"]),
    *_served("/v2/alerts/requests/{requestId}", request_status, ["GET"]),
    *_served("/v2/alerts/saved-searches", not_served, _ANY),
    *_served("/v2/alerts/saved-searches/{rest:path}", not_served, _ANY),
    *_served(f"{_ID}/attachments", not_served, _ANY),
    *_served(_ID + "/attachments/{rest:path}", not_served, _ANY),
    *_served(f"{_ID}/acknowledge", _transition("Acknowledge", "Acknowledged alert", alerts.acknowledge), ["POST"]),
    *_served(f"{_ID}/unacknowledge", unacknowledge_alert, ["POST"]),
    *_served(f"{_ID}/close", _transition("Close", "Closed alert", alerts.close), ["POST"]),
    *_served(f"{_ID}/snooze", snooze_alert, ["POST"]),
    *_served(f"{_ID}/escalate", escalate_alert, ["POST"]),
    *_served(f"{_ID}/assign", assign_alert, ["POST"]),
    *_served(f"{_ID}/responders", add_responder, ["POST"]),
    *_served(f"{_ID}/teams", add_team, ["POST"]),
    *_served(f"{_ID}/tags", add_tags, ["POST"]),
    *_served(f"{_ID}/tags", remove_tags, ["DELETE"]),
    *_served(f"{_ID}/details", add_details, ["POST"]),
    *_served(f"{_ID}/details", remove_details, ["DELETE"]),
    *_served(f"{_ID}/message", update_message, ["PUT"]),
    *_served(f"{_ID}/description", update_description, ["PUT"]),
    *_served(f"{_ID}/priority", update_priority, ["PUT"]),
    *_served(f"{_ID}/notes", add_note, ["POST"]),
    *_served(f"{_ID}/notes", list_notes, ["GET"]),
    *_served(f"{_ID}/logs", list_logs, ["GET"]),
    *_served(f"{_ID}/recipients", list_recipients, ["GET"]),
    *_served(_ID + "/actions/{action}", custom_action, ["POST"]),
    *_served(_ID, get_alert, ["GET"]),
    *_served(_ID, delete_alert, ["DELETE"]),
    #: Last: mount other /v2 routers (heartbeats) before these two.
    Route("/v2/{path:path}", not_supported, methods=_ANY),
    Route(JSM_PREFIX + "/v2/{path:path}", not_supported, methods=_ANY),
]
