"""Sign in with Slack (OpenID Connect): who a verified Slack ID token signs in, by the rules of
SECURITY.md ("Where a Slack link is trusted as proof of identity").

A Slack identity signs in as a Genie person only when Slack vouches for it *now*: the ID token
(verified by ``bot.web.slack_signin``: signature from Slack's keys, issuer, audience, nonce,
expiry) names a confirmed email (``email_verified``) equal to the person's Genie email, and

- the identity is linked to that person already — the link alone is not enough: a link made by
  a phished one-time link (``needs_review``) must not become a web sign-in; or
- it is linked to no one, that email names exactly one active person, and that person has no
  other Slack account linked in the workspace: then it is linked now, ``email_verified``, as a
  one-time link confirmed with a matching email would be (one step), and audited.

Anything else is refused with the reason and changes nothing. An admin can require Slack
sign-in (``genie workspace set --all-workspaces require_slack_signin true``): passwords then
sign in only admins (so that no one is locked out of fixing it).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services import audit, users
from bot.services.errors import GenieError
from storage import repositories as repo
from storage.models import SlackLink, User

REQUIRE_SETTING = "require_slack_signin"


class SlackSignInRefused(GenieError):
    """``str(err)``: why, for the person."""


@dataclass(frozen=True)
class SlackClaims:
    """What a verified Slack ID token says."""

    team_id: str
    user_id: str
    email: str | None
    email_verified: bool
    name: str | None = None
    team_name: str | None = None
    enterprise_id: str | None = None

    @property
    def workspace_id(self) -> str:
        """The identity's workspace as links store it: the Grid org if any, else the team."""
        return self.enterprise_id or self.team_id


async def slack_signin_required(session: AsyncSession) -> bool:
    return await repo.workspace_setting(session, "*", REQUIRE_SETTING) == "true"


async def sign_in(session: AsyncSession, claims: SlackClaims) -> tuple[User, str, bool]:
    """``(person, session token, linked now)`` or ``SlackSignInRefused``."""
    try:
        email = users.normalize_email(claims.email) if claims.email else None
    except GenieError:  # not an address at all
        email = None
    if not email or not claims.email_verified:
        raise SlackSignInRefused(
            "Slack did not give a confirmed email for your account, so Genie can't tell which "
            "Genie account is yours. Sign in with your password instead."
        )
    link = await session.scalar(
        select(SlackLink).where(
            SlackLink.workspace_id == claims.workspace_id, SlackLink.slack_user_id == claims.user_id
        )
    )
    linked_now = False
    if link is not None:
        user = await session.get(User, link.user_id)
        if user is None or not user.is_active:
            raise SlackSignInRefused("Your Slack account is connected to a Genie account that is deactivated.")
        if user.email != email:
            raise SlackSignInRefused(
                f"Your Slack account is connected to the Genie account {user.email}, but Slack says your confirmed "
                f"email is {email}. Sign in with your password; if the connection is wrong, disconnect it on your "
                "account page."
            )
    else:
        people = list(
            await session.scalars(
                select(User).where(func.lower(User.email) == email, User.is_active.is_(True)).limit(2)
            )
        )
        if len(people) != 1:
            raise SlackSignInRefused(
                f"No Genie account has the email {email} that Slack confirmed for you. Ask a "
                "Genie admin for an account, or sign in with your password."
            )
        user = people[0]
        other = await session.scalar(
            select(SlackLink).where(SlackLink.user_id == user.id, SlackLink.workspace_id == claims.workspace_id)
        )
        if other is not None:
            raise SlackSignInRefused(
                f"Your Genie account is connected to another Slack account in this workspace "
                f"({other.slack_name or other.slack_user_id}). Sign in with that one, or with your password."
            )
        session.add(
            SlackLink(
                user_id=user.id,
                workspace_id=claims.workspace_id,
                slack_user_id=claims.user_id,
                slack_team_id=claims.team_id,
                enterprise_id=claims.enterprise_id,
                workspace_name=claims.team_name,
                slack_name=claims.name,
                slack_email=email,
                via="signin",
                email_verified=True,
                needs_review=False,
            )
        )
        await session.flush()
        await audit.record(
            session,
            audit.Who.person(user, "web"),
            "account.connect",
            subject=user,
            provider="slack",
            tenant=claims.workspace_id,
            external_id=claims.user_id,
            detail="Sign in with Slack (Slack's confirmed email matched)",
        )
        linked_now = True
    token = await users.start_session(session, user)
    return user, token, linked_now
