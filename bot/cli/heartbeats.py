"""``genie heartbeat``: heartbeats of the teams."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from bot.cli.common import Parser, UserError, emit, with_db
from bot.services import heartbeats, teams
from bot.services.alerts import ValidationFailed
from storage.base import utcnow


def _heartbeat_row(h, team_name: str, now) -> dict:
    state = "disabled" if not h.enabled else "LATE" if heartbeats.is_late(h, now) else "ok"
    return {
        "name": h.name,
        "team": team_name,
        "interval": heartbeats.interval_words(h.interval, h.interval_unit),
        "state": state,
        "enabled": h.enabled,
        "expired": heartbeats.is_late(h, now),
        "last_ping": h.last_ping_at.isoformat() if h.last_ping_at else None,
        "due": h.expires_at.isoformat(),
        "message": h.alert_message or heartbeats.default_message(h.name),
        "priority": h.alert_priority,
        "tags": list(h.alert_tags or []),
        "description": h.description,
    }


def cmd_heartbeat_add(args: argparse.Namespace) -> int:
    interval, unit = heartbeats.parse_interval(args.interval)
    body = {
        "name": args.name,
        "interval": interval,
        "intervalUnit": unit,
        "enabled": True,
        "alertPriority": args.priority,
    }
    if args.description is not None:
        body["description"] = args.description
    if args.message is not None:
        body["alertMessage"] = args.message
    if args.tags is not None:
        body["alertTags"] = [t.strip() for t in args.tags.split(",") if t.strip()]
    try:
        data = heartbeats.parse_fields(body, create=True)
    except ValidationFailed as err:
        raise UserError("; ".join(f"{k}: {v}" for k, v in err.errors.items())) from None

    async def work(session):
        team = await teams.require_team(session, args.team)
        return await heartbeats.create(session, team, data, utcnow()), team

    heartbeat, team = asyncio.run(with_db(work))
    print(
        f"added heartbeat {heartbeat.name} of team {team.name}: a ping is expected every "
        f"{heartbeats.interval_words(heartbeat.interval, heartbeat.interval_unit)}, first by "
        f"{heartbeat.expires_at:%Y-%m-%d %H:%M} UTC (ping: GET /v2/heartbeats/{heartbeat.name}/ping with the team's key)"
    )
    return 0


def cmd_heartbeat_list(args: argparse.Namespace) -> int:
    async def work(session):
        team = await teams.require_team(session, args.team) if args.team else None
        now = utcnow()
        return [_heartbeat_row(h, t.name, now) for h, t in await heartbeats.of_team(session, team.id if team else None)]

    rows = asyncio.run(with_db(work))
    emit(rows, ["team", "name", "interval", "state", "last_ping", "due", "priority"], args.json)
    return 0


def cmd_heartbeat_change(change: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def work(session):
            team = await teams.require_team(session, args.team)
            heartbeat = await heartbeats.find(session, team, args.name)
            if change == "remove":
                await heartbeats.remove(session, heartbeat)
            else:
                await heartbeats.set_enabled(session, heartbeat, change == "enable", utcnow())
            return team

        team = asyncio.run(with_db(work))
        done = {"enable": "enabled", "disable": "disabled", "remove": "removed"}[change]
        print(f"{done} heartbeat {args.name} of team {team.name}")
        return 0

    return run


def register(sub: argparse._SubParsersAction) -> None:
    hb = sub.add_parser("heartbeat", help="heartbeats: a job pings, a late ping raises an alert").add_subparsers(
        dest="heartbeat_command", required=True, parser_class=Parser
    )
    p = hb.add_parser("add", help="a heartbeat of team T, expected every --interval (10m, 2h, 1d)")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.add_argument("--interval", required=True, help="how often a ping is expected: 10m, 2h, 1d")
    p.add_argument("--message", help="the alert's message when it expires (default: NAME is expired)")
    p.add_argument("--tags", help="the alert's tags, comma-separated")
    p.add_argument("--priority", default="P3", help="the alert's priority, P1-P5 (default P3)")
    p.add_argument("--description")
    p.set_defaults(func=cmd_heartbeat_add)
    p = hb.add_parser("list", help="heartbeats, their state (ok, LATE, disabled) and last ping")
    p.add_argument("--team")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_heartbeat_list)
    for change in ("enable", "disable", "remove"):
        p = hb.add_parser(change)
        p.add_argument("name")
        p.add_argument("--team", required=True)
        p.set_defaults(func=cmd_heartbeat_change(change))
