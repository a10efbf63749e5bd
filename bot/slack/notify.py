"""The DMs queued in the transaction of a change to a person's Slack links or password: "You're
connected", the notice to their other Slack accounts, the password-set notice, the invitation.
Each is queued as a typed intent (``bot.ids.Intent``) that the outbox worker
(``bot.slack.delivery``) draws with its builder at delivery (``bot.blocks.messages``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from bot.config import Settings
from bot.ids import Intent
from bot.runtime import Runtime
from bot.services import outbox, slack_links, users
from bot.services.keys import secret_keys_in
from bot.slack.clients import SlackClients
from bot.slack.profiles import owner_problem
from storage.models import SlackLink, User


async def queue_connected_dm(rt: Runtime, session, link: SlackLink) -> None:
    """In the confirm's own transaction: the DM "You're connected as …" goes to the outbox, so
    the worker delivers it through Slack's failures (retried with backoff, or failed where an
    operator sees it: metric, log, ``genie outbox list``) — the link never exists unannounced."""
    if rt.settings.slack_mode == "none":
        return
    await outbox.enqueue(
        session,
        link.slack_user_id,
        outbox.MESSAGE,
        payload=outbox.intent(
            Intent.LINK_CONFIRMED,
            user_name=link.user.name,
            user_email=link.user.email,
            workspace_name=link.workspace_name,
        ),
        slack_team_id=link.slack_team_id,
        enterprise_id=link.enterprise_id,
    )


async def queue_owner_dm(session, link: SlackLink, email: str, message: dict[str, Any]) -> None:
    """A DM (``message``: an ``outbox.intent``) that only the person's own Slack account may
    receive: the outbox asks Slack again at delivery (``users.info``) and sends it only if that
    account's confirmed email is ``email`` (``slack_directory.owner_problem``); otherwise the
    message fails, saying why."""
    await outbox.enqueue(
        session,
        link.slack_user_id,
        outbox.MESSAGE,
        payload={**message, "owner_email": email, "workspace_id": link.workspace_id},
        slack_team_id=link.slack_team_id,
        enterprise_id=link.enterprise_id,
    )


async def verified_links(session, user_id: int, *, besides: int | None = None) -> list[SlackLink]:
    """The person's Slack links that verifiably are theirs (made by a confirmed matching email)."""
    return await slack_links.links_of_user(session, user_id, verified_only=True, besides=besides)


async def queue_new_link_notices(rt: Runtime, session, link: SlackLink, why: str) -> int:
    """In the confirm's transaction: a link Slack did not vouch for by email is announced to the
    person's other, verified Slack accounts (the "You're connected" DM goes to the new account,
    which may be someone else's). ``/account`` shows it too, with Undo. Returns how many."""
    if rt.settings.slack_mode == "none":
        return 0
    others = await verified_links(session, link.user_id, besides=link.id)
    notice = outbox.intent(
        Intent.LINK_UNVERIFIED,
        person_email=link.user.email,
        slack_user_id=link.slack_user_id,
        name=link.slack_name,
        workspace=link.workspace_name or link.slack_team_id,
        why=why,
        account_url=f"{rt.settings.base_url}/account",
    )
    for other in others:
        await queue_owner_dm(session, other, link.user.email, notice)
    return len(others)


async def queue_password_set_notices(rt: Runtime, session, user) -> int:
    """In the invitation's transaction: the person hears in every Slack account that verifiably
    is theirs that their password was set and their other sessions ended."""
    if rt.settings.slack_mode == "none":
        return 0
    links = await verified_links(session, user.id)
    notice = outbox.intent(Intent.PASSWORD_SET, person_email=user.email, account_url=f"{rt.settings.base_url}/account")
    for link in links:
        await queue_owner_dm(session, link, user.email, notice)
    return len(links)


@dataclass
class Invitation:
    user: User
    #: The password link (works once); always shown to the admin who invited.
    url: str
    #: Slack users the link was queued to.
    told: list[str] = field(default_factory=list)
    #: ``(Slack user, why not)`` for the person's Slack accounts it was not sent to.
    refused: list[tuple[str, str]] = field(default_factory=list)


async def invite(
    session: AsyncSession, settings: Settings, clients: SlackClients, email: str, days: int, *, slack: bool = True
) -> Invitation:
    """``genie user invite``: a password link for the person, also DMed (``slack``) to each of
    their Slack accounts whose confirmed email (``users.info`` now) is their Genie email — a
    Slack account linked by a phished one-time link must never receive a password link (issue
    13). The outbox asks Slack again when it delivers."""
    keys = await secret_keys_in(session, settings.secret_keys)
    user, token = await users.invite(session, users.Invites(keys), email, timedelta(days=days))
    done = Invitation(user, f"{settings.base_url}/invite/{token}")
    if not slack or settings.slack_mode == "none":
        return done
    for link in await slack_links.links_of_user(session, user.id):
        problem = await owner_problem(clients, link, user.email)
        if problem is not None:
            done.refused.append((link.slack_user_id, problem))
            continue
        await queue_owner_dm(
            session, link, user.email, outbox.intent(Intent.INVITE, email=user.email, url=done.url, days=days)
        )
        done.told.append(link.slack_user_id)
    return done
