"""``genie accounts``: connected accounts in other tools."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path

from bot.cli.common import Parser, UserError, emit, with_db
from bot.services import external_accounts, imports
from bot.services.audit import Who


def cmd_accounts_list(args: argparse.Namespace) -> int:
    async def work(session):
        return [
            {
                "provider": r.provider,
                "tenant": r.tenant,
                "external_id": r.external_id,
                "handle": r.handle,
                "email": r.email,
                "name": r.display_name,
                "person": r.person.email if r.person else None,
                "via": r.via,
                "match": r.match,
                "match_detail": r.match_detail,
                "guest": "guest" in r.flags,
                "deleted": "deleted" in r.flags,
                "bot": "bot" in r.flags,
            }
            for r in await external_accounts.list_accounts(
                session,
                provider=args.provider,
                unlinked=args.unlinked,
                ambiguous=args.ambiguous,
                email=args.email,
                limit=args.limit + 1,
            )
        ]

    if not 1 <= args.limit <= 1_000_000:
        raise UserError("--limit must be between 1 and 1000000")
    rows = asyncio.run(with_db(work))
    more = len(rows) > args.limit
    emit(
        rows[: args.limit],
        ["provider", "tenant", "external_id", "handle", "email", "person", "via", "match"],
        args.json,
    )
    if more:  # never cut a list silently (stderr, so --json output stays valid JSON)
        print(
            f"genie: showing the first {args.limit} accounts; narrow it (--provider, --email, --unlinked) "
            f"or raise --limit",
            file=sys.stderr,
        )
    return 0


def cmd_accounts_connect(args: argparse.Namespace) -> int:
    async def work(session):
        account, person, previous = await external_accounts.connect_by_id(
            session,
            args.provider,
            args.external_id,
            args.email,
            who=Who.cli("genie accounts connect"),
            tenant=args.tenant,
            move=args.move,
        )
        return external_accounts.describe(account), person.email, previous.email if previous else None

    account, person, previous = asyncio.run(with_db(work))
    if previous == person:
        print(f"{account} was already connected to {person}")
    elif previous:
        print(f"moved {account} from {previous} to {person}")
    else:
        print(f"connected {account} to {person}")
    return 0


def cmd_accounts_remove(args: argparse.Namespace) -> int:
    async def work(session):
        account, person = await external_accounts.remove_by_id(
            session, args.provider, args.external_id, who=Who.cli("genie accounts remove"), tenant=args.tenant
        )
        return external_accounts.describe(account), person.email

    account, person = asyncio.run(with_db(work))
    print(f"removed {account} from {person}")
    return 0


def cmd_accounts_import(args: argparse.Namespace) -> int:
    path = Path(args.file)
    try:
        if path.stat().st_size > 20 * 1024 * 1024:
            raise UserError(f"{args.file}: larger than 20 MB; split the file")
        content = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError:
        raise UserError(f"{args.file}: not UTF-8 text") from None
    except OSError as err:
        raise UserError(f"cannot read {args.file}: {err.strerror or err}") from None
    rows = imports.parse_file(path.name, content)
    who = Who.cli(f"genie accounts import {path.name}")

    async def work(session):
        return await imports.import_rows(session, path.name, rows, move=args.move, who=who)

    done = asyncio.run(with_db(work))
    if args.json:
        print(json.dumps(done, indent=2))
        return 0
    for d in done:
        where = f" in {d['tenant']}" if d["tenant"] else ""
        account = f"{d['provider']} account {d['external_id']}{where}"
        if d["result"] == "moved":
            print(f"{d['where']}: moved {account} from {d['previous']} to {d['person']}")
        elif d["result"] == "already":
            print(f"{d['where']}: {account} was already connected to {d['person']}")
        else:
            print(f"{d['where']}: connected {account} to {d['person']}")
    counts = {r: sum(1 for d in done if d["result"] == r) for r in ("connected", "moved", "already")}
    print(f"{path.name}: " + ", ".join(f"{n} {r}" for r, n in counts.items()))
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    acc = sub.add_parser("accounts", help="connected accounts in other tools").add_subparsers(
        dest="accounts_command", required=True, parser_class=Parser
    )
    p = acc.add_parser("list", help="recorded accounts and whom they are connected to")
    p.add_argument("--provider")
    p.add_argument("--unlinked", action="store_true", help="only accounts connected to nobody")
    p.add_argument("--ambiguous", action="store_true", help="only accounts whose email several people share")
    p.add_argument("--email", help="accounts connected to this person, or reporting this email")
    p.add_argument("--limit", type=int, default=10_000, help="at most N accounts (default 10000; says so when cut)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_accounts_list)
    p = acc.add_parser("connect", help="connect an account to a person (recorded first if Genie has not seen it)")
    p.add_argument("provider")
    p.add_argument("external_id", metavar="EXTERNAL_ID", help="the account's id (or handle, when Genie knows it)")
    p.add_argument("email")
    p.add_argument("--tenant", help="the provider's tenant (site, account); needed when the id is in several")
    p.add_argument("--move", action="store_true", help="move it when it is connected to someone else")
    p.set_defaults(func=cmd_accounts_connect)
    p = acc.add_parser("remove", help="remove an account's connection")
    p.add_argument("provider")
    p.add_argument("external_id", metavar="EXTERNAL_ID")
    p.add_argument("--tenant")
    p.set_defaults(func=cmd_accounts_remove)
    p = acc.add_parser("import", help="connect accounts listed in a CSV or JSON file, all or nothing")
    p.add_argument("file", metavar="FILE")
    p.add_argument("--move", action="store_true", help="move accounts connected to someone else")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_accounts_import)
