"""Admin pages: people and their connected accounts (``/admin/people``) and the audit log
(``/admin/audit``).

Only Genie admins (``User.is_admin``) see them: a signed-in person who is not one gets a 403
page, a signed-out one is sent to sign in and back. The rules of ``bot.web.pages`` hold here
too: GET never changes anything; every POST carries the CSRF token and a matching Origin; a
move or a removal is a second, explicit POST from a confirm page that names both sides, and is
refused if the account changed meanwhile. A refused change re-shows the page with the reason
and changes nothing.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from urllib.parse import parse_qs, quote, urlencode

from sqlalchemy.exc import IntegrityError
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.ids import parse_id
from bot.runtime import Runtime
from bot.services import audit, external_accounts, people
from bot.services.errors import GenieError, InvalidInput, NotFound
from bot.services.slack_links import SlackIdentity
from bot.slack.home import refresh_home
from bot.web.pages import csrf_failed, current_user, read_form, render, rt_of
from storage.models import ExternalAccount, User

logger = logging.getLogger(__name__)

AUDIT_PER_PAGE = 50
#: A unique constraint stopped a change that raced another (two admins, or a /genie connect).
_RACED = "That account or person changed while you were looking (someone else changed it at the same moment)."
_DONE = {
    "connect": "Connected. The change is on the audit log.",
    "move": "Moved. The change is on the audit log.",
    "remove": "Removed. The change is on the audit log.",
}


# --- who may ---------------------------------------------------------------------------------
async def _admin(request: Request) -> tuple[User | None, Response | None]:
    """The signed-in admin, or the response for everyone else."""
    user = await current_user(request)
    if user is None:
        # Back to the page after signing in; a refused POST goes back to the list.
        target = (
            "/admin/people"
            if request.method != "GET"
            else f"{request.url.path}?{request.url.query}"
            if request.url.query
            else request.url.path
        )
        return None, RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)
    request.state.user = user
    if not user.is_admin:
        return None, render(
            request,
            "message.html",
            status_code=403,
            title="Admins only",
            message="This page is for Genie admins. Ask one of them if a connection needs changing.",
        )
    return user, None


# --- the filters, from a query string and back -----------------------------------------------
def _page_number(value: str | None) -> int:
    return int(value) if value and value.isascii() and value.isdigit() and len(value) <= 6 and int(value) > 0 else 1


def _provider(value: str | None) -> str | None:
    try:
        return external_accounts.normalize_provider(value) if value else None
    except InvalidInput:
        return None


@dataclass(frozen=True)
class Filters:
    show: str = "all"
    provider: str | None = None
    q: str = ""
    page: int = 1
    apage: int = 1

    @classmethod
    def parse(cls, params) -> Filters:
        show = params.get("show") or "all"
        return cls(
            show=show if show in people.SHOWS else "all",
            provider=_provider(params.get("provider")),
            q=(params.get("q") or "").strip()[:100],
            page=_page_number(params.get("page")),
            apage=_page_number(params.get("apage")),
        )

    @classmethod
    def from_back(cls, back: str | None) -> Filters:
        raw = parse_qs((back or "")[:500])
        return cls.parse({k: v[0] for k, v in raw.items() if v})

    def query(self, **changes) -> str:
        f = replace(self, **changes)
        values = {
            "show": f.show if f.show != "all" else None,
            "provider": f.provider,
            "q": f.q or None,
            "page": f.page if f.page > 1 else None,
            "apage": f.apage if f.apage > 1 else None,
        }
        return urlencode({k: v for k, v in values.items() if v is not None})

    def url(self, **changes) -> str:
        query = self.query(**changes)
        return f"/admin/people?{query}" if query else "/admin/people"


# --- people ----------------------------------------------------------------------------------
async def _people_page(
    request: Request, filters: Filters, *, status_code: int = 200, error: str | None = None, done: str | None = None
) -> Response:
    async with rt_of(request).sessionmaker() as session:
        people_page = await people.people_page(
            session, show=filters.show, provider=filters.provider, q=filters.q, page=filters.page
        )
        loose = await people.loose_accounts_page(
            session, ambiguous=filters.show == "ambiguous", provider=filters.provider, q=filters.q, page=filters.apage
        )
        providers = await people.providers(session)
    return render(
        request,
        "admin_people.html",
        status_code=status_code,
        wide=True,
        title="People and accounts",
        filters=filters,
        people_page=people_page,
        loose=loose,
        providers=providers,
        error=error,
        done=_DONE.get(done or ""),
        back=filters.query(),
    )


async def people_list(request: Request) -> Response:
    admin, refused = await _admin(request)
    if refused is not None:
        return refused
    filters = Filters.parse(request.query_params)
    return await _people_page(request, filters, done=request.query_params.get("done"))


def _status(err: GenieError) -> int:
    return 404 if isinstance(err, NotFound) else 400 if isinstance(err, InvalidInput) else 409


async def _form_and_admin(request: Request) -> tuple[FormData | None, User | None, Response | None]:
    form = await read_form(request)
    if form is None:
        return None, None, csrf_failed(request)
    admin, refused = await _admin(request)
    return form, admin, refused


def _field(form: FormData, name: str, limit: int = 254) -> str:
    value = form.get(name)
    return value[:limit] if isinstance(value, str) else ""


async def _refresh_slack_home(rt: Runtime, account: ExternalAccount) -> None:
    """After a Slack connection changed: the person's Home tab shows the new state (best
    effort; it is published again whenever the tab is opened)."""
    attrs = account.attrs or {}
    identity = SlackIdentity(attrs.get("team_id") or account.tenant, account.external_id, attrs.get("enterprise_id"))
    # The Home tab is published directly, not through the outbox: it is a snapshot redrawn on every
    # open, so a lost publish loses nothing (see bot.slack.home.publish_home).
    await refresh_home(rt, identity)


def _done(request: Request, filters: Filters, what: str, account: ExternalAccount) -> Response:
    response = RedirectResponse(f"{filters.url()}{'&' if filters.query() else '?'}done={what}", status_code=303)
    if account.provider == "slack":
        response.background = BackgroundTask(_refresh_slack_home, rt_of(request), account)
    return response


async def admin_connect(request: Request) -> Response:
    form, admin, refused = await _form_and_admin(request)
    if refused is not None:
        return refused
    filters = Filters.from_back(_field(form, "back", 500))
    try:
        async with rt_of(request).sessionmaker.begin() as session:
            account, person = await people.connect_by_admin(
                session, admin, _field(form, "account"), _field(form, "email")
            )
    except GenieError as err:
        return await _people_page(request, filters, status_code=_status(err), error=str(err))
    except IntegrityError:
        return await _people_page(request, filters, status_code=409, error=_RACED)
    logger.info("admin %s connected %s to %s", admin.id, external_accounts.describe(account), person.id)
    return _done(request, filters, "connect", account)


async def admin_move(request: Request) -> Response:
    form, admin, refused = await _form_and_admin(request)
    if refused is not None:
        return refused
    back = _field(form, "back", 500)
    filters = Filters.from_back(back)
    key, email = _field(form, "account"), _field(form, "email")
    try:
        if form.get("confirm") != "yes":
            async with rt_of(request).sessionmaker() as session:
                plan = await people.plan_move(session, key, email)
            return render(
                request,
                "admin_confirm.html",
                title="Move this account?",
                wide=True,
                kind="move",
                account=plan.account,
                from_person=plan.from_person,
                to_person=plan.to_person,
                replaces=plan.replaces,
                key=key,
                back=back,
                cancel=filters.url(),
            )
        async with rt_of(request).sessionmaker.begin() as session:
            plan = await people.move_by_admin(session, admin, key, email, _field(form, "from", 12))
    except GenieError as err:
        return await _people_page(request, filters, status_code=_status(err), error=str(err))
    except IntegrityError:
        return await _people_page(request, filters, status_code=409, error=_RACED)
    logger.info(
        "admin %s moved %s from %s to %s",
        admin.id,
        external_accounts.describe(plan.account),
        plan.from_person.id,
        plan.to_person.id,
    )
    return _done(request, filters, "move", plan.account)


async def admin_remove(request: Request) -> Response:
    form, admin, refused = await _form_and_admin(request)
    if refused is not None:
        return refused
    back = _field(form, "back", 500)
    filters = Filters.from_back(back)
    key = _field(form, "account")
    try:
        if form.get("confirm") != "yes":
            async with rt_of(request).sessionmaker() as session:
                account = await people.account_by_key(session, key)
                person = await external_accounts.connected_person(session, account)
            if person is None:
                raise NotFound(f"{external_accounts.describe(account)} is not connected to anyone.")
            return render(
                request,
                "admin_confirm.html",
                title="Remove this connection?",
                wide=True,
                kind="remove",
                account=account,
                from_person=person,
                to_person=None,
                replaces=None,
                key=key,
                back=back,
                cancel=filters.url(),
            )
        async with rt_of(request).sessionmaker.begin() as session:
            account, person = await people.remove_by_admin(session, admin, key, _field(form, "from", 12))
    except GenieError as err:
        return await _people_page(request, filters, status_code=_status(err), error=str(err))
    except IntegrityError:
        return await _people_page(request, filters, status_code=409, error=_RACED)
    logger.info("admin %s removed %s from %s", admin.id, external_accounts.describe(account), person.id)
    return _done(request, filters, "remove", account)


# --- the audit log ---------------------------------------------------------------------------
async def audit_log(request: Request) -> Response:
    admin, refused = await _admin(request)
    if refused is not None:
        return refused
    params = request.query_params
    email = (params.get("email") or "").strip()[:254]
    provider = _provider(params.get("provider"))
    raw_before = params.get("before") or ""
    before = parse_id(raw_before)
    async with rt_of(request).sessionmaker() as session:
        events = await audit.events(
            session, limit=AUDIT_PER_PAGE + 1, subject_email=email or None, provider=provider, before_id=before
        )
        providers = await people.providers(session)
    older = None
    if len(events) > AUDIT_PER_PAGE:
        events = events[:AUDIT_PER_PAGE]
        older = "/admin/audit?" + urlencode(
            {k: v for k, v in (("email", email), ("provider", provider), ("before", events[-1].id)) if v}
        )
    newest = "/admin/audit?" + urlencode({k: v for k, v in (("email", email), ("provider", provider)) if v})
    return render(
        request,
        "admin_audit.html",
        title="Audit log",
        wide=True,
        events=events,
        email=email,
        provider=provider,
        providers=providers,
        older=older,
        newest=newest.rstrip("?"),
        paged=before is not None,
        actions=audit.ACTIONS,
    )


routes = [
    Route("/admin/people", people_list, methods=["GET"]),
    Route("/admin/accounts/connect", admin_connect, methods=["POST"]),
    Route("/admin/accounts/move", admin_move, methods=["POST"]),
    Route("/admin/accounts/remove", admin_remove, methods=["POST"]),
    Route("/admin/audit", audit_log, methods=["GET"]),
]
