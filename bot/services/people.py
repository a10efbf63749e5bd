"""The admin's view of people and their connected accounts, and the changes an admin (or a
person, for their own accounts) makes by hand on the web.

Reading is a few queries per page whatever the number of people: one for the page of people,
one for their Slack links (with the Slack directory entry, when ``genie slack sync`` recorded
one), one for their other accounts, and one for the page of accounts connected to no one::

    page = await people.people_page(session, show="unlinked", provider="github", q="alice")
    loose = await people.loose_accounts_page(session, provider="pagerduty")

Every change goes through ``external_accounts.connect`` / ``external_accounts.disconnect``, so it is on the
audit log with who did it, in the same transaction. A change confirmed on a page that showed
"connected to Bob" is refused when the account has since moved to someone else: what the
admin confirmed is what happens, or nothing does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from sqlalchemy import and_, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ids import parse_id
from bot.services import external_accounts, users
from bot.services.audit import Who
from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from bot.services.external_accounts import AccountRow
from storage.models import ExternalAccount, SlackLink, User

PER_PAGE = 50
Show = Literal["all", "unlinked", "ambiguous"]
SHOWS: tuple[str, ...] = ("all", "unlinked", "ambiguous")

T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    number: int
    has_next: bool


@dataclass(frozen=True)
class PersonRow:
    person: User
    accounts: list[AccountRow]


@dataclass(frozen=True)
class MovePlan:
    """What confirming a move will do, shown on the confirm page."""

    account: ExternalAccount
    from_person: User
    to_person: User
    #: The Slack link of ``to_person`` in that workspace that the move replaces, if any.
    replaces: str | None


# --- reading ---------------------------------------------------------------------------------
def _like(q: str) -> str:
    escaped = q.strip().lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _slack_row(link: SlackLink, person: User, account: ExternalAccount | None) -> AccountRow:
    # A Slack directory entry keeps connected_* from the last connect(); a later /genie connect
    # or /genie disconnect does not touch it, so it speaks for this link only if it made it.
    made_by_connect = account is not None and account.connected_at == link.created_at
    if link.via == "link":
        by = f"{person.email} (their own link)"
    else:
        by = account.connected_by if made_by_connect else None
    return AccountRow(
        f"a:{account.id}" if account is not None else f"l:{link.id}",
        "slack",
        link.workspace_id,
        link.slack_user_id,
        account.handle if account is not None else None,
        link.slack_email or (account.email if account is not None else None),
        link.slack_name or (account.display_name if account is not None else None),
        link.via,
        link.created_at,
        by,
        account.match if account is not None else None,
        account.match_detail if account is not None else None,
        AccountRow.of(account).flags if account is not None else (),
    )


def _people_with_accounts(provider: str | None) -> list:
    """Subqueries of the ids of people with a connected account (of ``provider``)."""
    slack = select(SlackLink.user_id)
    other = select(ExternalAccount.user_id).where(ExternalAccount.user_id.is_not(None))
    if provider == "slack":
        return [slack]
    if provider:
        return [other.where(ExternalAccount.provider == provider)]
    return [slack, other]


async def people_page(
    session: AsyncSession,
    *,
    show: str = "all",
    provider: str | None = None,
    q: str | None = None,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Page[PersonRow]:
    """People by email with every account connected to them. ``unlinked``: people with no
    connected account (of ``provider``); ``all`` with a provider: people with one. ``q``
    matches the person's email or name, or the email, name or handle of one of their accounts."""
    if show == "ambiguous":
        return Page([], 1, False)
    query = select(User)
    if show == "unlinked":
        for ids in _people_with_accounts(provider):
            query = query.where(User.id.not_in(ids))
    elif provider:
        query = query.where(or_(*(User.id.in_(ids) for ids in _people_with_accounts(provider))))
    if q and q.strip():
        pattern = _like(q)
        by_account = select(ExternalAccount.user_id).where(
            ExternalAccount.user_id.is_not(None),
            or_(
                func.lower(ExternalAccount.email).like(pattern, escape="\\"),
                func.lower(ExternalAccount.display_name).like(pattern, escape="\\"),
                func.lower(ExternalAccount.handle).like(pattern, escape="\\"),
            ),
        )
        by_slack = select(SlackLink.user_id).where(
            or_(
                func.lower(SlackLink.slack_email).like(pattern, escape="\\"),
                func.lower(SlackLink.slack_name).like(pattern, escape="\\"),
            )
        )
        query = query.where(
            or_(
                User.email.like(pattern, escape="\\"),
                func.lower(User.name).like(pattern, escape="\\"),
                User.id.in_(by_account),
                User.id.in_(by_slack),
            )
        )
    page = max(1, page)
    people = list(await session.scalars(query.order_by(User.email).offset((page - 1) * per_page).limit(per_page + 1)))
    has_next = len(people) > per_page
    people = people[:per_page]
    ids = [p.id for p in people]
    by_person: dict[int, list[AccountRow]] = {i: [] for i in ids}
    if ids:
        people_by_id = {p.id: p for p in people}
        links = await session.execute(
            select(SlackLink, ExternalAccount)
            .outerjoin(
                ExternalAccount,
                and_(
                    ExternalAccount.provider == "slack",
                    ExternalAccount.tenant == SlackLink.workspace_id,
                    ExternalAccount.external_id == SlackLink.slack_user_id,
                ),
            )
            .where(SlackLink.user_id.in_(ids))
            .order_by(SlackLink.workspace_id, SlackLink.id)
        )
        for link, account in links:
            by_person[link.user_id].append(_slack_row(link, people_by_id[link.user_id], account))
        others = await session.scalars(
            select(ExternalAccount)
            .where(ExternalAccount.user_id.in_(ids))
            .order_by(ExternalAccount.provider, ExternalAccount.tenant, ExternalAccount.external_id)
        )
        for account in others:
            by_person[account.user_id].append(AccountRow.of(account))
    return Page([PersonRow(p, by_person[p.id]) for p in people], page, has_next)


async def loose_accounts_page(
    session: AsyncSession,
    *,
    ambiguous: bool = False,
    provider: str | None = None,
    q: str | None = None,
    page: int = 1,
    per_page: int = PER_PAGE,
) -> Page[AccountRow]:
    """Recorded accounts connected to no one; ``ambiguous``: only those whose email matched
    more than one person when auto-linking was tried."""
    query = select(ExternalAccount).where(external_accounts.not_connected())
    if ambiguous:
        query = query.where(ExternalAccount.match == "ambiguous")
    if provider:
        query = query.where(ExternalAccount.provider == provider)
    if q and q.strip():
        pattern = _like(q)
        query = query.where(
            or_(
                func.lower(ExternalAccount.email).like(pattern, escape="\\"),
                func.lower(ExternalAccount.display_name).like(pattern, escape="\\"),
                func.lower(ExternalAccount.handle).like(pattern, escape="\\"),
                func.lower(ExternalAccount.external_id).like(pattern, escape="\\"),
            )
        )
    page = max(1, page)
    rows = list(
        await session.scalars(
            query.order_by(ExternalAccount.provider, ExternalAccount.tenant, ExternalAccount.external_id)
            .offset((page - 1) * per_page)
            .limit(per_page + 1)
        )
    )
    return Page([AccountRow.of(a) for a in rows[:per_page]], page, len(rows) > per_page)


async def providers(session: AsyncSession) -> list[str]:
    """Providers to filter on: those Genie knows by name and any others it has recorded."""
    seen = set(await session.scalars(select(ExternalAccount.provider).distinct()))
    return sorted(seen | set(external_accounts.KNOWN_PROVIDERS))


# --- finding what a form names ---------------------------------------------------------------
def parse_key(key: str | None) -> tuple[str, int] | None:
    """``a:12`` / ``l:7`` → ("a", 12) / ("l", 7); anything else → None."""
    number = parse_id(key[2:]) if key and key[:2] in ("a:", "l:") else None
    return (key[0], number) if key and number is not None else None


async def account_by_key(session: AsyncSession, key: str | None, *, record: bool = False) -> ExternalAccount:
    """The account a form names. A Slack link with no directory entry is described from the
    link; with ``record`` its directory entry is written, so the change can go through
    ``external_accounts`` like any other (it holds nothing the link did not already say)."""
    parsed = parse_key(key)
    if parsed is None:
        raise NotFound("That account does not exist any more.")
    kind, number = parsed
    if kind == "a":
        # About to change it: lock the row (PostgreSQL; SQLite's write transactions are serial),
        # so two admins changing one account at once take turns and the second sees the first.
        account = await session.get(ExternalAccount, number, with_for_update=record or None, populate_existing=record)
    else:
        link = await session.get(SlackLink, number)
        account = await external_accounts.account_for_link(session, link, record=record) if link is not None else None
    if account is None:
        raise NotFound("That account does not exist any more (it may have been removed meanwhile).")
    return account


async def person_by_email(session: AsyncSession, email: str | None) -> User:
    value = (email or "").strip().lower()
    if not value:
        raise InvalidInput("Give the email of the person to connect it to.")
    person = await users.user_by_email(session, value[:254])
    if person is None:
        raise NotFound(f"No person has the email {value}.")
    if not person.is_active:
        raise InvalidInput(f"{person.email} is deactivated; activate them first.")
    return person


async def _check_still(session: AsyncSession, account: ExternalAccount, expected: str | None) -> User:
    """The person the account is connected to, refusing if it is not whom the page showed."""
    current = await external_accounts.connected_person(session, account)
    expected_id = parse_id(expected)
    if current is None:
        raise NotFound(f"{external_accounts.describe(account)} is not connected to anyone any more.")
    if current.id != expected_id:
        raise AlreadyExists(
            f"{external_accounts.describe(account)} is now connected to {current.email}, not to whom "
            "the page showed: look at it again."
        )
    return current


# --- changes by an admin ---------------------------------------------------------------------
async def connect_by_admin(
    session: AsyncSession, admin: User, key: str | None, email: str | None
) -> tuple[ExternalAccount, User]:
    """Connect an account connected to no one. One that is connected already is refused
    (move it instead), as is a second Slack user of the same workspace for one person."""
    person = await person_by_email(session, email)
    account = await account_by_key(session, key, record=True)
    previous = await external_accounts.connect(
        session, account, person, via="admin", who=Who.person(admin, "web"), detail="connected by an admin on the web"
    )
    if previous is not None:  # theirs already (anyone else's was refused): nothing to connect
        raise AlreadyExists(
            f"{external_accounts.describe(account)} is already connected to {previous.email}; move it instead."
        )
    return account, person


async def plan_move(session: AsyncSession, key: str | None, email: str | None, *, record: bool = False) -> MovePlan:
    account = await account_by_key(session, key, record=record)
    to_person = await person_by_email(session, email)
    from_person = await external_accounts.connected_person(session, account)
    if from_person is None:
        raise NotFound(f"{external_accounts.describe(account)} is not connected to anyone; connect it instead.")
    if from_person.id == to_person.id:
        raise InvalidInput(f"{external_accounts.describe(account)} is already connected to {to_person.email}.")
    replaces = None
    if account.provider == "slack":
        other = await session.scalar(
            select(SlackLink).where(SlackLink.user_id == to_person.id, SlackLink.workspace_id == account.tenant)
        )
        if other is not None:
            replaces = f"{to_person.email}'s own Slack link to {other.slack_user_id} in {account.tenant}"
    return MovePlan(account, from_person, to_person, replaces)


async def move_by_admin(
    session: AsyncSession, admin: User, key: str | None, email: str | None, expected_from: str | None
) -> MovePlan:
    """Move an account from the person the confirm page showed to another person."""
    plan = await plan_move(session, key, email, record=True)
    await _check_still(session, plan.account, expected_from)
    await external_accounts.connect(
        session,
        plan.account,
        plan.to_person,
        via="admin",
        who=Who.person(admin, "web"),
        replace=True,
        detail=f"moved from {plan.from_person.email} by an admin on the web",
    )
    return plan


async def remove_by_admin(
    session: AsyncSession, admin: User, key: str | None, expected_from: str | None
) -> tuple[ExternalAccount, User]:
    account = await account_by_key(session, key, record=True)
    person = await _check_still(session, account, expected_from)
    await external_accounts.disconnect(
        session, account, who=Who.person(admin, "web"), detail="removed by an admin on the web"
    )
    return account, person


# --- a person's own accounts -----------------------------------------------------------------
async def own_account(session: AsyncSession, user: User, account_id: int) -> ExternalAccount | None:
    """One of ``user``'s own non-Slack accounts; anyone else's (or a Slack one: those are
    removed as links, ``slack_links.unlink_for_user``) is not found."""
    account = await session.get(ExternalAccount, account_id)
    if account is None or account.provider == "slack" or account.user_id != user.id:
        return None
    return account


async def remove_own(session: AsyncSession, user: User, account_id: int) -> ExternalAccount | None:
    account = await own_account(session, user, account_id)
    if account is None:
        return None
    await external_accounts.disconnect(
        session, account, who=Who.person(user, "web"), detail="removed on their account page"
    )
    return account
