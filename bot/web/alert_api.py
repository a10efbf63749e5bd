"""The OpsGenie-compatible Alert API v2: same paths, JSON bodies, status codes, envelopes and
``Authorization: GenieKey <key>`` auth, so Alertmanager's ``opsgenie_configs``, Grafana's
OpsGenie contact point and OpsGenie scripts work by changing only the base URL.

    curl -X POST https://genie.example.com/v2/alerts -H "Authorization: GenieKey $KEY" \\
         -H "Content-Type: application/json" -d '{"message": "Disk full on db-1", "alias": "db-1-disk"}'
    → 202 {"result": "Request will be processed", "took": 0.012, "requestId": "…"}

Handlers only parse HTTP and call ``bot.services.alerts`` in one transaction; every response,
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
- Not implemented (404 or 405 with the usual envelope): delete, snooze, escalate, custom
  actions, tags/details/message/description/priority updates (keep Alertmanager's
  ``update_alerts`` off), saved searches, count. Query language: see ``parse_query``.
"""

from __future__ import annotations

import json
import logging
import re
import shlex
import time
import uuid
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Awaitable, Callable
from urllib.parse import quote, urlencode

from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Match, Route

from bot.services import alert_people, alerts
from bot.services.alerts import Actor, AlreadyDone, Forbidden, ValidationFailed
from bot.services.errors import AlreadyExists, GenieError, InvalidInput, NotFound
from storage import repositories as repo
from storage.models import Alert, AlertEvent, Team

logger = logging.getLogger(__name__)

#: Large enough for every field at its limit even when JSON-escaped (25,000 characters of note
#: as \uXXXX escapes alone is 150 KB); anything bigger is not an alert.
MAX_BODY = 1024 * 1024
MAX_LIMIT = 100
MAX_QUERY_TERMS = 20
MAX_QUERY_LENGTH = 2000
ACCEPTED = "Request will be processed"


class ApiError(Exception):
    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.errors, self.headers = status, message, errors, headers


@dataclass
class Call:
    """One API request: its id (answered in ``requestId``) and when it started (``took``)."""

    request_id: str
    started: float
    #: The Slack channel a handler queued a message to, when it knows (``Runtime.wake_outbox``).
    outbox_channel: str | None = None

    def answer(self, status: int, headers: dict[str, str] | None = None, **fields: Any) -> JSONResponse:
        took = round(time.monotonic() - self.started, 3)
        return JSONResponse({**fields, "took": took, "requestId": self.request_id}, status_code=status,
                            headers={"X-Request-ID": self.request_id, "X-Response-Time": str(took),
                                     "Cache-Control": "no-store", **(headers or {})})

    def accepted(self) -> JSONResponse:
        return self.answer(202, result=ACCEPTED)


Handler = Callable[[Request, Call], Awaitable[Response]]


def endpoint(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    """Gives the handler its ``Call`` and turns every failure into an OpsGenie-style answer."""

    async def run(request: Request) -> Response:
        call = Call(str(uuid.uuid4()), time.monotonic())
        try:
            response = await handler(request, call)
            if request.method == "POST" and response.status_code < 300:
                # Committed: let Slack hear of it now.
                request.app.state.runtime.wake_outbox(call.outbox_channel)
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
            logger.exception("unexpected error in %s %s (request %s)", request.method, request.url.path,
                             call.request_id)
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


def small_int(text: str) -> bool:
    """ASCII digits that fit the databases' integer ids (``"²".isdigit()`` is True, too)."""
    return re.fullmatch(r"[0-9]{1,10}", text) is not None and int(text) < 2**31


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
    bad = {str(k) if storable(str(k)) else "body": "text must be valid Unicode without NUL characters"
           for k, v in body.items() if not (_all_storable(k) and _all_storable(v))}
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
        raise ValidationFailed({name: f"{name} must be between {low} and {high}" if high is not None
                                else f"{name} must be at least {low}"})
    return value


def order_param(request: Request) -> bool:
    """``order=desc`` (default) → True."""
    order = request.query_params.get("order", "desc").lower()
    if order not in ("asc", "desc"):
        raise ValidationFailed({"order": "order must be asc or desc"})
    return order == "desc"


# --- the query language ----------------------------------------------------------------------
QUERY_KEYS = ("status", "acknowledged", "priority", "alias", "tag", "tags", "source", "entity", "message",
              "tinyId", "owner")
_TERM = re.compile(r"^([A-Za-z]+)[:=](.*)$", re.S)


def parse_query(query: str) -> list[tuple[str, Any]]:
    """``status:open AND priority:P1 tag:db message:"disk full"`` → ``[(key, value), …]``.

    Whitespace-separated ``key:value`` (or ``key=value``) terms, all of which must hold; ``AND``
    between them is optional; double quotes keep spaces in a value. Keys: status (open,
    closed), acknowledged (true, false), priority (P1–P5), alias, tag (or tags), source,
    entity, message (case-insensitive substring), tinyId, owner (the assignee's email).
    Anything else is a 422 that says what is supported."""
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
        if match is None or match.group(1).lower() not in known:
            raise ValidationFailed({"query": f"{word!r} is not a supported term; use key:value with a key among "
                                             f"{', '.join(QUERY_KEYS)}"})
        key, value = known[match.group(1).lower()], match.group(2)
        if key == "tags":
            key = "tag"
        if key == "status":
            if value.lower() not in ("open", "closed"):
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
            if not small_int(value):
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
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _ms(since: datetime, until: datetime | None) -> int | None:
    return None if until is None else max(0, int((until - since).total_seconds() * 1000))


async def present(session: AsyncSession, found: list[Alert], full: bool) -> list[dict[str, Any]]:
    """OpsGenie's alert objects (``full``: with description and details, as ``GET`` one)."""
    teams = await repo.teams_by_id(session, {a.team_id for a in found if a.team_id is not None})
    owners = await repo.users_by_id(session, {a.owner_user_id for a in found if a.owner_user_id is not None})
    shown = []
    for a in found:
        team = teams.get(a.team_id) if a.team_id is not None else None
        owner = owners.get(a.owner_user_id) if a.owner_user_id is not None else None
        responders = [dict(r) for r in a.responders or []]
        if team is not None and not any(r.get("type") == "team" for r in responders):
            responders.insert(0, {"type": "team", "id": str(team.id), "name": team.name})
        report = {"ackTime": _ms(a.created_at, a.acknowledged_at), "closeTime": _ms(a.created_at, a.closed_at),
                  "acknowledgedBy": a.acknowledged_by, "closedBy": a.closed_by}
        item = {
            "id": a.uid, "tinyId": str(a.id), "alias": a.alias, "message": a.message, "status": a.status,
            "acknowledged": a.acknowledged, "isSeen": False, "tags": list(a.tags or []), "snoozed": False,
            "count": a.count, "lastOccurredAt": iso(a.last_occurred_at), "createdAt": iso(a.created_at),
            "updatedAt": iso(a.updated_at), "source": a.source or "", "owner": owner.email if owner else "",
            "priority": a.priority, "responders": responders,
            "integration": {"id": str(team.id) if team else "", "name": team.name if team else "", "type": "API"},
            "report": {k: v for k, v in report.items() if v is not None},
            "entity": a.entity or "",
        }
        if full:
            item.update(description=a.description or "", details=dict(a.details or {}), actions=[])
        shown.append(item)
    return shown


_VIA = {"api": "the API", "slack": "Slack", "cli": "the CLI", "web": "the web"}
_DONE = {"create": "created", "deduplicate": "de-duplicated", "acknowledge": "acknowledged", "close": "closed",
         "assign": "assigned"}


def log_line(event: AlertEvent) -> str:
    """One readable timeline line: what, who (and their Slack identity), how, outcome, why."""
    who = event.actor_name or "someone"
    if event.slack_user_id and event.slack_user_id not in who:
        who += f" (Slack {event.slack_user_id})"
    via = _VIA.get(event.via, event.via)
    if event.action == "note" and event.outcome == "applied":
        return f"Note added by {who} via {via}: {event.note}"
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
    users = await repo.users_by_id(session, {e.actor_user_id for e in events if e.actor_user_id is not None})
    return {uid: u.email for uid, u in users.items()}


async def _page_of_events(session: AsyncSession, request: Request, alert_id: int,
                          notes_only: bool = False) -> tuple[list[AlertEvent], dict[str, str]]:
    """OpsGenie's cursor paging for notes and logs: ``offset`` is an item's ``offset``;
    ``direction=next`` (default) continues after it in ``order``, ``prev`` goes back. Only the
    page is read from the database (``alerts.timeline_page``)."""
    descending = order_param(request)
    limit = int_param(request, "limit", MAX_LIMIT, 1, MAX_LIMIT)
    direction = request.query_params.get("direction", "next").lower()
    if direction not in ("next", "prev"):
        raise ValidationFailed({"direction": "direction must be next or prev"})
    offset = request.query_params.get("offset", "")
    if offset and not small_int(offset):
        raise ValidationFailed({"offset": "offset must be the offset of an item of a previous page"})
    page, more = await alerts.timeline_page(session, alert_id, limit=limit, descending=descending,
                                            cursor=int(offset) if offset else None,
                                            backwards=bool(offset) and direction == "prev", notes_only=notes_only)
    paging: dict[str, str] = {}
    if more and page:
        params = dict(request.query_params) | {"offset": str(page[-1].id), "direction": "next", "limit": str(limit)}
        paging["next"] = f"{_base(request)}{quote(request.url.path)}?{urlencode(params)}"
    return page, paging


def _base(request: Request) -> str:
    return request.app.state.runtime.settings.base_url.rstrip("/")


# --- handlers --------------------------------------------------------------------------------
async def _find(session: AsyncSession, request: Request, team: Team) -> Alert:
    if not storable(request.path_params["identifier"]):
        raise NotFound("Alert with given id does not exist")
    return await alerts.find(session, request.path_params["identifier"],
                             request.query_params.get("identifierType", "id"),
                             team_ids=await alerts.teams_key_may_use(session, team))


@endpoint
async def create_alert(request: Request, call: Call) -> Response:
    key = presented_key(request)
    raw = await read_body(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        data = alerts.parse_create(parse_json(raw))
        alert, _ = await alerts.create_alert(session, team, data, call.request_id)
    call.outbox_channel = alert.slack_channel  # its post (or, de-duplicated, its update) goes there
    return call.accepted()  # committed: a 202 alert is never lost


@endpoint
async def request_status(request: Request, call: Call) -> Response:
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        request_id = request.path_params["requestId"]
        found = (await repo.api_request(session, request_id, team.id)
                 if len(request_id) <= 36 and storable(request_id) else None)
    if found is None:
        raise ApiError(404, "Request does not exist")
    row, alert = found
    return call.answer(200, data={
        "success": row.success, "action": row.action, "processedAt": iso(row.processed_at),
        "integrationId": str(row.team_id), "isSuccess": row.success, "status": row.status,
        "alertId": alert.uid if alert else "", "alias": row.alias or "",
    })


@endpoint
async def get_alert(request: Request, call: Call) -> Response:
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        alert = await _find(session, request, team)
        [shown] = await present(session, [alert], full=True)
    return call.answer(200, data=shown)


@endpoint
async def list_alerts(request: Request, call: Call) -> Response:
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        limit = int_param(request, "limit", 20, 1, MAX_LIMIT)
        offset = int_param(request, "offset", 0, 0)
        sort = request.query_params.get("sort", "createdAt")
        if sort not in repo.ALERT_SORTS:
            raise ValidationFailed({"sort": f"sort must be one of {', '.join(repo.ALERT_SORTS)}"})
        descending = order_param(request)
        terms = parse_query(request.query_params.get("query", ""))
        total, page = await repo.search_alerts(session, await alerts.teams_key_may_use(session, team), terms,
                                               sort=sort, descending=descending, offset=offset, limit=limit)
        shown = await present(session, page, full=False)

    def url(at: int) -> str:
        params = {"query": request.query_params.get("query", ""), "offset": at, "limit": limit, "sort": sort,
                  "order": "desc" if descending else "asc"}
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
    status says ``isSuccess: false`` and why (OpsGenie does the same)."""

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
                success, text = False, str(err)
            await alerts.record_api_request(session, call.request_id, team, action, alert, success, text)
        return call.accepted()

    handler.__name__ = action.lower()
    return endpoint(handler)


async def _assignee(session: AsyncSession, owner: Any) -> tuple[Any, str | None]:
    """``{"id": …}`` or ``{"username": …}`` → ``(user, how it was named)``; 422 otherwise.

    ``id``: a Genie user id (a number), else an OpsGenie user id; ``username``: a Genie email,
    else an OpsGenie username, else an email of one person's connected account; either may be
    ``provider:value`` (``github:alice-s``, ``pagerduty:PXPGF42``). Never a guess: a name that
    fits two people, or nobody, is "User does not exist" (``bot.services.alert_people``)."""
    if not isinstance(owner, dict):
        raise ValidationFailed({"owner": 'owner must be an object: {"id": "<user id>"} or {"username": "<email>"}'})
    user, named = None, None
    user_id, username = owner.get("id"), owner.get("username")
    if (isinstance(user_id, int) and not isinstance(user_id, bool)) or (
            isinstance(user_id, str) and re.fullmatch(r"[0-9]+", user_id.strip())):
        user = await repo.user_by_id(session, int(user_id)) if small_int(str(user_id).strip()) else None
    elif isinstance(username, str) and 0 < len(username) <= 254:
        user = await repo.user_by_email(session, username)
        if user is None:
            named = await alert_people.name_owner(session, {"username": username})
    elif isinstance(user_id, str) and 0 < len(user_id.strip()) <= 254:
        named = await alert_people.name_owner(session, {"id": user_id})
    else:
        raise ValidationFailed({"owner": 'owner needs an "id" (Genie or OpsGenie user id) or a "username" '
                                         '(email, OpsGenie username, or provider:name)'})
    if named is not None:
        if named.person is None:
            text = (f"User does not exist: {named.given!r} does not name exactly one active Genie person "
                    f"(it names {named.why or 'nobody'})")
            raise ValidationFailed({"owner": text})
        user = named.person
        if named.given.strip().lower() != user.email:
            return user, f"{named.given} ({named.provider or 'email'})"
    if user is None:
        raise ValidationFailed({"owner": "User does not exist"})
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
        owner, named = await _assignee(session, body.get("owner"))
        actor = Actor(via="api", label=fields.user or f"API ({team.name})")
        try:
            await alerts.assign(session, alert, actor, owner, note=fields.note, request_id=call.request_id,
                                named=named)
            success, text = True, f"Assigned alert to {owner.email}"
        except AlreadyDone as err:
            success, text = False, str(err)
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
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        alert = await _find(session, request, team)
        page, paging = await _page_of_events(session, request, alert.id, notes_only=True)
        owners = await _event_owners(session, page)
    data = [{"note": e.note, "owner": owners.get(e.actor_user_id or 0, e.actor_name or ""),
             "createdAt": iso(e.at), "offset": str(e.id)} for e in page]
    return call.answer(200, data=data, paging=paging)


@endpoint
async def list_logs(request: Request, call: Call) -> Response:
    key = presented_key(request)
    async with request.app.state.runtime.sessionmaker.begin() as session:
        team = await key_team(session, key)
        alert = await _find(session, request, team)
        page, paging = await _page_of_events(session, request, alert.id)
        owners = await _event_owners(session, page)
    data = [{"log": log_line(e), "type": "note" if e.action == "note" else "system",
             "owner": owners.get(e.actor_user_id or 0, e.actor_name or ""), "createdAt": iso(e.at),
             "offset": str(e.id)} for e in page]
    return call.answer(200, data=data, paging=paging)


@endpoint
async def not_supported(request: Request, call: Call) -> Response:
    """Anything else under ``/v2``: 405 for a known path with another method, else 404."""
    allowed = sorted({m for r in routes[:-1] if r.matches(request.scope)[0] is Match.PARTIAL for m in r.methods or ()})
    missing = f"Genie does not implement {request.method} {request.url.path}"
    if allowed:
        raise ApiError(405, f"{missing} (this path answers {', '.join(allowed)}).",
                       headers={"Allow": ", ".join(allowed)})
    raise ApiError(404, f"{missing}.")


_ID = "/v2/alerts/{identifier:path}"
routes = [
    Route("/v2/alerts", create_alert, methods=["POST"]),
    Route("/v2/alerts", list_alerts, methods=["GET"]),
    Route("/v2/alerts/requests/{requestId}", request_status, methods=["GET"]),
    Route(f"{_ID}/acknowledge", _transition("Acknowledge", "Acknowledged alert", alerts.acknowledge),
          methods=["POST"]),
    Route(f"{_ID}/close", _transition("Close", "Closed alert", alerts.close), methods=["POST"]),
    Route(f"{_ID}/assign", assign_alert, methods=["POST"]),
    Route(f"{_ID}/notes", add_note, methods=["POST"]),
    Route(f"{_ID}/notes", list_notes, methods=["GET"]),
    Route(f"{_ID}/logs", list_logs, methods=["GET"]),
    Route(_ID, get_alert, methods=["GET"]),
    Route("/v2/{path:path}", not_supported, methods=["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]),
]
