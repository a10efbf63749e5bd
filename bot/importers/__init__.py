"""Importers: read another tool's user directory over its documented REST API.

Each provider module has ``fetch(...) -> Directory``; it only reads (every page, before anything
is written) and returns plain values. ``bot.services.imports.apply_directory`` then records the
accounts, links them by email where ``bot.services.external_accounts.auto_link`` allows it, and reports
— all in one transaction, so a run that fails half-way changes nothing.

- ``pagerduty`` — ``GET /users`` (REST API v2; offset/limit/``more``).
- ``opsgenie`` — ``GET /v2/account``, ``GET /v2/users`` (offset/limit, ``paging.next``),
  ``GET /v2/teams`` and ``GET /v2/teams/{id}`` (members); ``fetch_oncall``: ``GET /v2/schedules``,
  each schedule's overrides, ``GET /v2/escalations`` (``bot.services.oncall_import`` maps them).
- ``http`` — the shared client: timeouts, 429 waits, retries, clear errors, keys kept secret.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bot.services.external_accounts import ReportedAccount


@dataclass(frozen=True)
class DirectoryMember:
    """A team member as the provider names it (its user id and/or username)."""

    user_id: str | None
    username: str | None
    role: str | None = None


@dataclass(frozen=True)
class DirectoryTeam:
    external_id: str
    name: str
    members: tuple[DirectoryMember, ...] = ()


@dataclass
class Directory:
    """Everything one run read from a provider."""

    provider: str
    label: str  # "PagerDuty", "OpsGenie": how people name the tool
    tenant: str
    accounts: list[ReportedAccount] = field(default_factory=list)
    teams: list[DirectoryTeam] | None = None  # None: teams were not read
    requests: int = 0
    rate_limited: int = 0
