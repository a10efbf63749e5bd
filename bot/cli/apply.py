"""``genie apply FILE.yaml [--dry-run] [--prune]``: on call as code (``bot.services.config_as_code``)."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

from bot.cli.common import UserError, admin_settings, with_engine
from bot.services import config_as_code
from storage.session import make_sessionmaker

MAX_FILE = 5_000_000


def cmd_apply(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        if path.stat().st_size > MAX_FILE:
            raise UserError(f"{args.file}: larger than {MAX_FILE // 1_000_000} MB")
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise UserError(f"{args.file}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise UserError(f"{args.file}: not UTF-8 text") from None
    doc = config_as_code.load(text, args.file)

    async def work(engine):
        async with make_sessionmaker(engine)() as session:
            try:
                plan = await config_as_code.apply(session, doc, args.file, prune=args.prune)
            except BaseException:
                await session.rollback()
                raise
            if args.dry_run:
                await session.rollback()
            else:
                await session.commit()
            return plan

    plan = asyncio.run(with_engine(admin_settings(), work))
    if not plan.changes:
        print(f"{args.file}: nothing to change")
        return 0
    print(f"{args.file}: {'would make' if args.dry_run else 'made'} {len(plan.changes)} change(s)")
    for change in plan.changes:
        print(f"  {change}")
    if args.dry_run:
        print("dry run: nothing was changed")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "apply", help="make teams, schedules, escalation policies and heartbeats as a YAML file declares them"
    )
    p.add_argument("file")
    p.add_argument("--dry-run", action="store_true", help="print what would change, change nothing")
    p.add_argument(
        "--prune",
        action="store_true",
        help="also remove, within the teams the file declares, what it does not name",
    )
    p.set_defaults(func=cmd_apply)
