"""The Slack directory: every Slack user of a workspace recorded as an ``ExternalAccount`` and,
where the workspace allows it, connected to the one Genie person their email identifies.

Two ways in, one rule set (``external_accounts.auto_link``):

- ``genie slack sync`` pages through ``users.list`` and hands each page to ``record_page``
  (the Slack calls live in ``bot.slack.directory_sync``; this module never talks to Slack);
- the ``team_join`` and ``user_change`` events hand one user to ``record_member``.

What Slack sends about a user, and what Genie makes of it (``reported``):

=========================================  ===============================================
Slack                                      Genie
=========================================  ===============================================
``deleted``                                deleted: never linked; an existing link is removed
``is_bot``, ``is_workflow_bot``,           bot
``is_connector_bot``, id ``USLACKBOT``
``is_restricted``, ``is_ultra_restricted`` guest (multi- and single-channel guests)
``is_stranger``; a ``team_id`` (or         external: a Slack Connect user whose profile,
``enterprise_user.enterprise_id``) other   email included, another organization controls
than the workspace's; a ``profile.team``
of another workspace
``is_email_confirmed``                     email verified (when Slack leaves it out — as in
                                           some event payloads — a full member's email is
                                           the address they sign in with, and counts)
=========================================  ===============================================

    async with sessionmaker.begin() as session:          # one transaction per page
        entries = await record_page(session, members, workspace, allowed=True, who=SYNC)
    report.add(entries)
"""

from __future__ import annotations

import dataclasses
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit, external_accounts, users
from bot.services.audit import Who
from bot.services.errors import AlreadyExists, InvalidInput
from bot.services.external_accounts import Outcome, ReportedAccount

#: The actor of a directory sync on the audit log.
SYNC = Who(label="slack sync", via="sync")
#: Slack's own bot, which Slack does not flag ``is_bot``.
SLACKBOT = "USLACKBOT"
#: Slack ids: user ids (U…/W…), team ids (T…), org ids (E…).
_SLACK_ID = re.compile(r"^[A-Z0-9]{2,32}$")

#: ``skipped`` reasons, short keys for the report, in the order ``external_accounts`` checks them.
_SKIP_KEYS = (
    ("a bot", "bot"),
    ("deleted or deactivated", "deleted"),
    ("a guest", "guest"),
    ("an external user", "external"),
    ("no email", "no_email"),
    ("email not confirmed", "email_unconfirmed"),
    ("auto-link by email is off", "auto_link_off"),
)
SKIP_TEXT = {
    "bot": "bots",
    "deleted": "deleted or deactivated",
    "guest": "guests",
    "external": "external (Slack Connect)",
    "no_email": "no email",
    "email_unconfirmed": "email not confirmed",
    "auto_link_off": "auto-link by email is off",
    "malformed": "unreadable entries",
}


@dataclass(frozen=True)
class Workspace:
    """Where the users come from: ``workspace_id`` is the identity's tenant (the Grid org id,
    else the team id) — the same value ``SlackLink.workspace_id`` holds."""

    workspace_id: str
    team_id: str | None = None
    enterprise_id: str | None = None
    name: str | None = None

    def __str__(self) -> str:
        return f"{self.workspace_id}{f' ({self.name})' if self.name else ''}"


def _text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def _flag(member: dict, key: str) -> bool:
    return member.get(key) is True


def is_external(member: dict, workspace: Workspace) -> bool:
    """A user another organization governs (Slack Connect): Slack says so (``is_stranger``), or
    the user belongs to another team (or, on Enterprise Grid, another org). When it cannot be
    told, the answer is yes: such a user is recorded but never linked automatically."""
    if _flag(member, "is_stranger"):
        return True
    enterprise_user = member.get("enterprise_user") if isinstance(member.get("enterprise_user"), dict) else {}
    member_org = _text(enterprise_user.get("enterprise_id")) or _text(member.get("enterprise_id"))
    member_team = _text(member.get("team_id"))
    if workspace.enterprise_id:
        if member_org:
            return member_org != workspace.enterprise_id
        return member_team is None or member_team != workspace.team_id
    if member_org:  # a Grid user in a workspace outside any Grid org
        return True
    if member_team is None or member_team != workspace.team_id:
        return True
    profile = member.get("profile") if isinstance(member.get("profile"), dict) else {}
    profile_team = _text(profile.get("team"))
    return profile_team is not None and profile_team != workspace.team_id


def reported(member: Any, workspace: Workspace) -> ReportedAccount:
    """A Slack user object (``users.list``, ``users.info``, ``team_join``, ``user_change``) as
    Genie records it. Raises InvalidInput for an entry without a usable user id."""
    if not isinstance(member, dict):
        raise InvalidInput("a Slack user entry that is not an object")
    user_id = member.get("id")
    if not isinstance(user_id, str) or not _SLACK_ID.match(user_id):
        raise InvalidInput(f"a Slack user entry without a valid user id ({str(user_id)[:40]!r})")
    profile = member.get("profile") if isinstance(member.get("profile"), dict) else {}
    email = users.reported_email(_text(profile.get("email")))
    confirmed = member.get("is_email_confirmed")
    enterprise_user = member.get("enterprise_user") if isinstance(member.get("enterprise_user"), dict) else {}
    attrs: dict[str, Any] = {
        # The workspace the directory was read in: where a DM to this user is sent from.
        "team_id": workspace.team_id or _text(member.get("team_id")),
        "enterprise_id": workspace.enterprise_id,
        "workspace_name": workspace.name,
    }
    home_team = _text(member.get("team_id"))
    if home_team and home_team != attrs["team_id"]:
        attrs["user_team_id"] = home_team
    member_org = _text(enterprise_user.get("enterprise_id"))
    if member_org and member_org != workspace.enterprise_id:
        attrs["user_enterprise_id"] = member_org
    if _flag(member, "is_ultra_restricted"):
        attrs["guest"] = "single-channel"
    elif _flag(member, "is_restricted"):
        attrs["guest"] = "multi-channel"
    if confirmed is None:
        attrs["email_confirmed"] = "not reported by Slack"
    return ReportedAccount(
        provider="slack",
        external_id=user_id,
        tenant=workspace.workspace_id,
        handle=_text(member.get("name")),
        email=email,
        email_verified=confirmed is True or (confirmed is None and email is not None),
        display_name=_text(profile.get("display_name"))
        or _text(member.get("real_name"))
        or _text(profile.get("real_name")),
        is_bot=user_id == SLACKBOT or any(_flag(member, k) for k in ("is_bot", "is_workflow_bot", "is_connector_bot")),
        is_deleted=_flag(member, "deleted"),
        is_guest=_flag(member, "is_restricted") or _flag(member, "is_ultra_restricted"),
        is_external=is_external(member, workspace),
        attrs={k: v for k, v in attrs.items() if v is not None},
    )


def confirmed_email(member: Any, workspace: Workspace) -> tuple[str | None, str | None]:
    """``(email, None)`` when this Slack user object (``users.info``) shows an email that
    verifiably belongs to the user: a full member of the workspace (no bot, deleted user, guest
    or Slack Connect user, whose profiles other rules or organizations govern) whose email
    Slack says is confirmed (``is_email_confirmed: true`` — stricter than the directory's
    reading of event payloads, which may leave the field out); else ``(None, why not)``.

    This is the proof of ownership Genie asks for before it trusts a Slack identity with
    anything that would let it act as the person: a password link, a notice about their
    account, admin settings (``bot.slack.notify.owner_check``)."""
    try:
        account = reported(member, workspace)
    except InvalidInput as err:
        return None, str(err)
    why = (
        "a bot"
        if account.is_bot
        else "deleted or deactivated"
        if account.is_deleted
        else "a guest"
        if account.is_guest
        else "an external (Slack Connect) user"
        if account.is_external
        else "no email (or no users:read.email scope)"
        if not account.email
        else "its email is not confirmed by Slack"
        if member.get("is_email_confirmed") is not True
        else None
    )
    return (None, why) if why else (account.email, None)


def owner_problem(member: Any, workspace: Workspace, email: str) -> str | None:
    """None when this Slack user verifiably owns ``email`` (``confirmed_email`` equals it,
    case-insensitively); else one line saying why not."""
    confirmed, why = confirmed_email(member, workspace)
    if confirmed is None:
        return f"Slack gives no confirmed email for it ({why})"
    if confirmed != email.strip().lower():
        return f"its confirmed Slack email is {confirmed}, not {email.strip().lower()}"
    return None


# --- what happened to each user ---------------------------------------------------------------
@dataclass(frozen=True)
class Entry:
    """One Slack user's outcome, as plain values (safe to keep after the page's commit)."""

    outcome: str  # an external_accounts.Outcome value, or "malformed"
    slack_user: str
    handle: str | None = None
    email: str | None = None
    person: str | None = None
    detail: str = ""
    candidates: tuple[str, ...] = ()
    skip: str | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "slack_user": self.slack_user,
            "handle": self.handle,
            "email": self.email,
            "detail": self.detail,
        }
        if self.person is not None:
            out["person"] = self.person
        if self.candidates:
            out["candidates"] = list(self.candidates)
        return out


def skip_key(detail: str) -> str:
    lowered = detail.lower()
    for prefix, key in _SKIP_KEYS:
        if lowered.startswith(prefix):
            return key
    return detail[:60] or "other"


def _entry(result: external_accounts.AutoLinkResult) -> Entry:
    account = result.account
    return Entry(
        outcome=result.outcome.value,
        slack_user=account.external_id,
        handle=account.handle,
        email=account.email,
        person=result.person.email if result.person is not None else None,
        detail=result.detail,
        candidates=tuple(result.candidates),
        skip=skip_key(result.detail) if result.outcome is Outcome.SKIPPED else None,
    )


async def _record(
    session: AsyncSession, member: Any, workspace: Workspace, *, allowed: bool, who: Who, keep_attrs: bool = False
) -> Entry:
    try:
        report = reported(member, workspace)
    except InvalidInput as err:
        return Entry(
            outcome="malformed",
            slack_user=str(member.get("id") if isinstance(member, dict) else "?")[:40],
            detail=str(err),
            skip="malformed",
        )
    try:
        async with session.begin_nested():
            if keep_attrs:  # an event does not say the workspace's name: keep what a sync recorded
                known = await external_accounts.find_account(session, "slack", report.tenant, report.external_id)
                if known is not None and known.attrs:
                    report = dataclasses.replace(report, attrs={**known.attrs, **report.attrs})
            account = await external_accounts.upsert(session, report)
            return _entry(await external_accounts.auto_link(session, account, allowed=allowed, who=who))
    except (IntegrityError, AlreadyExists) as err:  # changed by a concurrent sync, event or person
        detail = "changed by someone else at the same moment; run the sync again"
        if isinstance(err, AlreadyExists):
            detail = str(err)
        return Entry(
            outcome=Outcome.CONFLICT.value,
            slack_user=report.external_id,
            handle=report.handle,
            email=report.email,
            detail=detail,
        )


async def record_page(
    session: AsyncSession, members: Iterable[Any], workspace: Workspace, *, allowed: bool, who: Who = SYNC
) -> list[Entry]:
    """Record one ``users.list`` page and auto-link it. The caller commits (one page, one
    transaction: an interrupted sync keeps the pages it finished, and a re-run changes nothing
    that is already right)."""
    return [await _record(session, member, workspace, allowed=allowed, who=who) for member in members]


async def record_member(session: AsyncSession, member: Any, workspace: Workspace, who: Who) -> Entry:
    """One user as a ``team_join`` / ``user_change`` event reports them: recorded and run
    through the same rules, with the workspace's own ``auto_link_by_email``."""
    allowed = await external_accounts.auto_link_enabled(session, workspace.workspace_id)
    return await _record(session, member, workspace, allowed=allowed, who=who, keep_attrs=True)


# --- the report of a run ------------------------------------------------------------------------
@dataclass
class SyncReport:
    workspace: Workspace
    auto_link: bool
    users: int = 0
    pages: int = 0
    linked: list[Entry] = field(default_factory=list)
    ambiguous: list[Entry] = field(default_factory=list)
    unmatched: list[Entry] = field(default_factory=list)
    conflicts: list[Entry] = field(default_factory=list)
    unlinked: list[Entry] = field(default_factory=list)
    already: int = 0
    skipped: Counter = field(default_factory=Counter)
    rate_limited: int = 0
    #: Set when the run stopped before the last page (what it did so far is kept).
    error: str | None = None
    #: Notes for the operator (e.g. a missing scope that hides emails).
    warnings: list[str] = field(default_factory=list)

    def add(self, entries: Iterable[Entry]) -> None:
        buckets = {
            Outcome.LINKED.value: self.linked,
            Outcome.AMBIGUOUS.value: self.ambiguous,
            Outcome.UNMATCHED.value: self.unmatched,
            Outcome.CONFLICT.value: self.conflicts,
            Outcome.UNLINKED.value: self.unlinked,
        }
        for entry in entries:
            self.users += 1
            if entry.outcome in buckets:
                buckets[entry.outcome].append(entry)
            elif entry.outcome == Outcome.ALREADY.value:
                self.already += 1
            else:
                self.skipped[entry.skip or "other"] += 1

    def counts(self) -> dict[str, int]:
        return {
            "users": self.users,
            "pages": self.pages,
            "linked": len(self.linked),
            "ambiguous": len(self.ambiguous),
            "unmatched": len(self.unmatched),
            "conflicts": len(self.conflicts),
            "unlinked": len(self.unlinked),
            "already": self.already,
            "skipped": sum(self.skipped.values()),
        }

    def summary(self) -> str:
        c = self.counts()
        skipped = ", ".join(f"{k} {v}" for k, v in sorted(self.skipped.items()))
        text = (
            f"{c['users']} Slack users in {c['pages']} pages: {c['linked']} linked, {c['ambiguous']} ambiguous, "
            f"{c['unmatched']} unmatched, {c['conflicts']} conflicts, {c['unlinked']} unlinked (deleted), "
            f"{c['already']} already connected, {c['skipped']} skipped{f' ({skipped})' if skipped else ''}; "
            f"auto-link by email {'on' if self.auto_link else 'off'}"
        )
        return text + (f"; stopped early: {self.error}" if self.error else "")

    def as_dict(self) -> dict[str, Any]:
        return {
            "workspace": self.workspace.workspace_id,
            "team_id": self.workspace.team_id,
            "enterprise_id": self.workspace.enterprise_id,
            "name": self.workspace.name,
            "auto_link_by_email": self.auto_link,
            "complete": self.error is None,
            "error": self.error,
            "counts": self.counts(),
            "rate_limited": self.rate_limited,
            "linked": [e.as_dict() for e in self.linked],
            "ambiguous": [e.as_dict() for e in self.ambiguous],
            "unmatched": [e.as_dict() for e in self.unmatched],
            "conflicts": [e.as_dict() for e in self.conflicts],
            "unlinked": [e.as_dict() for e in self.unlinked],
            "skipped": dict(sorted(self.skipped.items())),
            "warnings": list(self.warnings),
        }


async def record_run(session: AsyncSession, report: SyncReport, who: Who = SYNC) -> None:
    """One ``import.run`` line on the audit log per workspace and run, with its counts."""
    await audit.record(
        session,
        who,
        "import.run",
        provider="slack",
        tenant=report.workspace.workspace_id,
        detail=f"slack directory sync of {report.workspace}: {report.summary()}",
    )
