"""``genie user``: Genie accounts — add, passwords, invitations, (de)activation, list."""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cli.common import Parser, UserError, admin_settings, emit, print_table, read_password, with_db, with_engine
from bot.services import slack_links, users
from bot.slack import notify
from bot.slack.clients import SlackClients
from storage.session import make_sessionmaker


def cmd_user_add(args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin)

    async def work(session):
        return await users.add_user(session, args.email, args.name, password, is_admin=args.admin)

    user = asyncio.run(with_db(work))
    note = "" if password else " (no password: they cannot sign in until `genie user invite` or `set-password`)"
    print(f"added user {user.email}{' (admin)' if user.is_admin else ''}{note}")
    return 0


def cmd_user_set_password(args: argparse.Namespace) -> int:
    password = read_password(args.password_stdin)
    if password is None:
        raise UserError("no password given (use --password-stdin)")

    async def work(session):
        return await users.set_password(session, args.email, password)

    user = asyncio.run(with_db(work))
    print(f"password set for {user.email}")
    return 0


def cmd_user_invite(args: argparse.Namespace) -> int:
    """The link is always printed for the admin. It is DMed only to the person's Slack accounts
    whose confirmed email (``users.info`` now) is their Genie email: a Slack account linked by a
    phished one-time link must never receive a password link (issue 13). The outbox asks Slack
    again when it delivers."""
    if not 1 <= args.days <= users.MAX_INVITE_TTL.days:
        raise UserError(f"--days must be between 1 and {users.MAX_INVITE_TTL.days}")
    settings = admin_settings()

    async def work(engine: AsyncEngine) -> notify.Invitation:
        async with make_sessionmaker(engine).begin() as session:
            return await notify.invite(
                session, settings, SlackClients(settings, engine), args.email, args.days, slack=not args.no_slack
            )

    done: notify.Invitation = asyncio.run(with_engine(settings, work))
    user, url, told, refused = done.user, done.url, done.told, done.refused
    print(f"invitation for {user.email} (works once, expires in {args.days} days):")
    print(url)
    if told:
        print(f"also sent to them in Slack ({', '.join(told)}); `genie serve` delivers it")
    for slack_user, problem in refused:
        print(
            f"not sent to Slack user {slack_user}: {problem} — a password link goes only to a Slack account "
            f"whose confirmed email is the person's own; give them the link above yourself"
        )
    return 0


def cmd_user_set_active(active: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def work(session):
            return await users.set_active(session, args.email, active)

        user = asyncio.run(with_db(work))
        print(f"{user.email} is now {'active' if active else 'deactivated'}")
        return 0

    return run


def cmd_user_list(args: argparse.Namespace) -> int:
    async def work(session):
        everyone = await users.all_users(session)
        links = await slack_links.all_links(session)
        by_user: dict[int, list[str]] = {}
        for link in links:
            by_user.setdefault(link.user_id, []).append(f"{link.workspace_id}/{link.slack_user_id}")
        return [
            {
                "email": u.email,
                "name": u.name,
                "admin": u.is_admin,
                "active": u.is_active,
                "can_sign_in": u.password_hash is not None,
                "slack": by_user.get(u.id, []),
            }
            for u in everyone
        ]

    rows = asyncio.run(with_db(work))
    if not args.json:
        rows_text = [dict(r, slack=", ".join(r["slack"]) or "-") for r in rows]
        print_table(rows_text, ["email", "name", "admin", "active", "slack"])
    else:
        emit(rows, [], True)
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    user = sub.add_parser("user", help="Genie accounts").add_subparsers(
        dest="user_command", required=True, parser_class=Parser
    )
    p = user.add_parser("add", help="add a person")
    p.add_argument("email")
    p.add_argument("--name", required=True)
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.add_argument("--admin", action="store_true")
    p.set_defaults(func=cmd_user_add)
    p = user.add_parser("set-password", help="set a person's password")
    p.add_argument("email")
    p.add_argument("--password-stdin", action="store_true")
    p.set_defaults(func=cmd_user_set_password)
    p = user.add_parser("invite", help="a one-time link for the person to set (or reset) their password")
    p.add_argument("email")
    p.add_argument("--days", type=int, default=users.INVITE_TTL.days, help="valid for N days (default 3, at most 30)")
    p.add_argument("--no-slack", action="store_true", help="do not also send the link as a Slack DM")
    p.set_defaults(func=cmd_user_invite)
    p = user.add_parser("deactivate", help="a deactivated user cannot sign in or act on alerts")
    p.add_argument("email")
    p.set_defaults(func=cmd_user_set_active(False))
    p = user.add_parser("activate")
    p.add_argument("email")
    p.set_defaults(func=cmd_user_set_active(True))
    p = user.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_user_list)
