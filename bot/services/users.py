"""People (users), web sign-in, sessions and invitations; this module owns the ``user``,
``web_session`` and ``signin_failure`` tables' queries.

Passwords are hashed with argon2id (argon2-cffi). Sign-in takes the same time whether or not
the email exists (a dummy hash is verified), and the caller says only "email or password is
incorrect" — no hint which field was wrong.

Sign-in is throttled per (account, client address) and per client address, never per account
alone: after ``MAX_FAILURES_PER_ACCOUNT`` failures of one account from one address, or
``MAX_FAILURES_PER_ADDRESS`` failures from one address, within ``SIGNIN_WINDOW``, further attempts
from *that address* are refused with ``TooManyAttempts`` *before* any password is checked (so a
guesser learns nothing and burns no argon2 time). The owner, from an address that has not been
failing, still signs in: a guesser can slow an account down but not lock its owner out. Failures
live in the database, so the limits hold across restarts and every Genie process.

argon2 runs outside any transaction: the hash is read (and the attempt recorded as a failure
until proven otherwise) in one short transaction, verified with no connection held, and the
outcome written in a second one — on SQLite, whose one connection and write lock every request
shares, a sign-in never holds them for argon2's ~0.1 s::

    signed_in = await sign_in(sessionmaker, email, password, address, old_token)  # None: wrong
    if signed_in:
        user, token = signed_in            # raises TooManyAttempts when throttled

Changing a password (``set_password``, an invitation) and deactivating a person end every session
they have, so reactivating them revives none.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import re
import secrets
from datetime import datetime, timedelta

from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError
from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from bot.services.errors import AlreadyExists, GenieError, InvalidInput, NotFound
from storage import repositories as repo
from storage.base import utcnow
from storage.models import SigninFailure, User, WebSession

SESSION_LIFETIME = timedelta(hours=12)
MIN_PASSWORD_LENGTH = 8
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_hasher = PasswordHasher()
_DUMMY_HASH = _hasher.hash(secrets.token_urlsafe(16))


def use_password_hashing(profile: str) -> None:
    """``standard``: argon2id with argon2-cffi's defaults (~0.1 s a check). ``test``: argon2id at
    its cheapest (``argon2.profiles.CHEAPEST``), for test suites only (``Settings`` allows it
    with a loopback base URL alone). A stored hash carries its own parameters, so either
    verifies every hash; the dummy hash that unknown emails are checked against is remade so
    that they still cost what a real check costs."""
    global _hasher, _DUMMY_HASH
    hasher = PasswordHasher.from_parameters(profiles.CHEAPEST) if profile == "test" else PasswordHasher()
    if (hasher.time_cost, hasher.memory_cost, hasher.parallelism) != (
        _hasher.time_cost,
        _hasher.memory_cost,
        _hasher.parallelism,
    ):
        _hasher, _DUMMY_HASH = hasher, hasher.hash(secrets.token_urlsafe(16))


def normalize_email(email: str) -> str:
    """An address as Genie stores and compares it (trimmed, lower case); ``InvalidInput`` when it
    cannot be one. What people type (CLI, web, import files) goes through this."""
    email = email.strip().lower()
    if not _EMAIL.match(email) or len(email) > 254:
        raise InvalidInput(f"{email!r} is not an email address")
    return email


def reported_email(email: str | None) -> str | None:
    """The variant for what another tool reported about its users: ``normalize_email``'s value,
    or None for none or one that cannot be an address (it is not recorded, so never matches)."""
    try:
        return normalize_email(email) if email else None
    except InvalidInput:
        return None


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
async def user_by_email(session: AsyncSession, email: str) -> User | None:
    return await session.scalar(select(User).where(User.email == email.strip().lower()))


async def user_by_id(session: AsyncSession, user_id: int) -> User | None:
    return await session.get(User, user_id)


async def all_users(session: AsyncSession) -> list[User]:
    return list(await session.scalars(select(User).order_by(User.email)))


async def add_user(
    session: AsyncSession, email: str, name: str, password: str | None = None, is_admin: bool = False
) -> User:
    email = normalize_email(email)
    name = name.strip()
    if not name:
        raise InvalidInput("a name is required (--name)")
    if await user_by_email(session, email):
        raise AlreadyExists(f"a user with email {email} already exists")
    user = User(
        email=email,
        name=name,
        is_admin=is_admin,
        is_active=True,
        password_hash=hash_password(password) if password is not None else None,
    )
    session.add(user)
    try:
        await session.flush()
    except IntegrityError:
        raise AlreadyExists(f"a user with email {email} already exists") from None
    return user


async def require_user(session: AsyncSession, email: str) -> User:
    user = await user_by_email(session, email)
    if user is None:
        raise NotFound(f"no user with email {email.strip().lower()}")
    return user


async def set_password(session: AsyncSession, email: str, password: str) -> User:
    user = await require_user(session, email)
    user.password_hash = hash_password(password)
    await end_all_sessions(session, user.id)
    return user


async def set_active(session: AsyncSession, email: str, active: bool) -> User:
    user = await require_user(session, email)
    user.is_active = active
    if not active:  # ended, not suspended: reactivating a person revives none of their sessions
        await end_all_sessions(session, user.id)
    return user


async def authenticate(session: AsyncSession, email: str, password: str) -> User | None:
    """The user if the email and password match an active account, else None (no rate limit:
    for the CLI and tests; the web goes through ``sign_in``)."""
    # NUL can't be in a stored email (PostgreSQL refuses it in a query): no such user.
    user = await user_by_email(session, email) if "\x00" not in email else None
    ok = await asyncio.to_thread(_verify, user.password_hash if user else None, password)
    if not ok or user is None or not user.is_active:
        return None
    return user


async def users_by_id(session: AsyncSession, ids: set[int]) -> dict[int, User]:
    return await repo.by_key(session, User.id, ids)


async def users_by_email(session: AsyncSession, emails: set[str]) -> dict[str, User]:
    return await repo.by_key(session, User.email, emails)


# --- sign-in throttling ----------------------------------------------------------------------
SIGNIN_WINDOW = timedelta(minutes=15)
#: Failures of one account from one address; that address is then refused for that account.
MAX_FAILURES_PER_ACCOUNT = 5
#: Failures from one address, whatever the accounts; that address is then refused.
MAX_FAILURES_PER_ADDRESS = 20


class TooManyAttempts(GenieError):
    """Sign-in refused without checking the password; ``retry_after`` says for how long."""

    def __init__(self, retry_after: timedelta) -> None:
        self.retry_after = retry_after
        minutes = max(1, math.ceil(retry_after.total_seconds() / 60))
        super().__init__(f"Too many sign-in attempts; try again in {minutes} minute{'s' if minutes != 1 else ''}.")


def _account_key(email: str) -> str:
    return hashlib.sha256(email.strip().lower().encode("utf-8", "surrogatepass")).hexdigest()


async def _wait_for(session: AsyncSession, where, limit: int, now: datetime) -> timedelta | None:
    """How long until fewer than ``limit`` failures matching ``where`` are in the window (None
    when there already are)."""
    recent = list(
        await session.scalars(
            select(SigninFailure.at)
            .where(*where, SigninFailure.at > now - SIGNIN_WINDOW)
            .order_by(SigninFailure.at.desc())
            .limit(limit)
        )
    )
    if len(recent) < limit:
        return None
    return recent[-1] + SIGNIN_WINDOW - now


async def check_signin_allowed(session: AsyncSession, email: str, address: str, now: datetime | None = None) -> None:
    """Raise ``TooManyAttempts`` when this address failed too often lately, for this account or
    overall. Failures from other addresses never count against this one: the owner is not locked
    out by someone else's guesses."""
    now = now or utcnow()
    address = address[:64]
    waits = [
        w
        for w in (
            await _wait_for(
                session,
                (SigninFailure.account == _account_key(email), SigninFailure.address == address),
                MAX_FAILURES_PER_ACCOUNT,
                now,
            ),
            # Settled failures only: sign-ins still being checked are not failures yet, and many
            # people behind one address (an office, a VPN) may sign in at the same moment.
            await _wait_for(
                session,
                (SigninFailure.address == address, SigninFailure.pending.is_(False)),
                MAX_FAILURES_PER_ADDRESS,
                now,
            ),
        )
        if w is not None
    ]
    if waits:
        raise TooManyAttempts(max(waits))


async def sign_in(
    sessionmaker, email: str, password: str, address: str, old_token: str | None = None, now: datetime | None = None
) -> tuple[User, str] | None:
    """Check the password behind the throttle and start a web session: ``(user, session token)``,
    None when the email or password is wrong (recorded as a failure), ``TooManyAttempts``
    (checking nothing) when throttled. ``old_token`` (the browser's earlier session) is ended.

    Three steps so that argon2 holds no connection or lock: (1) a short transaction checks the
    throttle, reads the hash and records the attempt as a failure until proven otherwise (so
    attempts racing this one for the same account and address count it; the address as a whole
    counts it only once it has failed); (2) argon2, with nothing held; (3) a short transaction
    that, on success, removes that failure and this address's earlier ones for the account and
    starts the session — if the password or the person changed meanwhile, the attempt fails."""
    now = now or utcnow()
    account, address = _account_key(email), address[:64]
    async with sessionmaker.begin() as session:
        await check_signin_allowed(session, email, address, now)
        # NUL can't be in a stored email (PostgreSQL refuses it in a query): no such user.
        user = await user_by_email(session, email) if "\x00" not in email else None
        user_id, stored = (user.id, user.password_hash) if user is not None and user.is_active else (None, None)
        attempt = SigninFailure(account=account, address=address, at=now, pending=True)
        session.add(attempt)
        await session.flush()
        attempt_id = attempt.id
    # argon2 is deliberately slow (~0.1 s): off the event loop and outside any transaction.
    ok = await asyncio.to_thread(_verify, stored, password) and user_id is not None
    rehashed = None
    if ok and _hasher.check_needs_rehash(stored or ""):
        rehashed = await asyncio.to_thread(_hasher.hash, password)
    async with sessionmaker.begin() as session:
        user = await session.get(User, user_id) if ok else None
        if user is None or not user.is_active or user.password_hash != stored:
            await session.execute(update(SigninFailure).where(SigninFailure.id == attempt_id).values(pending=False))
            await session.execute(delete(SigninFailure).where(SigninFailure.at <= now - SIGNIN_WINDOW))
            return None
        await session.execute(
            delete(SigninFailure).where(
                (SigninFailure.id == attempt_id)
                | ((SigninFailure.account == account) & (SigninFailure.address == address))
            )
        )
        if rehashed is not None:
            user.password_hash = rehashed
        await end_session(session, old_token)
        token = await start_session(session, user)
    return user, token


# --- web sessions ----------------------------------------------------------------------------
def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


async def start_session(session: AsyncSession, user: User, now: datetime | None = None) -> str:
    """A new random session token (never reuses one the browser brought: no fixation)."""
    now = now or utcnow()
    token = secrets.token_urlsafe(32)
    session.add(
        WebSession(token_hash=_token_hash(token), user_id=user.id, created_at=now, expires_at=now + SESSION_LIFETIME)
    )
    await session.execute(delete(WebSession).where(WebSession.expires_at <= now))
    return token


async def session_user(session: AsyncSession, token: str | None, now: datetime | None = None) -> User | None:
    if not token or len(token) > 100:
        return None
    token_hash, now = _token_hash(token), now or utcnow()
    return await session.scalar(
        select(User)
        .join(WebSession, WebSession.user_id == User.id)
        .where(WebSession.token_hash == token_hash, WebSession.expires_at > now, User.is_active.is_(True))
    )


async def end_session(session: AsyncSession, token: str | None) -> None:
    if token and len(token) <= 100:
        await session.execute(delete(WebSession).where(WebSession.token_hash == _token_hash(token)))


async def end_all_sessions(session: AsyncSession, user_id: int) -> None:
    """Sign the person out everywhere (a password change, a deactivation)."""
    await session.execute(delete(WebSession).where(WebSession.user_id == user_id))


# --- invitations: a one-time link to set a password -------------------------------------------
INVITE_SALT = "genie.invite.v1"
#: An unused invitation stays in DM history and mail: it is valid 3 days unless the admin asks
#: for longer (``--days``, at most 30).
INVITE_TTL = timedelta(days=3)
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
        if (
            not isinstance(payload, list)
            or len(payload) != 3
            or not isinstance(payload[0], int)
            or not isinstance(payload[1], str)
            or not isinstance(payload[2], int)
        ):
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
        raise InviteProblem(
            "This invitation link has already been used (or a newer one was sent). "
            "Sign in with your password, or ask a Genie admin for a new link."
        )
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
        .where(
            User.id == user.id,
            User.is_active.is_(True),
            User.password_hash == old if old is not None else User.password_hash.is_(None),
        )
        .values(password_hash=new_hash)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        raise InviteProblem("This invitation link has already been used. Sign in with your password.")
    set_committed_value(user, "password_hash", new_hash)
    await end_all_sessions(session, user.id)  # whoever held a session before the change is out
    return user
