"""``genie outbox``: Slack messages waiting or failed."""

from __future__ import annotations

import argparse
import asyncio
import re

from bot.cli.common import Parser, UserError, emit, with_db
from bot.services import outbox


def _outbox_row(m) -> dict:
    state = "failed" if m.failed_at else "pending"
    return {
        "id": m.id,
        "state": state,
        "kind": m.kind,
        "channel": m.channel,
        "alert": m.alert_id,
        "attempts": m.attempts,
        "created_at": m.created_at.isoformat(),
        "next_attempt_at": None if m.failed_at else m.next_attempt_at.isoformat(),
        "failed_at": m.failed_at.isoformat() if m.failed_at else None,
        "last_error": m.last_error,
    }


def cmd_outbox_list(args: argparse.Namespace) -> int:
    async def work(session):
        return [_outbox_row(m) for m in await outbox.undelivered(session, failed_only=args.failed)]

    rows = asyncio.run(with_db(work))
    emit(rows, ["id", "state", "kind", "channel", "alert", "attempts", "next_attempt_at", "last_error"], args.json)
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    if not re.fullmatch(r"[0-9]{1,9}", args.id):
        raise UserError(f"{args.id!r} is not an outbox message id (see genie outbox list --failed)")

    async def work(session):
        return await outbox.retry_failed(session, int(args.id))

    message = asyncio.run(with_db(work))
    print(
        f"outbox message {message.id} ({message.kind} to {message.channel}) will be retried now by the running "
        "genie serve"
    )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    box = sub.add_parser("outbox", help="Slack messages waiting or failed").add_subparsers(
        dest="outbox_command", required=True, parser_class=Parser
    )
    p = box.add_parser("list", help="messages not delivered yet (pending and failed), oldest first")
    p.add_argument("--failed", action="store_true", help="only the failed ones (they wait for genie outbox retry)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox_list)
    p = box.add_parser("retry", help="retry a failed message now (after fixing its cause)")
    p.add_argument("id")
    p.set_defaults(func=cmd_outbox_retry)
