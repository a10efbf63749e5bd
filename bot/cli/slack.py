"""``genie slack``: the Slack directory."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from sqlalchemy.ext.asyncio import AsyncEngine

from bot.cli.common import Parser, UserError, admin_settings, with_engine
from bot.services.slack_directory import SKIP_TEXT
from bot.slack import directory_sync
from bot.slack.clients import SlackClients
from storage.session import make_sessionmaker


def sync_lines(report) -> list[str]:
    """``genie slack sync``'s report of one workspace, for a person."""
    lines = [f"Slack workspace {report.workspace}: {report.summary()}"]
    lines += [f"  warning: {w}" for w in report.warnings]

    def who(e) -> str:
        return f"{e.slack_user}{f' @{e.handle}' if e.handle else ''} {e.email or '(no email)'}"

    lines += [f"  linked     {who(e)} -> {e.person}" for e in report.linked]
    lines += [f"  ambiguous  {who(e)}: candidates {', '.join(e.candidates)}" for e in report.ambiguous]
    lines += [f"  unmatched  {who(e)}: {e.detail}" for e in report.unmatched]
    lines += [f"  conflict   {who(e)}: {e.detail}" for e in report.conflicts]
    lines += [f"  unlinked   {who(e)}: was {e.person}; {e.detail}" for e in report.unlinked]
    if report.skipped:
        lines.append(
            "  skipped    " + ", ".join(f"{SKIP_TEXT.get(k, k)}: {v}" for k, v in sorted(report.skipped.items()))
        )
    return lines


def cmd_slack_sync(args: argparse.Namespace) -> int:
    settings = admin_settings()
    progress = directory_sync.Progress(sys.stderr)

    async def work(engine: AsyncEngine):
        try:
            return await directory_sync.sync(
                settings,
                SlackClients(settings, engine),
                make_sessionmaker(engine),
                workspace=args.workspace,
                progress=progress,
            )
        finally:
            progress.done()

    reports = asyncio.run(with_engine(settings, work))
    if args.json:
        print(json.dumps({"workspaces": [r.as_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            print("\n".join(sync_lines(report)))
    failed = [r for r in reports if r.error]
    if failed:
        raise UserError("; ".join(f"slack sync of {r.workspace.workspace_id} stopped early: {r.error}" for r in failed))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    slack = sub.add_parser("slack", help="the Slack directory").add_subparsers(
        dest="slack_command", required=True, parser_class=Parser
    )
    p = slack.add_parser("sync", help="record every Slack user and link them by email where the workspace allows it")
    p.add_argument(
        "--workspace",
        help="only this workspace (T0123…, or E0123… on Enterprise Grid); "
        "default: every workspace Genie is installed in",
    )
    p.add_argument("--json", action="store_true", help="print only the report, as JSON")
    p.set_defaults(func=cmd_slack_sync)
