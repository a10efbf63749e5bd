"""PagerDuty users, from REST API v2 ``GET /users``.

Requests carry ``Authorization: Token token=KEY`` and
``Accept: application/vnd.pagerduty+json;version=2``; pages are read with ``offset``/``limit``
until the response says ``"more": false`` (PagerDuty's classic pagination, at most 100 a page,
and ``offset + limit`` at most 10,000: an account with more users cannot be listed whole, and a
partial list would mark the rest departed, so the import stops with that said and writes nothing).

What Genie makes of a PagerDuty user:

- **tenant**: the account's web host from the users' ``html_url``
  (``https://acme.pagerduty.com/users/PXPGF42`` → ``acme.pagerduty.com``), the same on every run
  and different for every PagerDuty account; ``--tenant`` overrides it, and without any
  ``html_url`` the API host is used.
- **guests** (never auto-linked): the roles PagerDuty's documentation gives limited or no
  responder access to the account — ``observer`` (Observer), ``restricted_access`` (Restricted
  Access), ``read_only_user`` (Full Stakeholder) and ``read_only_limited_user`` (Limited
  Stakeholder). ``limited_user`` is the **Responder** role, the people who go on call: they are
  members, and linking them is the point. ``owner``, ``admin`` and ``user`` (Manager) are members.
- **email confirmed**: not while ``invitation_sent`` is true (the person has not accepted the
  invitation to that address yet).
- Users that PagerDuty no longer lists have been deleted there (``apply_directory`` unlinks them).
"""

from __future__ import annotations

from urllib.parse import urlsplit

from bot.importers import Directory
from bot.importers.http import ApiClient, SourceError, check_base_url, check_key, expect_list, text
from bot.services.external_accounts import ReportedAccount

DEFAULT_URL = "https://api.pagerduty.com"
DEFAULT_KEY_ENV = "PAGERDUTY_API_KEY"
PAGE_SIZE = 100
MAX_PAGES = 10_000
#: Classic pagination serves ``offset + limit`` up to this many records, no further.
MAX_LISTED = 10_000
#: Roles with limited or no responder access to the account: treated like Slack guests.
GUEST_ROLES = frozenset({"observer", "restricted_access", "read_only_user", "read_only_limited_user"})


def reported(user: dict, tenant: str) -> ReportedAccount | None:
    user_id = text(user.get("id"))
    if not user_id:
        return None
    role = text(user.get("role")) or ""
    return ReportedAccount(
        provider="pagerduty",
        tenant=tenant,
        external_id=user_id,
        handle=None,
        email=text(user.get("email"), 254),
        email_verified=user.get("invitation_sent") is not True,
        display_name=text(user.get("name")) or text(user.get("summary")),
        is_bot=False,
        is_deleted=False,
        is_guest=role in GUEST_ROLES,
        is_external=False,
        attrs={
            k: v
            for k, v in (
                ("role", role or None),
                ("html_url", text(user.get("html_url"), 500)),
                ("job_title", text(user.get("job_title"))),
            )
            if v
        },
    )


def tenant_of(users: list[dict], base_url: str) -> str:
    for user in users:
        host = urlsplit(text(user.get("html_url"), 500) or "").hostname
        if host:
            return host.lower()
    return urlsplit(base_url).hostname or "pagerduty"


async def fetch(
    key: str, *, base_url: str = DEFAULT_URL, key_hint: str = DEFAULT_KEY_ENV, tenant: str | None = None, transport=None
) -> Directory:
    base_url = check_base_url(base_url, "PagerDuty")
    key = check_key(key, key_hint)
    headers = {"Authorization": f"Token token={key}", "Accept": "application/vnd.pagerduty+json;version=2"}
    users: list[dict] = []
    async with ApiClient("PagerDuty", base_url, headers, key_hint=key_hint, secret=key, transport=transport) as api:
        offset = 0
        for _ in range(MAX_PAGES):
            limit = min(PAGE_SIZE, MAX_LISTED - offset)
            if limit <= 0:
                raise SourceError(
                    f"PagerDuty lists at most {MAX_LISTED:,} users through its API and this account "
                    "has more; a partial list would count the rest as departed, so nothing was imported"
                )
            body = await api.get_json("/users", {"offset": offset, "limit": limit})
            page = expect_list(body, "users", "PagerDuty", "GET /users")
            users.extend(page)
            if body.get("more") is not True:
                break
            if not page:
                raise SourceError(f"PagerDuty said there were more users after offset {offset} but sent none")
            offset += len(page)
        else:
            raise SourceError(f"PagerDuty kept saying there were more users after {MAX_PAGES} pages")
        directory = Directory(
            "pagerduty",
            "PagerDuty",
            (tenant or "").strip() or tenant_of(users, base_url),
            requests=api.requests,
            rate_limited=api.rate_limited,
        )
    seen: set[str] = set()
    for user in users:
        account = reported(user, directory.tenant)
        if account is not None and account.external_id not in seen:  # a user shifting pages mid-read
            seen.add(account.external_id)
            directory.accounts.append(account)
    return directory
