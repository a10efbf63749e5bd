"""Reading another tool's REST API politely: timeouts, rate limits, retries, clear errors.

One ``ApiClient`` per import run::

    async with ApiClient("PagerDuty", "https://api.pagerduty.com",
                         {"Authorization": f"Token token={key}"}, key_hint="PAGERDUTY_API_KEY") as api:
        page = await api.get_json("/users", {"offset": 0, "limit": 100})

- **429** (rate limited): waits as long as the server says (``Retry-After``, PagerDuty's
  ``ratelimit-reset``, OpsGenie's ``X-RateLimit-Period-In-Sec``; else a backoff) and asks for
  the *same* page again — never skips one.
- **5xx and network errors**: a few retries with backoff, then ``SourceError``.
- **401/403**: ``SourceError`` at once, naming the variable the key came from, never the key.
- A body that is not a JSON object: ``SourceError`` naming the request.

The API key is only ever in a request header: never in a URL, a message or a log line.
"""

from __future__ import annotations

import asyncio
import email.utils
import ipaddress
import json
import time
from typing import Any
from urllib.parse import urlsplit

import httpx

from bot.services.errors import GenieError

TIMEOUT = httpx.Timeout(30.0, connect=10.0)
#: Attempts for a request that fails with a 5xx or a network error.
ATTEMPTS = 4
#: How many 429s in a row one request may meet, and the longest single wait.
MAX_RATE_LIMIT_WAITS = 20
MAX_WAIT_SECONDS = 120.0
BACKOFF_SECONDS = 0.5


class SourceError(GenieError):
    """The other tool could not be read; the text says why and what to check."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        #: The HTTP status that stopped the run, when there was one.
        self.status = status


def check_base_url(url: str, what: str) -> str:
    """An ``https://`` URL (plain ``http://`` only on this machine: the key would travel in clear)."""
    url = (url or "").strip().rstrip("/")
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.query or parts.fragment:
        raise SourceError(f"--url {url!r} is not a web address of the {what} API (like https://…)")
    if parts.username or parts.password:
        raise SourceError("--url must not carry a user name or password; the API key comes from the environment")
    if parts.scheme == "http" and not _is_loopback(parts.hostname):
        raise SourceError(f"--url must use https (the API key would cross the network in clear): {url}")
    return url


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_key(key: str, hint: str) -> str:
    key = (key or "").strip()
    if not key:
        raise SourceError(f"no API key: set {hint}")
    if len(key) > 500 or any(ch.isspace() or ord(ch) < 32 or ord(ch) == 127 for ch in key):
        raise SourceError(f"the API key from {hint} contains spaces or control characters")
    return key


def _wait_seconds(response: httpx.Response, attempt: int) -> float:
    """How long the server asks us to wait before asking again."""
    for header in ("retry-after", "ratelimit-reset", "x-ratelimit-reset", "x-ratelimit-period-in-sec"):
        value = (response.headers.get(header) or "").strip()
        if not value:
            continue
        try:
            seconds = float(value)
        except ValueError:
            parsed = email.utils.parsedate_to_datetime(value) if header == "retry-after" else None
            if parsed is None:
                continue
            seconds = parsed.timestamp() - time.time()
        if seconds > 10**9:  # an epoch timestamp, as some APIs send in x-ratelimit-reset
            seconds -= time.time()
        return min(max(seconds, 0.0), MAX_WAIT_SECONDS)
    return min(BACKOFF_SECONDS * 2**attempt, MAX_WAIT_SECONDS)


def _provider_message(response: httpx.Response) -> str:
    """The provider's own short error text (PagerDuty ``error.message``, OpsGenie ``message``)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    message = ""
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict):
            message = error.get("message") or ""
        elif isinstance(error, str):
            message = error
        message = message or body.get("message") or ""
    message = " ".join(str(message).split())[:200]
    return f": {message}" if message else ""


class ApiClient:
    def __init__(
        self,
        name: str,
        base_url: str,
        headers: dict[str, str],
        *,
        key_hint: str,
        secret: str | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.name = name
        self.base_url = base_url.rstrip("/")
        self.key_hint = key_hint
        self._secret = secret
        self._http = httpx.AsyncClient(
            base_url=self.base_url, headers=headers, timeout=TIMEOUT, follow_redirects=False, transport=transport
        )
        #: Requests made, and 429 waits honoured (shown in the import report).
        self.requests = 0
        self.rate_limited = 0

    async def __aenter__(self) -> ApiClient:
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self._http.aclose()

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "[redacted]") if self._secret else text

    async def get_json(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        what = f"GET {path}"
        failures = rate_waits = 0
        while True:
            self.requests += 1
            try:
                response = await self._http.get(path, params=params)
            except httpx.TransportError as err:
                failures += 1
                if failures >= ATTEMPTS:
                    reason = self._scrub(str(err) or type(err).__name__)
                    raise SourceError(f"cannot reach {self.name} at {self.base_url} ({what}): {reason}") from None
                await asyncio.sleep(BACKOFF_SECONDS * 2 ** (failures - 1))
                continue
            status = response.status_code
            if status == 429:
                rate_waits += 1
                self.rate_limited += 1
                if rate_waits > MAX_RATE_LIMIT_WAITS:
                    raise SourceError(
                        f"{self.name} kept rate-limiting {what} ({rate_waits - 1} waits); try again later"
                    )
                await asyncio.sleep(_wait_seconds(response, rate_waits - 1))
                continue
            if status >= 500:
                failures += 1
                if failures >= ATTEMPTS:
                    raise SourceError(
                        f"{self.name} kept failing ({what}: HTTP {status} after {failures} attempts); "
                        "nothing was imported, try again later"
                    )
                await asyncio.sleep(
                    _wait_seconds(response, failures - 1)
                    if "retry-after" in response.headers
                    else BACKOFF_SECONDS * 2 ** (failures - 1)
                )
                continue
            if status in (401, 403):
                raise SourceError(
                    f"{self.name} refused the API key (HTTP {status}{self._scrub(_provider_message(response))}); "
                    f"check {self.key_hint} and the key's permissions",
                    status,
                )
            if status == 404:
                raise SourceError(f"{self.name} has no {path} at {self.base_url} (HTTP 404); check --url", status)
            if status >= 300:
                raise SourceError(
                    f"{self.name} answered {what} with HTTP {status}{self._scrub(_provider_message(response))}", status
                )
            try:
                body = json.loads(response.content)
            except ValueError:
                raise SourceError(f"{self.name} sent a response that is not JSON ({what}, HTTP {status})") from None
            if not isinstance(body, dict):
                raise SourceError(f"{self.name} sent an unexpected response ({what}): not a JSON object")
            return body


def expect_list(body: dict[str, Any], key: str, name: str, what: str) -> list[dict[str, Any]]:
    value = body.get(key)
    if not isinstance(value, list) or not all(isinstance(item, dict) for item in value):
        raise SourceError(f"{name} sent an unexpected response ({what}): no {key!r} list of objects")
    return value


def text(value: Any, limit: int = 200) -> str | None:
    """A provider's string field, or None (anything else is ignored, not trusted)."""
    if not isinstance(value, str):
        return None
    value = value.strip()
    return value[:limit] or None
