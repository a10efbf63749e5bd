"""Reports (``/reports``) and their CSV export (``/reports.csv``), and the one-click reminder
to Slack users whose clicks were refused for want of a link (``POST /reports/remind``).

The figures come from ``bot.services.reports`` (SQL, over the alerts the viewer may see —
``access.visible_alerts``); the linking-health tables are for admins only, on the page and in
the export. GET never changes anything; the reminder is a CSRF-protected POST by an admin.
"""

from __future__ import annotations

import csv
import io
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from bot.services import alert_views, reports
from bot.services.errors import InvalidInput
from bot.web import charts
from bot.web.alert_pages import signed_in, signed_in_post
from bot.web.pages import render, rt_of, templates

templates.globals["duration"] = charts.duration


def _charts(rep: reports.Report) -> dict:
    return {
        "days": charts.columns("chart-days", "Alerts per day", [(d.strftime("%m-%d"), n) for d, n in rep.days]),
        "mtta": charts.bars(
            "chart-mtta",
            "Median time to acknowledge, per team",
            [(t.team, t.mtta_median or 0) for t in rep.teams],
            fmt=charts.duration,
        ),
        "people": charts.bars(
            "chart-people",
            "Acknowledgements and closes, per person",
            [(p.name, p.acknowledged + p.closed) for p in rep.people[:15]],
        ),
    }


async def report_page(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    params = request.query_params
    shown = {k: (params.get(k) or "")[:100] for k in ("from", "to", "team")}
    try:
        period = reports.Period.parse(params)
    except InvalidInput as err:
        async with rt_of(request).sessionmaker() as session:
            teams = await alert_views.visible_teams(session, user)
        return render(
            request,
            "reports.html",
            status_code=400,
            wide=True,
            title="Reports",
            error=str(err),
            rep=None,
            shown=shown,
            teams=teams,
        )
    async with rt_of(request).sessionmaker() as session:
        teams = await alert_views.visible_teams(session, user)
        rep = await reports.report(session, user, period)
        health = await reports.linking_health(session, period) if user.is_admin else None
    done = request.query_params.get("reminded")
    return render(
        request,
        "reports.html",
        wide=True,
        title="Reports",
        error=None,
        rep=rep,
        health=health,
        shown=shown,
        teams=teams,
        charts=_charts(rep),
        csv=lambda t: "/reports.csv?" + urlencode(period.params(table=t)),
        back=urlencode(period.params()),
        reminded=done if done and done.isdigit() else None,
    )


def _cell(value) -> str:
    """A CSV cell a spreadsheet will not run: text starting with = + - @ (or a tab/CR) gets a
    leading apostrophe (alert aliases and sources come from monitoring tools)."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _number(text) else text


def _number(text: str) -> bool:
    try:
        float(text)
        return True
    except ValueError:
        return False


async def report_csv(request: Request) -> Response:
    user, refused = await signed_in(request)
    if refused is not None:
        return refused
    table = (request.query_params.get("table") or "")[:30]
    try:
        period = reports.Period.parse(request.query_params)
        if table not in reports.TABLES:
            raise InvalidInput(
                f"There is no table {table.replace(chr(0), '')!r}; there are: {', '.join(reports.TABLES)}."
            )
    except InvalidInput as err:
        return render(
            request, "message.html", status_code=400, title="That export doesn't make sense", message=str(err)
        )
    if table in reports.ADMIN_TABLES and not user.is_admin:
        return render(
            request, "message.html", status_code=403, title="Admins only", message="Linking health is for Genie admins."
        )
    async with rt_of(request).sessionmaker() as session:
        if table in reports.ADMIN_TABLES:
            rep, health = None, await reports.linking_health(session, period)
        else:
            rep, health = await reports.report(session, user, period), None
    header, rows = reports.table_rows(rep, health, table)
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([[_cell(v) for v in row] for row in rows])
    name = f"genie-{table}-{period.since}-{period.until}.csv"
    return Response(
        out.getvalue(),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": f'attachment; filename="{name}"', "Cache-Control": "no-store"},
    )


async def remind(request: Request) -> Response:
    posted = await signed_in_post(request)
    if isinstance(posted, Response):
        return posted
    form, user = posted
    if not user.is_admin:
        return render(
            request,
            "message.html",
            status_code=403,
            title="Admins only",
            message="Only Genie admins send link reminders.",
        )
    workspace, slack_user = str(form.get("workspace") or ""), str(form.get("slack_user") or "")
    back = str(form.get("back") or "")[:300]
    rt = rt_of(request)
    try:
        async with rt.sessionmaker.begin() as session:
            await reports.remind_to_link(session, user, workspace, slack_user)
    except InvalidInput as err:
        return render(request, "message.html", status_code=400, title="No reminder sent", message=str(err))
    rt.wake_outbox(slack_user[:32])
    query = f"{back}&" if back and "\n" not in back and "\r" not in back else ""
    return RedirectResponse(f"/reports?{query}reminded=1#linking", status_code=303)


routes = [
    Route("/reports", report_page, methods=["GET"]),
    Route("/reports.csv", report_csv, methods=["GET"]),
    Route("/reports/remind", remind, methods=["POST"]),
]
