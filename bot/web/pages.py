"""Browser pages: home, sign-in, the link confirm flow and the account page.

Rules kept here: GET and HEAD never change anything (Slack's unfurler and mail scanners
prefetch links); every POST carries a CSRF token (signed double-submit cookie) and, when the
browser sends one, an ``Origin`` matching ``GENIE_BASE_URL``; the session cookie is HttpOnly,
SameSite=Lax and Secure when the base URL is https.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from pathlib import Path
from urllib.parse import quote, urlsplit

from itsdangerous import BadSignature
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.background import BackgroundTask
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

from bot import metrics
from bot.config import SLACK_SETUP_HINT
from bot.ids import parse_id
from bot.runtime import Runtime
from bot.services import actions, external_accounts, notification_rules, people, slack_links, teams, users
from bot.services.errors import InvalidInput
from bot.services.slack_links import LinkError, LinkProblem, NeedsReplaceConfirmation
from bot.slack.home import announce_link, refresh_home_after_unlink
from bot.slack.notify import queue_connected_dm, queue_new_link_notices, queue_password_set_notices
from bot.slack.profiles import requester_profile
from storage.models import User

logger = logging.getLogger(__name__)

SESSION_COOKIE = "genie_session"
CSRF_COOKIE = "genie_csrf"
MAX_FORM_BYTES = 16 * 1024

templates = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)

_PROBLEM_STATUS = {
    LinkProblem.INVALID: 400,
    LinkProblem.EXPIRED: 410,
    LinkProblem.USED: 410,
    LinkProblem.SUPERSEDED: 410,
}
_PROBLEM_TITLE = {
    LinkProblem.INVALID: "This link isn't valid",
    LinkProblem.EXPIRED: "This link has expired",
    LinkProblem.USED: "This link has already been used",
    LinkProblem.SUPERSEDED: "This link was replaced by a newer one",
}


# --- helpers ---------------------------------------------------------------------------------
def rt_of(request: Request) -> Runtime:
    return request.app.state.runtime


def _csrf_cookie(request: Request) -> tuple[str, bool]:
    value = request.cookies.get(CSRF_COOKIE)
    if value and 20 <= len(value) <= 100:
        return value, False
    return secrets.token_urlsafe(32), True


#: A form's CSRF token is good for this long after its page was drawn (then: "Please try again").
CSRF_MAX_AGE = 12 * 60 * 60


def _csrf_value(cookie: str, request: Request) -> str:
    """What a CSRF token signs: the double-submit cookie and the session it was drawn for (a
    digest of the session cookie, ``-`` for none), so a token is no good in another session —
    not after signing in or out, and not in a session an attacker planted."""
    session = request.cookies.get(SESSION_COOKIE)
    bound = hashlib.sha256(session.encode()).hexdigest()[:32] if session else "-"
    return f"{cookie}:{bound}"


def render(request: Request, template: str, status_code: int = 200, **context) -> HTMLResponse:
    rt = rt_of(request)
    cookie, is_new = _csrf_cookie(request)
    context.setdefault("user", getattr(request.state, "user", None))
    context.setdefault("slack_signin", bool(rt.settings.slack_oidc_client_id and rt.settings.slack_oidc_client_secret))
    html = templates.get_template(template).render(
        csrf_token=rt.csrf.sign(_csrf_value(cookie, request)).decode(), base_url=rt.settings.base_url, **context
    )
    response = HTMLResponse(html, status_code=status_code, headers={"Cache-Control": "no-store"})
    if is_new:
        response.set_cookie(
            CSRF_COOKIE, cookie, httponly=True, samesite="lax", secure=rt.settings.secure_cookies, path="/"
        )
    return response


async def read_form(request: Request) -> FormData | None:
    """The POSTed form if its CSRF token and Origin check out; None otherwise."""
    rt = rt_of(request)
    origin = request.headers.get("origin")
    if origin and origin != "null":
        base = urlsplit(rt.settings.base_url)
        if origin.rstrip("/") != f"{base.scheme}://{base.netloc}":
            return None
    if int(request.headers.get("content-length") or 0) > MAX_FORM_BYTES:
        return None
    try:
        form = await request.form(max_files=0, max_fields=20)
    except Exception:  # malformed multipart/urlencoded body: treat as a forged form
        return None
    token = form.get("csrf_token")
    cookie = request.cookies.get(CSRF_COOKIE)
    if not isinstance(token, str) or not cookie:
        return None
    try:
        signed = rt.csrf.unsign(token.encode(), max_age=CSRF_MAX_AGE).decode()
    except (BadSignature, UnicodeDecodeError):  # SignatureExpired is a BadSignature
        return None
    if not hmac.compare_digest(signed.encode(), _csrf_value(cookie, request).encode()):
        return None
    return form


def csrf_failed(request: Request) -> HTMLResponse:
    return render(
        request,
        "message.html",
        status_code=403,
        title="Please try again",
        message="This form expired or did not come from Genie's own page. Go back, reload the page and submit it again.",
    )


async def current_user(request: Request) -> User | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    async with rt_of(request).sessionmaker() as session:
        return await users.session_user(session, token)


def client_address(request: Request) -> str:
    """The client's address as the ASGI server saw it. ``genie serve`` believes
    ``X-Forwarded-For`` only from the proxies in ``GENIE_FORWARDED_ALLOW_IPS`` (none by default:
    ``bot.server.uvicorn_config``); a header sent by anyone else is ignored."""
    return request.client.host if request.client and request.client.host else "unknown"


def safe_next(target: str | None) -> str:
    """Only local paths: an open redirect would turn our sign-in into a phishing tool."""
    if target and target.startswith("/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/account"


def problem_page(request: Request, err: LinkError) -> HTMLResponse:
    return render(
        request,
        "link_problem.html",
        status_code=_PROBLEM_STATUS[err.problem],
        title=_PROBLEM_TITLE[err.problem],
        message=str(err),
        problem=err.problem.value,
    )


def _invite_problem(request: Request, err: users.InviteProblem) -> HTMLResponse:
    return render(request, "message.html", status_code=410, title="This invitation can't be used", message=str(err))


# --- pages -----------------------------------------------------------------------------------
async def home(request: Request) -> Response:
    rt = rt_of(request)
    request.state.user = await current_user(request)
    return render(request, "home.html", slack_mode=rt.settings.slack_mode, slack_hint=SLACK_SETUP_HINT)


async def login_page(request: Request) -> Response:
    request.state.user = await current_user(request)
    return render(request, "login.html", next=safe_next(request.query_params.get("next")), error=None)


async def login_submit(request: Request) -> Response:
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    rt = rt_of(request)
    email = str(form.get("email") or "")[:254]
    password = str(form.get("password") or "")[:1024]
    target = safe_next(str(form.get("next") or ""))
    try:
        signed_in = await users.sign_in(
            rt.sessionmaker, email, password, client_address(request), request.cookies.get(SESSION_COOKIE)
        )
    except users.TooManyAttempts as err:
        logger.warning(
            "sign-in refused for a while: too many failures for that account or from %s", client_address(request)
        )
        response = render(request, "login.html", status_code=429, next=target, email=email, error=str(err))
        response.headers["Retry-After"] = str(max(1, int(err.retry_after.total_seconds())))
        return response
    if signed_in is None:
        return render(
            request, "login.html", status_code=401, next=target, email=email, error="Email or password is incorrect."
        )
    _user, token = signed_in
    # An admin may require Sign in with Slack: passwords then sign in admins only (ignored while
    # Slack sign-in is not configured, which would lock everyone else out).
    if not _user.is_admin and rt.settings.slack_oidc_client_id and rt.settings.slack_oidc_client_secret:
        from bot.services import slack_signin

        async with rt.sessionmaker.begin() as session:
            if await slack_signin.slack_signin_required(session):
                await users.end_session(session, token)
                return render(
                    request,
                    "login.html",
                    status_code=403,
                    next=target,
                    email=email,
                    error="This Genie requires Sign in with Slack: use the “Sign in with Slack” button.",
                )
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/",
        max_age=int(users.SESSION_LIFETIME.total_seconds()),
    )
    return response


async def logout(request: Request) -> Response:
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    async with rt_of(request).sessionmaker.begin() as session:
        await users.end_session(session, request.cookies.get(SESSION_COOKIE))
    response = RedirectResponse("/", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


async def link_page(request: Request) -> Response:
    """Shows what confirming will link. Never mutates: scanners and unfurlers GET links."""
    rt = rt_of(request)
    token = request.path_params["token"]
    try:
        nonce = rt.tokens.load(token)
        async with rt.sessionmaker() as session:
            request_row = await slack_links.usable_request(session, nonce)
            user = await users.session_user(session, request.cookies.get(SESSION_COOKIE))
            request.state.user = user
            if user is None:
                return render(request, "link_signin.html", link=request_row, next=f"/link/{quote(token)}", error=None)
            live = await requester_profile(rt, request_row) if not request_row.slack_email else None
            planned = await slack_links.preview(session, nonce, user, live_profile=live)
            return render(request, "link_confirm.html", plan=planned, token=token)
    except LinkError as err:
        return problem_page(request, err)


async def link_confirm(request: Request) -> Response:
    rt = rt_of(request)
    token = request.path_params["token"]
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    user = await current_user(request)
    if user is None:
        return RedirectResponse(f"/link/{quote(token)}", status_code=303)
    request.state.user = user
    live = None
    try:
        nonce = rt.tokens.load(token)
        async with rt.sessionmaker() as session:
            row = await slack_links.usable_request(session, nonce)
        # As on the page: a request whose profile was never recorded is checked against Slack now
        # (outside any transaction), so the email rules below judge what Slack says.
        live = await requester_profile(rt, row) if not row.slack_email else None
        async with rt.sessionmaker.begin() as session:
            link = await slack_links.redeem(
                session,
                nonce,
                user,
                replace=form.get("replace") == "yes",
                live_profile=live,
                ownership_confirmed=form.get("mine") == "yes",
            )
            await queue_connected_dm(rt, session, link)
            # The alert click that led here, if any: carried out now, through the gate.
            carried = await actions.carry_out(
                session, nonce, link, anonymous_default=rt.settings.allow_anonymous_actions
            )
            if link.needs_review:  # the DM above may go to someone else: tell the person where they are
                await queue_new_link_notices(rt, session, link, slack_links.unverified_reason(link, user.email))
    except LinkError as err:
        return problem_page(request, err)
    except (
        slack_links.EmailMatchRequired,
        slack_links.NeedsOwnershipConfirmation,
        NeedsReplaceConfirmation,
    ) as refused:
        # Nothing was consumed. The workspace's email rule: the reason, no button. Slack does not
        # vouch that this Slack account is theirs: the second, explicit step. Confirming would
        # replace a link and the person did not choose that (or it appeared since the page was
        # shown): the choice again.
        status, extra = 409, {}
        if isinstance(refused, slack_links.EmailMatchRequired):
            status = 403
        elif isinstance(refused, slack_links.NeedsOwnershipConfirmation):
            extra = {"second_step": True, "replace": form.get("replace") == "yes"}
        try:
            async with rt.sessionmaker() as session:
                planned = await slack_links.preview(session, nonce, user, live_profile=live)
                return render(request, "link_confirm.html", status_code=status, plan=planned, token=token, **extra)
        except LinkError as err:
            return problem_page(request, err)
    logger.info("linked Slack user %s (workspace %s) to Genie user %s", link.slack_user_id, link.workspace_id, user.id)
    if carried is not None:
        metrics.count_decision(carried.action, carried.result.outcome, carried.result.reason)
        logger.info(
            "carried out the remembered %s of alert #%s after linking: %s",
            carried.action,
            carried.alert_id,
            carried.result.outcome,
        )
    response = render(request, "link_done.html", link=link, carried=carried)
    # The Home tab is published directly, not through the outbox: it is a snapshot redrawn on every
    # open, so a lost publish loses nothing (see bot.slack.home.publish_home).
    response.background = BackgroundTask(announce_link, rt, link)
    return response


async def invite_page(request: Request) -> Response:
    """Set your password (an invitation, or a reset an admin sent). Never mutates."""
    rt = rt_of(request)
    token = request.path_params["token"]
    try:
        async with rt.sessionmaker() as session:
            invited = await users.invited_user(session, rt.invites, token)
    except users.InviteProblem as err:
        return _invite_problem(request, err)
    request.state.user = await current_user(request)
    return render(request, "invite.html", invited=invited, token=token, error=None)


async def invite_submit(request: Request) -> Response:
    rt = rt_of(request)
    token = request.path_params["token"]
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    password = str(form.get("password") or "")
    again = str(form.get("password_again") or "")
    try:
        async with rt.sessionmaker.begin() as session:
            user = await users.accept_invite(session, rt.invites, token, password, again)  # ends every session
            session_token = await users.start_session(session, user)
            told = await queue_password_set_notices(rt, session, user)
    except users.InviteProblem as err:
        return _invite_problem(request, err)
    except InvalidInput as err:
        async with rt.sessionmaker() as session:
            try:
                invited = await users.invited_user(session, rt.invites, token)
            except users.InviteProblem as problem:
                return _invite_problem(request, problem)
        return render(request, "invite.html", status_code=400, invited=invited, token=token, error=str(err))
    logger.info("Genie user %s set their password from an invitation", user.id)
    response = RedirectResponse("/account?welcome=1", status_code=303)
    if told:
        response.background = BackgroundTask(rt.wake_outbox)
    response.set_cookie(
        SESSION_COOKIE,
        session_token,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/",
        max_age=int(users.SESSION_LIFETIME.total_seconds()),
    )
    return response


async def account_page(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/login?next=/account", status_code=303)
    return await account_view(request, user)


async def account_view(request: Request, user: User, status_code: int = 200, **extra) -> Response:
    """The account page of ``user``; ``extra``: what a form just did (an error, a webhook
    secret shown this once) — the notification rules' forms (``bot.web.notification_pages``)."""
    request.state.user = user
    async with rt_of(request).sessionmaker() as session:
        links = await slack_links.links_of_user(session, user.id)
        others = await external_accounts.other_accounts_of(session, user.id)
        my_teams = await teams.teams_of_user(session, user.id)
        rules = await notification_rules.rules_of(session, user.id)
    review = [(link, slack_links.unverified_reason(link, user.email)) for link in links if link.needs_review]
    return render(
        request,
        "account.html",
        status_code=status_code,
        links=links,
        teams=my_teams,
        others=others,
        review=review,
        rules=rules,
        channels=notification_rules.CHANNELS,
        email_verified=notification_rules.email_verified(user),
        rule_done=request.query_params.get("rules"),
        **extra,
        kept=request.query_params.get("kept") == "1",
        disconnected=request.query_params.get("disconnected") == "1",
        welcome=request.query_params.get("welcome") == "1",
        removed=request.query_params.get("removed") == "1",
    )


async def _own_post(request: Request, param: str) -> tuple[FormData, User, int] | Response:
    """The preamble of a POST on one of the signed-in person's own connections: the form (CSRF
    checked), the person (else off to sign in) and the id the path names (-1 when it is no id:
    found nowhere) — or the response that refuses it."""
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/login?next=/account", status_code=303)
    request.state.user = user
    return form, user, parse_id(request.path_params[param], -1)


def _not_yours(request: Request) -> Response:
    return render(
        request,
        "message.html",
        status_code=404,
        title="Not found",
        message="That connection does not exist any more, or is not yours.",
    )


async def account_disconnect(request: Request) -> Response:
    own = await _own_post(request, "link_id")
    if isinstance(own, Response):
        return own
    _, user, link_id = own
    rt = rt_of(request)
    async with rt.sessionmaker.begin() as session:
        link = await slack_links.unlink_for_user(session, user, link_id)
    if link is None:
        return _not_yours(request)
    logger.info("Genie user %s disconnected Slack user %s on the web", user.id, link.slack_user_id)
    response = RedirectResponse("/account?disconnected=1", status_code=303)
    # The Home tab is published directly, not through the outbox: it is a snapshot redrawn on every
    # open, so a lost publish loses nothing (see bot.slack.home.publish_home).
    response.background = BackgroundTask(refresh_home_after_unlink, rt, link)
    return response


async def account_keep(request: Request) -> Response:
    """ "This is me" on the banner of a new Slack link Slack did not vouch for: it leaves the banner."""
    own = await _own_post(request, "link_id")
    if isinstance(own, Response):
        return own
    _, user, link_id = own
    async with rt_of(request).sessionmaker.begin() as session:
        link = await slack_links.keep_link(session, user, link_id)
    if link is None:
        return _not_yours(request)
    return RedirectResponse("/account?kept=1", status_code=303)


async def account_remove(request: Request) -> Response:
    """Remove one of the person's own non-Slack accounts: a confirm page first, then the
    POST with ``confirm=yes``. Someone else's account (or a made-up id) is "not found"."""
    own = await _own_post(request, "account_id")
    if isinstance(own, Response):
        return own
    form, user, account_id = own
    confirmed = form.get("confirm") == "yes"
    async with rt_of(request).sessionmaker.begin() as session:
        if confirmed:
            account = await people.remove_own(session, user, account_id)
        else:
            account = await people.own_account(session, user, account_id)
    if account is not None and not confirmed:
        return render(request, "account_remove.html", account=account)
    if account is None:
        return _not_yours(request)
    logger.info("Genie user %s removed their %s account %s on the web", user.id, account.provider, account.id)
    return RedirectResponse("/account?removed=1", status_code=303)


routes = [
    Route("/", home, methods=["GET"]),
    Route("/login", login_page, methods=["GET"]),
    Route("/login", login_submit, methods=["POST"]),
    Route("/logout", logout, methods=["POST"]),
    Route("/link/{token}", link_page, methods=["GET"]),
    Route("/link/{token}", link_confirm, methods=["POST"]),
    Route("/invite/{token}", invite_page, methods=["GET"]),
    Route("/invite/{token}", invite_submit, methods=["POST"]),
    Route("/account", account_page, methods=["GET"]),
    Route("/account/links/{link_id}/disconnect", account_disconnect, methods=["POST"]),
    Route("/account/links/{link_id}/keep", account_keep, methods=["POST"]),
    Route("/account/accounts/{account_id}/remove", account_remove, methods=["POST"]),
]
