"""The people an alert names, resolved once to Genie persons (README, "How alerts name people").

A monitoring tool names people in its own words: the API's ``user`` (who reported it), user
responders (``{"type": "user", "username": "…"}`` or ``{"type": "user", "id": "…"}``), the
assign action's ``owner``, or another tool's identity in ``details`` (``github_user``,
``pagerduty_user``, ``assignee`` …). Each name is resolved with ``external_accounts.resolve_named`` —
exactly one active person, or unresolved (never a guess) — when the alert is created, and the
result is stored on the alert (``Alert.people``) with the Slack user to mention in the alert's
workspace, so every later render of the message shows the same people without reading anything::

    found = await for_create(session, data, team)
    alert.people = found.stored            # rendered by bot.slack.render, pure
    if found.summary:                      # "responder alice-og → Alice Smith (alice@…)"
        await alerts.record(session, alert, "resolve", "applied", actor, reason=found.summary)
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from bot.ids import parse_id
from bot.services import access, external_accounts, users
from bot.services.external_accounts import KNOWN_PROVIDERS, Named
from storage.models import SlackLink, Team

#: ``details`` keys that name a person, and the provider their value is looked up in
#: (None: any provider — an id, handle or email of any connected account).
DETAIL_KEYS: dict[str, str | None] = {f"{p}_user": p for p in KNOWN_PROVIDERS} | {"assignee": None}
#: The timeline's reason column holds at most this much of the summary.
SUMMARY_LIMIT = 500
_SLACK_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")


def workspace_of(team: Team | None) -> str | None:
    """The Slack workspace (Grid org, else team) whose channel the alert is posted in; None in
    single-workspace mode, where the channel's workspace is not recorded."""
    return (team.enterprise_id or team.slack_team_id) if team is not None else None


async def slack_links(session: AsyncSession, user_ids: Iterable[int], team: Team | None) -> dict[int, SlackLink]:
    """Each person's Slack link in the workspace of the team's channel. With no workspace
    recorded (single-workspace mode) a person's only link; several links → none (no guess)."""
    ids = set(user_ids)
    if not ids:
        return {}
    workspace = workspace_of(team)
    query = select(SlackLink).where(SlackLink.user_id.in_(ids))
    if workspace is not None:
        query = query.where(SlackLink.workspace_id == workspace)
    found: dict[int, list[SlackLink]] = {}
    for link in await session.scalars(query.order_by(SlackLink.id)):
        found.setdefault(link.user_id, []).append(link)
    return {uid: links[0] for uid, links in found.items() if len(links) == 1}


async def _by_genie_id(session: AsyncSession, given: str, among: Any = None) -> Named:
    number = parse_id(given)
    person = await users.user_by_id(session, number) if number is not None else None
    if person is not None and among is not None and person.id not in set(await session.scalars(among)):
        person = None  # not someone this lookup may see: nobody
    if person is not None and person.is_active:
        return Named(given, "genie", person)
    return Named(given, "genie", None, "nobody" if person is None else "an inactive person")


async def name_owner(session: AsyncSession, owner: dict[str, Any], among: Any = None) -> Named | None:
    """An OpsGenie user reference (a user responder, the assign action's ``owner``) resolved:
    ``id`` — a Genie user id when it is a number, else an OpsGenie user id (or
    ``provider:id``); ``username`` (or ``name``) — an OpsGenie username, then an email (or
    ``provider:value``). None when it carries neither. ``among``: as ``external_accounts.resolve_named``."""
    user_id, username = owner.get("id"), owner.get("username") or owner.get("name")
    if isinstance(user_id, int) and not isinstance(user_id, bool):
        user_id = str(user_id)
    if isinstance(user_id, str) and user_id.strip():
        if re.fullmatch(r"[0-9]+", user_id.strip()):
            return await _by_genie_id(session, user_id.strip(), among)
        return await external_accounts.resolve_named(session, user_id, "opsgenie", among)
    if isinstance(username, str) and username.strip():
        return await external_accounts.resolve_named(session, username, "opsgenie", among)
    return None


def _describe(named: Named) -> str:
    if named.person is not None:
        return f"{named.given} → {named.person.name} ({named.person.email})"
    return f"{named.given}: unresolved ({named.why or 'nobody'})"


def _entry(named: Named, link: SlackLink | None) -> dict[str, Any]:
    given = named.given if len(named.given) <= 200 else named.given[:199] + "…"
    entry: dict[str, Any] = {"as": given, "lookup": named.provider or "any"}
    if named.person is None:
        return entry | {"user_id": None, "why": named.why or "nobody"}
    slack = link.slack_user_id if link is not None and _SLACK_USER.match(link.slack_user_id) else None
    return entry | {"user_id": named.person.id, "name": named.person.name, "slack": slack}


@dataclass(frozen=True)
class Found:
    #: What goes in ``Alert.people`` (None: the alert names nobody).
    stored: dict[str, Any] | None
    #: For the timeline: who was resolved to whom (None: nothing worth recording).
    summary: str | None


def names_nobody(data: Any) -> bool:
    """Whether a create request (``CreateAlert``) names no person: no reporter, no user
    responder, none of ``DETAIL_KEYS`` — ``for_create`` has nothing to look up for it."""
    return (
        not (data.user and data.user.strip())
        and not any(r.get("type") == "user" for r in data.responders)
        and not any(k in DETAIL_KEYS and v.strip() for k, v in data.details.items())
    )


async def for_create(session: AsyncSession, data: Any, team: Team | None) -> Found:
    """Resolve the names a create request carries (``CreateAlert``). The reporter is a display
    name in OpsGenie ("Alertmanager"): kept only when it names a person. Names are looked up
    among the owning team's members only (``access.team_people``): its key is the only one that
    reads the alert, and a key learns nothing about other teams' people."""
    if names_nobody(data):
        return Found(None, None)  # most alerts: nothing to look up (nor a query to build)
    cache: dict[tuple, Named] = {}
    among = access.team_people(team.id) if team is not None else None

    async def once(key: tuple, lookup) -> Named:
        if key not in cache:
            cache[key] = await lookup()
        return cache[key]

    reporter = None
    if data.user and data.user.strip():
        reporter = await once(
            ("opsgenie", data.user.strip()),
            lambda: external_accounts.resolve_named(session, data.user, "opsgenie", among),
        )
        if reporter.person is None:
            reporter = None
    responders: list[Named] = []
    for r in data.responders:
        if r.get("type") != "user":
            continue
        ref = {k: r[k] for k in ("id", "username", "name") if k in r}
        named = await once(("owner", tuple(sorted(ref.items()))), lambda ref=ref: name_owner(session, ref, among))
        if named is not None:
            responders.append(named)
    in_details: dict[str, Named] = {}
    for key, value in data.details.items():
        if key in DETAIL_KEYS and value.strip():
            provider = DETAIL_KEYS[key]
            in_details[key] = await once(
                (provider, value.strip()),
                lambda v=value, p=provider: external_accounts.resolve_named(session, v, p, among),
            )
    everyone = [n for n in [reporter, *responders, *in_details.values()] if n is not None]
    if not everyone:
        return Found(None, None)
    links = await slack_links(session, {n.person.id for n in everyone if n.person is not None}, team)

    def entry(named: Named) -> dict[str, Any]:
        return _entry(named, links.get(named.person.id) if named.person is not None else None)

    stored: dict[str, Any] = {}
    if reporter is not None:
        stored["reporter"] = entry(reporter)
    if responders:
        stored["responders"] = [entry(n) for n in responders]
    if in_details:
        stored["details"] = {k: entry(n) for k, n in in_details.items()}
    parts = (
        ([f"reporter {_describe(reporter)}"] if reporter is not None else [])
        + [f"responder {_describe(n)}" for n in responders]
        + [f"{k} {_describe(n)}" for k, n in in_details.items()]
    )
    summary = "; ".join(parts)
    if len(summary) > SUMMARY_LIMIT:
        summary = summary[: SUMMARY_LIMIT - 1] + "…"
    return Found(stored, summary)
