"""Applying what an importer read, and connecting accounts in bulk from a file.

``apply_directory`` takes a ``bot.importers.Directory`` (every user of a PagerDuty or OpsGenie
account, read in full before anything is written) and, in the caller's transaction:

1. records every user as an ``ExternalAccount`` (``external_accounts.upsert``);
2. links it by email where ``external_accounts.auto_link`` allows it (unique, trusted, not a guest …);
3. with ``create_people``: makes a Genie person (no password: they cannot sign in until
   ``genie user invite``) for each user no person matches, and connects the account to them (``via='import'``);
4. marks the accounts of this provider and tenant that the provider no longer lists as deleted
   (a link they had is removed, on the audit log as ``account.departed``);
5. with teams (OpsGenie): creates each team that Genie does not have by name, and adds the
   members who resolve to a person (members are only ever added, never removed);
6. writes one ``import.run`` audit event, and returns an ``ImportReport`` for the person.

``parse_file`` + ``import_rows`` connect accounts listed in a CSV or JSON file (GitHub, Jira …
welcome): the whole file is checked first and any problem, with its line, stops the import
before anything is written.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit, external_accounts, teams, users
from bot.services.audit import Who
from bot.services.errors import AlreadyExists, InvalidInput
from bot.services.external_accounts import Outcome, ReportedAccount
from storage.models import ExternalAccount, TeamMember, User

_SECTIONS = ("linked", "already", "ambiguous", "unmatched", "conflict", "unlinked")


def _entry(account: ExternalAccount, **extra: Any) -> dict[str, Any]:
    return {
        "id": account.external_id,
        "handle": account.handle,
        "name": account.display_name,
        "email": account.email,
        **extra,
    }


@dataclass
class ImportReport:
    provider: str
    label: str
    tenant: str
    read: int = 0
    linked: list[dict] = field(default_factory=list)
    already: list[dict] = field(default_factory=list)
    ambiguous: list[dict] = field(default_factory=list)
    unmatched: list[dict] = field(default_factory=list)
    conflict: list[dict] = field(default_factory=list)
    unlinked: list[dict] = field(default_factory=list)
    skipped: dict[str, list[dict]] = field(default_factory=dict)
    departed: list[dict] = field(default_factory=list)
    people_created: list[dict] = field(default_factory=list)
    teams_created: list[dict] = field(default_factory=list)
    teams_updated: list[dict] = field(default_factory=list)
    teams_unchanged: list[str] = field(default_factory=list)
    team_members_unmatched: list[dict] = field(default_factory=list)
    requests: int = 0
    rate_limited: int = 0

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def counts(self) -> str:
        parts = [f"{len(getattr(self, s))} {s}" for s in _SECTIONS]
        parts.append(f"{sum(len(v) for v in self.skipped.values())} skipped")
        if self.departed:
            parts.append(f"{len(self.departed)} departed")
        if self.people_created:
            parts.append(f"{len(self.people_created)} people created")
        if self.teams_created or self.teams_updated:
            parts.append(f"{len(self.teams_created)} teams created, {len(self.teams_updated)} updated")
        return f"{self.read} users read: " + ", ".join(parts)


async def _known_accounts(session: AsyncSession, provider: str, tenant: str) -> dict[str, ExternalAccount]:
    rows = await session.scalars(
        select(ExternalAccount).where(ExternalAccount.provider == provider, ExternalAccount.tenant == tenant)
    )
    return {a.external_id: a for a in rows}


async def _create_person(session: AsyncSession, account: ExternalAccount, who: Who, report: ImportReport) -> bool:
    """A Genie person for an account nobody matches; False (and a skip reason) when impossible."""
    try:
        person = await users.add_user(session, account.email or "", account.display_name or account.email or "")
    except InvalidInput:
        report.skipped.setdefault("email is not one Genie accepts", []).append(_entry(account))
        return False
    except AlreadyExists:
        report.skipped.setdefault("a deactivated person has that email", []).append(_entry(account))
        return False
    await external_accounts.connect(
        session, account, person, via="import", who=who, detail="person created by the import"
    )
    account.match, account.match_detail = Outcome.LINKED.value, "person created by the import"
    report.people_created.append(_entry(account, person=person.email))
    return True


def _record(report: ImportReport, result: external_accounts.AutoLinkResult) -> None:
    account, outcome = result.account, result.outcome
    if outcome == Outcome.SKIPPED:
        report.skipped.setdefault(result.detail, []).append(_entry(account))
        return
    extra: dict[str, Any] = {}
    if result.person is not None:
        extra["person"] = result.person.email
    if outcome == Outcome.AMBIGUOUS:
        extra["candidates"] = list(result.candidates)
    getattr(report, outcome.value).append(_entry(account, **extra))


async def apply_directory(
    session: AsyncSession, directory, *, allowed: bool, who: Who, create_people: bool = False
) -> ImportReport:
    """Record, link and report (see the module docstring). ``directory`` is a
    ``bot.importers.Directory``; ``allowed`` is the operator's opt-in to auto-linking."""
    if create_people and not allowed:
        raise InvalidInput("--create-people connects people by email: it cannot go with --no-auto-link")
    report = ImportReport(
        directory.provider,
        directory.label,
        directory.tenant,
        read=len(directory.accounts),
        requests=directory.requests,
        rate_limited=directory.rate_limited,
    )
    known = await _known_accounts(session, directory.provider, directory.tenant)
    by_id: dict[str, ExternalAccount] = {}
    for reported in directory.accounts:
        account = await external_accounts.upsert(session, reported)
        by_id[account.external_id] = account
        result = await external_accounts.auto_link(session, account, allowed=allowed, who=who)
        if (
            create_people
            and result.outcome == Outcome.UNMATCHED
            and await _create_person(session, account, who, report)
        ):
            continue
        _record(report, result)

    for external_id, account in known.items():
        if external_id in by_id:
            continue
        was_deleted = account.is_deleted
        account.is_deleted = True
        result = await external_accounts.auto_link(session, account, allowed=allowed, who=who)
        if not was_deleted or result.outcome == Outcome.UNLINKED:
            report.departed.append(
                _entry(
                    account,
                    link_removed=result.outcome == Outcome.UNLINKED,
                    person=result.person.email if result.person else None,
                )
            )

    if directory.teams is not None:
        await _apply_teams(session, directory, by_id, report)

    await session.flush()
    await audit.record(
        session,
        who,
        "import.run",
        provider=directory.provider,
        tenant=directory.tenant,
        detail=f"{directory.label} {directory.tenant}: {report.counts()}",
    )
    return report


async def _apply_teams(
    session: AsyncSession, directory, by_id: dict[str, ExternalAccount], report: ImportReport
) -> None:
    by_handle = {a.handle.lower(): a for a in by_id.values() if a.handle}
    for team in directory.teams:
        people: dict[int, User] = {}
        for member in team.members:
            account = by_id.get(member.user_id or "") or by_handle.get((member.username or "").lower())
            person = await external_accounts.connected_person(session, account) if account is not None else None
            if person is None or not person.is_active:
                why = (
                    "not a user of this account"
                    if account is None
                    else ("deactivated in Genie" if person is not None else "not connected to a Genie person")
                )
                report.team_members_unmatched.append(
                    {"team": team.name, "member": member.username or member.user_id, "reason": why}
                )
                continue
            people[person.id] = person
        existing = await teams.team_by_name(session, team.name)
        created = existing is None
        genie_team = existing or await teams.add_team(session, team.name)
        added = []
        for person in sorted(people.values(), key=lambda p: p.email):
            if await teams.membership(session, genie_team.id, person.id) is None:
                session.add(TeamMember(team_id=genie_team.id, user_id=person.id))
                added.append(person.email)
        await session.flush()
        if created:
            report.teams_created.append({"name": genie_team.name, "members": added})
        elif added:
            report.teams_updated.append({"name": genie_team.name, "added": added})
        else:
            report.teams_unchanged.append(genie_team.name)


# --- connecting accounts from a file ----------------------------------------------------------
COLUMNS = ("email", "provider", "external_id", "tenant", "handle", "display_name", "account_email")
REQUIRED = ("email", "provider", "external_id")
MAX_ROWS = 100_000
_LIMITS = {
    "email": 254,
    "provider": 20,
    "external_id": 200,
    "tenant": 100,
    "handle": 200,
    "display_name": 200,
    "account_email": 254,
}


@dataclass(frozen=True)
class FileRow:
    where: str  # "line 3" (CSV, counting the header) or "item 2" (JSON)
    values: dict[str, str]
    #: What is wrong with the row by itself (reported with the rest by ``import_rows``).
    problem: str | None = None


def _problems(problems: list[str], name: str) -> InvalidInput:
    shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
    return InvalidInput(
        f"{name}: nothing imported, {len(problems)} problem{'s' if len(problems) != 1 else ''}: {shown}"
    )


def parse_file(name: str, content: str) -> list[FileRow]:
    """Rows of a CSV file with a header, or of a JSON list of objects (by the name's ending, or
    a leading ``[``). Column names are those of ``COLUMNS``; unknown ones are refused. A file
    that cannot be read as rows raises ``InvalidInput``; a bad row carries its ``problem``."""
    content = content.lstrip("\ufeff")
    is_json = name.lower().endswith(".json") or content.lstrip().startswith("[")
    rows: list[FileRow] = []
    empty = {c: "" for c in COLUMNS}
    if is_json:
        try:
            items = json.loads(content)
        except ValueError as err:
            raise InvalidInput(f"{name}: not valid JSON ({err})") from None
        if not isinstance(items, list):
            raise InvalidInput(f"{name}: expected a JSON list of objects")
        for number, item in enumerate(items, start=1):
            where = f"item {number}"
            if not isinstance(item, dict):
                rows.append(FileRow(where, empty, f"{where}: not an object"))
                continue
            unknown = sorted(set(map(str, item)) - set(COLUMNS))
            if unknown:
                rows.append(
                    FileRow(where, empty, f"{where}: unknown field {unknown[0]!r} (fields: {', '.join(COLUMNS)})")
                )
                continue
            bad = [k for k, v in item.items() if v is not None and not isinstance(v, str)]
            if bad:
                rows.append(FileRow(where, empty, f"{where}: {bad[0]} must be a string"))
                continue
            rows.append(FileRow(where, {k: (item.get(k) or "").strip() for k in COLUMNS}))
    else:
        reader = csv.reader(io.StringIO(content))
        try:
            header = [h.strip().lower() for h in next(reader)]
        except StopIteration:
            raise InvalidInput(f"{name}: the file is empty (a CSV file starts with a header line)") from None
        except csv.Error as err:
            raise InvalidInput(f"{name}: not a CSV file ({err})") from None
        unknown = [h for h in header if h not in COLUMNS]
        if unknown:
            raise InvalidInput(f"{name}: unknown column {unknown[0]!r} in the header (columns: {', '.join(COLUMNS)})")
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise InvalidInput(f"{name}: the header has no {missing[0]!r} column (required: {', '.join(REQUIRED)})")
        if len(set(header)) != len(header):
            raise InvalidInput(f"{name}: a column appears twice in the header")
        try:
            for cells in reader:
                where = f"line {reader.line_num}"
                if not any(c.strip() for c in cells):
                    continue
                if len(cells) > len(header):
                    rows.append(FileRow(where, empty, f"{where}: {len(cells)} cells but the header has {len(header)}"))
                    continue
                values = {c: "" for c in COLUMNS}
                values.update({h: cell.strip() for h, cell in zip(header, cells)})
                rows.append(FileRow(where, values))
        except csv.Error as err:
            raise InvalidInput(f"{name}: not a CSV file (line {reader.line_num}: {err})") from None
    if len(rows) > MAX_ROWS:
        raise InvalidInput(f"{name}: more than {MAX_ROWS} rows; split the file")
    if not rows:
        raise InvalidInput(f"{name}: no rows to import")
    return [row if row.problem else FileRow(row.where, row.values, _row_problem(row)) for row in rows]


def _row_problem(row: FileRow) -> str | None:
    for column in REQUIRED:
        if not row.values[column]:
            return f"{row.where}: {column} is empty"
    for column, limit in _LIMITS.items():
        value = row.values[column]
        if len(value) > limit or "\x00" in value:
            return f"{row.where}: {column} is longer than {limit} characters or has a NUL"
    return None


@dataclass(frozen=True)
class _Planned:
    row: FileRow
    provider: str
    person: User
    account: ExternalAccount | None
    previous: User | None


async def import_rows(
    session: AsyncSession, name: str, rows: list[FileRow], *, move: bool, who: Who
) -> list[dict[str, Any]]:
    """Check every row against the database, then connect them all (``via='import'``); any
    problem raises ``InvalidInput`` naming the rows before anything is written."""
    problems: list[str] = []
    plans: list[_Planned] = []
    seen: dict[tuple[str, str, str], str] = {}
    for row in rows:
        v = row.values
        if row.problem:
            problems.append(row.problem)
            continue
        try:
            provider = external_accounts.normalize_provider(v["provider"])
        except InvalidInput as err:
            problems.append(f"{row.where}: {err}")
            continue
        if provider == "slack":
            problems.append(
                f"{row.where}: Slack accounts are connected by their owner (/genie connect), not from a file"
            )
            continue
        if v["account_email"]:
            try:
                users.normalize_email(v["account_email"])
            except InvalidInput as err:
                problems.append(f"{row.where}: account_email: {err}")
                continue
        key = (provider, v["tenant"], v["external_id"])
        if key in seen:
            problems.append(f"{seen[key]} and {row.where} name the same {provider} account {v['external_id']}")
            continue
        seen[key] = row.where
        person = await users.user_by_email(session, v["email"])
        if person is None:
            problems.append(f"{row.where}: no person with email {v['email'].lower()}")
            continue
        account = await external_accounts.find_account(session, provider, v["tenant"], v["external_id"])
        previous = await external_accounts.connected_person(session, account) if account is not None else None
        if previous is not None and previous.id != person.id and not move:
            problems.append(
                f"{row.where}: {external_accounts.describe(account)} is connected to {previous.email} (--move moves it)"
            )
            continue
        plans.append(_Planned(row, provider, person, account, previous))
    if problems:
        raise _problems(problems, name)

    done: list[dict[str, Any]] = []
    for plan in plans:
        v = plan.row.values
        account = plan.account
        if account is None:
            account = await external_accounts.upsert(
                session,
                ReportedAccount(
                    provider=plan.provider,
                    tenant=v["tenant"],
                    external_id=v["external_id"],
                    handle=v["handle"] or None,
                    email=v["account_email"] or None,
                    display_name=v["display_name"] or None,
                ),
            )
        else:  # keep what the provider reported; the file only fills in what it names
            for column, attr in (("handle", "handle"), ("display_name", "display_name")):
                if v[column]:
                    setattr(account, attr, v[column])
            if v["account_email"]:
                account.email = users.reported_email(v["account_email"])
        if plan.previous is not None and plan.previous.id == plan.person.id:
            result = "already"
        else:
            moved = f"moved from {plan.previous.email} " if plan.previous is not None else ""
            await external_accounts.connect(
                session,
                account,
                plan.person,
                via="import",
                who=who,
                replace=move,
                detail=f"{moved}by {name}, {plan.row.where}",
            )
            result = "moved" if plan.previous is not None else "connected"
        done.append(
            {
                "where": plan.row.where,
                "result": result,
                "provider": plan.provider,
                "tenant": account.tenant,
                "external_id": account.external_id,
                "handle": account.handle,
                "person": plan.person.email,
                "previous": plan.previous.email if plan.previous and result == "moved" else None,
            }
        )
    counts = {r: sum(1 for d in done if d["result"] == r) for r in ("connected", "moved", "already")}
    await session.flush()
    await audit.record(
        session, who, "import.run", detail=f"{name}: " + ", ".join(f"{n} {r}" for r, n in counts.items())
    )
    return done
