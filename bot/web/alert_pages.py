"""Alerts on the web side: the list (``/alerts``), an alert's page with its timeline and actions
(``/alerts/{id}``) and a team's page (``/teams/{name}``).

Who sees what is ``access.visible_alerts`` (one rule, in the services): a person their teams'
alerts, an admin every alert, a person in no team none; another team's alert or team is "not
found" (404), never "forbidden". Acting goes through ``actions.act_on_web`` — the gate a Slack
click goes through (``access.decide``), not a second one. The rules of ``bot.web.pages`` hold:
GET never changes anything, every POST carries the session-bound CSRF token, bad input gets a
page that says what is wrong (400), never a 500.
"""

from __future__ import annotations

from urllib.parse import quote, urlencode

from itsdangerous import BadSignature
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.services import actions, alert_views, rosters
from bot.services.alert_views import ListFilters
from bot.services.alerts import Forbidden
from bot.services.errors import GenieError, InvalidInput, NotFound
from bot.web.pages import csrf_failed, current_user, read_form, render, rt_of, templates
from storage.base import utcnow
from storage.models import User

_CURSOR = "alerts-cursor:"


def age(then) -> str:
    """ "4 min", "3 h", "2 d": how long ago, short enough for a phone's column."""
    seconds = max(0, int((utcnow() - then).total_seconds()))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h"
    return f"{seconds // 86400} d"


templates.globals["age"] = age
_DONE = {"acknowledge": "Acknowledged.", "close": "Closed.", "assign": "Assigned.", "note": "Note added."}
_STATUS = {"denied": 403, "noop": 409, "invalid": 400}


async def signed_in(request: Request) -> tuple[User | None, Response | None]:
    """The signed-in person, or the response for a signed-out one (sign in, then come back)."""
    user = await current_user(request)
    if user is None:
        target = request.url.path + (f"?{request.url.query}" if request.url.query and request.method == "GET" else "")
        return None, RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    request.state.user = user
    return user, None


async def signed_in_post(request: Request) -> tuple[FormData, User] | Response:
    """The preamble of every signed-in person's POST: the form (CSRF checked) and the person —
    or the response that refuses it."""
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    return form, user


def not_found(request: Request, what: str = "alert") -> Response:
    return render(
        request,
        "message.html",
        status_code=404,
        title=f"No such {what}",
        message=f"There is no such {what}, or it belongs to a team you are not in.",
    )


def bad_request(request: Request, message: str) -> Response:
    return render(request, "message.html", status_code=400, title="That request doesn't make sense", message=message)


# --- the signed cursor -------------------------------------------------------------------------
def sign_cursor(request: Request, before: int) -> str:
    return rt_of(request).csrf.sign(f"{_CURSOR}{before}").decode()


def read_cursor(request: Request, value: str | None) -> int | None:
    """The id a cursor continues below; ``InvalidInput`` for one that was tampered with."""
    if not value:
        return None
    try:
        text = rt_of(request).csrf.unsign(value[:200].encode()).decode()
    except (BadSignature, UnicodeDecodeError):
        raise InvalidInput("That page link was changed or is broken: start again from the newest alerts.") from None
    number = text.removeprefix(_CURSOR)
    if not text.startswith(_CURSOR) or not number.isdigit() or len(number) > 10:
        raise InvalidInput("That page link was changed or is broken: start again from the newest alerts.")
    return int(number)


# --- the list ------------------------------------------------------------------------------------
async def alert_list(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    params = request.query_params
    error, filters, before = None, ListFilters(), None
    try:
        filters = ListFilters.parse(params)
        before = read_cursor(request, params.get("after"))
    except InvalidInput as err:
        error = str(err)
    async with rt_of(request).sessionmaker() as session:
        teams = await alert_views.visible_teams(session, user)
        page = None if error else await alert_views.alert_list(session, user, filters, before=before)
    older = None
    if page is not None and page.next_before is not None:
        older = "/alerts?" + urlencode({**filters.params(), "after": sign_cursor(request, page.next_before)})
    newest = "/alerts" + (f"?{urlencode(filters.params())}" if filters.any else "")
    shown = {k: params.get(k, "")[:60] for k in ("status", "team", "priority", "tag", "from", "to")}
    shown["q"] = params.get("q", "")[: alert_views.MAX_SEARCH]
    refresh = params.get("refresh") == "1" and error is None
    return render(
        request,
        "alerts.html",
        status_code=400 if error else 200,
        wide=True,
        title="Alerts",
        error=error,
        page=page,
        filters=filters,
        shown=shown,
        teams=teams,
        older=older,
        newest=newest,
        paged=before is not None,
        priorities=alert_views.alerts.PRIORITIES,
        statuses=alert_views.STATUSES,
        refresh=refresh,
    )


# --- one alert -----------------------------------------------------------------------------------
def _alert_id(request: Request) -> int | None:
    raw = request.path_params["alert_id"]
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 9 else None


async def _alert_page(
    request: Request,
    user: User,
    alert_id: int,
    *,
    status_code: int = 200,
    error: str | None = None,
    done: str | None = None,
) -> Response:
    async with rt_of(request).sessionmaker() as session:
        detail = await alert_views.alert_detail(session, user, alert_id)
    if detail is None:
        return not_found(request)
    return render(
        request,
        "alert.html",
        status_code=status_code,
        wide=True,
        title=f"#{detail.alert.id} {detail.alert.message}",
        d=detail,
        error=error,
        done=done,
    )


async def alert_page(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    alert_id = _alert_id(request)
    if alert_id is None:
        return not_found(request)
    return await _alert_page(request, user, alert_id, done=_DONE.get(request.query_params.get("done") or ""))


async def alert_act(request: Request) -> Response:
    posted = await signed_in_post(request)
    if isinstance(posted, Response):
        return posted
    form, user = posted
    alert_id = _alert_id(request)
    if alert_id is None:
        return not_found(request)
    action = str(form.get("action") or "")[:20]
    assignee = str(form.get("assignee") or "")
    note = form.get("note") if isinstance(form.get("note"), str) else None
    seen = str(form.get("seen") or "")[:64] or None
    rt = rt_of(request)
    async with rt.sessionmaker() as session:  # another team's alert: not found, and nothing recorded
        visible = await alert_views.can_see(session, user, alert_id)
    if not visible:
        return not_found(request)
    if action == "assign" and not (assignee.isascii() and assignee.isdigit() and len(assignee) <= 9):
        return await _alert_page(request, user, alert_id, status_code=400, error="Choose who to assign it to.")
    async with rt.sessionmaker.begin() as session:
        result = await actions.act_on_web(
            session,
            user,
            action,
            alert_id,
            assignee_id=int(assignee) if action == "assign" else None,
            note=note,
            seen=seen,
        )
    if result.channel:
        rt.wake_outbox(result.channel)
    if not result.applied:
        return await _alert_page(
            request,
            user,
            alert_id,
            status_code=_STATUS.get(result.outcome, 409),
            error=result.text or "Nothing was done.",
        )
    return RedirectResponse(f"/alerts/{alert_id}?done={action}", status_code=303)


# --- a team --------------------------------------------------------------------------------------
async def _team_page(
    request: Request,
    user: User,
    name: str,
    *,
    new_key: str | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    async with rt_of(request).sessionmaker() as session:
        detail = await alert_views.team_detail(session, user, name)
        if detail is None:
            return not_found(request, "team")
        [roster] = await rosters.team_rosters(session, [detail.team.name], None, rt_of(request).now())
    return render(
        request,
        "team.html",
        status_code=status_code,
        wide=True,
        title=detail.team.name,
        t=detail,
        oncall=roster.schedules,
        new_key=new_key,
        error=error,
    )


async def team_page(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    return await _team_page(request, user, request.path_params["name"])


async def team_rotate_key(request: Request) -> Response:
    posted = await signed_in_post(request)
    if isinstance(posted, Response):
        return posted
    form, user = posted
    name = request.path_params["name"]
    if form.get("confirm") != "yes":
        return await _team_page(
            request, user, name, status_code=400, error="Tick the box to confirm: the old key stops working at once."
        )
    try:
        async with rt_of(request).sessionmaker.begin() as session:
            key = await alert_views.rotate_team_key(session, user, name)
    except NotFound:
        return not_found(request, "team")
    except (Forbidden, GenieError) as err:
        return await _team_page(request, user, name, status_code=403, error=str(err))
    # Shown once, on this response (no-store): reloading the page shows it no more.
    return await _team_page(request, user, name, new_key=key)


routes = [
    Route("/alerts", alert_list, methods=["GET"]),
    Route("/alerts/{alert_id}", alert_page, methods=["GET"]),
    Route("/alerts/{alert_id}", alert_act, methods=["POST"]),
    Route("/teams/{name}", team_page, methods=["GET"]),
    Route("/teams/{name}/rotate-key", team_rotate_key, methods=["POST"]),
]
