"""``genie audit``: who connected, moved or removed which account; imports run."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import UserError, emit, print_table, with_db
from bot.services import audit


def cmd_audit(args: argparse.Namespace) -> int:
    if args.action and args.action not in audit.ACTIONS:
        raise UserError(f"--action {args.action!r} is not one of {', '.join(audit.ACTIONS)}")
    if not 1 <= args.limit <= 10_000:
        raise UserError("--limit must be between 1 and 10000")

    async def work(session):
        return [
            {
                "at": e.at.isoformat(),
                "action": e.action,
                "actor": e.actor,
                "via": e.via,
                "person": e.subject_email,
                "provider": e.provider,
                "tenant": e.tenant,
                "external_id": e.external_id,
                "detail": e.detail,
            }
            for e in await audit.events(
                session, limit=args.limit, subject_email=args.email, provider=args.provider, action=args.action
            )
        ]

    rows = asyncio.run(with_db(work))
    if args.json:
        emit(rows, [], True)
    else:
        print_table(
            [
                dict(r, account="/".join(x for x in (r["provider"], r["tenant"], r["external_id"]) if x) or None)
                for r in rows
            ],
            ["at", "action", "person", "account", "actor", "via", "detail"],
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("audit", help="who connected, moved or removed which account; imports run")
    p.add_argument("--email", help="changes to this person's accounts")
    p.add_argument("--provider")
    p.add_argument("--action", help="account.connect, account.move, account.remove, account.departed, import.run")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
