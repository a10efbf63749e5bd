"""OpsGenie users and teams, from the REST API v2 (``Authorization: GenieKey KEY``).

- ``GET /v2/account`` — the account's name: the **tenant** of every OpsGenie account Genie
  records (the API host is shared by every customer, so it cannot name an account). ``--tenant``
  overrides it, for a key that may not read the account.
- ``GET /v2/users?offset=&limit=`` — pages until the response has no ``paging.next``. Only the
  ``offset``/``limit`` of ``paging.next`` are used: the next page is asked of the same ``--url``,
  so the key never goes to a host named in a response.
- ``GET /v2/teams`` and ``GET /v2/teams/{id}`` (``--teams``) — each team and its
  ``members: [{user: {id, username}, role}]``.

What Genie makes of an OpsGenie user: the ``username`` is the email (and the handle alerts may
name); ``verified: false`` means OpsGenie has not confirmed that address (never auto-linked);
``blocked: true`` means the user cannot use OpsGenie (treated as deactivated: never linked, and a
link by email match is removed); the ``Stakeholder`` role, which cannot be on call, is a guest.
EU accounts use ``--url https://api.eu.opsgenie.com``.

``fetch_oncall`` (``--schedules``, ``--escalations``) reads ``GET /v2/schedules?expand=rotation``
(schedules with their rotations), ``GET /v2/schedules/{id}/overrides?scheduleIdentifierType=id``
and ``GET /v2/escalations``, as OpsGenie sends them; ``bot.services.oncall_import`` maps them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from urllib.parse import parse_qs, quote, urlsplit

from bot.importers import Directory, DirectoryMember, DirectoryTeam
from bot.importers.http import ApiClient, SourceError, check_base_url, check_key, expect_list, text
from bot.services.external_accounts import ReportedAccount

DEFAULT_URL = "https://api.opsgenie.com"
EU_URL = "https://api.eu.opsgenie.com"
DEFAULT_KEY_ENV = "OPSGENIE_API_KEY"
PAGE_SIZE = 100
MAX_PAGES = 10_000
GUEST_ROLES = frozenset({"stakeholder"})


def reported(user: dict, tenant: str) -> ReportedAccount | None:
    user_id = text(user.get("id"))
    if not user_id:
        return None
    username = text(user.get("username"), 254)
    role = user.get("role")
    role_name = text(role.get("name")) if isinstance(role, dict) else text(role)
    return ReportedAccount(
        provider="opsgenie",
        tenant=tenant,
        external_id=user_id,
        handle=username,
        email=username if username and "@" in username else None,
        email_verified=user.get("verified") is True,
        display_name=text(user.get("fullName")),
        is_bot=False,
        is_deleted=user.get("blocked") is True,
        is_guest=(role_name or "").lower() in GUEST_ROLES,
        is_external=False,
        attrs={"role": role_name} if role_name else {},
    )


def _next_offset(body: dict, offset: int) -> int | None:
    paging = body.get("paging")
    next_url = paging.get("next") if isinstance(paging, dict) else None
    if not isinstance(next_url, str) or not next_url.strip():
        return None
    values = parse_qs(urlsplit(next_url).query).get("offset") or []
    try:
        following = int(values[0])
    except (IndexError, ValueError):
        raise SourceError("OpsGenie sent a paging.next without an offset (GET /v2/users)") from None
    if following <= offset:
        raise SourceError(f"OpsGenie's paging.next does not move forward (offset {following} after {offset})")
    return following


async def fetch(
    key: str,
    *,
    base_url: str = DEFAULT_URL,
    key_hint: str = DEFAULT_KEY_ENV,
    tenant: str | None = None,
    teams: bool = False,
    transport=None,
) -> Directory:
    base_url = check_base_url(base_url, "OpsGenie")
    key = check_key(key, key_hint)
    headers = {"Authorization": f"GenieKey {key}", "Accept": "application/json"}
    async with ApiClient("OpsGenie", base_url, headers, key_hint=key_hint, secret=key, transport=transport) as api:
        tenant = (tenant or "").strip()
        if not tenant:
            try:
                account = await api.get_json("/v2/account")
            except SourceError as err:
                if err.status not in (403, 404):
                    raise
                raise SourceError(
                    f"{err} (reading the account name: give --tenant NAME to name it yourself)", err.status
                ) from None
            data = account.get("data")
            tenant = (text(data.get("name"), 100) if isinstance(data, dict) else None) or ""
            if not tenant:
                raise SourceError("OpsGenie sent no account name (GET /v2/account); give --tenant NAME")
        users: list[dict] = []
        offset: int | None = 0
        for _ in range(MAX_PAGES):
            body = await api.get_json(
                "/v2/users", {"offset": offset, "limit": PAGE_SIZE, "sort": "username", "order": "asc"}
            )
            users.extend(expect_list(body, "data", "OpsGenie", "GET /v2/users"))
            offset = _next_offset(body, offset or 0)
            if offset is None:
                break
        else:
            raise SourceError(f"OpsGenie kept sending a next page after {MAX_PAGES} pages")
        team_list: list[DirectoryTeam] | None = None
        if teams:
            team_list = []
            listed = expect_list(await api.get_json("/v2/teams"), "data", "OpsGenie", "GET /v2/teams")
            for item in listed:
                team_id = text(item.get("id"))
                if not team_id:
                    continue
                body = await api.get_json(f"/v2/teams/{quote(team_id, safe='')}", {"identifierType": "id"})
                data = body.get("data")
                if not isinstance(data, dict):
                    raise SourceError(f"OpsGenie sent an unexpected response (GET /v2/teams/{team_id}): no 'data'")
                members = []
                for member in data.get("members") or []:
                    user = member.get("user") if isinstance(member, dict) else None
                    if not isinstance(user, dict):
                        continue
                    members.append(
                        DirectoryMember(text(user.get("id")), text(user.get("username"), 254), text(member.get("role")))
                    )
                name = text(data.get("name"), 100) or text(item.get("name"), 100)
                if name:
                    team_list.append(DirectoryTeam(team_id, name, tuple(members)))
        directory = Directory(
            "opsgenie", "OpsGenie", tenant, teams=team_list, requests=api.requests, rate_limited=api.rate_limited
        )
    seen: set[str] = set()
    for user in users:
        account = reported(user, tenant)
        if account is not None and account.external_id not in seen:
            seen.add(account.external_id)
            directory.accounts.append(account)
    return directory


@dataclass
class OncallExport:
    """OpsGenie's schedules (each with its ``rotations`` and, added here, its ``overrides``) and
    escalation policies, as OpsGenie's API sent them."""

    schedules: list[dict] = field(default_factory=list)
    escalations: list[dict] = field(default_factory=list)
    requests: int = 0


async def fetch_oncall(
    key: str,
    *,
    base_url: str = DEFAULT_URL,
    key_hint: str = DEFAULT_KEY_ENV,
    schedules: bool = True,
    escalations: bool = True,
    transport=None,
) -> OncallExport:
    base_url = check_base_url(base_url, "OpsGenie")
    key = check_key(key, key_hint)
    headers = {"Authorization": f"GenieKey {key}", "Accept": "application/json"}
    out = OncallExport()
    async with ApiClient("OpsGenie", base_url, headers, key_hint=key_hint, secret=key, transport=transport) as api:
        if schedules:
            body = await api.get_json("/v2/schedules", {"expand": "rotation"})
            for schedule in expect_list(body, "data", "OpsGenie", "GET /v2/schedules"):
                schedule_id = text(schedule.get("id"))
                if not schedule_id:
                    continue
                path = f"/v2/schedules/{quote(schedule_id, safe='')}/overrides"
                found = await api.get_json(path, {"scheduleIdentifierType": "id"})
                schedule["overrides"] = expect_list(found, "data", "OpsGenie", f"GET {path}")
                out.schedules.append(schedule)
        if escalations:
            body = await api.get_json("/v2/escalations")
            out.escalations = expect_list(body, "data", "OpsGenie", "GET /v2/escalations")
        out.requests = api.requests
    return out
