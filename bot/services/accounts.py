"""People, teams and web sign-in.

Passwords are hashed with argon2id (argon2-cffi). Sign-in takes the same time whether or not
the email exists (a dummy hash is verified), and the caller says only "email or password is
incorrect" — no hint which field was wrong.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.errors import AlreadyExists, InvalidInput, NotFound
from storage import repositories as repo
from storage.base import utcnow
from storage.models import Team, TeamMember, User, WebSession

SESSION_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_LENGTH = 8
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_CHANNEL = re.compile(r"^[CGD][A-Z0-9]{2,}$")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def normalize_email(email: str) -> str:
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise InvalidInput(f"{email!r} is not an email address")
    return email


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise InvalidInput(f"the password must be at least {MIN_PASSWORD_LENGTH} characters")
    return _hasher.hash(password)


def _verify(password_hash: str | None, password: str) -> bool:
    try:
        return _hasher.verify(password_hash or _DUMMY_HASH, password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False


# --- users -----------------------------------------------------------------------------------
async def add_user(
    session: AsyncSession, email: str, name: str, password: str | None = None, is_admin: bool = False
) -> User:
    email = normalize_email(email)
    name = name.strip()
    if not name:
        raise InvalidInput("a name is required (--name)")
    if await repo.user_by_email(session, email):
        raise AlreadyExists(f"a user with email {email} already exists")
    user = User(email=email, name=name, is_admin=is_admin, is_active=True,
                password_hash=hash_password(password) if password is not None else None)
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise AlreadyExists(f"a user with email {email} already exists") from None
    return user


async def require_user(session: AsyncSession, email: str) -> User:
    user = await repo.user_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with email {email.strip().lower()}")
    return user


async def set_password(session: AsyncSession, email: str, password: str) -> User:
    user = await require_user(session, email)
    user.password_hash = hash_password(password)
    return user


async def set_active(session: AsyncSession, email: str, active: bool) -> User:
    user = await require_user(session, email)
    user.is_active = active
    return user


async def authenticate(session: AsyncSession, email: str, password: str) -> User | None:
    """The user if the email and password match an active account, else None."""
    user = await repo.user_by_email(session, email)
    ok = _verify(user.password_hash if user else None, password)
    if not ok or user is None or not user.is_active:
        return None
    if _hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = _hasher.hash(password)
    return user


# --- web sessions ----------------------------------------------------------------------------
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(session: AsyncSession, user: User, now: datetime | None = None) -> str:
    """A new random session token (never reuses one the browser brought: no fixation)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(WebSession(token_hash=_token_hash(token), user_id=user.id, created_at=now,
                           expires_at=now + SESSION_LIFETIME))
    await repo.delete_expired_sessions(session, now)
    return token


async def session_user(session: AsyncSession, token: str | None, now: datetime | None = None) -> User | None:
    if not token or len(token) > 100:
        return None
    return await repo.session_user(session, _token_hash(token), now or utcnow())


async def end_session(session: AsyncSession, token: str | None) -> None:
    if token and len(token) <= 100:
        await repo.delete_session(session, _token_hash(token))


# --- teams -----------------------------------------------------------------------------------
def _check_channel(channel: str) -> str:
    channel = channel.strip()
    if not _CHANNEL.match(channel):
        raise InvalidInput(f"{channel!r} is not a Slack channel id (like C0123456789)")
    return channel


async def add_team(session: AsyncSession, name: str, channel: str | None = None) -> Team:
    name = name.strip()
    if not name or len(name) > 100:
        raise InvalidInput("a team name of 1 to 100 characters is required")
    if await repo.team_by_name(session, name):
        raise AlreadyExists(f"a team named {name} already exists")
    team = Team(name=name, slack_channel_id=_check_channel(channel) if channel else None)
    session.add(team)
    await session.flush()
    return team


async def require_team(session: AsyncSession, name: str) -> Team:
    team = await repo.team_by_name(session, name)
    if team is None:
        raise NotFound(f"no team named {name.strip()}")
    return team


async def set_team_channel(session: AsyncSession, name: str, channel: str) -> Team:
    team = await require_team(session, name)
    team.slack_channel_id = _check_channel(channel)
    return team


async def add_member(session: AsyncSession, team_name: str, email: str) -> tuple[Team, User]:
    team = await require_team(session, team_name)
    user = await require_user(session, email)
    if await repo.membership(session, team.id, user.id):
        raise AlreadyExists(f"{user.email} is already a member of {team.name}")
    session.add(TeamMember(team_id=team.id, user_id=user.id))
    await session.flush()
    return team, user


async def remove_member(session: AsyncSession, team_name: str, email: str) -> tuple[Team, User]:
    team = await require_team(session, team_name)
    user = await require_user(session, email)
    member = await repo.membership(session, team.id, user.id)
    if member is None:
        raise NotFound(f"{user.email} is not a member of {team.name}")
    await session.delete(member)
    return team, user
