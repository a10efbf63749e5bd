"""Linking a Slack identity to a Genie user: issue a one-time link, preview it, redeem it, unlink.

The token in a link URL is a random nonce signed with itsdangerous (dedicated salt, key
rotation, ``max_age``). The signature proves origin and age; the ``link_request`` row makes it
one-time, because redemption is a single conditional UPDATE that exactly one request wins::

    async with sessionmaker.begin() as s:
        req = await issue_link(s, identity, profile, ttl=600)
    url = f"{base_url}/link/{tokens.dump(req.nonce)}"
    ...
    async with sessionmaker.begin() as s:
        link = await redeem(s, tokens.load(token), user, replace=True)
"""

from __future__ import annotations

import enum
import secrets
import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Callable, Sequence

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import selectinload

from bot.services import audit
from bot.services.audit import Who
from bot.services.errors import GenieError, NotFound
from storage import repositories as repo
from storage.base import utcnow
from storage.models import LinkRequest, SlackLink, User

LINK_TOKEN_SALT = "genie.slack-link.v1"
MAX_TOKEN_LENGTH = 512


@dataclass(frozen=True)
class SlackIdentity:
    """Who clicked or typed, as Slack says: ``(enterprise_id or team_id, user_id)``."""

    team_id: str
    user_id: str
    enterprise_id: str | None = None
    #: A Slack Connect user of another organization clicking in this workspace's channel:
    #: ``team_id`` is their own workspace, so they never match this workspace's links.
    external: bool = False

    @property
    def workspace_id(self) -> str:
        return self.enterprise_id or self.team_id


@dataclass(frozen=True)
class SlackProfile:
    """What Slack told us about the person (``users.info``); any field may be unknown.

    Shown, never trusted, and fitted to the columns it is kept in: names are clipped to 200
    characters and an email longer than 254 is unknown (PostgreSQL refuses longer values; a
    giant team domain in a payload must not turn a refusal into a 500)."""

    name: str | None = None
    email: str | None = None
    workspace_name: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", (self.name or "")[:200] or None)
        object.__setattr__(self, "workspace_name", (self.workspace_name or "")[:200] or None)
        object.__setattr__(self, "email", self.email if self.email and len(self.email) <= 254 else None)


class LinkProblem(enum.StrEnum):
    INVALID = "invalid"
    EXPIRED = "expired"
    USED = "used"
    SUPERSEDED = "superseded"


_PROBLEM_TEXT = {
    LinkProblem.INVALID: "This link isn't valid — it may have been copied incompletely or changed.",
    LinkProblem.EXPIRED: "This link has expired.",
    LinkProblem.USED: "This link has already been used.",
    LinkProblem.SUPERSEDED: "This link was replaced by a newer one.",
}


class LinkError(GenieError):
    """A link that cannot be used; ``problem`` says why, the text says what to do."""

    def __init__(self, problem: LinkProblem) -> None:
        self.problem = problem
        super().__init__(f"{_PROBLEM_TEXT[problem]} Run /genie connect in Slack to get a new link.")


class LinkTokens:
    """Signs and verifies link tokens. ``keys[0]`` signs; every key verifies (rotation)."""

    def __init__(self, keys: Sequence[str], ttl: int, clock: Callable[[], float] = time.time) -> None:
        if not keys:
            raise ValueError("at least one secret key is required")
        clock_ = clock

        class _Signer(TimestampSigner):
            def get_timestamp(self) -> int:  # itsdangerous' hook for "now"; lets tests mint old tokens
                return int(clock_())

        # itsdangerous signs with the *last* key of the list and tries all of them.
        self._serializer = URLSafeTimedSerializer(list(reversed(keys)), salt=LINK_TOKEN_SALT, signer=_Signer)
        self.ttl = ttl

    def dump(self, nonce: str) -> str:
        return self._serializer.dumps(nonce)

    def load(self, token: str) -> str:
        """The nonce inside a genuine, unexpired token; otherwise ``LinkError``."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise LinkError(LinkProblem.INVALID)
        try:
            nonce = self._serializer.loads(token, max_age=self.ttl)
        except SignatureExpired:
            raise LinkError(LinkProblem.EXPIRED) from None
        except BadSignature:
            raise LinkError(LinkProblem.INVALID) from None
        if not isinstance(nonce, str) or not 16 <= len(nonce) <= 64:
            raise LinkError(LinkProblem.INVALID)
        return nonce


# --- issuing ---------------------------------------------------------------------------------
async def issue_link(
    session: AsyncSession,
    identity: SlackIdentity,
    profile: SlackProfile,
    ttl: int,
    now: datetime | None = None,
) -> LinkRequest:
    """A new link request for this Slack identity; older unused ones stop working."""
    now = now or utcnow()
    await repo.supersede_open_requests(session, identity.workspace_id, identity.user_id, now)
    request = LinkRequest(
        nonce=secrets.token_urlsafe(32),
        workspace_id=identity.workspace_id,
        slack_user_id=identity.user_id,
        slack_team_id=identity.team_id,
        enterprise_id=identity.enterprise_id,
        workspace_name=profile.workspace_name,  # fitted to the columns (SlackProfile)
        slack_name=profile.name,
        slack_email=profile.email,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    session.add(request)
    await session.flush()
    return request


async def record_profile(session: AsyncSession, nonce: str, profile: SlackProfile) -> None:
    """Fill in what ``users.info`` said, once it answered (after Slack's 3-second ack)."""
    request = await session.get(LinkRequest, nonce)
    if request is not None:
        request.slack_name = profile.name or request.slack_name
        request.slack_email = profile.email or request.slack_email
        request.workspace_name = profile.workspace_name or request.workspace_name


# --- previewing (GET: reads only) ------------------------------------------------------------
@dataclass
class LinkPreview:
    """What confirming would do, for the confirm page."""

    request: LinkRequest
    user: User
    #: The Slack identity is linked to someone else now; confirming moves it.
    identity_taken_by: User | None = None
    #: This Genie user is linked to another Slack user in the same workspace; confirming replaces it.
    user_linked_elsewhere: SlackLink | None = None
    #: Already linked exactly like this: nothing to do.
    already_linked: bool = False
    #: What Slack says about the person now, when the request has not recorded it yet.
    live_profile: SlackProfile | None = None

    @property
    def needs_replace(self) -> bool:
        return self.identity_taken_by is not None or self.user_linked_elsewhere is not None

    @property
    def slack_name(self) -> str | None:
        return self.request.slack_name or (self.live_profile.name if self.live_profile else None)

    @property
    def slack_email(self) -> str | None:
        return self.request.slack_email or (self.live_profile.email if self.live_profile else None)

    @property
    def email_mismatch(self) -> bool:
        email = (self.slack_email or "").strip().lower()
        return bool(email) and email != self.user.email


async def usable_request(session: AsyncSession, nonce: str, now: datetime | None = None) -> LinkRequest:
    """The request behind a verified nonce, if it can still be redeemed; otherwise ``LinkError``."""
    now = now or utcnow()
    request = await session.get(LinkRequest, nonce)
    if request is None:
        raise LinkError(LinkProblem.INVALID)
    if request.consumed_at is not None:
        raise LinkError(LinkProblem.USED)
    if request.superseded_at is not None:
        raise LinkError(LinkProblem.SUPERSEDED)
    if request.expires_at <= now:
        raise LinkError(LinkProblem.EXPIRED)
    return request


async def preview(session: AsyncSession, nonce: str, user: User, now: datetime | None = None,
                  live_profile: SlackProfile | None = None) -> LinkPreview:
    request = await usable_request(session, nonce, now)
    result = LinkPreview(request=request, user=user, live_profile=live_profile)
    current = await repo.link_for_identity(session, request.workspace_id, request.slack_user_id)
    if current is not None:
        if current.user_id == user.id:
            result.already_linked = True
        else:
            result.identity_taken_by = current.user
    mine = await repo.link_for_user_in_workspace(session, user.id, request.workspace_id)
    if mine is not None and mine.slack_user_id != request.slack_user_id:
        result.user_linked_elsewhere = mine
    return result


# --- redeeming (POST) ------------------------------------------------------------------------
class NeedsReplaceConfirmation(GenieError):
    """The link would replace an existing one and the person has not chosen to replace it."""

    def __init__(self, preview: LinkPreview) -> None:
        self.preview = preview
        super().__init__("This would replace an existing link; confirm to replace it.")


async def redeem(
    session: AsyncSession, nonce: str, user: User, replace: bool, now: datetime | None = None
) -> SlackLink:
    """Consume the link request (exactly once) and link its Slack identity to ``user``.

    Conflicting links are replaced only when ``replace`` is true; otherwise
    ``NeedsReplaceConfirmation`` is raised and nothing changes, not even the token.
    """
    now = now or utcnow()
    planned = await preview(session, nonce, user, now)
    if planned.needs_replace and not replace:
        raise NeedsReplaceConfirmation(planned)
    if not await repo.consume_request(session, nonce, user.id, now):
        # Someone else won the race, or the token went stale since the preview: say which.
        await session.refresh(planned.request)
        await usable_request(session, nonce, now)
        raise LinkError(LinkProblem.USED)  # pragma: no cover - usable_request raised already
    request = planned.request
    existing = await session.scalars(
        select(SlackLink).where(
            ((SlackLink.workspace_id == request.workspace_id) & (SlackLink.slack_user_id == request.slack_user_id))
            | ((SlackLink.workspace_id == request.workspace_id) & (SlackLink.user_id == user.id))
        )
    )
    replaced = list(existing)
    for old in replaced:
        await session.delete(old)
    await session.flush()
    link = SlackLink(
        user_id=user.id,
        workspace_id=request.workspace_id,
        slack_user_id=request.slack_user_id,
        slack_team_id=request.slack_team_id,
        enterprise_id=request.enterprise_id,
        workspace_name=request.workspace_name,
        slack_name=request.slack_name,
        slack_email=request.slack_email,
        created_at=now,
    )
    session.add(link)
    try:
        await session.flush()
    except IntegrityError:
        # A concurrent confirm of another link for the same identity committed first.
        raise LinkError(LinkProblem.USED) from None
    link.user = user
    who = Who.person(user, "web")
    for old in replaced:
        if old.slack_user_id != request.slack_user_id:  # the person's earlier Slack user here
            await audit.record(session, who, "account.remove", subject=user, provider="slack",
                               tenant=old.workspace_id, external_id=old.slack_user_id,
                               detail=f"replaced by {request.slack_user_id} (one-time link)")
    moved_from = next((old for old in replaced if old.slack_user_id == request.slack_user_id
                       and old.user_id != user.id), None)
    if moved_from is not None:
        previous = await session.get(User, moved_from.user_id)
        await audit.record(session, who, "account.move", subject=user, provider="slack", tenant=link.workspace_id,
                           external_id=link.slack_user_id,
                           detail=f"moved from {previous.email if previous else 'a removed person'} (one-time link)")
    elif not any(old.slack_user_id == request.slack_user_id for old in replaced):
        await audit.record(session, who, "account.connect", subject=user, provider="slack", tenant=link.workspace_id,
                           external_id=link.slack_user_id, detail="one-time link")
    return link


# --- reading and unlinking -------------------------------------------------------------------
async def current_link(session: AsyncSession, identity: SlackIdentity) -> SlackLink | None:
    """The link of this Slack identity (with its user loaded), or None."""
    return await repo.link_for_identity(session, identity.workspace_id, identity.user_id)


async def _audit_unlink(session: AsyncSession, link: SlackLink, who: Who, detail: str) -> None:
    person = await session.get(User, link.user_id)
    await audit.record(session, who, "account.remove", subject=person, provider="slack", tenant=link.workspace_id,
                       external_id=link.slack_user_id, detail=detail)


async def unlink(session: AsyncSession, identity: SlackIdentity) -> SlackLink | None:
    """Remove this Slack identity's link; returns what was removed (None if there was none)."""
    link = await current_link(session, identity)
    if link is not None:
        await session.delete(link)
        await session.flush()
        who = Who(label=f"{link.user.email} (as Slack user {identity.user_id})", via="slack", user_id=link.user_id)
        await _audit_unlink(session, link, who, "disconnected in Slack")
    return link


async def unlink_for_user(session: AsyncSession, user: User, link_id: int) -> SlackLink | None:
    """Remove one of ``user``'s own links (web profile); another user's link is not found."""
    link = await session.get(SlackLink, link_id)
    if link is None or link.user_id != user.id:
        return None
    await session.delete(link)
    await session.flush()
    await _audit_unlink(session, link, Who.person(user, "web"), "disconnected on their account page")
    return link


async def unlink_by_admin(session: AsyncSession, who: str) -> list[SlackLink]:
    """``genie link remove EMAIL|SLACK_USER_ID``: every link of that user or Slack user id."""
    who = who.strip()
    if "@" in who:
        links = await repo.all_links(session, email=who)
    else:
        links = list(
            await session.scalars(
                select(SlackLink).options(selectinload(SlackLink.user)).where(SlackLink.slack_user_id == who)
            )
        )
    if not links:
        raise NotFound(f"no Slack link for {who}")
    for link in links:
        await session.delete(link)
    await session.flush()
    for link in links:
        await _audit_unlink(session, link, Who.cli("genie link remove"), f"genie link remove {who}")
    return links
