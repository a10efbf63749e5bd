"""``genie link``: the links between Slack users and Genie accounts."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import Parser, emit, with_db
from bot.services import slack_links


def cmd_link_list(args: argparse.Namespace) -> int:
    async def work(session):
        return [
            {
                "email": link.user.email,
                "workspace": link.workspace_id,
                "slack_team": link.slack_team_id,
                "slack_user": link.slack_user_id,
                "slack_name": link.slack_name,
                "since": link.created_at.isoformat(),
            }
            for link in await slack_links.all_links(session, email=args.email)
        ]

    rows = asyncio.run(with_db(work))
    emit(rows, ["email", "workspace", "slack_user", "slack_name", "since"], args.json)
    return 0


def cmd_link_remove(args: argparse.Namespace) -> int:
    async def work(session):
        return [
            (link.user.email if link.user else "?", link.workspace_id, link.slack_user_id)
            for link in await slack_links.unlink_by_admin(session, args.who)
        ]

    for email, workspace, slack_user in asyncio.run(with_db(work)):
        print(f"removed link {workspace}/{slack_user} -> {email}")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    link = sub.add_parser("link", help="Slack links").add_subparsers(
        dest="link_command", required=True, parser_class=Parser
    )
    p = link.add_parser("list")
    p.add_argument("--email")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_link_list)
    p = link.add_parser("remove", help="remove the links of a Genie user (email) or a Slack user id")
    p.add_argument("who", metavar="EMAIL|SLACK_USER_ID")
    p.set_defaults(func=cmd_link_remove)
