"""``genie alert``: an alert and its timeline."""

from __future__ import annotations

import argparse
import asyncio
import json

from bot.cli.common import Parser, with_db
from bot.services import alerts, teams
from storage.models import AlertStatus


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
    p = alert.add_parser("show", help="an alert and its timeline: who did what")
    p.add_argument("id", help="the alert's number (tinyId) or id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alert_show)
