"""``genie pagerduty import`` and ``genie opsgenie import``: the people of another tool."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import os
import re
import sys
from collections.abc import Callable
from typing import Any

from bot.cli.common import Parser, UserError, with_db
from bot.config import load_dotenv_file
from bot.importers import opsgenie, pagerduty
from bot.logs import install_log_redaction
from bot.services import imports, oncall_import
from bot.services.audit import Who


def _api_key(args: argparse.Namespace, default_env: str) -> tuple[str, str]:
    """The API key from standard input or an environment variable (never from argv) and where
    it came from, for error messages that name the place but never the key."""
    load_dotenv_file()
    if args.key_stdin:  # a prompt that does not echo on a terminal; the first line of a pipe
        key = (getpass.getpass("API key: ") if sys.stdin.isatty() else sys.stdin.readline()).strip()
        if not key:
            raise UserError("--key-stdin: no API key on standard input")
        return key, "the key on standard input"
    var = args.key_env or default_env
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]{0,99}", var):
        raise UserError(f"--key-env {var!r} is not an environment variable name")
    key = os.environ.get(var, "").strip()
    if not key:
        raise UserError(f"no API key: set {var} (or name another variable with --key-env, or use --key-stdin)")
    return key, var


def _account_words(e: dict) -> str:
    words = [e["id"]]
    if e.get("name") or e.get("handle"):
        words.append(e.get("name") or e.get("handle"))
    if e.get("email"):
        words.append(f"<{e['email']}>")
    return " ".join(words)


def _print_import_report(r: dict) -> None:
    skipped = sum(len(v) for v in r["skipped"].values())
    waits = f", waited out {r['rate_limited']} rate limits" if r["rate_limited"] else ""
    print(f"{r['label']} {r['tenant']}: {r['read']} users read ({r['requests']} requests{waits})")
    print(
        f"  linked {len(r['linked'])}, already {len(r['already'])}, ambiguous {len(r['ambiguous'])}, "
        f"unmatched {len(r['unmatched'])}, conflict {len(r['conflict'])}, unlinked {len(r['unlinked'])}, "
        f"skipped {skipped}, departed {len(r['departed'])}, people created {len(r['people_created'])}, "
        f"teams created {len(r['teams_created'])}, teams updated {len(r['teams_updated'])}"
    )
    for e in r["linked"]:
        print(f"  linked     {_account_words(e)} -> {e['person']}")
    for e in r["people_created"]:
        print(
            f"  created    {e['person']} (no password: cannot sign in until `genie user invite {e['person']}`) <- {_account_words(e)}"
        )
    for e in r["ambiguous"]:
        print(
            f"  ambiguous  {_account_words(e)}: {len(e['candidates'])} people have that email: "
            f"{', '.join(e['candidates'])}"
        )
    for e in r["unmatched"]:
        print(f"  unmatched  {_account_words(e)}: no person has that email")
    for e in r["conflict"]:
        print(f"  conflict   {_account_words(e)}: {e['person']} already has another {r['provider']} account here")
    for e in r["unlinked"]:
        print(f"  unlinked   {_account_words(e)}: deleted or deactivated, link to {e.get('person')} removed")
    for reason, entries in sorted(r["skipped"].items()):
        for e in entries:
            print(f"  skipped    {_account_words(e)}: {reason}")
    for e in r["departed"]:
        gone = f": link to {e['person']} removed" if e.get("link_removed") else ""
        print(f"  departed   {_account_words(e)}: no longer listed{gone}")
    for t in r["teams_created"]:
        print(f"  team       {t['name']} created with {', '.join(t['members']) or 'no members'}")
    for t in r["teams_updated"]:
        print(f"  team       {t['name']} updated: added {', '.join(t['added'])}")
    for name in r["teams_unchanged"]:
        print(f"  team       {name} unchanged")
    for m in r["team_members_unmatched"]:
        print(f"  team       {m['team']}: {m['member']} left out ({m['reason']})")


def _run_import(
    args: argparse.Namespace,
    fetch: Callable[..., Any],
    default_env: str,
    command: str,
    create_people: bool = False,
    fetch_oncall: Callable[..., Any] | None = None,
) -> int:
    if create_people and args.no_auto_link:
        raise UserError("--create-people connects people by email: it cannot go with --no-auto-link")
    install_log_redaction()  # the key travels in a header: keep it out of any log record, whoever logs
    key, where = _api_key(args, default_env)

    async def run():
        directory = await fetch(key, key_hint=where)
        export = await fetch_oncall(key, key_hint=where) if fetch_oncall else None
        who = Who.cli(command)

        async def work(session):
            report = (
                await imports.apply_directory(
                    session, directory, allowed=not args.no_auto_link, who=who, create_people=create_people
                )
            ).as_dict()
            if export is not None:  # in the same transaction: the teams just made are there
                done = await oncall_import.import_oncall(session, export.schedules, export.escalations)
                report["requests"] += export.requests
                report["oncall"] = {"changes": done.changes, "not_carried_over": done.not_carried}
                report["_yaml"] = done.yaml_text
            return report

        return await with_db(work)

    report = asyncio.run(run())
    yaml_text = report.pop("_yaml", None)
    if yaml_text is not None and args.write:
        try:
            with open(args.write, "w", encoding="utf-8") as out:
                out.write("# Written by genie opsgenie import; apply with: genie apply " + args.write + "\n")
                out.write(yaml_text)
        except OSError as err:
            raise UserError(f"--write {args.write}: {err.strerror} (the import itself was applied)") from None
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_import_report(report)
        if "oncall" in report:
            _print_oncall_report(report["oncall"], args.write if yaml_text is not None else None)
    return 0


def _print_oncall_report(r: dict, written: str | None) -> None:
    print(f"on call: {len(r['changes'])} change(s), {len(r['not_carried_over'])} thing(s) not carried over")
    for change in r["changes"]:
        print(f"  {change}")
    for note in r["not_carried_over"]:
        print(f"  not carried over: {note}")
    if written:
        print(f"  written to {written}: keep it in Git and change it with `genie apply {written}`")


def cmd_pagerduty_import(args: argparse.Namespace) -> int:
    def fetch(key, key_hint):
        return pagerduty.fetch(key, base_url=args.url, key_hint=key_hint, tenant=args.tenant)

    return _run_import(args, fetch, pagerduty.DEFAULT_KEY_ENV, "genie pagerduty import")


def cmd_opsgenie_import(args: argparse.Namespace) -> int:
    if args.write and not (args.schedules or args.escalations):
        raise UserError("--write saves the imported schedules and escalations: give --schedules or --escalations")

    def fetch(key, key_hint):
        return opsgenie.fetch(key, base_url=args.url, key_hint=key_hint, tenant=args.tenant, teams=args.teams)

    def fetch_oncall(key, key_hint):
        return opsgenie.fetch_oncall(
            key, base_url=args.url, key_hint=key_hint, schedules=args.schedules, escalations=args.escalations
        )

    return _run_import(
        args,
        fetch,
        opsgenie.DEFAULT_KEY_ENV,
        "genie opsgenie import",
        create_people=args.create_people,
        fetch_oncall=fetch_oncall if args.schedules or args.escalations else None,
    )


def register(sub: argparse._SubParsersAction) -> None:
    for provider, what, default_url, default_env in (
        ("pagerduty", "PagerDuty", "https://api.pagerduty.com", "PAGERDUTY_API_KEY"),
        ("opsgenie", "OpsGenie", "https://api.opsgenie.com", "OPSGENIE_API_KEY"),
    ):
        group = sub.add_parser(provider, help=f"{what} users (and teams)").add_subparsers(
            dest=f"{provider}_command", required=True, parser_class=Parser
        )
        p = group.add_parser("import", help=f"record every {what} user; link by unique email; report")
        eu = " (EU: https://api.eu.opsgenie.com)" if provider == "opsgenie" else ""
        p.add_argument("--url", default=default_url, help=f"{what} API address; default {default_url}{eu}")
        keys = p.add_mutually_exclusive_group()
        keys.add_argument(
            "--key-env", metavar="VAR", help=f"environment variable holding the API key; default {default_env}"
        )
        keys.add_argument("--key-stdin", action="store_true", help="read the API key from standard input")
        p.add_argument("--tenant", help="name the account yourself instead of asking the API (see README)")
        p.add_argument("--no-auto-link", action="store_true", help="record and report only; connect nobody")
        if provider == "opsgenie":
            p.add_argument("--teams", action="store_true", help="also create/update Genie teams with their members")
            p.add_argument(
                "--create-people",
                action="store_true",
                help="create a Genie person (no password) for each user nobody matches, and connect them",
            )
            p.add_argument(
                "--schedules",
                action="store_true",
                help="also carry over schedules (rotations, restrictions, overrides)",
            )
            p.add_argument("--escalations", action="store_true", help="also carry over escalation policies")
            p.add_argument("--write", metavar="FILE.yaml", help="save what was carried over, for genie apply")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_pagerduty_import if provider == "pagerduty" else cmd_opsgenie_import)
