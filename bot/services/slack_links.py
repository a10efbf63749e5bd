"""Slack links: linking a Slack identity to a Genie user — issue a one-time link, preview it,
redeem it, unlink. This module owns the ``slack_link`` and ``link_request`` tables' queries.

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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from itsdangerous import BadSignature, SignatureExpired, TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select, text, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import joinedload, selectinload

from bot.services import audit, users
from bot.services.audit import Who
from bot.services.errors import GenieError, NotFound
from storage import repositories as repo
from storage.base import utcnow
from storage.models import Alert, LinkRequest, SlackLink, User

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
    #: The Slack handle (``name`` in ``users.info``).
    handle: str | None = None
    #: ``email`` verifiably belongs to this Slack user (``slack_directory.confirmed_email``);
    #: None when not known.
    email_confirmed: bool | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "name", (self.name or "")[:200] or None)
        object.__setattr__(self, "handle", (self.handle or "")[:200] or None)
        object.__setattr__(self, "workspace_name", (self.workspace_name or "")[:200] or None)
        object.__setattr__(self, "email", self.email if self.email and len(self.email) <= 254 else None)
        if self.email is None:
            object.__setattr__(self, "email_confirmed", None)


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


@dataclass(frozen=True)
class PendingClick:
    """An alert button clicked by someone not connected yet, kept with the link request it
    answered with: confirming that link carries it out (``actions.carry_out``). Values as the
    click gave them — the gate judges them again when they are carried out."""

    action: str
    alert_id: int
    assignee_id: int | None = None
    channel: str | None = None
    message_ts: str | None = None


# --- issuing ---------------------------------------------------------------------------------
async def issue_link(
    session: AsyncSession,
    identity: SlackIdentity,
    profile: SlackProfile,
    ttl: int,
    now: datetime | None = None,
    pending: PendingClick | None = None,
) -> LinkRequest:
    """A new link request for this Slack identity; older unused ones stop working (and with
    them any click they remembered)."""
    now = now or utcnow()
    await supersede_open_requests(session, identity.workspace_id, identity.user_id, now)
    request = LinkRequest(
        nonce=secrets.token_urlsafe(32),
        workspace_id=identity.workspace_id,
        slack_user_id=identity.user_id,
        slack_team_id=identity.team_id,
        enterprise_id=identity.enterprise_id,
        workspace_name=profile.workspace_name,  # fitted to the columns (SlackProfile)
        slack_name=profile.name,
        slack_email=profile.email,
        slack_handle=profile.handle,
        slack_email_confirmed=profile.email_confirmed,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl),
    )
    if pending is not None:
        request.pending_action, request.pending_alert_id = pending.action, pending.alert_id
        request.pending_assignee_id = pending.assignee_id
        request.pending_channel, request.pending_message_ts = pending.channel, pending.message_ts
    session.add(request)
    await session.flush()
    return request


async def record_profile(session: AsyncSession, nonce: str, profile: SlackProfile) -> None:
    """Fill in what ``users.info`` said, once it answered (after Slack's 3-second ack)."""
    request = await session.get(LinkRequest, nonce)
    if request is not None:
        request.slack_name = profile.name or request.slack_name
        request.slack_handle = profile.handle or request.slack_handle
        if profile.email:
            request.slack_email, request.slack_email_confirmed = profile.email, profile.email_confirmed
        request.workspace_name = profile.workspace_name or request.workspace_name


# --- previewing (GET: reads only) ------------------------------------------------------------
#: ``genie workspace set require_email_match true``: a Slack identity links only when Slack
#: reports a confirmed email equal to the person's Genie email.
REQUIRE_EMAIL_MATCH = "require_email_match"


class EmailCheck(enum.StrEnum):
    """What Slack's email says about whose Slack account this is."""

    MATCH = "match"  # confirmed by Slack, a full member's, and the person's own
    MISMATCH = "mismatch"  # Slack reports another email
    UNCONFIRMED = "unconfirmed"  # the person's email, but Slack does not vouch for it
    UNKNOWN = "unknown"  # Slack gave no email (users.info failed, no users:read.email, empty)


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
    #: The alert of the click remembered with the request (``PendingClick``), if it still exists:
    #: the page says that confirming carries that click out as this Genie account.
    pending_alert: Alert | None = None
    #: The workspace requires a matching confirmed email to link (``REQUIRE_EMAIL_MATCH``).
    require_match: bool = False

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
    def slack_handle(self) -> str | None:
        return self.request.slack_handle or (self.live_profile.handle if self.live_profile else None)

    @property
    def email_check(self) -> EmailCheck:
        email = (self.slack_email or "").strip().lower()
        if not email:
            return EmailCheck.UNKNOWN
        if email != self.user.email:
            return EmailCheck.MISMATCH
        confirmed = (
            self.request.slack_email_confirmed
            if self.request.slack_email
            else self.live_profile.email_confirmed
            if self.live_profile
            else None
        )
        return EmailCheck.MATCH if confirmed else EmailCheck.UNCONFIRMED

    @property
    def email_mismatch(self) -> bool:
        return self.email_check is EmailCheck.MISMATCH

    @property
    def email_unknown(self) -> bool:
        return self.email_check is EmailCheck.UNKNOWN

    @property
    def refused_by_workspace(self) -> bool:
        """The workspace requires a matching confirmed email and Slack does not report one."""
        return self.require_match and self.email_check is not EmailCheck.MATCH

    @property
    def needs_ownership_confirmation(self) -> bool:
        """Slack does not vouch that this is the person's own Slack account: confirming takes a
        second, explicit step."""
        return self.email_check is not EmailCheck.MATCH


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


async def preview(
    session: AsyncSession, nonce: str, user: User, now: datetime | None = None, live_profile: SlackProfile | None = None
) -> LinkPreview:
    request = await usable_request(session, nonce, now)
    result = LinkPreview(
        request=request,
        user=user,
        live_profile=live_profile,
        require_match=await repo.workspace_setting(session, request.workspace_id, REQUIRE_EMAIL_MATCH) == "true",
    )
    if request.pending_action is not None and request.pending_alert_id is not None:
        result.pending_alert = await session.get(Alert, request.pending_alert_id)
    current = await link_for_identity(session, request.workspace_id, request.slack_user_id)
    if current is not None:
        if current.user_id == user.id:
            result.already_linked = True
        else:
            result.identity_taken_by = current.user
    mine = await link_for_user_in_workspace(session, user.id, request.workspace_id)
    if mine is not None and mine.slack_user_id != request.slack_user_id:
        result.user_linked_elsewhere = mine
    return result


# --- redeeming (POST) ------------------------------------------------------------------------
class NeedsReplaceConfirmation(GenieError):
    """The link would replace an existing one and the person has not chosen to replace it."""

    def __init__(self, preview: LinkPreview) -> None:
        self.preview = preview
        super().__init__("This would replace an existing link; confirm to replace it.")


class NeedsOwnershipConfirmation(GenieError):
    """Slack does not vouch (by a confirmed matching email) that this Slack account is the
    person's, and they have not taken the second, explicit step."""

    def __init__(self, preview: LinkPreview) -> None:
        self.preview = preview
        super().__init__("Slack does not confirm this is your Slack account; confirm it is yours.")


class EmailMatchRequired(GenieError):
    """The workspace links only Slack accounts whose confirmed email is the person's own."""

    def __init__(self, preview: LinkPreview) -> None:
        self.preview = preview
        super().__init__("This workspace links a Slack account only when its confirmed email is your Genie email.")


async def redeem(
    session: AsyncSession,
    nonce: str,
    user: User,
    replace: bool,
    now: datetime | None = None,
    *,
    live_profile: SlackProfile | None = None,
    ownership_confirmed: bool = False,
) -> SlackLink:
    """Consume the link request (exactly once) and link its Slack identity to ``user``.

    Refused, changing nothing (not even the token): ``EmailMatchRequired`` when the workspace
    requires a confirmed matching email and Slack reports none; ``NeedsReplaceConfirmation``
    when it would replace a link and ``replace`` is false; ``NeedsOwnershipConfirmation`` when
    Slack does not vouch by email that this is the person's Slack account and they did not
    confirm it is (``ownership_confirmed``). ``live_profile``: what ``users.info`` says now,
    for a request whose profile was never recorded. The link is ``email_verified`` when Slack
    vouched, and otherwise ``needs_review`` (the person is told through their other channels).
    """
    now = now or utcnow()
    planned = await preview(session, nonce, user, now, live_profile=live_profile)
    if planned.refused_by_workspace:
        raise EmailMatchRequired(planned)
    if planned.needs_replace and not replace:
        raise NeedsReplaceConfirmation(planned)
    if planned.needs_ownership_confirmation and not ownership_confirmed:
        raise NeedsOwnershipConfirmation(planned)
    if not await consume_request(session, nonce, user.id, now):
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
        slack_name=planned.slack_name,
        slack_email=planned.slack_email,
        created_at=now,
        email_verified=planned.email_check is EmailCheck.MATCH,
        needs_review=planned.email_check is not EmailCheck.MATCH,
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
            await audit.record(
                session,
                who,
                "account.remove",
                subject=user,
                provider="slack",
                tenant=old.workspace_id,
                external_id=old.slack_user_id,
                detail=f"replaced by {request.slack_user_id} (one-time link)",
            )
    moved_from = next(
        (old for old in replaced if old.slack_user_id == request.slack_user_id and old.user_id != user.id), None
    )
    if moved_from is not None:
        previous = await users.user_by_id(session, moved_from.user_id)
        await audit.record(
            session,
            who,
            "account.move",
            subject=user,
            provider="slack",
            tenant=link.workspace_id,
            external_id=link.slack_user_id,
            detail=f"moved from {previous.email if previous else 'a removed person'} (one-time link)",
        )
    elif not any(old.slack_user_id == request.slack_user_id for old in replaced):
        await audit.record(
            session,
            who,
            "account.connect",
            subject=user,
            provider="slack",
            tenant=link.workspace_id,
            external_id=link.slack_user_id,
            detail="one-time link",
        )
    return link


# --- reading and unlinking -------------------------------------------------------------------
async def current_link(session: AsyncSession, identity: SlackIdentity) -> SlackLink | None:
    """The link of this Slack identity (with its user loaded), or None."""
    return await link_for_identity(session, identity.workspace_id, identity.user_id)


async def _audit_unlink(session: AsyncSession, link: SlackLink, who: Who, detail: str) -> None:
    person = await users.user_by_id(session, link.user_id)
    await audit.record(
        session,
        who,
        "account.remove",
        subject=person,
        provider="slack",
        tenant=link.workspace_id,
        external_id=link.slack_user_id,
        detail=detail,
    )


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


def unverified_reason(link: SlackLink, person_email: str) -> str:
    """Why Slack did not vouch, by email, that a link's Slack account is the person's."""
    if not link.slack_email:
        return "Slack gave no email for it"
    if link.slack_email.strip().lower() != person_email:
        return f"its Slack email is {link.slack_email}"
    return "Slack does not confirm its email"


async def links_to_review(session: AsyncSession, user: User) -> list[SlackLink]:
    """The person's Slack links made without a matching confirmed email that they have not
    reviewed yet (``/account`` shows them in a banner)."""
    return list(
        await session.scalars(
            select(SlackLink)
            .where(SlackLink.user_id == user.id, SlackLink.needs_review.is_(True))
            .order_by(SlackLink.created_at)
        )
    )


async def keep_link(session: AsyncSession, user: User, link_id: int) -> SlackLink | None:
    """ "This is me": the person reviewed one of their own new links; another's is not found."""
    link = await session.get(SlackLink, link_id)
    if link is None or link.user_id != user.id:
        return None
    link.needs_review = False
    await session.flush()
    return link


async def unlink_by_admin(session: AsyncSession, who: str) -> list[SlackLink]:
    """``genie link remove EMAIL|SLACK_USER_ID``: every link of that user or Slack user id."""
    who = who.strip()
    if "@" in who:
        links = await all_links(session, email=who)
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


# --- queries of slack_link and link_request -----------------------------------------------------------------------------
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


async def links_of_user(
    session: AsyncSession, user_id: int, *, verified_only: bool = False, besides: int | None = None
) -> list[SlackLink]:
    """The person's Slack links, oldest first; ``verified_only``: those made by a confirmed
    matching email; ``besides``: not that one."""
    query = select(SlackLink).where(SlackLink.user_id == user_id)
    if verified_only:
        query = query.where(SlackLink.email_verified.is_(True))
    if besides is not None:
        query = query.where(SlackLink.id != besides)
    return list(await session.scalars(query.order_by(SlackLink.created_at)))


async def all_links(session: AsyncSession, email: str | None = None) -> list[SlackLink]:
    query = select(SlackLink).options(selectinload(SlackLink.user)).join(User, User.id == SlackLink.user_id)
    if email:
        query = query.where(User.email == email.strip().lower())
    return list(await session.scalars(query.order_by(User.email, SlackLink.workspace_id)))


# --- link requests ---------------------------------------------------------------------------
async def supersede_open_requests(session: AsyncSession, workspace_id: str, slack_user_id: str, now: datetime) -> int:
    """Mark this identity's unused requests superseded. Two ``/genie connect`` at the same moment
    must not both leave a usable link: on PostgreSQL a transaction-scoped advisory lock per
    identity orders them (SQLite already runs writers one at a time: BEGIN IMMEDIATE)."""
    if session.bind.dialect.name == "postgresql":
        await session.execute(
            text("SELECT pg_advisory_xact_lock(hashtext(:k))"), {"k": f"genie-link:{workspace_id}:{slack_user_id}"}
        )
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
