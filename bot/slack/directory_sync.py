"""``genie slack sync``: read each workspace's directory (``users.list``) into Genie.

    reports = await sync(settings, clients, sessionmaker, workspace=None, progress=Progress(sys.stderr))

Pages are read 200 users at a time with Slack's cursor; each page is recorded and committed on
its own (``bot.services.slack_directory``), so a sync that stops half-way keeps what it did and
a re-run changes nothing that is already right. ``users.list`` is a Tier 2 method (about 20
calls a minute): when Slack says to slow down — HTTP 429 with ``Retry-After``, or a
``ratelimited`` error — the same page is asked for again after that wait, never skipped. The
waits are Genie's own (not slack-sdk's rate-limit retry handler), so the progress line can say
that it is waiting and for how long.

Single-workspace mode syncs the workspace of ``SLACK_BOT_TOKEN`` (``auth.test`` names it);
multi-workspace mode syncs every installation, or the one ``--workspace`` names, each with its
own bot token from the installation store.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, TextIO

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncConnectionErrorRetryHandler, AsyncServerErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from bot.config import Settings
from bot.services import external_accounts, slack_directory
from bot.services.errors import GenieError, InvalidInput
from bot.services.slack_directory import SYNC, SyncReport, Workspace
from bot.slack.clients import SLACK_TIMEOUT, SlackClients
from storage import repositories as repo

PAGE_LIMIT = 200
#: Rate-limit answers in a row for one page before the sync gives up (and says to re-run).
MAX_RATE_LIMIT_WAITS = 10
#: Longest wait Genie accepts from a Retry-After header.
MAX_RETRY_AFTER = 300.0

_WORKSPACE_ID = re.compile(r"^[TE][A-Z0-9]{2,31}$")


class SyncFailed(GenieError):
    """The sync of one workspace could not go on; the text says why and what to do."""


# --- progress on stderr ---------------------------------------------------------------------
class Progress:
    """A count of users read, on stderr: redrawn in place on a terminal, otherwise a plain line
    at most every ``every`` seconds (and when waiting for Slack's rate limit)."""

    def __init__(self, stream: TextIO | None, every: float = 5.0) -> None:
        self.stream = stream
        self.tty = bool(stream is not None and getattr(stream, "isatty", lambda: False)())
        self.every = every
        self._last = 0.0
        self._drawn = False
        self._spin = 0

    def _line(self, text: str, force: bool = False) -> None:
        if self.stream is None:
            return
        if self.tty:
            self._spin = (self._spin + 1) % 4
            self.stream.write("\r\x1b[2K" + "|/-\\"[self._spin] + " " + text)
            self._drawn = True
        elif force or time.monotonic() - self._last >= self.every:
            self.stream.write(text + "\n")
            self._last = time.monotonic()
        self.stream.flush()

    def page(self, report: SyncReport) -> None:
        bar = "#" * min(report.pages, 30)
        self._line(
            f"slack sync {report.workspace.workspace_id}: [{bar:<30}] {report.users} users, "
            f"{report.pages} pages, {len(report.linked)} linked"
        )

    def waiting(self, report: SyncReport, seconds: float) -> None:
        self._line(
            f"slack sync {report.workspace.workspace_id}: Slack asks Genie to slow down; "
            f"waiting {seconds:g}s before page {report.pages + 1} again",
            force=True,
        )

    def done(self) -> None:
        if self.stream is not None and self.tty and self._drawn:
            self.stream.write("\r\x1b[2K")
            self.stream.flush()
            self._drawn = False


# --- Slack's answers ----------------------------------------------------------------------
def _header(headers: Any, name: str) -> str | None:
    if not isinstance(headers, Mapping) and not hasattr(headers, "items"):
        return None
    for key, value in headers.items():
        if str(key).lower() == name:
            if isinstance(value, (list, tuple)):
                value = value[0] if value else None
            return str(value) if value is not None else None
    return None


def retry_after(headers: Any) -> float:
    """Seconds Slack asked to wait (``Retry-After``); 1 when it did not say."""
    raw = _header(headers, "retry-after")
    try:
        seconds = float(raw) if raw is not None else 1.0
    except ValueError:
        seconds = 1.0
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def _is_rate_limited(err: SlackApiError) -> bool:
    response = err.response
    return getattr(response, "status_code", None) == 429 or _error_code(err) == "ratelimited"


def _error_code(err: SlackApiError) -> str:
    data = getattr(err.response, "data", None)
    return str(data.get("error") or "") if isinstance(data, dict) else ""


def explain(err: SlackApiError, workspace: str, token_name: str, method: str = "users.list") -> str:
    """Slack's refusal, in one line that says what to do."""
    code = _error_code(err)
    data = err.response.data if isinstance(getattr(err.response, "data", None), dict) else {}
    status = getattr(err.response, "status_code", None)
    if code in {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "token_expired"}:
        return f"Slack refused {token_name} for workspace {workspace} ({code}); reinstall the app or fix the token"
    if code == "missing_scope":
        needed = str(data.get("needed") or "users:read")[:100]
        return (
            f"the bot token for workspace {workspace} lacks the {needed} scope (missing_scope); add it under "
            "OAuth & Permissions (manifest.yml lists it) and reinstall the app"
        )
    if code:
        return f"Slack refused {method} for workspace {workspace}: {code[:100]}"
    return f"Slack answered HTTP {status} to {method} for workspace {workspace}; try again later"


# --- one workspace --------------------------------------------------------------------------
def make_client(settings: Settings, token: str) -> AsyncWebClient:
    """Retries connection and server errors briefly; rate limits are handled by ``_page``."""
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=SLACK_TIMEOUT,
        retry_handlers=[
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncServerErrorRetryHandler(max_retry_count=2),
        ],
    )


Sleep = Callable[[float], Awaitable[Any]]


async def _call(
    client: AsyncWebClient,
    method: str,
    args: dict[str, Any],
    report: SyncReport,
    progress: Progress,
    token_name: str,
    sleep: Sleep,
) -> Any:
    """One Web API call, asked again after each rate-limit answer (never skipped)."""
    waits = 0
    where = str(report.workspace)
    while True:
        try:
            return await client.api_call(method, http_verb="GET", params=args)
        except SlackApiError as err:
            if not _is_rate_limited(err):
                raise SyncFailed(explain(err, where, token_name, method)) from None
            waits += 1
            report.rate_limited += 1
            if waits > MAX_RATE_LIMIT_WAITS:
                raise SyncFailed(
                    f"Slack kept rate-limiting {method} for workspace {where} "
                    f"({MAX_RATE_LIMIT_WAITS} times in a row); run genie slack sync again later "
                    "— the pages read so far are kept"
                ) from None
            delay = retry_after(err.response.headers)
            progress.waiting(report, delay)
            await sleep(delay)
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise SyncFailed(
                f"cannot reach Slack (SLACK_API_URL) for workspace {where}: {type(err).__name__}"
            ) from None


async def _page(
    client: AsyncWebClient,
    cursor: str | None,
    team_id: str | None,
    report: SyncReport,
    progress: Progress,
    token_name: str,
    sleep: Sleep,
) -> dict[str, Any]:
    args: dict[str, Any] = {"limit": PAGE_LIMIT}
    if cursor:
        args["cursor"] = cursor
    if team_id:  # an org-level token lists one workspace of the org at a time
        args["team_id"] = team_id
    response = await _call(client, "users.list", args, report, progress, token_name, sleep)
    if not report.warnings and report.pages == 0:
        scopes = _header(response.headers, "x-oauth-scopes")
        if scopes is not None and "users:read.email" not in {s.strip() for s in scopes.split(",")}:
            report.warnings.append(
                "the bot token lacks the users:read.email scope: Slack sends no emails, "
                "so nobody can be matched; add the scope and reinstall the app"
            )
    data = response.data if isinstance(response.data, dict) else {}
    if not isinstance(data.get("members"), list):
        raise SyncFailed(f"Slack's users.list answer for workspace {report.workspace} has no list of members")
    return data


async def sync_workspace(
    client: AsyncWebClient,
    sessionmaker: async_sessionmaker[AsyncSession],
    workspace: Workspace,
    *,
    progress: Progress,
    token_name: str = "the bot token",
    sleep: Sleep = asyncio.sleep,
) -> SyncReport:
    """Every page of one workspace, each committed on its own; then one ``import.run`` on the
    audit log (also when the run stopped early: the report says where and why)."""
    async with sessionmaker.begin() as session:
        allowed = await external_accounts.auto_link_enabled(session, workspace.workspace_id)
    report = SyncReport(workspace=workspace, auto_link=allowed)
    seen: set[str] = set()  # on Grid a person may be in several workspaces of the org: counted once
    try:
        for part in await _parts(client, workspace, report, progress, token_name, sleep):
            cursor: str | None = None
            while True:
                data = await _page(
                    client, cursor, part.team_id if part is not workspace else None, report, progress, token_name, sleep
                )
                members = [m for m in data["members"] if not (isinstance(m, dict) and m.get("id") in seen)]
                async with sessionmaker.begin() as session:
                    # Read per page: turning the setting off during a long sync takes effect at once.
                    allowed = await external_accounts.auto_link_enabled(session, workspace.workspace_id)
                    entries = await slack_directory.record_page(session, members, part, allowed=allowed)
                seen.update(m["id"] for m in members if isinstance(m, dict) and isinstance(m.get("id"), str))
                report.pages += 1
                report.add(entries)
                progress.page(report)
                meta = data.get("response_metadata") if isinstance(data.get("response_metadata"), dict) else {}
                cursor = meta.get("next_cursor") if isinstance(meta.get("next_cursor"), str) else None
                if not cursor:
                    break
    except SyncFailed as err:
        report.error = str(err)
    finally:
        progress.done()
    async with sessionmaker.begin() as session:
        await slack_directory.record_run(session, report, SYNC)
    return report


async def _parts(
    client: AsyncWebClient, workspace: Workspace, report: SyncReport, progress: Progress, token_name: str, sleep: Sleep
) -> list[Workspace]:
    """The directories to read: the workspace itself, or — for an Enterprise Grid org-wide
    install, whose org-level token lists users one workspace at a time — each workspace of the
    org that granted Genie access (``auth.teams.list``)."""
    if workspace.team_id or not workspace.enterprise_id:
        return [workspace]
    parts: list[Workspace] = []
    cursor: str | None = None
    while True:
        args: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        data = (await _call(client, "auth.teams.list", args, report, progress, token_name, sleep)).data
        teams = data.get("teams") if isinstance(data, dict) else None
        for team in teams if isinstance(teams, list) else []:
            if isinstance(team, dict) and isinstance(team.get("id"), str) and _WORKSPACE_ID.match(team["id"]):
                parts.append(
                    Workspace(
                        workspace_id=workspace.workspace_id,
                        team_id=team["id"],
                        enterprise_id=workspace.enterprise_id,
                        name=team.get("name") if isinstance(team.get("name"), str) else workspace.name,
                    )
                )
        meta = data.get("response_metadata") if isinstance(data, dict) else None
        cursor = (
            meta.get("next_cursor") if isinstance(meta, dict) and isinstance(meta.get("next_cursor"), str) else None
        )
        if not cursor:
            return parts


# --- which workspaces -------------------------------------------------------------------------
@dataclass(frozen=True)
class Target:
    workspace: Workspace
    token: str | None
    token_name: str


def _check_workspace_arg(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.strip()
    if not _WORKSPACE_ID.match(value):
        raise InvalidInput(f"{value!r} is not a Slack workspace id (T0123… or, on Enterprise Grid, E0123…)")
    return value


async def targets(
    settings: Settings, clients: SlackClients, sessionmaker: async_sessionmaker[AsyncSession], workspace: str | None
) -> list[Target]:
    """The workspaces to sync, each with its bot token."""
    wanted = _check_workspace_arg(workspace)
    if settings.slack_mode == "single":
        client = make_client(settings, settings.slack_bot_token or "")
        try:
            auth = await client.auth_test()
        except SlackApiError as err:
            code = _error_code(err) or f"HTTP {getattr(err.response, 'status_code', '?')}"
            raise SyncFailed(f"Slack refused SLACK_BOT_TOKEN ({code}); check the token") from None
        except (TimeoutError, aiohttp.ClientError, OSError) as err:
            raise SyncFailed(f"cannot reach Slack (SLACK_API_URL): {type(err).__name__}") from None
        team_id, enterprise_id = auth.get("team_id") or None, auth.get("enterprise_id") or None
        found = Workspace(
            workspace_id=enterprise_id or team_id or "",
            team_id=team_id,
            enterprise_id=enterprise_id,
            name=auth.get("team") or None,
        )
        if not found.workspace_id:
            raise SyncFailed("Slack's auth.test did not name the bot's workspace")
        if wanted is not None and wanted not in {team_id, enterprise_id}:
            raise InvalidInput(f"SLACK_BOT_TOKEN belongs to workspace {found}, not {wanted}")
        return [Target(found, settings.slack_bot_token, "SLACK_BOT_TOKEN")]
    if settings.slack_mode != "oauth":
        raise InvalidInput(
            "Slack is not configured: set SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID and "
            "SLACK_CLIENT_SECRET (several workspaces)"
        )
    async with sessionmaker() as session:
        installs = await repo.installations(session)
    if wanted is not None:
        installs = [i for i in installs if wanted in {i["team_id"], i["enterprise_id"]}]
        if not installs:
            raise InvalidInput(f"Genie is not installed in Slack workspace {wanted} (see genie workspace list)")
    elif not installs:
        raise InvalidInput("Genie is not installed in any Slack workspace yet (open /slack/install)")
    found: list[Target] = []
    for inst in installs:
        org_wide = bool(inst["is_enterprise_install"])
        team_id = None if org_wide else inst["team_id"]
        enterprise_id = inst["enterprise_id"] or None
        ws = Workspace(
            workspace_id=enterprise_id or team_id or "",
            team_id=team_id,
            enterprise_id=enterprise_id,
            name=inst["team_name"] or inst["enterprise_name"],
        )
        token = await clients.token_for(team_id, enterprise_id)
        found.append(Target(ws, token, f"the bot token of workspace {ws.workspace_id}"))
    return found


async def sync(
    settings: Settings,
    clients: SlackClients,
    sessionmaker: async_sessionmaker[AsyncSession],
    *,
    workspace: str | None = None,
    progress: Progress | None = None,
    sleep: Sleep = asyncio.sleep,
) -> list[SyncReport]:
    """Sync each target in turn; a workspace that fails is reported and the others still run."""
    progress = progress or Progress(None)
    reports: list[SyncReport] = []
    for target in await targets(settings, clients, sessionmaker, workspace):
        if target.token is None:
            report = SyncReport(
                workspace=target.workspace,
                auto_link=False,
                error=f"no bot token for workspace {target.workspace} (reinstall the app there)",
            )
            async with sessionmaker.begin() as session:
                await slack_directory.record_run(session, report, SYNC)
            reports.append(report)
            continue
        client = make_client(settings, target.token)
        reports.append(
            await sync_workspace(
                client, sessionmaker, target.workspace, progress=progress, token_name=target.token_name, sleep=sleep
            )
        )
    return reports
