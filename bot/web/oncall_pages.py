"""On call on the web side: a team's schedules over the next two weeks as a timeline, with a
form to add an override and a button to delete one (``/teams/{name}/oncall``), and the team's
escalation policy (``/teams/{name}/escalation``).

Who sees what is the team page's rule (a member of the team, or an admin; another team is "not
found", 404). The rules of ``bot.web.pages`` hold: GET never changes anything, every POST
carries the session-bound CSRF token, bad input gets the page again with what is wrong (400)
and changes nothing.
"""

from __future__ import annotations

from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.ids import parse_id
from bot.services import schedule_views
from bot.services.errors import GenieError, NotFound
from bot.web.alert_pages import not_found, signed_in, signed_in_post
from bot.web.pages import render, rt_of
from storage.models import User

_DONE = {"added": "Override added.", "deleted": "Override deleted.", "usergroup": "Slack user group saved."}


async def _oncall_page(
    request: Request,
    user: User,
    name: str,
    *,
    error: str | None = None,
    status_code: int = 200,
    form: dict | None = None,
) -> Response:
    rt = rt_of(request)
    async with rt.sessionmaker() as session:
        page = await schedule_views.team_oncall(session, user, name, rt.now())
    if page is None:
        return not_found(request, "team")
    return render(
        request,
        "oncall.html",
        status_code=status_code,
        wide=True,
        title=f"On call · {page.team.name}",
        p=page,
        error=error,
        done=_DONE.get(request.query_params.get("done", "")) if status_code == 200 else None,
        form=form or {},
    )


async def oncall_page(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    return await _oncall_page(request, user, request.path_params["name"])


def _back(name: str, done: str) -> RedirectResponse:
    return RedirectResponse(f"/teams/{quote(name, safe='')}/oncall?done={done}", status_code=303)


async def add_override(request: Request) -> Response:
    posted = await signed_in_post(request)
    if isinstance(posted, Response):
        return posted
    form, user = posted
    name = request.path_params["name"]
    values = {k: str(form.get(k) or "")[:200] for k in ("schedule", "email", "start", "end")}
    try:
        async with rt_of(request).sessionmaker.begin() as session:
            await schedule_views.add_override_as(
                session, user, name, values["schedule"], values["email"], values["start"], values["end"]
            )
    except NotFound as err:
        if str(err).startswith("There is no such team"):
            return not_found(request, "team")
        return await _oncall_page(request, user, name, error=str(err), status_code=400, form=values)
    except GenieError as err:
        return await _oncall_page(request, user, name, error=str(err), status_code=400, form=values)
    return _back(name, "added")


async def delete_override(request: Request) -> Response:
    posted = await signed_in_post(request)
    if isinstance(posted, Response):
        return posted
    form, user = posted
    name = request.path_params["name"]
    override_id = parse_id(request.path_params["override_id"])
    if override_id is None:
        return not_found(request, "override")
    try:
        async with rt_of(request).sessionmaker.begin() as session:
            await schedule_views.delete_override_as(session, user, name, str(form.get("schedule") or ""), override_id)
    except NotFound as err:
        if str(err).startswith("There is no such team"):
            return not_found(request, "team")
        return await _oncall_page(request, user, name, error=str(err), status_code=400)
    return _back(name, "deleted")


async def set_usergroup(request: Request) -> Response:
    """A Genie admin names the Slack user group kept to a schedule's person on call (empty: none)."""
    posted = await signed_in_post(request)
    if isinstance(posted, Response):
        return posted
    form, user = posted
    name = request.path_params["name"]
    schedule, group = str(form.get("schedule") or "")[:200], str(form.get("usergroup") or "")[:64]
    try:
        async with rt_of(request).sessionmaker.begin() as session:
            await schedule_views.set_usergroup_as(session, user, name, schedule, group)
    except NotFound as err:
        if str(err).startswith("There is no such team"):
            return not_found(request, "team")
        return await _oncall_page(request, user, name, error=str(err), status_code=400)
    except GenieError as err:
        return await _oncall_page(request, user, name, error=str(err), status_code=403 if not user.is_admin else 400)
    return _back(name, "usergroup")


async def policy_page(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    async with rt_of(request).sessionmaker() as session:
        found = await schedule_views.team_policy(session, user, request.path_params["name"])
    if found is None:
        return not_found(request, "team")
    team, steps, repeat, repeat_after = found
    return render(
        request,
        "escalation.html",
        title=f"Escalation · {team.name}",
        team=team,
        steps=steps,
        repeat=repeat,
        repeat_after=repeat_after,
    )


routes = [
    Route("/teams/{name}/oncall", oncall_page, methods=["GET"]),
    Route("/teams/{name}/oncall/overrides", add_override, methods=["POST"]),
    Route("/teams/{name}/oncall/overrides/{override_id}/delete", delete_override, methods=["POST"]),
    Route("/teams/{name}/oncall/usergroup", set_usergroup, methods=["POST"]),
    Route("/teams/{name}/escalation", policy_page, methods=["GET"]),
]
