"""A person's notification rules on ``/account`` (issue 15, item 3): add and remove rules,
and prove they read their Genie e-mail address (a signed link sent there, confirmed by a POST
while signed in as them) — e-mail pages go nowhere else.

GET never changes anything; every POST carries the CSRF token (``pages.read_form``). A webhook's
signing secret is shown once, in the answer to the POST that made it.
"""

from __future__ import annotations

import logging

from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.channels import email
from bot.channels.errors import ChannelError
from bot.services import notification_rules
from bot.services.errors import InvalidInput, NotFound
from bot.web.pages import _own_post, account_view, csrf_failed, current_user, read_form, render, rt_of

logger = logging.getLogger(__name__)

VERIFY_SALT = "genie-email-verify"
VERIFY_MAX_AGE = 24 * 3600


def _serializer(request: Request) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(list(reversed(rt_of(request).secret_keys)), salt=VERIFY_SALT)


async def add_rule(request: Request) -> Response:
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/login?next=/account", status_code=303)
    settings = rt_of(request).settings
    channel = str(form.get("channel") or "")
    raw_delay = str(form.get("delay") or "0").strip()
    url = str(form.get("url") or "")
    try:
        if not raw_delay.isdigit():
            raise InvalidInput(
                f"the delay must be a whole number of minutes from 0 to {notification_rules.MAX_DELAY}, "
                f"not {raw_delay[:20]!r}"
            )
        async with rt_of(request).sessionmaker.begin() as session:
            rule, secret = await notification_rules.add_rule(
                session,
                user,
                channel,
                int(raw_delay),
                url,
                allow_http=settings.webhook_allow_http,
                allow_private=settings.webhook_allow_private,
            )
    except InvalidInput as err:
        return await account_view(request, user, status_code=400, rule_error=str(err))
    logger.info("Genie user %s added a %s notification rule (%s min)", user.id, rule.channel, rule.delay_minutes)
    if secret is not None:  # shown this once: the answer to this POST, never a GET
        return await account_view(request, user, new_secret=secret, new_rule_id=rule.id)
    return RedirectResponse("/account?rules=added#rules", status_code=303)


async def remove_rule(request: Request) -> Response:
    own = await _own_post(request, "rule_id")
    if isinstance(own, Response):
        return own
    _, user, rule_id = own
    try:
        async with rt_of(request).sessionmaker.begin() as session:
            await notification_rules.remove_rule(session, user, rule_id)
    except NotFound as err:
        return await account_view(request, user, status_code=404, rule_error=str(err))
    return RedirectResponse("/account?rules=removed#rules", status_code=303)


async def send_verification(request: Request) -> Response:
    """E-mail the person's Genie address a link that proves they read it; it says nothing
    about any alert and does nothing unless opened signed in as them and confirmed."""
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/login?next=/account", status_code=303)
    rt = rt_of(request)
    token = _serializer(request).dumps({"u": user.id, "e": user.email})
    subject, body = email.verification_email(rt.settings, f"{rt.settings.base_url}/account/email/{token}")
    try:
        await email.send(rt.settings, user.email, subject, body)
    except ChannelError as err:
        return await account_view(request, user, status_code=503, rule_error=f"The e-mail could not be sent: {err}")
    return RedirectResponse("/account?rules=verification-sent#rules", status_code=303)


def _read_token(request: Request) -> dict | None:
    try:
        data = _serializer(request).loads(request.path_params["token"], max_age=VERIFY_MAX_AGE)
    except BadSignature:
        return None
    return (
        data if isinstance(data, dict) and isinstance(data.get("u"), int) and isinstance(data.get("e"), str) else None
    )


def _bad_link(request: Request) -> Response:
    return render(
        request,
        "message.html",
        status_code=400,
        title="This link isn't valid",
        message="It has expired, was changed, or is for another account or address. "
        "Ask for a new one on your account page.",
    )


async def verify_page(request: Request) -> Response:
    user = await current_user(request)
    if user is None:
        return RedirectResponse(f"/login?next=/account/email/{request.path_params['token']}", status_code=303)
    request.state.user = user
    data = _read_token(request)
    if data is None or data["u"] != user.id or data["e"] != user.email:
        return _bad_link(request)
    return render(request, "email_verify.html", email=user.email, token=request.path_params["token"])


async def verify_submit(request: Request) -> Response:
    form = await read_form(request)
    if form is None:
        return csrf_failed(request)
    user = await current_user(request)
    if user is None:
        return RedirectResponse("/login?next=/account", status_code=303)
    request.state.user = user
    data = _read_token(request)
    if data is None or data["u"] != user.id:
        return _bad_link(request)
    async with rt_of(request).sessionmaker.begin() as session:
        done = await notification_rules.verify_email(session, user.id, data["e"])
    if not done:
        return _bad_link(request)
    logger.info("Genie user %s verified their e-mail address", user.id)
    return RedirectResponse("/account?rules=verified#rules", status_code=303)


routes = [
    Route("/account/rules", add_rule, methods=["POST"]),
    Route("/account/rules/{rule_id}/remove", remove_rule, methods=["POST"]),
    Route("/account/email/verify", send_verification, methods=["POST"]),
    Route("/account/email/{token}", verify_page, methods=["GET"]),
    Route("/account/email/{token}", verify_submit, methods=["POST"]),
]
