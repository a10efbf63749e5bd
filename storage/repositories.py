"""Shared query helpers: used by several services, owned by none. Each service owns the queries
of its own tables (``bot.services.users``: users and web sessions, ``teams``, ``slack_links``,
``external_accounts``, ``alerts`` …); only what several of them need lives here. Each takes an
``AsyncSession`` and never commits: the use case that opened the session owns the transaction."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from storage.models import WorkspaceSetting


# --- conditional updates ---------------------------------------------------------------------
async def update_one(session: AsyncSession, statement, entity: type, ident: Any) -> Any | None:
    """Run a conditional ``UPDATE`` that matches at most one row of ``entity``: the row as now
    updated (the session's copy refreshed), or None when the condition matched nothing (of any
    number of concurrent callers exactly one gets the row). With ``UPDATE … RETURNING``
    (SQLite ≥ 3.35, PostgreSQL) that is one statement; otherwise the ``UPDATE`` and a read by
    primary key. ``ident``: that key, or an async callable that finds it (before the update)."""
    if session.get_bind().dialect.update_returning:
        return (
            await session.execute(
                statement.returning(entity),
                execution_options={"synchronize_session": False, "populate_existing": True},
            )
        ).scalar_one_or_none()
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
        return (
            select(WorkspaceSetting.value)
            .where(WorkspaceSetting.workspace_id == workspace, WorkspaceSetting.key == key)
            .scalar_subquery()
        )

    return func.coalesce(value(workspace_id), value("*"))


async def workspace_setting(session: AsyncSession, workspace_id: str, key: str) -> str | None:
    return await session.scalar(select(workspace_setting_value(workspace_id, key)))


# --- loading many rows at once -------------------------------------------------------------------
async def by_key(session: AsyncSession, column, keys: set) -> dict:
    """The rows of ``column``'s table whose ``column`` is one of ``keys``, by that value (one
    query; none for no keys): ``await by_key(session, User.email, {"a@x.org"})``."""
    if not keys:
        return {}
    entity = column.class_
    return {getattr(row, column.key): row for row in await session.scalars(select(entity).where(column.in_(keys)))}


# --- Slack installations (the Bolt installation store's table) ------------------------------------
async def installations(session: AsyncSession) -> list[dict]:
    """Multi-workspace mode: the latest bot installation of each workspace / Grid org."""
    from storage.models import SLACK_BOTS

    rows = (
        (
            await session.execute(
                select(
                    SLACK_BOTS.c.team_id,
                    SLACK_BOTS.c.team_name,
                    SLACK_BOTS.c.enterprise_id,
                    SLACK_BOTS.c.enterprise_name,
                    SLACK_BOTS.c.is_enterprise_install,
                    func.max(SLACK_BOTS.c.installed_at).label("installed_at"),
                )
                .group_by(
                    SLACK_BOTS.c.team_id,
                    SLACK_BOTS.c.team_name,
                    SLACK_BOTS.c.enterprise_id,
                    SLACK_BOTS.c.enterprise_name,
                    SLACK_BOTS.c.is_enterprise_install,
                )
                .order_by(SLACK_BOTS.c.enterprise_id, SLACK_BOTS.c.team_id)
            )
        )
        .mappings()
        .all()
    )
    return [dict(r) for r in rows]
