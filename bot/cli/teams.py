"""``genie team``: teams, their channels, members, API keys and grants."""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Callable

from bot.cli.common import Parser, emit, print_table, with_db
from bot.services import alerts, teams


def cmd_team_add(args: argparse.Namespace) -> int:
    async def work(session):
        return await teams.add_team(session, args.name, args.channel, args.workspace)

    team = asyncio.run(with_db(work))
    print(f"added team {team.name}" + (f" (channel {team.slack_channel_id})" if team.slack_channel_id else ""))
    return 0


def cmd_team_set_channel(args: argparse.Namespace) -> int:
    async def work(session):
        return await teams.set_team_channel(session, args.name, args.channel, args.workspace)

    team = asyncio.run(with_db(work))
    print(f"team {team.name} now posts to {team.slack_channel_id}")
    return 0


def cmd_team_member(add: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def work(session):
            if add:
                return await teams.add_member(session, args.name, args.email)
            return await teams.remove_member(session, args.name, args.email)

        team, user = asyncio.run(with_db(work))
        print(f"{'added' if add else 'removed'} {user.email} {'to' if add else 'from'} {team.name}")
        return 0

    return run


def cmd_team_list(args: argparse.Namespace) -> int:
    async def work(session):
        return [
            {"name": team.name, "channel": team.slack_channel_id, "members": [u.email for u in members]}
            for team, members in await teams.all_teams_with_members(session)
        ]

    rows = asyncio.run(with_db(work))
    if args.json:
        emit(rows, [], True)
    else:
        print_table([dict(r, members=", ".join(r["members"]) or "-") for r in rows], ["name", "channel", "members"])
    return 0


def cmd_team_key(args: argparse.Namespace) -> int:
    async def work(session):
        return await alerts.team_key(session, await teams.require_team(session, args.name), rotate=args.rotate)

    print(asyncio.run(with_db(work)))  # only the key, so that KEY=$(genie team key NAME) works
    return 0


def cmd_team_grant(args: argparse.Namespace) -> int:
    async def work(session):
        team, other = await teams.require_team(session, args.name), await teams.require_team(session, args.other)
        await alerts.grant_post(session, team, other)
        return team, other

    team, other = asyncio.run(with_db(work))
    hint = json.dumps([{"type": "team", "name": other.name}])
    print(
        f"{team.name}'s key may now also post alerts for {other.name} (name it in responders: {hint}); "
        f"reading and acting on them stay with {other.name}'s key"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    team = sub.add_parser("team", help="teams and their members").add_subparsers(
        dest="team_command", required=True, parser_class=Parser
    )
    p = team.add_parser("add")
    p.add_argument("name")
    p.add_argument("--channel", help="Slack channel id for the team's alerts")
    p.add_argument("--workspace", help="multi-workspace mode: the channel's workspace (T0123… or E0123…/T0123…)")
    p.set_defaults(func=cmd_team_add)
    p = team.add_parser("set-channel")
    p.add_argument("name")
    p.add_argument("channel")
    p.add_argument("--workspace", help="multi-workspace mode: the channel's workspace (T0123… or E0123…/T0123…)")
    p.set_defaults(func=cmd_team_set_channel)
    for name, add in (("add-member", True), ("remove-member", False)):
        p = team.add_parser(name)
        p.add_argument("name")
        p.add_argument("email")
        p.set_defaults(func=cmd_team_member(add))
    p = team.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_team_list)
    p = team.add_parser("key", help="print the team's API key (GenieKey) for the alert API")
    p.add_argument("name")
    p.add_argument("--rotate", action="store_true", help="replace the key; the old one stops working")
    p.set_defaults(func=cmd_team_key)
    p = team.add_parser(
        "grant",
        help="NAME's key may also post alerts for team OTHER (post only: reading and acting stay with OTHER's key)",
    )
    p.add_argument("name")
    p.add_argument("other")
    p.set_defaults(func=cmd_team_grant)
