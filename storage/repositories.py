"""Queries. Each takes an ``AsyncSession`` and never commits: the use case that opened the
session owns the transaction."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, String, cast, delete, exists, func, literal, or_, select, text, update
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from storage.models import (Alert, ApiRequest, LinkRequest, SlackLink, Team, TeamMember, User, WebSession,
                            WorkspaceSetting)


# --- conditional updates ---------------------------------------------------------------------
async def update_one(session: AsyncSession, statement, entity: type, ident: Any) -> Any | None:
    """Run a conditional ``UPDATE`` that matches at most one row of ``entity``: the row as now
    updated (the session's copy refreshed), or None when the condition matched nothing (of any
    number of concurrent callers exactly one gets the row). With ``UPDATE … RETURNING``
    (SQLite ≥ 3.35, PostgreSQL) that is one statement; otherwise the ``UPDATE`` and a read by
    primary key. ``ident``: that key, or an async callable that finds it (before the update)."""
    if session.get_bind().dialect.update_returning:
        return (await session.execute(
            statement.returning(entity),
            execution_options={"synchronize_session": False, "populate_existing": True},
        )).scalar_one_or_none()
    key = await ident() if callable(ident) else ident
    if key is None:
        return None
    result = await session.execute(statement.execution_options(synchronize_session=False))
    if result.rowcount != 1:
        return None
    return await session.get(entity, key, populate_existing=True)


# --- workspace settings ----------------------------------------------------------------------
def workspace_setting_value(workspace_id: str, key: str):
    """SQL for a setting as a workspace sees it: its own value, else the deployment-wide one
    (workspace ``'*'``), else NULL — each a primary-key lookup, usable inside a larger query."""
    def value(workspace: str):
        return (select(WorkspaceSetting.value)
                .where(WorkspaceSetting.workspace_id == workspace, WorkspaceSetting.key == key).scalar_subquery())
    return func.coalesce(value(workspace_id), value("*"))


async def workspace_setting(session: AsyncSession, workspace_id: str, key: str) -> str | None:
    return await session.scalar(select(workspace_setting_value(workspace_id, key)))


# --- users -----------------------------------------------------------------------------------
async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.strip().lower()))


async def user_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def all_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.email)))


# --- teams -----------------------------------------------------------------------------------
async def team_by_name(session: AsyncSession, name: str) -> Team | None:
    return await session.scalar(select(Team).where(func.lower(Team.name) == name.strip().lower()))


async def team_by_id(session: AsyncSession, team_id: int) -> Team | None:
    return await session.get(Team, team_id)


async def all_teams_with_members(session: AsyncSession) -> list[tuple[Team, list[User]]]:
    teams = list(await session.scalars(select(Team).order_by(Team.name)))
    rows = await session.execute(
        select(TeamMember.team_id, User).join(User, User.id == TeamMember.user_id).order_by(User.email)
    )
    members: dict[int, list[User]] = {}
    for team_id, user in rows:
        members.setdefault(team_id, []).append(user)
    return [(team, members.get(team.id, [])) for team in teams]


async def teams_of_user(session: AsyncSession, user_id: int) -> list[Team]:
    return list(
        await session.scalars(
            select(Team).join(TeamMember, TeamMember.team_id == Team.id).where(TeamMember.user_id == user_id).order_by(Team.name)
        )
    )


async def team_members(session: AsyncSession, team_id: int) -> list[User]:
    return list(await session.scalars(
        select(User).join(TeamMember, TeamMember.user_id == User.id).where(TeamMember.team_id == team_id).order_by(User.name)
    ))


async def membership(session: AsyncSession, team_id: int, user_id: int) -> TeamMember | None:
    return await session.get(TeamMember, (team_id, user_id))


# --- Slack links -----------------------------------------------------------------------------
async def link_for_identity(session: AsyncSession, workspace_id: str, slack_user_id: str) -> SlackLink | None:
    """On every click (the gate): the link and its user in one query."""
    return await session.scalar(
        select(SlackLink)
        .options(joinedload(SlackLink.user, innerjoin=True))
        .where(SlackLink.workspace_id == workspace_id, SlackLink.slack_user_id == slack_user_id)
    )


async def link_for_user_in_workspace(session: AsyncSession, user_id: int, workspace_id: str) -> SlackLink | None:
    return await session.scalar(
        select(SlackLink).where(SlackLink.user_id == user_id, SlackLink.workspace_id == workspace_id)
    )


async def links_of_user(session: AsyncSession, user_id: int) -> list[SlackLink]:
    return list(await session.scalars(select(SlackLink).where(SlackLink.user_id == user_id).order_by(SlackLink.created_at)))


async def all_links(session: AsyncSession, email: str | None = None) -> list[SlackLink]:
    query = select(SlackLink).options(selectinload(SlackLink.user)).join(User, User.id == SlackLink.user_id)
    if email:
        query = query.where(User.email == email.strip().lower())
    return list(await session.scalars(query.order_by(User.email, SlackLink.workspace_id)))


async def delete_link(session: AsyncSession, link_id: int) -> None:
    await session.execute(delete(SlackLink).where(SlackLink.id == link_id))


# --- link requests ---------------------------------------------------------------------------
async def supersede_open_requests(session: AsyncSession, workspace_id: str, slack_user_id: str, now: datetime) -> int:
    """Mark this identity's unused requests superseded. Two ``/genie connect`` at the same moment
    must not both leave a usable link: on PostgreSQL a transaction-scoped advisory lock per
    identity orders them (SQLite already runs writers one at a time: BEGIN IMMEDIATE)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(text("SELECT pg_advisory_xact_lock(hashtext(:k))"),
                              {"k": f"genie-link:{workspace_id}:{slack_user_id}"})
    result = await session.execute(
        update(LinkRequest)
        .where(
            LinkRequest.workspace_id == workspace_id,
            LinkRequest.slack_user_id == slack_user_id,
            LinkRequest.consumed_at.is_(None),
            LinkRequest.superseded_at.is_(None),
        )
        .values(superseded_at=now)
    )
    return result.rowcount


async def consume_request(session: AsyncSession, nonce: str, user_id: int, now: datetime) -> bool:
    """The one conditional update that makes a link one-time: exactly one caller wins."""
    result = await session.execute(
        update(LinkRequest)
        .where(
            LinkRequest.nonce == nonce,
            LinkRequest.consumed_at.is_(None),
            LinkRequest.superseded_at.is_(None),
            LinkRequest.expires_at > now,
        )
        .values(consumed_at=now, consumed_by_user_id=user_id)
    )
    return result.rowcount == 1


# --- web sessions ----------------------------------------------------------------------------
async def session_user(session: AsyncSession, token_hash: str, now: datetime) -> User | None:
    return await session.scalar(
        select(User)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.token_hash == token_hash, WebSession.expires_at > now, User.is_active.is_(True))
    )


async def delete_session(session: AsyncSession, token_hash: str) -> None:
    await session.execute(delete(WebSession).where(WebSession.token_hash == token_hash))


async def delete_expired_sessions(session: AsyncSession, now: datetime) -> None:
    await session.execute(delete(WebSession).where(WebSession.expires_at <= now))


# --- alerts (the API's reads) ----------------------------------------------------------------
#: ``search_alerts`` sort keys (OpsGenie's names) → columns.
ALERT_SORTS = {
    "createdAt": Alert.created_at, "updatedAt": Alert.updated_at, "lastOccurredAt": Alert.last_occurred_at,
    "tinyId": Alert.id, "alias": Alert.alias, "message": Alert.message, "status": Alert.status,
    "acknowledged": Alert.acknowledged, "count": Alert.count, "source": Alert.source, "priority": Alert.priority,
}


def _alert_term(dialect: str, key: str, value: Any) -> ColumnElement[bool]:
    if key == "tag":  # exact element of the JSON list
        if dialect == "postgresql":
            return cast(Alert.tags, JSONB).contains([value])
        each = func.json_each(Alert.tags).table_valued("value")
        return exists(select(literal(1)).select_from(each).where(each.c.value == value))
    if key == "message":  # substring, case-insensitive
        return func.lower(Alert.message).contains(value.lower(), autoescape=True)
    if key == "owner":
        return Alert.owner_user_id.in_(select(User.id).where(User.email == value.strip().lower()))
    if key == "teams":  # the owning team, by name (case-insensitive) or id
        return Alert.team_id.in_(select(Team.id).where(or_(func.lower(Team.name) == value.lower(),
                                                            cast(Team.id, String) == value)))
    if key == "text":  # free text: in the message, alias, description or entity
        return or_(*(func.lower(column).contains(value.lower(), autoescape=True)
                     for column in (Alert.message, Alert.alias, Alert.description, Alert.entity)))
    column = {"status": Alert.status, "acknowledged": Alert.acknowledged, "priority": Alert.priority,
              "alias": Alert.alias, "source": Alert.source, "entity": Alert.entity, "tinyId": Alert.id}[key]
    return column == value


async def search_alerts(session: AsyncSession, team_ids: set[int], terms: list[tuple[str, Any]], *,
                        sort: str = "createdAt", descending: bool = True, offset: int = 0,
                        limit: int = 20) -> tuple[int, list[Alert]]:
    """``(total, page)`` of the alerts of ``team_ids`` matching every ``(key, value)`` term
    (keys: status, acknowledged, priority, alias, source, entity, tinyId, tag, message, owner)."""
    dialect = session.get_bind().dialect.name
    where = [Alert.team_id.in_(team_ids), *(_alert_term(dialect, k, v) for k, v in terms)]
    total = await session.scalar(select(func.count()).select_from(Alert).where(*where))
    column = ALERT_SORTS[sort]
    order = [column.desc(), Alert.id.desc()] if descending else [column.asc(), Alert.id.asc()]
    page = await session.scalars(select(Alert).where(*where).order_by(*order).offset(offset).limit(limit))
    return total or 0, list(page)


async def users_by_id(session: AsyncSession, ids: set[int]) -> dict[int, User]:
    if not ids:
        return {}
    return {u.id: u for u in await session.scalars(select(User).where(User.id.in_(ids)))}


async def teams_by_id(session: AsyncSession, ids: set[int]) -> dict[int, Team]:
    if not ids:
        return {}
    return {t.id: t for t in await session.scalars(select(Team).where(Team.id.in_(ids)))}


async def users_by_email(session: AsyncSession, emails: set[str]) -> dict[str, User]:
    if not emails:
        return {}
    return {u.email: u for u in await session.scalars(select(User).where(User.email.in_(emails)))}


async def teams_by_name(session: AsyncSession, names: set[str]) -> dict[str, Team]:
    if not names:
        return {}
    return {t.name: t for t in await session.scalars(select(Team).where(Team.name.in_(names)))}


async def api_request(session: AsyncSession, request_id: str, team_id: int) -> tuple[ApiRequest, Alert | None] | None:
    """An API request of this team's key, with its alert (if it still exists)."""
    row = await session.scalar(
        select(ApiRequest).where(ApiRequest.request_id == request_id, ApiRequest.team_id == team_id)
    )
    if row is None:
        return None
    return row, (await session.get(Alert, row.alert_id) if row.alert_id is not None else None)


async def installations(session: AsyncSession) -> list[dict]:
    """Multi-workspace mode: the latest bot installation of each workspace / Grid org."""
    from storage.models import SLACK_BOTS

    rows = (await session.execute(
        select(SLACK_BOTS.c.team_id, SLACK_BOTS.c.team_name, SLACK_BOTS.c.enterprise_id, SLACK_BOTS.c.enterprise_name,
               SLACK_BOTS.c.is_enterprise_install, func.max(SLACK_BOTS.c.installed_at).label("installed_at"))
        .group_by(SLACK_BOTS.c.team_id, SLACK_BOTS.c.team_name, SLACK_BOTS.c.enterprise_id,
                  SLACK_BOTS.c.enterprise_name, SLACK_BOTS.c.is_enterprise_install)
        .order_by(SLACK_BOTS.c.enterprise_id, SLACK_BOTS.c.team_id)
    )).mappings().all()
    return [dict(r) for r in rows]
