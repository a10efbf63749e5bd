"""People, teams and web sign-in.

Passwords are hashed with argon2id (argon2-cffi). Sign-in takes the same time whether or not
the email exists (a dummy hash is verified), and the caller says only "email or password is
incorrect" — no hint which field was wrong.

Sign-in is rate-limited per account (the typed email) and per client address: after
``MAX_FAILURES_PER_ACCOUNT`` / ``MAX_FAILURES_PER_ADDRESS`` failures within ``SIGNIN_WINDOW``
further attempts are refused with ``TooManyAttempts`` *before* any password is checked (so a
guesser learns nothing and burns no argon2 time). Failures live in the database, so the limit
holds across restarts and every Genie process::

    async with sessionmaker.begin() as session:
        user = await sign_in(session, email, password, address)   # None: wrong; raises when limited
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.orm.attributes import set_committed_value
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.errors import AlreadyExists, GenieError, InvalidInput, NotFound
from storage import repositories as repo
from storage.base import utcnow
from storage.models import SigninFailure, Team, TeamMember, User, WebSession

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
    # NUL can't be in a stored email (PostgreSQL refuses it in a query): no such user.
    user = await repo.user_by_email(session, email) if "\x00" not in email else None
    # argon2 is deliberately slow (~0.1 s): off the event loop, so one sign-in never stalls
    # the clicks and API calls this process is serving.
    ok = await asyncio.to_thread(_verify, user.password_hash if user else None, password)
    if not ok or user is None or not user.is_active:
        return None
    if _hasher.check_needs_rehash(user.password_hash or ""):
        user.password_hash = await asyncio.to_thread(_hasher.hash, password)
    return user


# --- sign-in rate limits ---------------------------------------------------------------------
SIGNIN_WINDOW = timedelta(minutes=15)
MAX_FAILURES_PER_ACCOUNT = 5
MAX_FAILURES_PER_ADDRESS = 20


class TooManyAttempts(GenieError):
    """Sign-in refused without checking the password; ``retry_after`` says for how long."""

    def __init__(self, retry_after: timedelta) -> None:
        self.retry_after = retry_after
        minutes = max(1, math.ceil(retry_after.total_seconds() / 60))
        super().__init__(f"Too many sign-in attempts; try again in {minutes} minute{'s' if minutes != 1 else ''}.")


def _account_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()


async def _wait_for(session: AsyncSession, column, value: str, limit: int, now: datetime) -> timedelta | None:
    """How long until fewer than ``limit`` failures of ``column == value`` are in the window
    (None when there already are)."""
    recent = list(await session.scalars(
        select(SigninFailure.at).where(column == value, SigninFailure.at > now - SIGNIN_WINDOW)
        .order_by(SigninFailure.at.desc()).limit(limit)
    ))
    if len(recent) < limit:
        return None
    return recent[-1] + SIGNIN_WINDOW - now


async def check_signin_allowed(session: AsyncSession, email: str, address: str, now: datetime | None = None) -> None:
    """Raise ``TooManyAttempts`` when this account or this address failed too often lately."""
    now = now or utcnow()
    waits = [w for w in (
        await _wait_for(session, SigninFailure.account, _account_key(email), MAX_FAILURES_PER_ACCOUNT, now),
        await _wait_for(session, SigninFailure.address, address[:64], MAX_FAILURES_PER_ADDRESS, now),
    ) if w is not None]
    if waits:
        raise TooManyAttempts(max(waits))


async def sign_in(session: AsyncSession, email: str, password: str, address: str,
                  now: datetime | None = None) -> User | None:
    """``authenticate`` behind the rate limits: raises ``TooManyAttempts`` (checking nothing),
    else the user, or None after recording the failure. Success clears the account's failures."""
    now = now or utcnow()
    await check_signin_allowed(session, email, address, now)
    user = await authenticate(session, email, password)
    account = _account_key(email)
    if user is None:
        await session.execute(delete(SigninFailure).where(SigninFailure.at <= now - SIGNIN_WINDOW))
        session.add(SigninFailure(account=account, address=address[:64], at=now))
        await session.flush()
        return None
    await session.execute(delete(SigninFailure).where(SigninFailure.account == account))
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
    if await repo.team_by_name(session, name):
        raise AlreadyExists(f"a team named {name} already exists")
    team_id, enterprise_id = _check_workspace(workspace)
    team = Team(name=name, slack_channel_id=_check_channel(channel) if channel else None,
                slack_team_id=team_id, enterprise_id=enterprise_id)
    session.add(team)
    await session.flush()
    return team


async def require_team(session: AsyncSession, name: str) -> Team:
    team = await repo.team_by_name(session, name)
    if team is None:
        raise NotFound(f"no team named {name.strip()}")
    return team


async def set_team_channel(session: AsyncSession, name: str, channel: str, workspace: str | None = None) -> Team:
    """The channel for the team's alerts; in multi-workspace mode also the workspace it is in."""
    team = await require_team(session, name)
    team.slack_channel_id = _check_channel(channel)
    if workspace:
        team.slack_team_id, team.enterprise_id = _check_workspace(workspace)
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


# --- invitations: a one-time link to set a password -------------------------------------------
INVITE_SALT = "genie.invite.v1"
INVITE_TTL = timedelta(days=7)
MAX_INVITE_TTL = timedelta(days=30)


class InviteProblem(GenieError):
    """The invitation link cannot be used; ``str()`` says why and what to do."""


def _password_fingerprint(password_hash: str | None) -> str:
    return hashlib.sha256(f"genie-invite:{password_hash or ''}".encode()).hexdigest()[:32]


class Invites:
    """Signed invitation links: ``[user id, fingerprint of the password hash]``.

    No table is needed to make them one-time: setting the password changes the hash, so the
    fingerprint in every earlier link stops matching (and a later reset link makes an unused
    invite worthless too). The password is then written by one conditional UPDATE on the old
    hash, so two submits of one link cannot both succeed. ``keys[0]`` signs, every key verifies.
    """

    def __init__(self, keys, clock=None) -> None:
        if not keys:
            raise ValueError("at least one secret key is required")
        signer = TimestampSigner
        if clock is not None:
            class _Signer(TimestampSigner):
                def get_timestamp(self) -> int:
                    return int(clock())
            signer = _Signer
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=INVITE_SALT, signer=signer)

    def load(self, token: str, max_age: timedelta = MAX_INVITE_TTL) -> tuple[int, str]:
        if not token or len(token) > 512:
            raise InviteProblem("This invitation link isn't valid. Ask a Genie admin for a new one.")
        try:
            payload, signed_at = self._serializer.loads(token, max_age=max_age.total_seconds(), return_timestamp=True)
        except SignatureExpired:
            raise InviteProblem("This invitation link has expired. Ask a Genie admin for a new one.") from None
        except BadSignature:
            raise InviteProblem("This invitation link isn't valid. Ask a Genie admin for a new one.") from None
        if (not isinstance(payload, list) or len(payload) != 3 or not isinstance(payload[0], int)
                or not isinstance(payload[1], str) or not isinstance(payload[2], int)):
            raise InviteProblem("This invitation link isn't valid. Ask a Genie admin for a new one.")
        user_id, fingerprint, days = payload
        if utcnow() - signed_at > timedelta(days=days):
            raise InviteProblem("This invitation link has expired. Ask a Genie admin for a new one.")
        return user_id, fingerprint

    def make(self, user: User, ttl: timedelta = INVITE_TTL) -> str:
        days = max(1, min(int(ttl / timedelta(days=1)), MAX_INVITE_TTL.days))
        return self._serializer.dumps([user.id, _password_fingerprint(user.password_hash), days])


async def invite(session: AsyncSession, invites: Invites, email: str, ttl: timedelta = INVITE_TTL) -> tuple[User, str]:
    """``genie user invite``: a link for the person to set (or reset) their password."""
    user = await require_user(session, email)
    if not user.is_active:
        raise InvalidInput(f"{user.email} is deactivated; activate them first (genie user activate)")
    return user, invites.make(user, ttl)


async def invited_user(session: AsyncSession, invites: Invites, token: str) -> User:
    """The person a genuine, unexpired, unused invitation is for; ``InviteProblem`` otherwise."""
    user_id, fingerprint = invites.load(token)
    user = await session.get(User, user_id)
    if user is None or not user.is_active:
        raise InviteProblem("This invitation is no longer valid: the account was removed or deactivated.")
    if not hmac.compare_digest(fingerprint.encode(), _password_fingerprint(user.password_hash).encode()):
        raise InviteProblem("This invitation link has already been used (or a newer one was sent). "
                            "Sign in with your password, or ask a Genie admin for a new link.")
    return user


async def accept_invite(session: AsyncSession, invites: Invites, token: str, password: str, again: str) -> User:
    """Set the password, exactly once per link."""
    user = await invited_user(session, invites, token)
    if password != again:
        raise InvalidInput("The two passwords are not the same.")
    if len(password) > 1024:
        raise InvalidInput("That password is too long.")
    new_hash = await asyncio.to_thread(hash_password, password)
    old = user.password_hash
    result = await session.execute(
        update(User)
        .where(User.id == user.id, User.is_active.is_(True),
               User.password_hash == old if old is not None else User.password_hash.is_(None))
        .values(password_hash=new_hash)
        .execution_options(synchronize_session=False))
    if result.rowcount != 1:
        raise InviteProblem("This invitation link has already been used. Sign in with your password.")
    set_committed_value(user, "password_hash", new_hash)
    return user
