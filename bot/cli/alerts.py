"""``genie alert``: the alerts (filtered like the web list), an alert and its timeline."""

from __future__ import annotations

import argparse
import asyncio
import json

from bot.cli.common import Parser, with_db
from bot.services import alert_views, alerts, teams
from bot.services.errors import InvalidInput
from storage.models import AlertStatus


def cmd_alert_list(args: argparse.Namespace) -> int:
    """Every alert (no team gate: this is the operator's shell), newest first, filtered as on the
    web list — ``--digest N`` lists the alerts a storm digest stands for."""
    params = {"status": args.status or "", "team": args.team or "", "priority": args.priority or ""}
    if args.digest is not None:
        params["digest"] = str(args.digest)
    try:
        filters = alert_views.ListFilters.parse(params)
    except InvalidInput as err:
        raise SystemExit(f"genie: {err}") from None

    async def work(session):
        rows, before = [], None
        while len(rows) < args.limit:
            page = await alert_views.alert_list(
                session, None, filters, before=before, limit=min(500, args.limit - len(rows))
            )
            rows += page.rows
            if page.next_before is None:
                break
            before = page.next_before
        return rows

    rows = asyncio.run(with_db(work))
    if args.json:
        shown = [
            {
                "id": r.id,
                "message": r.message,
                "priority": r.priority,
                "state": r.state,
                "team": r.team_name,
                "count": r.count,
                "created_at": r.created_at.isoformat(),
            }
            for r in rows
        ]
        print(json.dumps(shown, indent=2))
        return 0
    for r in rows:
        print(f"#{r.id:<7} {r.priority}  {r.state:<12} {r.team_name or '-':<16} {r.message}")
    if not rows:
        print("no alerts match")
    return 0


def cmd_alert_show(args: argparse.Namespace) -> int:
    async def work(session):
        alert = await alerts.find(session, args.id, "tiny" if args.id.isdigit() else "id")
        team = await teams.team_by_id(session, alert.team_id) if alert.team_id else None
        events = await alerts.timeline(session, alert.id)
        return {
            "id": alert.id,
            "uid": alert.uid,
            "message": alert.message,
            "priority": alert.priority,
            "status": alert.status,
            "acknowledged": alert.acknowledged,
            "team": team.name if team else None,
            "alias": alert.alias,
            "count": alert.count,
            "created_at": alert.created_at.isoformat(),
            "slack": {"channel": alert.slack_channel, "ts": alert.slack_ts, "digest": alert.slack_digest_id},
            "timeline": [
                {
                    "at": e.at.isoformat(),
                    "action": e.action,
                    "outcome": e.outcome,
                    "via": e.via,
                    "actor": e.actor_name,
                    "actor_user_id": e.actor_user_id,
                    "slack": f"{e.slack_workspace_id}/{e.slack_user_id}" if e.slack_user_id else None,
                    "anonymous": e.anonymous,
                    "reason": e.reason,
                    "note": e.note,
                }
                for e in events
            ],
        }

    shown = asyncio.run(with_db(work))
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    state = (
        AlertStatus.CLOSED
        if shown["status"] == AlertStatus.CLOSED
        else "acknowledged"
        if shown["acknowledged"]
        else AlertStatus.OPEN
    )
    print(f"#{shown['id']} [{shown['priority']}] {shown['message']}")
    print(
        f"team {shown['team'] or '-'} · {state} · alias {shown['alias']} · count {shown['count']} · "
        f"created {shown['created_at']}"
    )
    slack = shown["slack"]
    if slack["ts"]:
        print(f"in Slack: message {slack['ts']} in {slack['channel']}")
    elif slack["digest"] is not None:
        print(f"in Slack: collapsed into storm digest {slack['digest']} in {slack['channel']} (no message of its own)")
    for e in shown["timeline"]:
        who = e["actor"] or "?"
        if e["slack"]:
            who += f" (Slack {e['slack']}{', anonymous' if e['anonymous'] else ''})"
        extra = f" — {e['reason']}" if e["reason"] else ""
        note = f" — note: {e['note']}" if e["note"] else ""
        print(f"  {e['at']}  {e['action']:<11} {e['outcome']:<7} via {e['via']:<5} by {who}{extra}{note}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    alert = sub.add_parser("alert", help="alerts").add_subparsers(
        dest="alert_command", required=True, parser_class=Parser
    )
    p = alert.add_parser("list", help="alerts, newest first (every team's), filtered like the web list")
    p.add_argument("--team", help="only this team's")
    p.add_argument("--status", choices=list(alert_views.STATUSES))
    p.add_argument("--priority", choices=list(alerts.PRIORITIES))
    p.add_argument("--digest", type=int, metavar="N", help="only the alerts collapsed into storm digest N")
    p.add_argument("--limit", type=int, default=200, help="at most this many (default %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alert_list)
    p = alert.add_parser("show", help="an alert and its timeline: who did what")
    p.add_argument("id", help="the alert's number (tinyId) or id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alert_show)
