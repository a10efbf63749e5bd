"""Settings: every environment variable Genie reads, validated once at start.

``Settings.from_env(os.environ)`` either returns a complete, consistent configuration or
raises :class:`ConfigError` whose message is one line naming the variable at fault, so
``genie serve`` can stop with that line instead of a traceback.

    >>> s = Settings.from_env({"GENIE_LINK_TTL": "120"})
    >>> s.link_ttl, s.slack_mode
    (120, 'none')
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

DEFAULT_DATABASE_URL = "sqlite+aiosqlite:///genie.db"
DEFAULT_SLACK_API_URL = "https://slack.com/api/"
ASYNC_DRIVERS = {"sqlite+aiosqlite", "postgresql+asyncpg"}

SlackMode = Literal["none", "single", "oauth"]

#: What an operator sets to connect Slack; shown in the log and on the home page.
SLACK_SETUP_HINT = (
    "Slack is not connected: create the app from manifest.yml, then set SLACK_SIGNING_SECRET "
    "and SLACK_BOT_TOKEN (single workspace) and restart"
)


class ConfigError(ValueError):
    """An invalid or contradictory setting; ``str(err)`` is one line naming the variable."""

    def __init__(self, variable: str, problem: str) -> None:
        super().__init__(f"{variable}: {problem}")
        self.variable = variable


def _truthy(name: str, raw: str | None, default: bool) -> bool:
    if raw is None or raw.strip() == "":
        return default
    value = raw.strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(name, f"expected true or false, got {raw!r}")


#: ``GENIE_PASSWORD_HASHING`` values (``bot.services.users.use_password_hashing``).
PASSWORD_HASHING = ("standard", "test")
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1"}


def _number(name: str, raw: str | None, default: float, low: float, high: float, *, whole: bool = False) -> float:
    """A number from the environment within ``[low, high]`` (``whole``: an integer)."""
    if raw is None or raw.strip() == "":
        return default
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        raise ConfigError(name, f"must be a {'whole ' if whole else ''}number, got {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(name, f"must be between {low:g} and {high:g}, got {value:g}")
    return value


@dataclass(frozen=True)
class Settings:
    database_url: str = DEFAULT_DATABASE_URL
    #: Empty means "generate once and keep in the database" (see ``bot.secrets``).
    secret_keys: tuple[str, ...] = ()
    base_url: str = "http://localhost:3000"
    link_ttl: int = 600
    slack_signing_secret: str | None = None
    slack_bot_token: str | None = None
    slack_client_id: str | None = None
    slack_client_secret: str | None = None
    slack_app_token: str | None = None
    slack_api_url: str = DEFAULT_SLACK_API_URL
    #: ``genie serve --socket-mode``: Slack's requests arrive over a WebSocket Genie opens with
    #: SLACK_APP_TOKEN, not at ``POST /slack/events`` (which then accepts nothing).
    socket_mode: bool = False
    allow_anonymous_actions: bool = False
    #: How long the outbox worker holds a Slack message it is delivering (renewed while the
    #: call lasts); after a crash, another worker or the restarted one takes it over then.
    outbox_lease_seconds: int = 60
    #: Storm-proof channels (``bot.slack.delivery``, ``bot.services.outbox.storm``): each channel's
    #: posts are paced by a local token bucket (``GENIE_SLACK_CHANNEL_RATE`` messages per second,
    #: bursts of ``GENIE_SLACK_CHANNEL_BURST``), its updates by another
    #: (``GENIE_SLACK_UPDATE_RATE`` / ``_BURST``); more than ``GENIE_SLACK_DIGEST_THRESHOLD`` alert
    #: posts waiting in a channel (0: never) collapse into one digest message, until no alert has
    #: come for ``GENIE_SLACK_DIGEST_QUIET_SECONDS``.
    slack_channel_rate: float = 1.0
    slack_channel_burst: int = 3
    slack_update_rate: float = 2.0
    slack_update_burst: int = 5
    slack_digest_threshold: int = 10
    slack_digest_quiet_seconds: float = 10.0
    #: Seconds between two runs of the periodic cleanup (``bot.services.cleanup``).
    cleanup_interval: int = 600
    #: Minutes before a shift starts that its person gets a reminder DM (0: no reminders).
    oncall_reminder_minutes: int = 60
    #: Proxies whose ``X-Forwarded-For`` is believed (uvicorn's ``forwarded_allow_ips``); empty:
    #: none, the client address is the connection's.
    forwarded_allow_ips: tuple[str, ...] = ()
    #: When set, ``GET /metrics`` needs ``Authorization: Bearer <token>``.
    metrics_token: str | None = None
    #: Sign in with Slack (OpenID Connect): the Slack app's client id and secret
    #: (``GENIE_SLACK_OIDC_CLIENT_ID``/``_SECRET``, else ``SLACK_CLIENT_ID``/``_SECRET``), and
    #: the issuer (``GENIE_SLACK_OIDC_URL``, default ``https://slack.com``). Unset: passwords only.
    slack_oidc_client_id: str | None = None
    slack_oidc_client_secret: str | None = None
    slack_oidc_url: str = "https://slack.com"
    #: E-mail pages (``bot.channels.email``): ``GENIE_SMTP_HOST`` unset means no e-mail is sent
    #: (an e-mail rule is then skipped, and the timeline says so). The password is never logged.
    smtp_host: str | None = None
    smtp_port: int = 587
    smtp_user: str | None = None
    smtp_password: str | None = field(default=None, repr=False)
    smtp_from: str | None = None
    smtp_starttls: bool = True
    #: Outgoing webhooks (``bot.channels.webhook``): ``http://`` URLs are refused unless
    #: ``GENIE_WEBHOOK_ALLOW_HTTP``; loopback, private and link-local addresses unless
    #: ``GENIE_WEBHOOK_ALLOW_PRIVATE`` (SSRF).
    webhook_allow_http: bool = False
    webhook_allow_private: bool = False
    #: ``GENIE_PASSWORD_HASHING``: ``standard`` (argon2id, argon2-cffi's defaults) or ``test``
    #: (argon2id at its cheapest, for test suites: allowed only with a loopback GENIE_BASE_URL).
    password_hashing: str = "standard"
    #: Not from the environment: filled in by tests and by the CLI for its own use.
    extra: Mapping[str, str] = field(default_factory=dict)

    @property
    def slack_mode(self) -> SlackMode:
        if self.slack_client_id:
            return "oauth"
        if self.slack_bot_token:
            return "single"
        return "none"

    @property
    def secure_cookies(self) -> bool:
        return self.base_url.startswith("https://")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, *, socket_mode: bool = False) -> Settings:
        """Read and validate; raise ConfigError (one line, naming the variable) on bad input."""
        env = os.environ if env is None else env

        def get(name: str) -> str | None:
            raw = env.get(name)
            return raw.strip() if raw is not None and raw.strip() != "" else None

        database_url = get("DATABASE_URL") or DEFAULT_DATABASE_URL
        try:
            url = make_url(database_url)
        except ArgumentError:
            raise ConfigError("DATABASE_URL", "not a database URL (e.g. sqlite+aiosqlite:///genie.db)") from None
        if url.drivername not in ASYNC_DRIVERS:
            raise ConfigError(
                "DATABASE_URL",
                f"driver {url.drivername!r} is not supported; use sqlite+aiosqlite:// or postgresql+asyncpg://",
            )

        secret_keys: tuple[str, ...] = ()
        if (raw_keys := get("GENIE_SECRET_KEY")) is not None:
            secret_keys = tuple(k.strip() for k in raw_keys.split(","))
            if any(len(k) < 16 for k in secret_keys):
                raise ConfigError("GENIE_SECRET_KEY", "every key in the list must be at least 16 characters")

        base_url = (get("GENIE_BASE_URL") or "http://localhost:3000").rstrip("/")
        parts = urlsplit(base_url)
        if parts.scheme not in {"http", "https"} or not parts.netloc or parts.query or parts.fragment:
            raise ConfigError(
                "GENIE_BASE_URL", f"must be an http(s) URL like https://genie.example.com, got {base_url!r}"
            )

        raw_ttl = get("GENIE_LINK_TTL") or "600"
        try:
            link_ttl = int(raw_ttl)
        except ValueError:
            raise ConfigError("GENIE_LINK_TTL", f"must be a whole number of seconds, got {raw_ttl!r}") from None
        if not 30 <= link_ttl <= 86400:
            raise ConfigError("GENIE_LINK_TTL", f"must be between 30 and 86400 seconds, got {link_ttl}")

        raw_lease = get("GENIE_OUTBOX_LEASE_SECONDS") or "60"
        try:
            outbox_lease_seconds = int(raw_lease)
        except ValueError:
            raise ConfigError(
                "GENIE_OUTBOX_LEASE_SECONDS", f"must be a whole number of seconds, got {raw_lease!r}"
            ) from None
        if not 2 <= outbox_lease_seconds <= 3600:
            raise ConfigError(
                "GENIE_OUTBOX_LEASE_SECONDS", f"must be between 2 and 3600 seconds, got {outbox_lease_seconds}"
            )

        raw_cleanup = get("GENIE_CLEANUP_INTERVAL") or "600"
        try:
            cleanup_interval = int(raw_cleanup)
        except ValueError:
            raise ConfigError(
                "GENIE_CLEANUP_INTERVAL", f"must be a whole number of seconds, got {raw_cleanup!r}"
            ) from None
        if not 1 <= cleanup_interval <= 86400:
            raise ConfigError("GENIE_CLEANUP_INTERVAL", f"must be between 1 and 86400 seconds, got {cleanup_interval}")

        # Read by storage.session.make_engine (PostgreSQL's pool); checked here so a bad value
        # stops `genie serve` at start with one line.
        raw_pool = (get("GENIE_DB_POOL_SIZE") or "").strip()
        if raw_pool and not (raw_pool.isdigit() and 1 <= int(raw_pool) <= 1000):
            raise ConfigError("GENIE_DB_POOL_SIZE", f"must be a whole number between 1 and 1000, got {raw_pool!r}")
        raw_sqlite_driver = (get("GENIE_SQLITE_DRIVER") or "inline").lower()
        if raw_sqlite_driver not in ("inline", "thread"):
            raise ConfigError("GENIE_SQLITE_DRIVER", f"must be inline or thread, got {raw_sqlite_driver!r}")

        raw_reminder = get("GENIE_ONCALL_REMINDER_MINUTES") or "60"
        try:
            oncall_reminder_minutes = int(raw_reminder)
        except ValueError:
            raise ConfigError(
                "GENIE_ONCALL_REMINDER_MINUTES", f"must be a whole number of minutes, got {raw_reminder!r}"
            ) from None
        if not 0 <= oncall_reminder_minutes <= 1440:
            raise ConfigError(
                "GENIE_ONCALL_REMINDER_MINUTES", f"must be between 0 and 1440 minutes, got {oncall_reminder_minutes}"
            )

        forwarded_allow_ips: tuple[str, ...] = ()
        if (raw_proxies := get("GENIE_FORWARDED_ALLOW_IPS")) is not None:
            forwarded_allow_ips = tuple(p.strip() for p in raw_proxies.split(",") if p.strip())
            for proxy in forwarded_allow_ips:
                if proxy == "*":
                    continue
                try:
                    ipaddress.ip_network(proxy, strict=False)
                except ValueError:
                    raise ConfigError(
                        "GENIE_FORWARDED_ALLOW_IPS",
                        f"{proxy!r} is not an IP address or network "
                        "(a comma-separated list such as 10.0.0.5,10.0.1.0/24)",
                    ) from None

        metrics_token = get("GENIE_METRICS_TOKEN")
        if metrics_token is not None and len(metrics_token) < 16:
            raise ConfigError("GENIE_METRICS_TOKEN", "must be at least 16 characters")

        signing_secret = get("SLACK_SIGNING_SECRET")
        bot_token = get("SLACK_BOT_TOKEN")
        client_id = get("SLACK_CLIENT_ID")
        client_secret = get("SLACK_CLIENT_SECRET")
        app_token = get("SLACK_APP_TOKEN")

        if socket_mode:
            # Requests arrive over the WebSocket opened with the app-level token, so there is no
            # signature to verify; Slack allows Socket Mode only for apps that are not distributed.
            if client_id or client_secret:
                raise ConfigError(
                    "SLACK_CLIENT_ID" if client_id else "SLACK_CLIENT_SECRET",
                    "Socket Mode serves one workspace: unset it and set SLACK_BOT_TOKEN "
                    "(Slack does not allow Socket Mode for apps installed through OAuth)",
                )
            if not app_token:
                raise ConfigError(
                    "SLACK_APP_TOKEN",
                    "is required with --socket-mode (an app-level token starting with xapp-, scope connections:write)",
                )
            if not bot_token:
                raise ConfigError(
                    "SLACK_BOT_TOKEN", "is required with --socket-mode (the bot token, starting with xoxb-)"
                )
        if bot_token and client_id:
            raise ConfigError(
                "SLACK_CLIENT_ID",
                "set either SLACK_BOT_TOKEN (one workspace) or SLACK_CLIENT_ID/SLACK_CLIENT_SECRET (OAuth), not both",
            )
        if bot_token and not bot_token.startswith("xoxb-"):
            raise ConfigError("SLACK_BOT_TOKEN", "must be a bot token starting with xoxb-")
        if client_id and not client_secret:
            raise ConfigError("SLACK_CLIENT_SECRET", "is required with SLACK_CLIENT_ID (multi-workspace OAuth mode)")
        if client_id and not signing_secret:
            raise ConfigError("SLACK_SIGNING_SECRET", "is required with SLACK_CLIENT_ID to verify requests from Slack")
        if client_secret and not client_id:
            raise ConfigError("SLACK_CLIENT_SECRET", "is set but SLACK_CLIENT_ID is not")
        if app_token and not app_token.startswith("xapp-"):
            raise ConfigError("SLACK_APP_TOKEN", "must be an app-level token starting with xapp-")
        if bot_token and not signing_secret and not socket_mode:
            raise ConfigError("SLACK_SIGNING_SECRET", "is required with SLACK_BOT_TOKEN to verify requests from Slack")
        if signing_secret and not bot_token and not client_id:
            raise ConfigError(
                "SLACK_BOT_TOKEN",
                "is required when SLACK_SIGNING_SECRET is set "
                "(or SLACK_CLIENT_ID/SLACK_CLIENT_SECRET for several workspaces)",
            )

        slack_api_url = get("SLACK_API_URL") or DEFAULT_SLACK_API_URL
        if urlsplit(slack_api_url).scheme not in {"http", "https"}:
            raise ConfigError("SLACK_API_URL", f"must be an http(s) URL, got {slack_api_url!r}")
        if not slack_api_url.endswith("/"):
            slack_api_url += "/"

        smtp = _smtp(get, env)

        password_hashing = get("GENIE_PASSWORD_HASHING") or "standard"
        if password_hashing not in PASSWORD_HASHING:
            raise ConfigError("GENIE_PASSWORD_HASHING", f"must be one of {', '.join(PASSWORD_HASHING)}")
        if password_hashing != "standard" and parts.hostname not in LOOPBACK_HOSTS:
            raise ConfigError(
                "GENIE_PASSWORD_HASHING",
                f"{password_hashing!r} is for test suites: it needs a loopback GENIE_BASE_URL (got {base_url!r})",
            )

        return cls(
            **smtp,
            password_hashing=password_hashing,
            webhook_allow_http=_truthy("GENIE_WEBHOOK_ALLOW_HTTP", env.get("GENIE_WEBHOOK_ALLOW_HTTP"), False),
            webhook_allow_private=_truthy("GENIE_WEBHOOK_ALLOW_PRIVATE", env.get("GENIE_WEBHOOK_ALLOW_PRIVATE"), False),
            database_url=database_url,
            secret_keys=secret_keys,
            base_url=base_url,
            link_ttl=link_ttl,
            slack_signing_secret=signing_secret,
            slack_bot_token=bot_token,
            slack_client_id=client_id,
            slack_client_secret=client_secret,
            slack_app_token=app_token,
            slack_api_url=slack_api_url,
            socket_mode=socket_mode,
            allow_anonymous_actions=_truthy(
                "GENIE_ALLOW_ANONYMOUS_ACTIONS", env.get("GENIE_ALLOW_ANONYMOUS_ACTIONS"), False
            ),
            outbox_lease_seconds=outbox_lease_seconds,
            slack_channel_rate=_number("GENIE_SLACK_CHANNEL_RATE", env.get("GENIE_SLACK_CHANNEL_RATE"), 1.0, 0.01, 100),
            slack_channel_burst=int(
                _number("GENIE_SLACK_CHANNEL_BURST", env.get("GENIE_SLACK_CHANNEL_BURST"), 3, 1, 100, whole=True)
            ),
            slack_update_rate=_number("GENIE_SLACK_UPDATE_RATE", env.get("GENIE_SLACK_UPDATE_RATE"), 2.0, 0.01, 100),
            slack_update_burst=int(
                _number("GENIE_SLACK_UPDATE_BURST", env.get("GENIE_SLACK_UPDATE_BURST"), 5, 1, 100, whole=True)
            ),
            slack_digest_threshold=int(
                _number(
                    "GENIE_SLACK_DIGEST_THRESHOLD", env.get("GENIE_SLACK_DIGEST_THRESHOLD"), 10, 0, 100000, whole=True
                )
            ),
            slack_digest_quiet_seconds=_number(
                "GENIE_SLACK_DIGEST_QUIET_SECONDS", env.get("GENIE_SLACK_DIGEST_QUIET_SECONDS"), 10.0, 0.1, 3600
            ),
            cleanup_interval=cleanup_interval,
            oncall_reminder_minutes=oncall_reminder_minutes,
            forwarded_allow_ips=forwarded_allow_ips,
            metrics_token=metrics_token,
            slack_oidc_client_id=get("GENIE_SLACK_OIDC_CLIENT_ID") or client_id,
            slack_oidc_client_secret=get("GENIE_SLACK_OIDC_CLIENT_SECRET") or client_secret,
            slack_oidc_url=_oidc_url(get("GENIE_SLACK_OIDC_URL")),
        )


def _smtp(get, env: Mapping[str, str]) -> dict:
    """``GENIE_SMTP_*``: all or nothing beyond the host (a user needs a password, a host a
    From address); the values are never put in an error message but their names."""
    host = get("GENIE_SMTP_HOST")
    names = ("GENIE_SMTP_PORT", "GENIE_SMTP_USER", "GENIE_SMTP_PASSWORD", "GENIE_SMTP_FROM", "GENIE_SMTP_STARTTLS")
    if host is None:
        if given := [n for n in names if get(n) is not None]:
            raise ConfigError(given[0], "is set but GENIE_SMTP_HOST is not")
        return {}
    raw_port = get("GENIE_SMTP_PORT") or "587"
    if not raw_port.isdigit() or not 1 <= int(raw_port) <= 65535:
        raise ConfigError("GENIE_SMTP_PORT", f"must be a port number (1-65535), got {raw_port!r}")
    user, password, sender = get("GENIE_SMTP_USER"), get("GENIE_SMTP_PASSWORD"), get("GENIE_SMTP_FROM")
    if (user is None) != (password is None):
        missing = "GENIE_SMTP_PASSWORD" if password is None else "GENIE_SMTP_USER"
        raise ConfigError(missing, "GENIE_SMTP_USER and GENIE_SMTP_PASSWORD go together")
    if sender is None:
        raise ConfigError("GENIE_SMTP_FROM", "is required with GENIE_SMTP_HOST (e.g. Genie <genie@example.com>)")
    if "@" not in sender or "\n" in sender or "\r" in sender:
        raise ConfigError("GENIE_SMTP_FROM", "must be an e-mail address (e.g. Genie <genie@example.com>)")
    return dict(
        smtp_host=host,
        smtp_port=int(raw_port),
        smtp_user=user,
        smtp_password=password,
        smtp_from=sender,
        smtp_starttls=_truthy("GENIE_SMTP_STARTTLS", env.get("GENIE_SMTP_STARTTLS"), True),
    )


def _oidc_url(value: str | None) -> str:
    url = (value or "https://slack.com").rstrip("/")
    if urlsplit(url).scheme not in {"http", "https"}:
        raise ConfigError("GENIE_SLACK_OIDC_URL", f"must be an http(s) URL, got {url!r}")
    return url


def load_dotenv_file(path: Path | str = ".env") -> None:
    """Read ``.env`` from the working directory; real environment variables win."""
    from dotenv import load_dotenv

    load_dotenv(path, override=False)
