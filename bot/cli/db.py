"""``genie db``: database maintenance."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import Parser, with_db


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    async def work(session):
        return None

    asyncio.run(with_db(work))
    print("database is up to date")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    db = sub.add_parser("db", help="database maintenance").add_subparsers(
        dest="db_command", required=True, parser_class=Parser
    )
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)
