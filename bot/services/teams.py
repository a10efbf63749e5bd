"""Teams: their channel and workspace, and who is a member. This module owns the ``team`` and
``team_member`` tables' queries."""

from __future__ import annotations

import re

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from bot.services.users import require_user
from storage import repositories as repo
from storage.models import Team, TeamMember, User

_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")


async def team_by_name(session: AsyncSession, name: str) -> Team | None:
    return await session.scalar(select(Team).where(func.lower(Team.name) == name.strip().lower()))


async def team_by_id(session: AsyncSession, team_id: int) -> Team | None:
    return await repo.get(session, Team, team_id)


async def all_teams_with_members(session: AsyncSession) -> list[tuple[Team, list[User]]]:
    teams = list(await session.scalars(select(Team).order_by(Team.name)))
    rows = await session.execute(
        select(TeamMember.team_id, User).join(User, User.id == TeamMember.user_id).order_by(User.email)
    )
    members: dict[int, list[User]] = {}
    for team_id, user in rows:
        members.setdefault(team_id, []).append(user)
    return [(team, members.get(team.id, [])) for team in teams]


async def members_of(session: AsyncSession, team_id: int) -> list[User]:
    """The team's members, by email."""
    return list(
        await session.scalars(
            select(User)
            .join(TeamMember, TeamMember.user_id == User.id)
            .where(TeamMember.team_id == team_id)
            .order_by(User.email)
        )
    )


async def teams_of_user(session: AsyncSession, user_id: int) -> list[Team]:
    return list(
        await session.scalars(
            select(Team)
            .join(TeamMember, TeamMember.team_id == Team.id)
            .where(TeamMember.user_id == user_id)
            .order_by(Team.name)
        )
    )


async def teams_by_id(session: AsyncSession, ids: set[int]) -> dict[int, Team]:
    return await repo.by_key(session, Team.id, ids)


async def teams_by_name(session: AsyncSession, names: set[str]) -> dict[str, Team]:
    return await repo.by_key(session, Team.name, names)


async def membership(session: AsyncSession, team_id: int, user_id: int) -> TeamMember | None:
    return await session.get(TeamMember, (team_id, user_id))


def check_channel(channel: str) -> str:
    channel = channel.strip()
    if not _CHANNEL.match(channel):
        raise InvalidInput(f"{channel!r} is not a Slack channel id (like C0123456789)")
    return channel


_WORKSPACE = re.compile(r"^[TE][A-Z0-9]{2,}$")


def _check_workspace(workspace: str | None) -> tuple[str | None, str | None]:
    """``T…`` (a workspace) or ``E…/T…`` / ``E…`` (Enterprise Grid) → ``(team_id, enterprise_id)``."""
    if not workspace:
        return None, None
    parts = [p.strip() for p in workspace.split("/")]
    if not all(_WORKSPACE.match(p) for p in parts) or len(parts) > 2:
        raise InvalidInput(f"{workspace!r} is not a Slack workspace id (T0123…, or E0123…/T0123… on Enterprise Grid)")
    enterprise = next((p for p in parts if p.startswith("E")), None)
    team = next((p for p in parts if p.startswith("T")), None)
    return team, enterprise


async def add_team(session: AsyncSession, name: str, channel: str | None = None, workspace: str | None = None) -> Team:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("a team name of 1 to 100 characters is required")
    if await team_by_name(session, name):
        raise AlreadyExists(f"a team named {name} already exists")
    team_id, enterprise_id = _check_workspace(workspace)
    team = Team(
        name=name,
        slack_channel_id=check_channel(channel) if channel else None,
        slack_team_id=team_id,
        enterprise_id=enterprise_id,
    )
    session.add(team)
    await session.flush()
    return team


async def require_team(session: AsyncSession, name: str) -> Team:
    team = await team_by_name(session, name)
    if team is None:
        raise NotFound(f"no team named {name.strip()}")
    return team


async def set_team_channel(session: AsyncSession, name: str, channel: str, workspace: str | None = None) -> Team:
    """The channel for the team's alerts; in multi-workspace mode also the workspace it is in."""
    team = await require_team(session, name)
    team.slack_channel_id = check_channel(channel)
    if workspace:
        team.slack_team_id, team.enterprise_id = _check_workspace(workspace)
    return team


async def add_member(session: AsyncSession, team_name: str, email: str) -> tuple[Team, User]:
    team = await require_team(session, team_name)
    user = await require_user(session, email)
    if await membership(session, team.id, user.id):
        raise AlreadyExists(f"{user.email} is already a member of {team.name}")
    session.add(TeamMember(team_id=team.id, user_id=user.id))
    await session.flush()
    return team, user


async def remove_member(session: AsyncSession, team_name: str, email: str) -> tuple[Team, User]:
    team = await require_team(session, team_name)
    user = await require_user(session, email)
    member = await membership(session, team.id, user.id)
    if member is None:
        raise NotFound(f"{user.email} is not a member of {team.name}")
    await session.delete(member)
    return team, user
