"""``genie workspace``: per-workspace settings."""

from __future__ import annotations

import argparse
import asyncio

from bot.cli.common import Parser, UserError, emit, print_table, with_db
from bot.services import access
from storage import repositories as repo


def cmd_workspace_set(args: argparse.Namespace) -> int:
    if not args.workspace and not args.all_workspaces:
        # Without a choice, '*' would also cover every workspace installed later, unseen.
        raise UserError(
            "say where: --workspace T…|E… (one workspace or Grid org), or --all-workspaces (every "
            "workspace without a value of its own, including workspaces installed later)"
        )

    async def work(session):
        return await access.set_workspace_setting(session, args.workspace or "*", args.key, args.value)

    row = asyncio.run(with_db(work))
    where = (
        f"workspace {row.workspace_id}"
        if row.workspace_id != "*"
        else "every workspace without a value of its own, including workspaces installed later"
    )
    print(f"{row.key} = {row.value} for {where}")
    return 0


def cmd_workspace_list(args: argparse.Namespace) -> int:
    async def work(session):
        settings = await access.workspace_settings(session)
        by_workspace: dict[str, dict[str, str]] = {}
        for r in settings:
            by_workspace.setdefault(r.workspace_id, {})[r.key] = r.value
        rows = []
        for inst in await repo.installations(session):
            workspace = inst["enterprise_id"] if inst["is_enterprise_install"] else inst["team_id"]
            own = by_workspace.pop(inst["enterprise_id"] or "", {}) | by_workspace.pop(inst["team_id"] or "", {})
            rows.append(
                {
                    "workspace": workspace,
                    "team_id": inst["team_id"],
                    "enterprise_id": inst["enterprise_id"],
                    "name": inst["team_name"] or inst["enterprise_name"],
                    "org_wide": bool(inst["is_enterprise_install"]),
                    "installed_at": str(inst["installed_at"]),
                    "settings": own,
                }
            )
        for workspace, own in sorted(by_workspace.items()):  # settings without an installation (or '*')
            rows.append(
                {
                    "workspace": workspace,
                    "team_id": None,
                    "enterprise_id": None,
                    "name": "(every workspace: default)" if workspace == "*" else "(not installed)",
                    "org_wide": False,
                    "installed_at": None,
                    "settings": own,
                }
            )
        return rows

    rows = asyncio.run(with_db(work))
    if args.json:
        emit(rows, [], True)
    else:
        print_table(
            [dict(r, settings=", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-") for r in rows],
            ["workspace", "name", "org_wide", "installed_at", "settings"],
        )
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    ws = sub.add_parser("workspace", help="per-workspace settings").add_subparsers(
        dest="workspace_command", required=True, parser_class=Parser
    )
    p = ws.add_parser("set", help="e.g. genie workspace set allow_anonymous_actions true --workspace T0123")
    p.add_argument("key")
    p.add_argument("value")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workspace", help="Slack workspace (or Enterprise Grid org) id")
    where.add_argument(
        "--all-workspaces",
        action="store_true",
        help="the default for every workspace without its own value, including ones installed later",
    )
    p.set_defaults(func=cmd_workspace_set)
    p = ws.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workspace_list)
