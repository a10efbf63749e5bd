"""Connected accounts by hand: list them with filters, connect or move one, remove one.

These are the admin's use cases behind ``genie accounts list|connect|remove``; every change goes
through ``identities.connect``/``disconnect`` and so onto the audit log::

    rows = await list_accounts(session, provider="github", unlinked=True)
    account, previous = await connect_by_hand(session, "github", "alice-s", "alice@example.com",
                                              who=Who.cli("genie accounts connect"))
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import and_, case, exists, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import aliased

from bot.services import accounts, identities
from bot.services.audit import Who
from bot.services.errors import InvalidInput, NotFound
from bot.services.identities import ReportedAccount
from storage.models import ExternalAccount, SlackLink, User


@dataclass(frozen=True)
class AccountRow:
    account: ExternalAccount
    person: User | None
    via: str | None


def _slack_link_exists():
    return exists().where(SlackLink.workspace_id == ExternalAccount.tenant,
                          SlackLink.slack_user_id == ExternalAccount.external_id)


async def list_accounts(session: AsyncSession, *, provider: str | None = None, unlinked: bool = False,
                        ambiguous: bool = False, email: str | None = None, limit: int = 10_000) -> list[AccountRow]:
    """Recorded accounts, by provider, tenant and id. ``unlinked``: connected to nobody;
    ``ambiguous``: the last email match found several people; ``email``: connected to that
    person, or reporting that email."""
    query = select(ExternalAccount)
    if provider:
        query = query.where(ExternalAccount.provider == identities.normalize_provider(provider))
    if unlinked:
        query = query.where(or_(and_(ExternalAccount.provider == "slack", ~_slack_link_exists()),
                                and_(ExternalAccount.provider != "slack", ExternalAccount.user_id.is_(None))))
    if ambiguous:
        query = query.where(ExternalAccount.match == identities.Outcome.AMBIGUOUS.value)
    if email:
        wanted = email.strip().lower()
        person_id = select(User.id).where(User.email == wanted).scalar_subquery()
        via_slack = exists().where(SlackLink.workspace_id == ExternalAccount.tenant,
                                   SlackLink.slack_user_id == ExternalAccount.external_id,
                                   SlackLink.user_id == person_id)
        query = query.where(or_(ExternalAccount.email == wanted, ExternalAccount.user_id == person_id,
                                and_(ExternalAccount.provider == "slack", via_slack)))
    # One query: a Slack account's person is its link's, any other's is its own user_id.
    # (An alias, so that the filters' EXISTS subqueries over slack_link stay uncorrelated.)
    link = aliased(SlackLink)
    on = and_(ExternalAccount.provider == "slack", link.workspace_id == ExternalAccount.tenant,
              link.slack_user_id == ExternalAccount.external_id)
    owner = case((ExternalAccount.provider == "slack", link.user_id), else_=ExternalAccount.user_id)
    via = case((ExternalAccount.provider == "slack", link.via), else_=ExternalAccount.connected_via)
    query = (query.add_columns(User, via).outerjoin(link, on).outerjoin(User, User.id == owner)
             .order_by(ExternalAccount.provider, ExternalAccount.tenant, ExternalAccount.external_id).limit(limit))
    return [AccountRow(account, person, how) for account, person, how in await session.execute(query)]


async def connect_by_hand(session: AsyncSession, provider: str, external_id: str, email: str, *, who: Who,
                          tenant: str | None = None, move: bool = False) -> tuple[ExternalAccount, User, User | None]:
    """Connect (``move``: or move) an account to the person with ``email``; an account Genie has
    not seen is recorded first (not Slack: a Slack account is recorded by the directory sync).
    Returns the account, the person and whom it was connected to before (None: nobody)."""
    provider = identities.normalize_provider(provider)
    external_id = (external_id or "").strip()
    if not external_id or len(external_id) > 200:
        raise InvalidInput("an account id of 1 to 200 characters is required")
    if tenant is not None and len(tenant.strip()) > 100:
        raise InvalidInput("--tenant is longer than 100 characters")
    person = await accounts.require_user(session, email)
    try:
        account = await identities.require_account(session, provider, external_id,
                                                   tenant.strip() if tenant is not None else None)
    except NotFound:
        if provider == "slack":
            raise NotFound(f"no Slack account {external_id} is known to Genie; run the Slack directory sync, "
                           "or ask them to /genie connect") from None
        account = await identities.upsert(session, ReportedAccount(provider=provider, tenant=(tenant or "").strip(),
                                                                    external_id=external_id))
    previous = await identities.connected_person(session, account)
    if previous is not None and previous.id == person.id:
        return account, person, previous
    await identities.connect(session, account, person, via="admin", who=who, replace=move)
    return account, person, previous


async def remove(session: AsyncSession, provider: str, external_id: str, *, who: Who,
                 tenant: str | None = None) -> tuple[ExternalAccount, User]:
    account = await identities.require_account(session, provider, external_id,
                                               tenant.strip() if tenant is not None else None)
    person = await identities.disconnect(session, account, who=who)
    if person is None:
        raise NotFound(f"{identities.describe(account)} is not connected to anyone")
    return account, person

