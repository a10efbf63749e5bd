"""Shared query helpers: used by several services, owned by none. Each service owns the queries
of its own tables (``bot.services.users``: users and web sessions, ``teams``, ``slack_links``,
``external_accounts``, ``alerts`` …); only what several of them need lives here. Each takes an
``AsyncSession`` and never commits: the use case that opened the session owns the transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import Team, User, WorkspaceSetting


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


# --- bulk loads, shared by several services ---------------------------------------------------
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
