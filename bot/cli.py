"""The ``genie`` command (also ``python -m bot``).

Exit status 0 on success; 1 on a user error, with one clear line on stderr and never a
traceback. Passwords are read from stdin (``--password-stdin``) or a terminal prompt, never
from the command line, where ``ps`` and shell history would show them.
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json
import logging
import re
import sys
from typing import Any, Callable, Sequence

from sqlalchemy.exc import DBAPIError

from bot.config import ConfigError, Settings, load_dotenv_file
from bot.logs import install_log_redaction
from bot.services import accounts, linking
from bot.services.errors import GenieError
from storage import repositories as repo
from storage.session import make_engine, make_sessionmaker


class UserError(Exception):
    """Reported as one line on stderr with exit status 1."""


def _settings(socket_mode: bool = False) -> Settings:
    load_dotenv_file()
    return Settings.from_env(socket_mode=socket_mode)


def _admin_settings() -> Settings:
    """The other commands only use the database: a configuration that ``genie serve`` or
    ``genie serve --socket-mode`` (no signing secret) would accept will do."""
    try:
        return _settings()
    except ConfigError:
        import os

        if not os.environ.get("SLACK_APP_TOKEN"):
            raise
        try:
            return _settings(socket_mode=True)
        except ConfigError:
            pass
        raise


async def _with_db(work: Callable[..., Any], migrate: bool = True) -> Any:
    """Open the database (migrating it first, so a fresh machine just works) and run ``work``."""
    from migrations.apply import upgrade

    settings = _admin_settings()
    engine = make_engine(settings.database_url)
    try:
        try:
            if migrate:
                await upgrade(engine)
        except OSError as err:  # e.g. PostgreSQL not reachable
            raise UserError(f"cannot reach the database (DATABASE_URL): {err}") from None
        sessionmaker = make_sessionmaker(engine)
        async with sessionmaker.begin() as session:
            return await work(session)
    finally:
        await engine.dispose()


def _read_password(from_stdin: bool) -> str | None:
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise UserError("--password-stdin: no password on standard input")
        return password
    if sys.stdin.isatty():
        first = getpass.getpass("Password (empty: the user cannot sign in yet): ")
        if not first:
            return None
        if getpass.getpass("Repeat password: ") != first:
            raise UserError("the passwords do not match")
        return first
    return None


def _print_table(rows: list[dict], columns: Sequence[str]) -> None:
    if not rows:
        print("(none)")
        return
    widths = {c: max(len(c), *(len(str(r[c] if r[c] is not None else "")) for r in rows)) for c in columns}
    print("  ".join(c.upper().ljust(widths[c]) for c in columns).rstrip())
    for r in rows:
        print("  ".join(str(r[c] if r[c] is not None else "").ljust(widths[c]) for c in columns).rstrip())


def _emit(rows: list[dict], columns: Sequence[str], as_json: bool) -> None:
    if as_json:
        print(json.dumps(rows, indent=2, default=str))
    else:
        _print_table(rows, columns)


# --- commands --------------------------------------------------------------------------------
def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from bot.server import build_asgi_app, make_runtime, uvicorn_config
    from migrations.apply import upgrade

    settings = _settings(socket_mode=args.socket_mode)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            if not args.no_migrate:
                await upgrade(engine)
            rt = await make_runtime(settings, make_sessionmaker(engine))
            app = build_asgi_app(rt)
            config = uvicorn_config(app, settings, args.host, args.port, log_level="info")
            logging.getLogger("bot").info("Genie listening on http://%s:%s (public URL %s)", args.host, args.port,
                                          settings.base_url)
            await uvicorn.Server(config).serve()
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    async def work(session):
        return None

    asyncio.run(_with_db(work))
    print("database is up to date")
    return 0


def cmd_user_add(args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)

    async def work(session):
        return await accounts.add_user(session, args.email, args.name, password, is_admin=args.admin)

    user = asyncio.run(_with_db(work))
    note = "" if password else " (no password: they cannot sign in until `genie user invite` or `set-password`)"
    print(f"added user {user.email}{' (admin)' if user.is_admin else ''}{note}")
    return 0


def cmd_user_set_password(args: argparse.Namespace) -> int:
    password = _read_password(args.password_stdin)
    if password is None:
        raise UserError("no password given (use --password-stdin)")

    async def work(session):
        return await accounts.set_password(session, args.email, password)

    user = asyncio.run(_with_db(work))
    print(f"password set for {user.email}")
    return 0


def cmd_user_invite(args: argparse.Namespace) -> int:
    """The link is always printed for the admin. It is DMed only to the person's Slack accounts
    whose confirmed email (``users.info`` now) is their Genie email: a Slack account linked by a
    phished one-time link must never receive a password link (issue 13). The outbox asks Slack
    again when it delivers."""
    from bot.slack import notify
    from bot.slack.clients import SlackClients
    from migrations.apply import upgrade

    if not 1 <= args.days <= accounts.MAX_INVITE_TTL.days:
        raise UserError(f"--days must be between 1 and {accounts.MAX_INVITE_TTL.days}")
    settings = _admin_settings()

    async def run() -> notify.Invitation:
        engine = make_engine(settings.database_url)
        try:
            try:
                await upgrade(engine)
            except OSError as err:
                raise UserError(f"cannot reach the database (DATABASE_URL): {err}") from None
            async with make_sessionmaker(engine).begin() as session:
                return await notify.invite(session, settings, SlackClients(settings, engine), args.email, args.days,
                                           slack=not args.no_slack)
        finally:
            await engine.dispose()

    done = asyncio.run(run())
    user, url, told, refused = done.user, done.url, done.told, done.refused
    print(f"invitation for {user.email} (works once, expires in {args.days} days):")
    print(url)
    if told:
        print(f"also sent to them in Slack ({', '.join(told)}); `genie serve` delivers it")
    for slack_user, problem in refused:
        print(f"not sent to Slack user {slack_user}: {problem} — a password link goes only to a Slack account "
              f"whose confirmed email is the person's own; give them the link above yourself")
    return 0


def cmd_user_set_active(active: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def work(session):
            return await accounts.set_active(session, args.email, active)

        user = asyncio.run(_with_db(work))
        print(f"{user.email} is now {'active' if active else 'deactivated'}")
        return 0

    return run


def cmd_user_list(args: argparse.Namespace) -> int:
    async def work(session):
        users = await repo.all_users(session)
        links = await repo.all_links(session)
        by_user: dict[int, list[str]] = {}
        for link in links:
            by_user.setdefault(link.user_id, []).append(f"{link.workspace_id}/{link.slack_user_id}")
        return [
            {"email": u.email, "name": u.name, "admin": u.is_admin, "active": u.is_active,
             "can_sign_in": u.password_hash is not None, "slack": by_user.get(u.id, [])}
            for u in users
        ]

    rows = asyncio.run(_with_db(work))
    if not args.json:
        rows_text = [dict(r, slack=", ".join(r["slack"]) or "-") for r in rows]
        _print_table(rows_text, ["email", "name", "admin", "active", "slack"])
    else:
        _emit(rows, [], True)
    return 0


def cmd_team_add(args: argparse.Namespace) -> int:
    async def work(session):
        return await accounts.add_team(session, args.name, args.channel, args.workspace)

    team = asyncio.run(_with_db(work))
    print(f"added team {team.name}" + (f" (channel {team.slack_channel_id})" if team.slack_channel_id else ""))
    return 0


def cmd_team_set_channel(args: argparse.Namespace) -> int:
    async def work(session):
        return await accounts.set_team_channel(session, args.name, args.channel, args.workspace)

    team = asyncio.run(_with_db(work))
    print(f"team {team.name} now posts to {team.slack_channel_id}")
    return 0


def cmd_team_member(add: bool) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        async def work(session):
            if add:
                return await accounts.add_member(session, args.name, args.email)
            return await accounts.remove_member(session, args.name, args.email)

        team, user = asyncio.run(_with_db(work))
        print(f"{'added' if add else 'removed'} {user.email} {'to' if add else 'from'} {team.name}")
        return 0

    return run


def cmd_team_list(args: argparse.Namespace) -> int:
    async def work(session):
        return [
            {"name": team.name, "channel": team.slack_channel_id, "members": [u.email for u in members]}
            for team, members in await repo.all_teams_with_members(session)
        ]

    rows = asyncio.run(_with_db(work))
    if args.json:
        _emit(rows, [], True)
    else:
        _print_table([dict(r, members=", ".join(r["members"]) or "-") for r in rows], ["name", "channel", "members"])
    return 0


def cmd_team_key(args: argparse.Namespace) -> int:
    from bot.services import alerts

    async def work(session):
        return await alerts.team_key(session, await accounts.require_team(session, args.name), rotate=args.rotate)

    print(asyncio.run(_with_db(work)))  # only the key, so that KEY=$(genie team key NAME) works
    return 0


def cmd_team_grant(args: argparse.Namespace) -> int:
    from bot.services import alerts

    async def work(session):
        team, other = await accounts.require_team(session, args.name), await accounts.require_team(session, args.other)
        await alerts.grant_post(session, team, other)
        return team, other

    team, other = asyncio.run(_with_db(work))
    hint = json.dumps([{"type": "team", "name": other.name}])
    print(f"{team.name}'s key may now also post alerts for {other.name} (name it in responders: {hint}); "
          f"reading and acting on them stay with {other.name}'s key")
    return 0


def cmd_link_list(args: argparse.Namespace) -> int:
    async def work(session):
        return [
            {"email": link.user.email, "workspace": link.workspace_id, "slack_team": link.slack_team_id,
             "slack_user": link.slack_user_id, "slack_name": link.slack_name, "since": link.created_at.isoformat()}
            for link in await repo.all_links(session, email=args.email)
        ]

    rows = asyncio.run(_with_db(work))
    _emit(rows, ["email", "workspace", "slack_user", "slack_name", "since"], args.json)
    return 0


def cmd_link_remove(args: argparse.Namespace) -> int:
    async def work(session):
        return [(link.user.email if link.user else "?", link.workspace_id, link.slack_user_id)
                for link in await linking.unlink_by_admin(session, args.who)]

    for email, workspace, slack_user in asyncio.run(_with_db(work)):
        print(f"removed link {workspace}/{slack_user} -> {email}")
    return 0


def cmd_workspace_set(args: argparse.Namespace) -> int:
    from bot.services import access

    if not args.workspace and not args.all_workspaces:
        # Without a choice, '*' would also cover every workspace installed later, unseen.
        raise UserError("say where: --workspace T…|E… (one workspace or Grid org), or --all-workspaces (every "
                        "workspace without a value of its own, including workspaces installed later)")

    async def work(session):
        return await access.set_workspace_setting(session, args.workspace or "*", args.key, args.value)

    row = asyncio.run(_with_db(work))
    where = (f"workspace {row.workspace_id}" if row.workspace_id != "*"
             else "every workspace without a value of its own, including workspaces installed later")
    print(f"{row.key} = {row.value} for {where}")
    return 0


def cmd_workspace_list(args: argparse.Namespace) -> int:
    from bot.services import access

    async def work(session):
        settings = await access.workspace_settings(session)
        by_workspace: dict[str, dict[str, str]] = {}
        for r in settings:
            by_workspace.setdefault(r.workspace_id, {})[r.key] = r.value
        rows = []
        for inst in await repo.installations(session):
            workspace = inst["enterprise_id"] if inst["is_enterprise_install"] else inst["team_id"]
            own = by_workspace.pop(inst["enterprise_id"] or "", {}) | by_workspace.pop(inst["team_id"] or "", {})
            rows.append({"workspace": workspace, "team_id": inst["team_id"], "enterprise_id": inst["enterprise_id"],
                         "name": inst["team_name"] or inst["enterprise_name"],
                         "org_wide": bool(inst["is_enterprise_install"]), "installed_at": str(inst["installed_at"]),
                         "settings": own})
        for workspace, own in sorted(by_workspace.items()):  # settings without an installation (or '*')
            rows.append({"workspace": workspace, "team_id": None, "enterprise_id": None,
                         "name": "(every workspace: default)" if workspace == "*" else "(not installed)",
                         "org_wide": False, "installed_at": None, "settings": own})
        return rows

    rows = asyncio.run(_with_db(work))
    if args.json:
        _emit(rows, [], True)
    else:
        _print_table([dict(r, settings=", ".join(f"{k}={v}" for k, v in r["settings"].items()) or "-")
                      for r in rows], ["workspace", "name", "org_wide", "installed_at", "settings"])
    return 0


def _sync_lines(report) -> list[str]:
    """``genie slack sync``'s report of one workspace, for a person."""
    from bot.services.slack_directory import SKIP_TEXT

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
        lines.append("  skipped    " + ", ".join(f"{SKIP_TEXT.get(k, k)}: {v}" for k, v in sorted(report.skipped.items())))
    return lines


def cmd_slack_sync(args: argparse.Namespace) -> int:
    from bot.slack import directory_sync
    from bot.slack.clients import SlackClients
    from migrations.apply import upgrade

    settings = _admin_settings()
    progress = directory_sync.Progress(sys.stderr)

    async def run():
        engine = make_engine(settings.database_url)
        try:
            try:
                await upgrade(engine)
            except OSError as err:
                raise UserError(f"cannot reach the database (DATABASE_URL): {err}") from None
            return await directory_sync.sync(settings, SlackClients(settings, engine), make_sessionmaker(engine),
                                         workspace=args.workspace, progress=progress)
        finally:
            progress.done()
            await engine.dispose()

    reports = asyncio.run(run())
    if args.json:
        print(json.dumps({"workspaces": [r.as_dict() for r in reports]}, indent=2))
    else:
        for report in reports:
            print("\n".join(_sync_lines(report)))
    failed = [r for r in reports if r.error]
    if failed:
        raise UserError("; ".join(f"slack sync of {r.workspace.workspace_id} stopped early: {r.error}" for r in failed))
    return 0


def cmd_alert_show(args: argparse.Namespace) -> int:
    from bot.services import alerts

    async def work(session):
        alert = await alerts.find(session, args.id, "tiny" if args.id.isdigit() else "id")
        team = await repo.team_by_id(session, alert.team_id) if alert.team_id else None
        events = await alerts.timeline(session, alert.id)
        return {
            "id": alert.id, "uid": alert.uid, "message": alert.message, "priority": alert.priority,
            "status": alert.status, "acknowledged": alert.acknowledged, "team": team.name if team else None,
            "alias": alert.alias, "count": alert.count, "created_at": alert.created_at.isoformat(),
            "timeline": [
                {"at": e.at.isoformat(), "action": e.action, "outcome": e.outcome, "via": e.via,
                 "actor": e.actor_name, "actor_user_id": e.actor_user_id,
                 "slack": f"{e.slack_workspace_id}/{e.slack_user_id}" if e.slack_user_id else None,
                 "anonymous": e.anonymous, "reason": e.reason, "note": e.note}
                for e in events
            ],
        }

    shown = asyncio.run(_with_db(work))
    if args.json:
        print(json.dumps(shown, indent=2))
        return 0
    state = "closed" if shown["status"] == "closed" else "acknowledged" if shown["acknowledged"] else "open"
    print(f"#{shown['id']} [{shown['priority']}] {shown['message']}")
    print(f"team {shown['team'] or '-'} · {state} · alias {shown['alias']} · count {shown['count']} · "
          f"created {shown['created_at']}")
    for e in shown["timeline"]:
        who = e["actor"] or "?"
        if e["slack"]:
            who += f" (Slack {e['slack']}{', anonymous' if e['anonymous'] else ''})"
        extra = f" — {e['reason']}" if e["reason"] else ""
        note = f" — note: {e['note']}" if e["note"] else ""
        print(f"  {e['at']}  {e['action']:<11} {e['outcome']:<7} via {e['via']:<5} by {who}{extra}{note}")
    return 0


def _outbox_row(m) -> dict:
    state = "failed" if m.failed_at else "pending"
    return {"id": m.id, "state": state, "kind": m.kind, "channel": m.channel, "alert": m.alert_id,
            "attempts": m.attempts, "created_at": m.created_at.isoformat(),
            "next_attempt_at": None if m.failed_at else m.next_attempt_at.isoformat(),
            "failed_at": m.failed_at.isoformat() if m.failed_at else None, "last_error": m.last_error}


def cmd_outbox_list(args: argparse.Namespace) -> int:
    from bot.services import outbox

    async def work(session):
        return [_outbox_row(m) for m in await outbox.undelivered(session, failed_only=args.failed)]

    rows = asyncio.run(_with_db(work))
    _emit(rows, ["id", "state", "kind", "channel", "alert", "attempts", "next_attempt_at", "last_error"], args.json)
    return 0


def cmd_outbox_retry(args: argparse.Namespace) -> int:
    from bot.services import outbox

    if not re.fullmatch(r"[0-9]{1,9}", args.id):
        raise UserError(f"{args.id!r} is not an outbox message id (see genie outbox list --failed)")

    async def work(session):
        return await outbox.retry_failed(session, int(args.id))

    message = asyncio.run(_with_db(work))
    print(f"outbox message {message.id} ({message.kind} to {message.channel}) will be retried now by the running "
          "genie serve")
    return 0



# --- heartbeats ------------------------------------------------------------------------------
def _heartbeat_row(h, team_name: str, now) -> dict:
    from bot.services import heartbeats

    state = "disabled" if not h.enabled else "LATE" if heartbeats.is_late(h, now) else "ok"
    return {"name": h.name, "team": team_name, "interval": heartbeats.interval_words(h.interval, h.interval_unit),
            "state": state, "enabled": h.enabled, "expired": heartbeats.is_late(h, now),
            "last_ping": h.last_ping_at.isoformat() if h.last_ping_at else None,
            "due": h.expires_at.isoformat(), "message": h.alert_message or heartbeats.default_message(h.name),
            "priority": h.alert_priority, "tags": list(h.alert_tags or []), "description": h.description}


def cmd_heartbeat_add(args: argparse.Namespace) -> int:
    from bot.services import heartbeats
    from bot.services.alerts import ValidationFailed
    from storage.base import utcnow

    interval, unit = heartbeats.parse_interval(args.interval)
    body = {"name": args.name, "interval": interval, "intervalUnit": unit, "enabled": True,
            "alertPriority": args.priority}
    if args.description is not None:
        body["description"] = args.description
    if args.message is not None:
        body["alertMessage"] = args.message
    if args.tags is not None:
        body["alertTags"] = [t.strip() for t in args.tags.split(",") if t.strip()]
    try:
        data = heartbeats.parse_fields(body, create=True)
    except ValidationFailed as err:
        raise UserError("; ".join(f"{k}: {v}" for k, v in err.errors.items())) from None

    async def work(session):
        team = await accounts.require_team(session, args.team)
        return await heartbeats.create(session, team, data, utcnow()), team

    heartbeat, team = asyncio.run(_with_db(work))
    print(f"added heartbeat {heartbeat.name} of team {team.name}: a ping is expected every "
          f"{heartbeats.interval_words(heartbeat.interval, heartbeat.interval_unit)}, first by "
          f"{heartbeat.expires_at:%Y-%m-%d %H:%M} UTC (ping: GET /v2/heartbeats/{heartbeat.name}/ping with the team's key)")
    return 0


def cmd_heartbeat_list(args: argparse.Namespace) -> int:
    from bot.services import heartbeats
    from storage.base import utcnow

    async def work(session):
        team = await accounts.require_team(session, args.team) if args.team else None
        now = utcnow()
        return [_heartbeat_row(h, t.name, now) for h, t in await heartbeats.of_team(session, team.id if team else None)]

    rows = asyncio.run(_with_db(work))
    _emit(rows, ["team", "name", "interval", "state", "last_ping", "due", "priority"], args.json)
    return 0


def cmd_heartbeat_change(change: str) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        from bot.services import heartbeats
        from storage.base import utcnow

        async def work(session):
            team = await accounts.require_team(session, args.team)
            heartbeat = await heartbeats.find(session, team, args.name)
            if change == "remove":
                await heartbeats.remove(session, heartbeat)
            else:
                await heartbeats.set_enabled(session, heartbeat, change == "enable", utcnow())
            return team

        team = asyncio.run(_with_db(work))
        done = {"enable": "enabled", "disable": "disabled", "remove": "removed"}[change]
        print(f"{done} heartbeat {args.name} of team {team.name}")
        return 0

    return run


# --- connected accounts: importers, files, by hand, the audit log ---------------------------
def _api_key(args: argparse.Namespace, default_env: str) -> tuple[str, str]:
    """The API key from standard input or an environment variable (never from argv) and where
    it came from, for error messages that name the place but never the key."""
    import os

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
    print(f"  linked {len(r['linked'])}, already {len(r['already'])}, ambiguous {len(r['ambiguous'])}, "
          f"unmatched {len(r['unmatched'])}, conflict {len(r['conflict'])}, unlinked {len(r['unlinked'])}, "
          f"skipped {skipped}, departed {len(r['departed'])}, people created {len(r['people_created'])}, "
          f"teams created {len(r['teams_created'])}, teams updated {len(r['teams_updated'])}")
    for e in r["linked"]:
        print(f"  linked     {_account_words(e)} -> {e['person']}")
    for e in r["people_created"]:
        print(f"  created    {e['person']} (no password: cannot sign in until `genie user invite {e['person']}`) <- {_account_words(e)}")
    for e in r["ambiguous"]:
        print(f"  ambiguous  {_account_words(e)}: {len(e['candidates'])} people have that email: "
              f"{', '.join(e['candidates'])}")
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


def _run_import(args: argparse.Namespace, fetch: Callable[..., Any], default_env: str, command: str,
                create_people: bool = False) -> int:
    from bot.services import imports
    from bot.services.audit import Who

    if create_people and args.no_auto_link:
        raise UserError("--create-people connects people by email: it cannot go with --no-auto-link")
    install_log_redaction()  # the key travels in a header: keep it out of any log record, whoever logs
    key, where = _api_key(args, default_env)

    async def run():
        directory = await fetch(key, key_hint=where)
        who = Who.cli(command)

        async def work(session):
            return (await imports.apply_directory(session, directory, allowed=not args.no_auto_link, who=who,
                                                  create_people=create_people)).as_dict()

        return await _with_db(work)

    report = asyncio.run(run())
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        _print_import_report(report)
    return 0


def cmd_pagerduty_import(args: argparse.Namespace) -> int:
    from bot.importers import pagerduty

    def fetch(key, key_hint):
        return pagerduty.fetch(key, base_url=args.url, key_hint=key_hint, tenant=args.tenant)

    return _run_import(args, fetch, pagerduty.DEFAULT_KEY_ENV, "genie pagerduty import")


def cmd_opsgenie_import(args: argparse.Namespace) -> int:
    from bot.importers import opsgenie

    def fetch(key, key_hint):
        return opsgenie.fetch(key, base_url=args.url, key_hint=key_hint, tenant=args.tenant, teams=args.teams)

    return _run_import(args, fetch, opsgenie.DEFAULT_KEY_ENV, "genie opsgenie import",
                       create_people=args.create_people)


def cmd_accounts_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from bot.services import imports
    from bot.services.audit import Who

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

    done = asyncio.run(_with_db(work))
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


def cmd_accounts_list(args: argparse.Namespace) -> int:
    from bot.services import connections

    async def work(session):
        return [
            {"provider": r.account.provider, "tenant": r.account.tenant, "external_id": r.account.external_id,
             "handle": r.account.handle, "email": r.account.email, "name": r.account.display_name,
             "person": r.person.email if r.person else None, "via": r.via,
             "match": r.account.match, "match_detail": r.account.match_detail,
             "guest": r.account.is_guest, "deleted": r.account.is_deleted, "bot": r.account.is_bot}
            for r in await connections.list_accounts(session, provider=args.provider, unlinked=args.unlinked,
                                                      ambiguous=args.ambiguous, email=args.email, limit=args.limit + 1)
        ]

    if not 1 <= args.limit <= 1_000_000:
        raise UserError("--limit must be between 1 and 1000000")
    rows = asyncio.run(_with_db(work))
    more = len(rows) > args.limit
    _emit(rows[:args.limit], ["provider", "tenant", "external_id", "handle", "email", "person", "via", "match"],
          args.json)
    if more:  # never cut a list silently (stderr, so --json output stays valid JSON)
        print(f"genie: showing the first {args.limit} accounts; narrow it (--provider, --email, --unlinked) "
              f"or raise --limit", file=sys.stderr)
    return 0


def cmd_accounts_connect(args: argparse.Namespace) -> int:
    from bot.services import connections, identities
    from bot.services.audit import Who

    async def work(session):
        account, person, previous = await connections.connect_by_hand(
            session, args.provider, args.external_id, args.email, who=Who.cli("genie accounts connect"),
            tenant=args.tenant, move=args.move)
        return identities.describe(account), person.email, previous.email if previous else None

    account, person, previous = asyncio.run(_with_db(work))
    if previous == person:
        print(f"{account} was already connected to {person}")
    elif previous:
        print(f"moved {account} from {previous} to {person}")
    else:
        print(f"connected {account} to {person}")
    return 0


def cmd_accounts_remove(args: argparse.Namespace) -> int:
    from bot.services import connections, identities
    from bot.services.audit import Who

    async def work(session):
        account, person = await connections.remove(session, args.provider, args.external_id,
                                                   who=Who.cli("genie accounts remove"), tenant=args.tenant)
        return identities.describe(account), person.email

    account, person = asyncio.run(_with_db(work))
    print(f"removed {account} from {person}")
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from bot.services import audit

    if args.action and args.action not in audit.ACTIONS:
        raise UserError(f"--action {args.action!r} is not one of {', '.join(audit.ACTIONS)}")
    if not 1 <= args.limit <= 10_000:
        raise UserError("--limit must be between 1 and 10000")

    async def work(session):
        return [
            {"at": e.at.isoformat(), "action": e.action, "actor": e.actor, "via": e.via, "person": e.subject_email,
             "provider": e.provider, "tenant": e.tenant, "external_id": e.external_id, "detail": e.detail}
            for e in await audit.events(session, limit=args.limit, subject_email=args.email, provider=args.provider,
                                        action=args.action)
        ]

    rows = asyncio.run(_with_db(work))
    if args.json:
        _emit(rows, [], True)
    else:
        _print_table([dict(r, account="/".join(x for x in (r["provider"], r["tenant"], r["external_id"]) if x) or None)
                      for r in rows], ["at", "action", "person", "account", "actor", "via", "detail"])
    return 0


# --- parser ----------------------------------------------------------------------------------
class _Parser(argparse.ArgumentParser):
    def __init__(self, *args, **kwargs) -> None:
        # No abbreviations: `--password x` must never be read as `--password-stdin` + a stray word.
        super().__init__(*args, **{**kwargs, "allow_abbrev": False})

    def error(self, message: str) -> None:  # one line, exit 1 (argparse's default is 2 + usage)
        self.exit(1, f"genie: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="genie", description="Genie: incident alerting whose home is Slack.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    p = sub.add_parser("serve", help="run Slack, web pages and the API in one process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode (SLACK_APP_TOKEN)")
    p.add_argument("--no-migrate", action="store_true", help="do not apply database migrations first")
    p.set_defaults(func=cmd_serve)

    db = sub.add_parser("db", help="database maintenance").add_subparsers(dest="db_command", required=True,
                                                                           parser_class=_Parser)
    db.add_parser("upgrade", help="apply migrations").set_defaults(func=cmd_db_upgrade)

    user = sub.add_parser("user", help="Genie accounts").add_subparsers(dest="user_command", required=True,
                                                                         parser_class=_Parser)
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
    p.add_argument("--days", type=int, default=accounts.INVITE_TTL.days, help="valid for N days (default 3, at most 30)")
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

    team = sub.add_parser("team", help="teams and their members").add_subparsers(dest="team_command", required=True,
                                                                                   parser_class=_Parser)
    p = team.add_parser("add")
    p.add_argument("name")
    p.add_argument("--channel", help="Slack channel id for the team's alerts")
    p.add_argument("--workspace", help="multi-workspace mode: the channel's workspace (T0123… or E0123…/T0123…)")
    p.set_defaults(func=cmd_team_add)
    p = team.add_parser("set-channel")
    p.add_argument("name")
    p.add_argument("channel")
    p.add_argument("--workspace", help="multi-workspace mode: the channel's workspace (T0123… or E0123…/T0123…)")
    p.set_defaults(func=cmd_team_set_channel)
    for name, add in (("add-member", True), ("remove-member", False)):
        p = team.add_parser(name)
        p.add_argument("name")
        p.add_argument("email")
        p.set_defaults(func=cmd_team_member(add))
    p = team.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_team_list)
    p = team.add_parser("key", help="print the team's API key (GenieKey) for the alert API")
    p.add_argument("name")
    p.add_argument("--rotate", action="store_true", help="replace the key; the old one stops working")
    p.set_defaults(func=cmd_team_key)
    p = team.add_parser("grant", help="NAME's key may also post alerts for team OTHER (post only: reading and "
                                      "acting stay with OTHER's key)")
    p.add_argument("name")
    p.add_argument("other")
    p.set_defaults(func=cmd_team_grant)

    link = sub.add_parser("link", help="Slack links").add_subparsers(dest="link_command", required=True,
                                                                      parser_class=_Parser)
    p = link.add_parser("list")
    p.add_argument("--email")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_link_list)
    p = link.add_parser("remove", help="remove the links of a Genie user (email) or a Slack user id")
    p.add_argument("who", metavar="EMAIL|SLACK_USER_ID")
    p.set_defaults(func=cmd_link_remove)
    ws = sub.add_parser("workspace", help="per-workspace settings").add_subparsers(
        dest="workspace_command", required=True, parser_class=_Parser)
    p = ws.add_parser("set", help="e.g. genie workspace set allow_anonymous_actions true --workspace T0123")
    p.add_argument("key")
    p.add_argument("value")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workspace", help="Slack workspace (or Enterprise Grid org) id")
    where.add_argument("--all-workspaces", action="store_true",
                       help="the default for every workspace without its own value, including ones installed later")
    p.set_defaults(func=cmd_workspace_set)
    p = ws.add_parser("list")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_workspace_list)

    slack = sub.add_parser("slack", help="the Slack directory").add_subparsers(dest="slack_command", required=True,
                                                                          parser_class=_Parser)
    p = slack.add_parser("sync", help="record every Slack user and link them by email where the workspace allows it")
    p.add_argument("--workspace", help="only this workspace (T0123…, or E0123… on Enterprise Grid); "
                                       "default: every workspace Genie is installed in")
    p.add_argument("--json", action="store_true", help="print only the report, as JSON")
    p.set_defaults(func=cmd_slack_sync)

    alert = sub.add_parser("alert", help="alerts").add_subparsers(dest="alert_command", required=True,
                                                                   parser_class=_Parser)
    p = alert.add_parser("show", help="an alert and its timeline: who did what")
    p.add_argument("id", help="the alert's number (tinyId) or id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_alert_show)

    hb = sub.add_parser("heartbeat", help="heartbeats: a job pings, a late ping raises an alert").add_subparsers(
        dest="heartbeat_command", required=True, parser_class=_Parser)
    p = hb.add_parser("add", help="a heartbeat of team T, expected every --interval (10m, 2h, 1d)")
    p.add_argument("name")
    p.add_argument("--team", required=True)
    p.add_argument("--interval", required=True, help="how often a ping is expected: 10m, 2h, 1d")
    p.add_argument("--message", help="the alert's message when it expires (default: NAME is expired)")
    p.add_argument("--tags", help="the alert's tags, comma-separated")
    p.add_argument("--priority", default="P3", help="the alert's priority, P1-P5 (default P3)")
    p.add_argument("--description")
    p.set_defaults(func=cmd_heartbeat_add)
    p = hb.add_parser("list", help="heartbeats, their state (ok, LATE, disabled) and last ping")
    p.add_argument("--team")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_heartbeat_list)
    for change in ("enable", "disable", "remove"):
        p = hb.add_parser(change)
        p.add_argument("name")
        p.add_argument("--team", required=True)
        p.set_defaults(func=cmd_heartbeat_change(change))

    box = sub.add_parser("outbox", help="Slack messages waiting or failed").add_subparsers(
        dest="outbox_command", required=True, parser_class=_Parser)
    p = box.add_parser("list", help="messages not delivered yet (pending and failed), oldest first")
    p.add_argument("--failed", action="store_true", help="only the failed ones (they wait for genie outbox retry)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_outbox_list)
    p = box.add_parser("retry", help="retry a failed message now (after fixing its cause)")
    p.add_argument("id")
    p.set_defaults(func=cmd_outbox_retry)
    for provider, what, default_url, default_env in (
            ("pagerduty", "PagerDuty", "https://api.pagerduty.com", "PAGERDUTY_API_KEY"),
            ("opsgenie", "OpsGenie", "https://api.opsgenie.com", "OPSGENIE_API_KEY")):
        group = sub.add_parser(provider, help=f"{what} users (and teams)").add_subparsers(
            dest=f"{provider}_command", required=True, parser_class=_Parser)
        p = group.add_parser("import", help=f"record every {what} user; link by unique email; report")
        eu = " (EU: https://api.eu.opsgenie.com)" if provider == "opsgenie" else ""
        p.add_argument("--url", default=default_url, help=f"{what} API address; default {default_url}{eu}")
        keys = p.add_mutually_exclusive_group()
        keys.add_argument("--key-env", metavar="VAR", help=f"environment variable holding the API key; default {default_env}")
        keys.add_argument("--key-stdin", action="store_true", help="read the API key from standard input")
        p.add_argument("--tenant", help="name the account yourself instead of asking the API (see README)")
        p.add_argument("--no-auto-link", action="store_true", help="record and report only; connect nobody")
        if provider == "opsgenie":
            p.add_argument("--teams", action="store_true", help="also create/update Genie teams with their members")
            p.add_argument("--create-people", action="store_true",
                           help="create a Genie person (no password) for each user nobody matches, and connect them")
        p.add_argument("--json", action="store_true")
        p.set_defaults(func=cmd_pagerduty_import if provider == "pagerduty" else cmd_opsgenie_import)

    acc = sub.add_parser("accounts", help="connected accounts in other tools").add_subparsers(
        dest="accounts_command", required=True, parser_class=_Parser)
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

    p = sub.add_parser("audit", help="who connected, moved or removed which account; imports run")
    p.add_argument("--email", help="changes to this person's accounts")
    p.add_argument("--provider")
    p.add_argument("--action", help="account.connect, account.move, account.remove, account.departed, import.run")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_audit)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UserError, GenieError, ConfigError) as err:
        print(f"genie: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except DBAPIError as err:
        print(f"genie: cannot use the database (DATABASE_URL): {str(err.orig).splitlines()[0] if err.orig else err}",
              file=sys.stderr)
        return 1
    except OSError as err:  # e.g. the database file's folder is not writable, the port is taken
        print(f"genie: {err.strerror or err}", file=sys.stderr)
        return 1
