"""Sign in with Slack: OpenID Connect's authorization-code flow against Slack
(``/openid/connect/authorize``, ``openid.connect.token``, ``/openid/connect/keys``).

``GET /login/slack`` sends the browser to Slack with a fresh ``state`` and ``nonce``, kept in a
signed, short-lived, HttpOnly cookie; ``GET /login/slack/callback`` checks ``state`` (constant
time), exchanges the code for an ID token with the app's secret, and verifies the token —
RS256 signature by a key Slack publishes, issuer, audience (our client id), expiry and our
``nonce`` — before anything is read from it. Who it signs in is ``bot.services.slack_signin``'s
rule. The authorize URL is built with Authlib; the token is verified with joserfc (Authlib's
JOSE library).

GET changes nothing but what the flow is for: the callback starts a session (as ``POST /login``
does) only for a code Slack issued to this browser's own attempt (the state cookie).
"""

from __future__ import annotations

import hmac
import json
import logging
import secrets

import httpx
from authlib.oauth2.rfc6749.parameters import prepare_grant_uri
from itsdangerous import BadSignature
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.services import slack_signin, users
from bot.web.pages import SESSION_COOKIE, render, rt_of, safe_next

logger = logging.getLogger(__name__)

STATE_COOKIE = "genie_slack_signin"
STATE_MAX_AGE = 600
_SALT_PREFIX = "slack-signin:"


def _enabled(request: Request) -> bool:
    s = rt_of(request).settings
    return bool(s.slack_oidc_client_id and s.slack_oidc_client_secret)


def _redirect_uri(request: Request) -> str:
    return f"{rt_of(request).settings.base_url.rstrip('/')}/login/slack/callback"


def _refused(request: Request, message: str, status_code: int = 403) -> Response:
    response = render(
        request, "message.html", status_code=status_code, title="Couldn't sign you in with Slack", message=message
    )
    response.delete_cookie(STATE_COOKIE, path="/login/slack")
    return response


async def start(request: Request) -> Response:
    if not _enabled(request):
        return render(
            request,
            "message.html",
            status_code=404,
            title="Sign in with Slack is not set up",
            message="This Genie has no Slack sign-in configured: sign in with your email and password.",
        )
    rt = rt_of(request)
    state, nonce = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    target = safe_next(request.query_params.get("next"))
    cookie = rt.csrf.sign(_SALT_PREFIX + json.dumps({"state": state, "nonce": nonce, "next": target})).decode()
    url = prepare_grant_uri(
        f"{rt.settings.slack_oidc_url}/openid/connect/authorize",
        rt.settings.slack_oidc_client_id,
        "code",
        redirect_uri=_redirect_uri(request),
        scope="openid email profile",
        state=state,
        nonce=nonce,
    )
    response = RedirectResponse(url, status_code=303)
    response.set_cookie(
        STATE_COOKIE,
        cookie,
        max_age=STATE_MAX_AGE,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/login/slack",
    )
    return response


def _attempt(request: Request) -> dict | None:
    raw = request.cookies.get(STATE_COOKIE)
    if not raw or len(raw) > 1000:
        return None
    try:
        text = rt_of(request).csrf.unsign(raw.encode(), max_age=STATE_MAX_AGE).decode()
    except (BadSignature, UnicodeDecodeError):
        return None
    if not text.startswith(_SALT_PREFIX):
        return None
    try:
        data = json.loads(text.removeprefix(_SALT_PREFIX))
    except ValueError:
        return None
    return (
        data
        if isinstance(data, dict) and all(isinstance(data.get(k), str) for k in ("state", "nonce", "next"))
        else None
    )


async def _id_token(request: Request, code: str) -> str | None:
    s = rt_of(request).settings
    async with httpx.AsyncClient(timeout=10) as client:
        answer = await client.post(
            f"{s.slack_api_url}openid.connect.token",
            data={
                "client_id": s.slack_oidc_client_id,
                "client_secret": s.slack_oidc_client_secret,
                "code": code,
                "grant_type": "authorization_code",
                "redirect_uri": _redirect_uri(request),
            },
        )
    body = answer.json() if answer.headers.get("content-type", "").startswith("application/json") else {}
    if not body.get("ok", True) or not isinstance(body.get("id_token"), str):
        logger.warning("Slack refused the sign-in code: %s", str(body.get("error") or answer.status_code)[:100])
        return None
    return body["id_token"]


async def _verified_claims(request: Request, id_token: str, nonce: str) -> dict | None:
    s = rt_of(request).settings
    async with httpx.AsyncClient(timeout=10) as client:
        keys = (await client.get(f"{s.slack_oidc_url}/openid/connect/keys")).json()
    try:
        token = jwt.decode(id_token, KeySet.import_key_set(keys), algorithms=["RS256"])
        jwt.JWTClaimsRegistry(
            leeway=60,
            iss={"essential": True, "value": s.slack_oidc_url},
            aud={"essential": True, "value": s.slack_oidc_client_id},
            exp={"essential": True},
            sub={"essential": True},
            nonce={"essential": True, "value": nonce},
        ).validate(token.claims)
    except (JoseError, ValueError, TypeError) as err:
        logger.warning("a Slack ID token failed verification: %s", type(err).__name__)
        return None
    return token.claims


async def callback(request: Request) -> Response:
    if not _enabled(request):
        return _refused(request, "This Genie has no Slack sign-in configured.", 404)
    params = request.query_params
    if params.get("error"):
        return _refused(
            request,
            "Slack sign-in was cancelled or refused; nothing changed. Try again, or sign in with your password.",
            400,
        )
    attempt = _attempt(request)
    state, code = params.get("state") or "", params.get("code") or ""
    if attempt is None or not hmac.compare_digest(state.encode(), attempt["state"].encode()):
        return _refused(
            request,
            "This sign-in didn't start in this browser, or took longer than 10 minutes: start "
            "again from the sign-in page.",
            400,
        )
    if not code or len(code) > 500:
        return _refused(request, "Slack sent no sign-in code back: start again from the sign-in page.", 400)
    try:
        id_token = await _id_token(request, code)
        claims = await _verified_claims(request, id_token, attempt["nonce"]) if id_token else None
    except (httpx.HTTPError, ValueError):
        logger.warning("Slack's sign-in endpoints could not be reached")
        return _refused(request, "Slack could not be reached to finish signing you in; try again in a minute.", 502)
    if claims is None:
        return _refused(request, "Slack's answer could not be verified, so you were not signed in.", 400)
    team_id = claims.get("https://slack.com/team_id")
    user_id = claims.get("https://slack.com/user_id") or claims.get("sub")
    if not isinstance(team_id, str) or not isinstance(user_id, str) or len(team_id) > 32 or len(user_id) > 32:
        return _refused(request, "Slack's answer did not name your workspace and user, so you were not signed in.", 400)
    enterprise = claims.get("https://slack.com/enterprise_id")
    who = slack_signin.SlackClaims(
        team_id=team_id,
        user_id=user_id,
        email=claims.get("email") if isinstance(claims.get("email"), str) else None,
        email_verified=claims.get("email_verified") is True,
        name=str(claims.get("name") or "")[:200] or None,
        team_name=str(claims.get("https://slack.com/team_name") or "")[:200] or None,
        enterprise_id=enterprise if isinstance(enterprise, str) and len(enterprise) <= 32 else None,
    )
    rt = rt_of(request)
    try:
        async with rt.sessionmaker.begin() as session:
            user, token, linked = await slack_signin.sign_in(session, who)
            await users.end_session(session, request.cookies.get(SESSION_COOKIE))
    except slack_signin.SlackSignInRefused as err:
        return _refused(request, str(err))
    logger.info("user %s signed in with Slack%s", user.id, " (and linked that Slack account)" if linked else "")
    response = RedirectResponse(safe_next(attempt["next"]), status_code=303)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/",
        max_age=int(users.SESSION_LIFETIME.total_seconds()),
    )
    response.delete_cookie(STATE_COOKIE, path="/login/slack")
    return response


routes = [
    Route("/login/slack", start, methods=["GET"]),
    Route("/login/slack/callback", callback, methods=["GET"]),
]
