"""The DMs queued in the transaction of a change to a person's Slack links or password: "You're
connected", the notice to their other Slack accounts, the invitation. The outbox worker
(``bot.slack.delivery``) delivers them."""

from __future__ import annotations

from bot.blocks.linking import connected_dm, new_link_notice, password_set_notice
from bot.runtime import Runtime
from bot.services import outbox
from bot.slack.render import link_view
from storage import repositories as repo
from storage.models import SlackLink


async def queue_connected_dm(rt: Runtime, session, link: SlackLink) -> None:
    """In the confirm's own transaction: the DM "You're connected as …" goes to the outbox, so
    the worker delivers it through Slack's failures (retried with backoff, or failed where an
    operator sees it: metric, log, ``genie outbox list``) — the link never exists unannounced."""
    if rt.settings.slack_mode == "none":
        return
    text, blocks = connected_dm(link_view(link), link.workspace_name)
    await outbox.enqueue(session, link.slack_user_id, outbox.MESSAGE, payload={"text": text, "blocks": blocks},
                         slack_team_id=link.slack_team_id, enterprise_id=link.enterprise_id)


async def queue_owner_dm(session, link: SlackLink, email: str, text: str, blocks: list[dict]) -> None:
    """A DM that only the person's own Slack account may receive: the outbox asks Slack again
    at delivery (``users.info``) and sends it only if that account's confirmed email is
    ``email`` (``slack_directory.owner_problem``); otherwise the message fails, saying why."""
    await outbox.enqueue(session, link.slack_user_id, outbox.MESSAGE,
                         payload={"text": text, "blocks": blocks, "owner_email": email,
                                  "workspace_id": link.workspace_id},
                         slack_team_id=link.slack_team_id, enterprise_id=link.enterprise_id)


async def verified_links(session, user_id: int, *, besides: int | None = None) -> list[SlackLink]:
    """The person's Slack links that verifiably are theirs (made by a confirmed matching email)."""
    return [link for link in await repo.links_of_user(session, user_id)
            if link.email_verified and link.id != besides]


async def queue_new_link_notices(rt: Runtime, session, link: SlackLink, why: str) -> int:
    """In the confirm's transaction: a link Slack did not vouch for by email is announced to the
    person's other, verified Slack accounts (the "You're connected" DM goes to the new account,
    which may be someone else's). ``/account`` shows it too, with Undo. Returns how many."""
    if rt.settings.slack_mode == "none":
        return 0
    others = await verified_links(session, link.user_id, besides=link.id)
    text, blocks = new_link_notice(link.user.email, link.slack_user_id, link.slack_name,
                                   link.workspace_name or link.slack_team_id, why, f"{rt.settings.base_url}/account")
    for other in others:
        await queue_owner_dm(session, other, link.user.email, text, blocks)
    return len(others)


async def queue_password_set_notices(rt: Runtime, session, user) -> int:
    """In the invitation's transaction: the person hears in every Slack account that verifiably
    is theirs that their password was set and their other sessions ended."""
    if rt.settings.slack_mode == "none":
        return 0
    links = await verified_links(session, user.id)
    text, blocks = password_set_notice(user.email, f"{rt.settings.base_url}/account")
    for link in links:
        await queue_owner_dm(session, link, user.email, text, blocks)
    return len(links)
