"""Request bodies are capped while they stream in (``bot.web.limits``), before anything parses or
verifies them: an unsigned 50 MB body to ``POST /slack/events`` is refused after its first
512 KiB, chunked or with a Content-Length, and the process does not read (or keep) the rest."""

from __future__ import annotations

import asyncio
import json
import resource

import httpx
import pytest

from bot.services import alerts, teams
from bot.web.alert_api import MAX_BODY as API_MAX_BODY
from bot.web.limits import DEFAULT_MAX_BODY, SLACK_MAX_BODY

CHUNK = 64 * 1024
HUGE = 50 * 1024 * 1024


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize()


async def _send_chunked(url: str, path: str, total: int) -> tuple[int | None, int]:
    """POST ``total`` bytes in chunks (no Content-Length); returns (status or None if the server
    cut the connection first, bytes the client managed to hand over)."""
    sent = 0

    async def body():
        nonlocal sent
        block = b"x" * CHUNK
        while sent < total:
            sent += CHUNK
            yield block

    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        try:
            response = await http.post(path, content=body(), headers={"Content-Type": "application/json"})
            return response.status_code, sent
        except (httpx.WriteError, httpx.RemoteProtocolError, httpx.ReadError):
            return None, sent


@pytest.mark.parametrize(
    "path, cap", [("/slack/events", SLACK_MAX_BODY), ("/login", DEFAULT_MAX_BODY), ("/v2/alerts", API_MAX_BODY)]
)
async def test_an_oversized_content_length_is_refused_before_a_byte_is_read(genie, path, cap):
    before = await genie.scalar("SELECT count(*) FROM link_request")
    async with genie.sessionmaker.begin() as s:
        key = await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY"))
    auth = f"Authorization: GenieKey {key}\r\n"
    # A body of exactly the cap passes the limit (and is then judged by the route: 401/403/422 …).
    at_cap = await genie.http.post(path, content=b"x" * cap, headers={"Content-Type": "application/json"})
    assert at_cap.status_code != 413, at_cap.text
    # One byte more, or 50 MB: 413 as soon as the headers are in (nothing of the body was sent
    # yet), and the route never ran (no 401 for the signature, no CSRF page).
    for length in (cap + 1, HUGE):
        head, body = await _headers_only(genie.url, path, length, auth)
        assert head.startswith(b"HTTP/1.1 413"), head
        assert b"x-frame-options: DENY" in head  # still inside the security headers
        assert json.loads(body)["message"] == f"Request body is too large (at most {cap // 1024} KiB)."
    assert await genie.scalar("SELECT count(*) FROM link_request") == before


async def _headers_only(url: str, path: str, length: int, extra: str = "") -> tuple[bytes, bytes]:
    """Announce a body of ``length`` bytes, send none of it, read the whole answer."""
    reader, writer = await asyncio.open_connection(*url.removeprefix("http://").split(":"))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n{extra}"
        f"Content-Length: {length}\r\n\r\n".encode()
    )
    await writer.drain()
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout=5))[:-4]
    size = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    body = await asyncio.wait_for(reader.readexactly(size), timeout=5)
    writer.close()
    return head, body


async def test_a_50_mb_chunked_body_is_cut_off_at_the_cap_and_memory_does_not_grow(genie):
    rss_before = _rss_bytes()
    status, sent = await _send_chunked(genie.url, "/slack/events", HUGE)
    rss_growth = _rss_bytes() - rss_before
    # The server stopped reading soon after the cap: the client could not hand over the 50 MB
    # (at most the cap plus what the sockets' buffers hold).
    assert status in (413, None)
    assert sent < 16 * 1024 * 1024, sent
    assert rss_growth < 20 * 1024 * 1024, rss_growth
    # And the answer, when the client gets to read it, is the 413.
    raw_status = await _chunked_status(genie.url, "/slack/events", SLACK_MAX_BODY + CHUNK)
    assert raw_status == 413


async def _chunked_status(
    url: str, path: str, total: int, content_type: str = "application/json", extra: str = ""
) -> int:
    """Send a chunked body of ``total`` bytes by hand and read the status line."""
    reader, writer = await asyncio.open_connection(*url.removeprefix("http://").split(":"))
    writer.write(
        f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {content_type}\r\n{extra}"
        "Transfer-Encoding: chunked\r\n\r\n".encode()
    )
    try:
        sent = 0
        while sent < total:
            writer.write(f"{CHUNK:x}\r\n".encode() + b"x" * CHUNK + b"\r\n")
            await writer.drain()
            sent += CHUNK
        writer.write(b"0\r\n\r\n")
        await writer.drain()
    except ConnectionError:
        pass
    line = await asyncio.wait_for(reader.readline(), timeout=5)
    writer.close()
    return int(line.split()[1])


async def test_chunked_bodies_over_the_cap_are_refused_on_every_route_family(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    async with genie.sessionmaker.begin() as s:
        key = await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY"))
    auth = f"Authorization: GenieKey {key}\r\n"
    assert await _chunked_status(genie.url, "/slack/events", SLACK_MAX_BODY + CHUNK) == 413
    assert (
        await _chunked_status(genie.url, "/login", DEFAULT_MAX_BODY + CHUNK, "application/x-www-form-urlencoded") == 413
    )
    assert await _chunked_status(genie.url, "/v2/alerts", API_MAX_BODY + CHUNK, extra=auth) == 413
    # Under the cap a chunked body reaches the route as before: an unsigned Slack body is a 401.
    assert await _chunked_status(genie.url, "/slack/events", CHUNK) == 401
    assert await _chunked_status(genie.url, "/v2/alerts", CHUNK, extra=auth) == 400  # not JSON
    assert await genie.scalar("SELECT count(*) FROM signin_failure") == 0
    assert await genie.scalar("SELECT count(*) FROM alert") == 0
