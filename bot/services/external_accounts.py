"""External accounts — other tools' users (Slack, PagerDuty, OpsGenie, GitHub, Jira …) — and
their connection to people. This module owns the ``external_account`` table's queries, and is
the one way to connect, move or remove an account (CLI, web and importers all call ``connect``
and ``disconnect``).

A *person* is a Genie ``User`` (who may or may not be able to sign in). An *account* is an
``ExternalAccount``: what another tool reported about one of its users. An account is
*connected* to a person by their one-time link (Slack), by a unique email match, by an admin,
or by an import file; every connection change is written to the audit log in the same
transaction (``bot.services.audit``).

For Slack the connection is the ``SlackLink`` row the gate reads on every click; the Slack
``ExternalAccount`` is the directory entry (``genie slack sync``), found by
``(tenant, external_id) = (workspace_id, slack_user_id)``. Everything here keeps the two apart so
there is one source of truth for "who is this Slack user".

Auto-linking by email (``auto_link``) connects an account only when *all* of these hold:

- the provider's emails identify a person (Slack, PagerDuty, OpsGenie — never GitHub or Jira);
- the caller says auto-linking is allowed there (for Slack: the workspace's
  ``auto_link_by_email`` setting, off by default — in a multi-workspace deployment a stranger's
  workspace could carry a user with someone else's email);
- the account is a full member of the tenant: not a bot, guest, deleted or external
  (Slack Connect) user, and the provider vouches for the address;
- exactly one active person has that email (case-insensitive), counting each person's Genie
  email and the emails of accounts connected to them by hand or by their own link;
- neither side is already connected otherwise (no account is ever *moved* automatically).

Every other case is reported (``AutoLinkResult``) and left for a person to decide.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, case, exists, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.services import audit, users
from bot.services.audit import Who
from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from bot.services.users import reported_email
from storage import repositories as repo
from storage.base import utcnow
from storage.models import ExternalAccount, SlackLink, User

#: Providers Genie knows by name (others are accepted if they look like a name).
KNOWN_PROVIDERS = ("slack", "pagerduty", "opsgenie", "sentry", "github", "jira", "gitlab")
#: Providers whose user emails identify a person well enough to link on (the tool confirms the
#: address and it is the person's work login). GitHub and Jira emails do not: never auto-linked.
EMAIL_TRUSTED_PROVIDERS = frozenset({"slack", "pagerduty", "opsgenie"})
#: Ways a connection is made.
VIA = ("link", "email", "admin", "import")
AUTO_LINK_SETTING = "auto_link_by_email"

_PROVIDER_RE = re.compile(r"^[a-z][a-z0-9_-]{0,19}$")


def normalize_provider(provider: str) -> str:
    value = (provider or "").strip().lower()
    if not _PROVIDER_RE.match(value):
        raise InvalidInput(f"{provider!r} is not a provider name (e.g. {', '.join(KNOWN_PROVIDERS)})")
    return value


@dataclass(frozen=True)
class ReportedAccount:
    """One user as another tool reports it (an importer or directory sync builds these)."""

    provider: str
    external_id: str
    tenant: str = ""
    handle: str | None = None
    email: str | None = None
    email_verified: bool = False
    display_name: str | None = None
    is_bot: bool = False
    is_deleted: bool = False
    is_guest: bool = False
    is_external: bool = False
    attrs: dict[str, Any] = field(default_factory=dict)


class Outcome(enum.StrEnum):
    LINKED = "linked"
    ALREADY = "already"  # connected before (to this or another person): left as it is
    AMBIGUOUS = "ambiguous"  # more than one person has that email
    UNMATCHED = "unmatched"  # nobody has that email
    CONFLICT = "conflict"  # the one match already has another account there
    SKIPPED = "skipped"  # not eligible: bot, guest, deleted, external, untrusted …
    UNLINKED = "unlinked"  # deleted/deactivated in the provider: its link was removed


@dataclass(frozen=True)
class AutoLinkResult:
    outcome: Outcome
    account: ExternalAccount
    person: User | None = None
    detail: str = ""
    candidates: tuple[str, ...] = ()


@dataclass(frozen=True)
class AccountRow:
    """One account as a list shows it (``genie accounts list``, the admin's people page).
    ``key`` names it in forms: ``a:<account id>``, or ``l:<slack link id>`` for a Slack link with
    no directory entry yet. ``person``: whom it is connected to, where the list says."""

    key: str
    provider: str
    tenant: str
    external_id: str
    handle: str | None
    email: str | None
    display_name: str | None
    via: str | None = None
    connected_at: datetime | None = None
    connected_by: str | None = None
    match: str | None = None
    match_detail: str | None = None
    flags: tuple[str, ...] = ()
    person: User | None = None

    @classmethod
    def of(cls, account: ExternalAccount, person: User | None = None, via: str | None = None) -> AccountRow:
        flags = tuple(
            name
            for name, on in (
                ("bot", account.is_bot),
                ("deleted", account.is_deleted),
                ("guest", account.is_guest),
                ("external", account.is_external),
            )
            if on
        )
        return cls(
            f"a:{account.id}",
            account.provider,
            account.tenant,
            account.external_id,
            account.handle,
            account.email,
            account.display_name,
            via if via is not None else account.connected_via,
            account.connected_at,
            account.connected_by,
            account.match,
            account.match_detail,
            flags,
            person,
        )


# --- recording what a provider reported -----------------------------------------------------
async def find_account(session: AsyncSession, provider: str, tenant: str, external_id: str) -> ExternalAccount | None:
    return await session.scalar(
        select(ExternalAccount).where(
            ExternalAccount.provider == provider,
            ExternalAccount.tenant == tenant,
            ExternalAccount.external_id == external_id,
        )
    )


async def upsert(session: AsyncSession, reported: ReportedAccount, now: datetime | None = None) -> ExternalAccount:
    """Record (or refresh) an account as its provider reports it. Connections are untouched."""
    now = now or utcnow()
    provider = normalize_provider(reported.provider)
    external_id = (reported.external_id or "").strip()
    if not external_id:
        raise InvalidInput(f"a {provider} account needs its user id")
    # Every reader (directory sync, importers, files) comes through here: the columns' limits
    # are enforced once, the same on SQLite (which would keep a longer value) and PostgreSQL.
    if len(external_id) > 200:
        raise InvalidInput(f"a {provider} account id longer than 200 characters ({external_id[:40]}…)")
    if len(reported.tenant) > 100:
        raise InvalidInput(f"a {provider} tenant longer than 100 characters ({reported.tenant[:40]}…)")
    values = dict(
        handle=(reported.handle or "").strip()[:200] or None,
        email=reported_email(reported.email),
        email_verified=bool(reported.email_verified),
        display_name=(reported.display_name or "").strip()[:200] or None,
        is_bot=reported.is_bot,
        is_deleted=reported.is_deleted,
        is_guest=reported.is_guest,
        is_external=reported.is_external,
        attrs=dict(reported.attrs),
        updated_at=now,
    )
    account = await find_account(session, provider, reported.tenant, external_id)
    if account is None:
        account = ExternalAccount(
            provider=provider, tenant=reported.tenant, external_id=external_id, first_seen_at=now, **values
        )
        try:
            async with session.begin_nested():
                session.add(account)
                await session.flush()
        except IntegrityError:  # recorded by a concurrent sync a moment ago
            account = await find_account(session, provider, reported.tenant, external_id)
            assert account is not None
            for key, value in values.items():
                setattr(account, key, value)
    else:
        for key, value in values.items():
            setattr(account, key, value)
    if provider == "slack":
        # The link keeps a copy of the name and email Slack reported when it was made; keep it
        # current (``people_with_email`` and the confirm page read it).
        # A token without users:read.email reports no email: keep the one the link knows.
        copies = {"slack_email": values["email"], "slack_name": values["display_name"] or values["handle"]}
        copies = {k: v for k, v in copies.items() if v}
        if copies:
            await session.execute(
                update(SlackLink)
                .where(SlackLink.workspace_id == reported.tenant, SlackLink.slack_user_id == external_id)
                .values(**copies)
            )
    return account


# --- who has this email ---------------------------------------------------------------------
async def people_with_email(session: AsyncSession, email: str) -> list[User]:
    """Active people this email identifies: their Genie email, or the email of an account
    connected to them by their own link or by an admin (never by an earlier email match)."""
    email = reported_email(email)
    if not email:
        return []
    own = select(User.id).where(User.email == email)
    via_account = select(ExternalAccount.user_id).where(
        func.lower(ExternalAccount.email) == email,
        ExternalAccount.user_id.is_not(None),
        ExternalAccount.connected_via.in_(("link", "admin", "import")),
    )
    via_slack = select(SlackLink.user_id).where(
        func.lower(SlackLink.slack_email) == email, SlackLink.via.in_(("link", "admin", "import"))
    )
    return list(
        await session.scalars(
            select(User)
            .where(User.is_active.is_(True), or_(User.id.in_(own), User.id.in_(via_account), User.id.in_(via_slack)))
            .order_by(User.email)
        )
    )


async def auto_link_enabled(session: AsyncSession, workspace_id: str) -> bool:
    """The workspace's ``auto_link_by_email`` (else the deployment-wide ``'*'``); off by default."""
    return await repo.workspace_setting(session, workspace_id, AUTO_LINK_SETTING) == "true"


# --- the connection, whatever the provider --------------------------------------------------
async def slack_link_of(session: AsyncSession, account: ExternalAccount) -> SlackLink | None:
    return await session.scalar(
        select(SlackLink).where(
            SlackLink.workspace_id == account.tenant, SlackLink.slack_user_id == account.external_id
        )
    )


async def account_for_link(session: AsyncSession, link: SlackLink, *, record: bool = False) -> ExternalAccount:
    """The Slack directory entry of a link; a link made before ``genie slack sync`` recorded
    one gets an entry built from what the link knows (written to the session with ``record``,
    otherwise a transient one, enough to describe it)."""
    account = await find_account(session, "slack", link.workspace_id, link.slack_user_id)
    if account is not None:
        return account
    now = utcnow()
    account = ExternalAccount(
        provider="slack",
        tenant=link.workspace_id,
        external_id=link.slack_user_id,
        email=reported_email(link.slack_email),
        email_verified=False,
        display_name=link.slack_name,
        is_bot=False,
        is_deleted=False,
        is_guest=False,
        is_external=False,
        attrs={
            "team_id": link.slack_team_id,
            "enterprise_id": link.enterprise_id,
            "workspace_name": link.workspace_name,
        },
        connected_via=link.via,
        connected_at=link.created_at,
        first_seen_at=now,
        updated_at=now,
    )
    if not record:
        return account
    try:
        async with session.begin_nested():
            session.add(account)
            await session.flush()
    except IntegrityError:  # recorded by a concurrent sync a moment ago
        account = await find_account(session, "slack", link.workspace_id, link.slack_user_id)
        assert account is not None
    return account


async def connected_person(session: AsyncSession, account: ExternalAccount) -> User | None:
    if account.provider == "slack":
        link = await slack_link_of(session, account)
        return await users.user_by_id(session, link.user_id) if link is not None else None
    return await users.user_by_id(session, account.user_id) if account.user_id is not None else None


async def _person_has_other(session: AsyncSession, account: ExternalAccount, person: User) -> bool:
    """Does the person already have another account of this provider in this tenant?"""
    if account.provider == "slack":
        other = await session.scalar(
            select(SlackLink.id).where(
                SlackLink.user_id == person.id,
                SlackLink.workspace_id == account.tenant,
                SlackLink.slack_user_id != account.external_id,
            )
        )
    else:
        other = await session.scalar(
            select(ExternalAccount.id).where(
                ExternalAccount.user_id == person.id,
                ExternalAccount.provider == account.provider,
                ExternalAccount.tenant == account.tenant,
                ExternalAccount.id != account.id,
            )
        )
    return other is not None


async def _lock(session: AsyncSession, account: ExternalAccount) -> None:
    """Two admins (or an import and an admin) changing one account at once: on PostgreSQL the
    second waits for the first and then reads its outcome (``SELECT … FOR UPDATE``); SQLite
    runs writers one at a time already. A Slack account's connection is guarded by the
    unique constraints of ``slack_link``."""
    if account.provider != "slack" and account.id is not None:
        await session.flush()
        await session.refresh(account, with_for_update=True)


async def connect(
    session: AsyncSession,
    account: ExternalAccount,
    person: User,
    *,
    via: str,
    who: Who,
    replace: bool = False,
    detail: str | None = None,
    now: datetime | None = None,
) -> User | None:
    """Connect ``account`` to ``person`` (or move it there): the one way every caller (CLI, web,
    importers, auto-linking) connects an account. Returns whom it was connected to before (None:
    nobody; ``person``: already theirs, nothing changed). Without ``replace``, an account
    connected to someone else, or a Slack person already linked to another user of that
    workspace, is refused with AlreadyExists and nothing changes."""
    if via not in VIA:
        raise InvalidInput(f"unknown connection method {via!r}")
    now = now or utcnow()
    await _lock(session, account)
    previous = await connected_person(session, account)
    if previous is not None and previous.id == person.id:
        return previous
    if previous is not None and not replace:
        raise AlreadyExists(f"{describe(account)} is already connected to {previous.email}; move it instead.")
    if account.provider == "slack":
        other = await session.scalar(
            select(SlackLink).where(SlackLink.user_id == person.id, SlackLink.workspace_id == account.tenant)
        )
        if other is not None and not replace:
            raise AlreadyExists(
                f"{person.email} is already linked to Slack user {other.slack_user_id} "
                f"in {account.tenant}; remove that link first"
            )
        old = await slack_link_of(session, account)
        for row in (old, other):
            if row is not None:
                await session.delete(row)
        await session.flush()
        attrs = account.attrs or {}
        session.add(
            SlackLink(
                user_id=person.id,
                workspace_id=account.tenant,
                slack_user_id=account.external_id,
                slack_team_id=attrs.get("team_id") or account.tenant,
                enterprise_id=attrs.get("enterprise_id"),
                workspace_name=attrs.get("workspace_name"),
                slack_name=account.display_name or account.handle,
                slack_email=account.email,
                created_at=now,
                via=via,
                # auto-linked by a confirmed email (the directory's rule): the identity verifiably is theirs
                email_verified=via == "email",
            )
        )
        if other is not None:
            await audit.record(
                session,
                who,
                "account.remove",
                subject=person,
                provider="slack",
                tenant=account.tenant,
                external_id=other.slack_user_id,
                detail=f"replaced by {account.external_id}",
            )
    else:
        account.user_id = person.id
    account.connected_via, account.connected_at, account.connected_by = via, now, who.label[:200]
    await session.flush()
    if previous is not None:
        await audit.record(
            session,
            who,
            "account.move",
            subject=person,
            provider=account.provider,
            tenant=account.tenant,
            external_id=account.external_id,
            detail=detail or f"moved from {previous.email} ({via})",
        )
    else:
        await audit.record(
            session,
            who,
            "account.connect",
            subject=person,
            provider=account.provider,
            tenant=account.tenant,
            external_id=account.external_id,
            detail=detail or f"via {via}",
        )
    return previous


async def disconnect(
    session: AsyncSession,
    account: ExternalAccount,
    *,
    who: Who,
    action: str = "account.remove",
    detail: str | None = None,
) -> User | None:
    """Remove the account's connection; returns the person it was connected to (None: it
    was not connected, and nothing is logged)."""
    await _lock(session, account)
    person = await connected_person(session, account)
    if person is None:
        return None
    if account.provider == "slack":
        link = await slack_link_of(session, account)
        if link is not None:
            await session.delete(link)
    account.user_id = None
    account.connected_via = account.connected_at = account.connected_by = None
    await session.flush()
    await audit.record(
        session,
        who,
        action,
        subject=person,
        provider=account.provider,
        tenant=account.tenant,
        external_id=account.external_id,
        detail=detail,
    )
    return person


# --- automatic linking ----------------------------------------------------------------------
def _ineligible(account: ExternalAccount) -> str | None:
    if account.provider not in EMAIL_TRUSTED_PROVIDERS:
        return f"{account.provider} emails do not identify a person; connect it by hand or from a file"
    if account.is_bot:
        return "a bot"
    if account.is_deleted:
        return "deleted or deactivated"
    if account.is_guest:
        return "a guest"
    if account.is_external:
        return "an external user (its profile belongs to another organization)"
    if not account.email:
        return "no email"
    if not account.email_verified:
        return "email not confirmed by the provider"
    return None


async def auto_link(
    session: AsyncSession, account: ExternalAccount, *, allowed: bool, who: Who, now: datetime | None = None
) -> AutoLinkResult:
    """Connect ``account`` to the one person its email identifies, when every rule in this
    module's docstring holds; otherwise say why not. ``allowed`` is the tenant's opt-in."""
    result = await _auto_link(session, account, allowed=allowed, who=who, now=now)
    account.match = result.outcome.value
    account.match_detail = (result.detail or None) and result.detail[:300]
    return result


async def _auto_link(
    session: AsyncSession, account: ExternalAccount, *, allowed: bool, who: Who, now: datetime | None
) -> AutoLinkResult:
    current = await connected_person(session, account)
    if account.is_deleted and current is not None:
        await disconnect(
            session,
            account,
            who=who,
            action="account.departed",
            detail=f"{account.provider} reports the account deleted or deactivated",
        )
        return AutoLinkResult(Outcome.UNLINKED, account, current, "deleted or deactivated: link removed")
    if current is not None:
        return AutoLinkResult(Outcome.ALREADY, account, current, f"connected to {current.email}")
    why_not = _ineligible(account)
    if why_not:
        return AutoLinkResult(Outcome.SKIPPED, account, None, why_not)
    if not allowed:
        return AutoLinkResult(Outcome.SKIPPED, account, None, "auto-link by email is off here")
    people = await people_with_email(session, account.email or "")
    if not people:
        return AutoLinkResult(Outcome.UNMATCHED, account, None, f"no person has {account.email}")
    if len(people) > 1:
        emails = tuple(p.email for p in people)
        return AutoLinkResult(
            Outcome.AMBIGUOUS,
            account,
            None,
            f"{account.email} identifies {len(people)} people: {', '.join(emails)}",
            emails,
        )
    person = people[0]
    if await _person_has_other(session, account, person):
        return AutoLinkResult(
            Outcome.CONFLICT, account, person, f"{person.email} already has another {account.provider} account here"
        )
    await connect(session, account, person, via="email", who=who, detail=f"email {account.email} matched", now=now)
    return AutoLinkResult(Outcome.LINKED, account, person, f"matched {account.email}")


# --- reading ---------------------------------------------------------------------------------
def describe(account: ExternalAccount) -> str:
    name = account.handle or account.display_name or account.email
    where = f" in {account.tenant}" if account.tenant else ""
    return f"{account.provider} account {account.external_id}{f' ({name})' if name else ''}{where}"


async def other_accounts_of(session: AsyncSession, user_id: int) -> list[ExternalAccount]:
    """The person's connected accounts other than Slack (their Slack links are ``SlackLink`` rows,
    see ``slack_links.links_of_user``), by provider and tenant."""
    return list(
        await session.scalars(
            select(ExternalAccount)
            .where(ExternalAccount.user_id == user_id, ExternalAccount.provider != "slack")
            .order_by(ExternalAccount.provider, ExternalAccount.tenant, ExternalAccount.id)
        )
    )


async def require_account(
    session: AsyncSession, provider: str, external_id: str, tenant: str | None = None
) -> ExternalAccount:
    """Find a recorded account by id or handle (the tenant may be left out when it is unique)."""
    provider = normalize_provider(provider)
    value = external_id.strip()
    query = select(ExternalAccount).where(
        ExternalAccount.provider == provider,
        or_(ExternalAccount.external_id == value, func.lower(ExternalAccount.handle) == value.lower()),
    )
    if tenant is not None:
        query = query.where(ExternalAccount.tenant == tenant)
    found = list(await session.scalars(query.limit(3)))
    if not found:
        raise NotFound(f"no {provider} account {value}{f' in {tenant}' if tenant else ''} is known to Genie")
    if len(found) > 1:
        raise InvalidInput(
            f"{provider} account {value} exists in several tenants "
            f"({', '.join(sorted({a.tenant or '-' for a in found}))}); name the tenant"
        )
    return found[0]


async def candidates(session: AsyncSession, value: str, provider: str | None = None) -> set[int]:
    """The ids of every person (active or not) that ``value`` names: a provider user id, a
    handle or the email of an account connected to them (of ``provider`` only, when given);
    without a provider also a Slack user id, a linked Slack profile email, or a Genie email."""
    value = (value or "").strip()
    if not value or len(value) > 254:
        return set()
    lowered = value.lower()
    matches = or_(
        ExternalAccount.external_id == value,
        func.lower(ExternalAccount.handle) == lowered,
        ExternalAccount.email == lowered,
    )
    account_query = select(ExternalAccount).where(matches)
    if provider:
        account_query = account_query.where(ExternalAccount.provider == provider)
    people: set[int] = set()
    for account in await session.scalars(account_query.limit(20)):
        if account.provider == "slack":
            link = await slack_link_of(session, account)
            if link is not None:
                people.add(link.user_id)
        elif account.user_id is not None:
            people.add(account.user_id)
    if provider in (None, "slack"):
        for user_id in await session.scalars(
            select(SlackLink.user_id)
            .where(or_(SlackLink.slack_user_id == value, func.lower(SlackLink.slack_email) == lowered))
            .limit(20)
        ):
            people.add(user_id)
    if provider is None and "@" in value:
        own = await session.scalar(select(User.id).where(User.email == lowered))
        if own is not None:
            people.add(own)
    return people


async def resolve(session: AsyncSession, value: str, provider: str | None = None) -> User | None:
    """The one active person a name from another tool stands for, or None (never a guess).

    ``value`` may be a provider user id, a handle (OpsGenie username, GitHub login, Slack
    handle) or an email of an account connected to the person; an email that is a person's
    Genie email also resolves. Two different people → None.
    """
    people = await candidates(session, value, provider)
    if len(people) != 1:
        return None
    person = await users.user_by_id(session, people.pop())
    return person if person is not None and person.is_active else None


@dataclass(frozen=True)
class Named:
    """What a name given by another tool turned out to be: the person, or why nobody."""

    given: str
    #: The provider it was looked up in (None: any provider, or as an email).
    provider: str | None
    person: User | None = None
    #: When unresolved, why, in words: "nobody", "2 people", "an inactive person".
    why: str = ""


def _explain(people: set[int]) -> str:
    return "nobody" if not people else f"{len(people)} people" if len(people) > 1 else "an inactive person"


async def resolve_named(session: AsyncSession, value: str, provider: str | None = None, among: Any = None) -> Named:
    """Resolve a name as a tool gave it, by the rules alerts use (README, "How alerts name people"):

    - ``provider:value`` (a known provider: ``github:alice-s``, ``pagerduty:PXPGF42``) looks the
      value up in that provider, whatever ``provider`` says;
    - otherwise in ``provider`` (None: any provider, as ``resolve``);
    - an OpsGenie name that names nobody there is then read as an email: a person's own Genie
      email names them; otherwise the one person with a connected account of that email.

    Two people, nobody, or an inactive person → unresolved, with ``why``; never a guess::

        named = await resolve_named(session, "alice@example.com", "opsgenie")
        named.person  # → Alice, through her OpsGenie account or, failing that, her email

    ``among`` (a SELECT of user ids, ``access.team_people``): only those people exist for this
    lookup — everyone else is "nobody", so the answer tells nothing about them.
    """
    visible = None if among is None else set(await session.scalars(among))

    def seen(ids: set[int]) -> set[int]:
        return ids if visible is None else ids & visible

    given = (value or "").strip()
    prefix, sep, rest = given.partition(":")
    if sep and prefix.lower() in KNOWN_PROVIDERS and rest.strip():
        provider, value = prefix.lower(), rest.strip()
    else:
        value = given
    people = seen(await candidates(session, value, provider))
    if not people and provider == "opsgenie" and "@" in value:
        own = await users.user_by_email(session, value)
        if own is not None:
            people = seen({own.id})  # their own email names them, or (not visible) nobody
        else:
            people = seen(await candidates(session, value, None))
        provider = None
    if len(people) == 1:
        person = await session.get(User, next(iter(people)))
        if person is not None and person.is_active:
            return Named(given, provider, person)
    return Named(given, provider, None, _explain(people))


# --- listing, and changes by hand (``genie accounts list|connect|remove``) --------------------
def _slack_link_exists():
    return exists().where(
        SlackLink.workspace_id == ExternalAccount.tenant, SlackLink.slack_user_id == ExternalAccount.external_id
    )


def not_connected():
    """SQL: the account is connected to no one (a Slack one: no link; any other: no user_id)."""
    return or_(
        and_(ExternalAccount.provider != "slack", ExternalAccount.user_id.is_(None)),
        and_(ExternalAccount.provider == "slack", ~_slack_link_exists()),
    )


async def list_accounts(
    session: AsyncSession,
    *,
    provider: str | None = None,
    unlinked: bool = False,
    ambiguous: bool = False,
    email: str | None = None,
    limit: int = 10_000,
) -> list[AccountRow]:
    """Recorded accounts, by provider, tenant and id. ``unlinked``: connected to nobody;
    ``ambiguous``: the last email match found several people; ``email``: connected to that
    person, or reporting that email."""
    query = select(ExternalAccount)
    if provider:
        query = query.where(ExternalAccount.provider == normalize_provider(provider))
    if unlinked:
        query = query.where(not_connected())
    if ambiguous:
        query = query.where(ExternalAccount.match == Outcome.AMBIGUOUS.value)
    if email:
        wanted = email.strip().lower()
        person_id = select(User.id).where(User.email == wanted).scalar_subquery()
        via_slack = exists().where(
            SlackLink.workspace_id == ExternalAccount.tenant,
            SlackLink.slack_user_id == ExternalAccount.external_id,
            SlackLink.user_id == person_id,
        )
        query = query.where(
            or_(
                ExternalAccount.email == wanted,
                ExternalAccount.user_id == person_id,
                and_(ExternalAccount.provider == "slack", via_slack),
            )
        )
    # One query: a Slack account's person is its link's, any other's is its own user_id.
    # (An alias, so that the filters' EXISTS subqueries over slack_link stay uncorrelated.)
    link = aliased(SlackLink)
    on = and_(
        ExternalAccount.provider == "slack",
        link.workspace_id == ExternalAccount.tenant,
        link.slack_user_id == ExternalAccount.external_id,
    )
    owner = case((ExternalAccount.provider == "slack", link.user_id), else_=ExternalAccount.user_id)
    via = case((ExternalAccount.provider == "slack", link.via), else_=ExternalAccount.connected_via)
    query = (
        query.add_columns(User, via)
        .outerjoin(link, on)
        .outerjoin(User, User.id == owner)
        .order_by(ExternalAccount.provider, ExternalAccount.tenant, ExternalAccount.external_id)
        .limit(limit)
    )
    return [
        dataclasses.replace(AccountRow.of(account, person), via=how)
        for account, person, how in await session.execute(query)
    ]


def _tenant(tenant: str | None) -> str | None:
    if tenant is not None and len(tenant.strip()) > 100:
        raise InvalidInput("--tenant is longer than 100 characters")
    return tenant.strip() if tenant is not None else None


async def connect_by_id(
    session: AsyncSession,
    provider: str,
    external_id: str,
    email: str,
    *,
    who: Who,
    tenant: str | None = None,
    move: bool = False,
) -> tuple[ExternalAccount, User, User | None]:
    """Connect (``move``: or move) an account named by provider and id to the person with
    ``email``; an account Genie has not seen is recorded first (not Slack: a Slack account is
    recorded by the directory sync). Returns the account, the person and whom it was connected
    to before (None: nobody)."""
    provider = normalize_provider(provider)
    external_id = (external_id or "").strip()
    if not external_id or len(external_id) > 200:
        raise InvalidInput("an account id of 1 to 200 characters is required")
    tenant = _tenant(tenant)
    person = await users.require_user(session, email)
    try:
        account = await require_account(session, provider, external_id, tenant)
    except NotFound:
        if provider == "slack":
            raise NotFound(
                f"no Slack account {external_id} is known to Genie; run the Slack directory sync, "
                "or ask them to /genie connect"
            ) from None
        account = await upsert(
            session, ReportedAccount(provider=provider, tenant=tenant or "", external_id=external_id)
        )
    previous = await connect(session, account, person, via="admin", who=who, replace=move)
    return account, person, previous


async def remove_by_id(
    session: AsyncSession, provider: str, external_id: str, *, who: Who, tenant: str | None = None
) -> tuple[ExternalAccount, User]:
    account = await require_account(session, provider, external_id, tenant.strip() if tenant is not None else None)
    person = await disconnect(session, account, who=who)
    if person is None:
        raise NotFound(f"{describe(account)} is not connected to anyone")
    return account, person
