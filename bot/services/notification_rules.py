"""A person's notification rules (issue 15, item 3): how they are paged — Slack DM, e-mail,
a signed webhook — and after how many minutes from the escalation step. A person with no rule
is paged by Slack DM at once.

    rules_of(session, user)                     # in the order the engine follows (delay, then id)
    add_rule(session, user, channel, delay, url, allow_http=…, allow_private=…)  # -> (rule, secret|None)
    remove_rule(session, user, rule_id)
    verify_email(session, user, email)          # the address a signed link proved they read

E-mail goes only to the person's Genie address, and only while it is the one they verified:
an address nobody proved to read never receives an alert. A webhook URL must be ``https://``
(unless the deployment allows ``http``) and must not resolve to a loopback, private, link-local
or otherwise non-public address (unless ``GENIE_WEBHOOK_ALLOW_PRIVATE``) — checked here when the
rule is saved and again by the sender before every request (``bot.channels.webhook``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy import delete, select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.services.errors import InvalidInput, NotFound
from storage.models import NotificationRule, User

SLACK_DM, EMAIL, WEBHOOK = "slack_dm", "email", "webhook"
CHANNELS = {SLACK_DM: "Slack DM", EMAIL: "e-mail", WEBHOOK: "webhook"}
MAX_DELAY = 24 * 60
MAX_RULES = 10


@dataclass(frozen=True)
class Rule:
    """A rule as the engine reads it (the default rule has no id)."""

    id: int | None
    channel: str
    delay_minutes: int


DEFAULT = [Rule(None, SLACK_DM, 0)]


def describe(channel: str) -> str:
    return CHANNELS.get(channel, channel)


async def rules_of(session: AsyncSession, user_id: int) -> list[NotificationRule]:
    return list(
        await session.scalars(
            select(NotificationRule)
            .where(NotificationRule.user_id == user_id)
            .order_by(NotificationRule.delay_minutes, NotificationRule.id)
        )
    )


async def rules_by_person(session: AsyncSession, user_ids: set[int]) -> dict[int, list[Rule]]:
    """Each person's rules in the engine's order, the default for a person with none."""
    found: dict[int, list[Rule]] = {}
    if user_ids:
        for row in await session.scalars(
            select(NotificationRule)
            .where(NotificationRule.user_id.in_(user_ids))
            .order_by(NotificationRule.delay_minutes, NotificationRule.id)
        ):
            found.setdefault(row.user_id, []).append(Rule(row.id, row.channel, row.delay_minutes))
    return {uid: found.get(uid, DEFAULT) for uid in user_ids}


def _public(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return address.is_global and not address.is_multicast


async def webhook_problem(url: str, *, allow_http: bool, allow_private: bool) -> str | None:
    """Why Genie will not call ``url`` (None: it may): the scheme, the form, and every address
    the host resolves to *now*."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return "the webhook URL is not a valid URL"
    if parts.scheme not in ("https", "http") or not parts.hostname:
        return "the webhook URL must be an https:// URL"
    if parts.scheme == "http" and not allow_http:
        return "the webhook URL must be https:// (plain http is not allowed on this Genie)"
    if parts.username or parts.password:
        return "the webhook URL must not carry a user name or password"
    if len(url) > 2000:
        return "the webhook URL is longer than 2000 characters"
    if allow_private:
        return None
    host = parts.hostname
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, port or (443 if parts.scheme == "https" else 80), type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError):
            return f"the webhook host {host} does not resolve"
        addresses = [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]
    for address in addresses:
        if not _public(address):
            return (
                f"the webhook host {host} resolves to {address}, a loopback, private or link-local "
                "address, which Genie does not call"
            )
    return None


async def add_rule(
    session: AsyncSession,
    user: User,
    channel: str,
    delay_minutes: int,
    webhook_url: str | None = None,
    *,
    allow_http: bool = False,
    allow_private: bool = False,
) -> tuple[NotificationRule, str | None]:
    """Add a rule; ``(rule, secret)`` where ``secret`` is the webhook's signing secret, returned
    this once (None for other channels). ``InvalidInput`` names the problem; nothing is saved."""
    if channel not in CHANNELS:
        raise InvalidInput(f"unknown channel {channel!r}: choose Slack DM, e-mail or webhook")
    if not isinstance(delay_minutes, int) or not 0 <= delay_minutes <= MAX_DELAY:
        raise InvalidInput(f"the delay must be a whole number of minutes from 0 to {MAX_DELAY}")
    if len(await rules_of(session, user.id)) >= MAX_RULES:
        raise InvalidInput(f"you have {MAX_RULES} rules already: remove one first")
    secret = None
    if channel == WEBHOOK:
        webhook_url = (webhook_url or "").strip()
        if not webhook_url:
            raise InvalidInput("a webhook rule needs the URL to call")
        if problem := await webhook_problem(webhook_url, allow_http=allow_http, allow_private=allow_private):
            raise InvalidInput(problem)
        secret = "whsec_" + secrets.token_urlsafe(32)
    elif webhook_url and webhook_url.strip():
        raise InvalidInput(f"a {describe(channel)} rule takes no URL")
    rule = NotificationRule(
        user_id=user.id,
        channel=channel,
        delay_minutes=delay_minutes,
        webhook_url=webhook_url if channel == WEBHOOK else None,
        webhook_secret=secret,
    )
    session.add(rule)
    await session.flush()
    return rule, secret


async def remove_rule(session: AsyncSession, user: User, rule_id: int) -> None:
    result = await session.execute(
        delete(NotificationRule)
        .where(NotificationRule.id == rule_id, NotificationRule.user_id == user.id)
        .execution_options(synchronize_session=False)
    )
    if not result.rowcount:
        raise NotFound("no such notification rule of yours")


async def rule(session: AsyncSession, rule_id: int | None) -> NotificationRule | None:
    return await session.get(NotificationRule, rule_id) if rule_id is not None else None


def email_verified(user: User) -> bool:
    """True while the person's Genie address is the one they proved they read."""
    return bool(user.verified_email) and user.verified_email == user.email


async def verify_email(session: AsyncSession, user_id: int, email: str) -> bool:
    """Record that the person read ``email`` (a signed link sent there, opened signed in as
    them); False (nothing changed) when their address is no longer that one."""
    user = await session.get(User, user_id)
    if user is None or user.email != email:
        return False
    user.verified_email = email
    return True
