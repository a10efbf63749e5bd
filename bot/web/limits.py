"""Request body caps, enforced while the body streams in, before anything parses or verifies it.

``BodyLimit`` is an ASGI middleware: it refuses a ``Content-Length`` above the route's cap at
once (413, without reading a byte; the alert API does that itself, in its own envelope), and
counts the bytes of ``http.request`` messages of every body (chunked, or a ``Content-Length``
that lies): as soon as the count passes the cap, the app's read raises ``BodyTooLarge`` and the
answer is a 413, so no handler ever holds more than the cap in memory. Caps per route family (``cap_for``):

- ``/slack/events``: ``SLACK_MAX_BODY`` (512 KiB). Slack's payloads carry Genie's own message or
  Home view (an alert message with every field at its limit is about 40 KB form-encoded), a user
  profile, or a slash command: a tenth of the cap at most;
- ``/v2/…`` (the alert API): the API's own ``MAX_BODY`` (1 MiB: every OpsGenie field at its
  limit, JSON-escaped);
- everything else (web forms, health, metrics): ``DEFAULT_MAX_BODY`` (64 KiB; forms are refused
  above 16 KiB by ``bot.web.pages.read_form`` too).
"""

from __future__ import annotations

import json
import re

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bot.web.alert_api import MAX_BODY as API_MAX_BODY
from bot.web.alert_api import ApiError

SLACK_MAX_BODY = 512 * 1024
DEFAULT_MAX_BODY = 64 * 1024
#: An announced body up to this much over the cap is drained (and discarded) after the 413
#: rather than the connection closed: clients that write the whole body first then see the 413.
DRAIN_LIMIT = 1024 * 1024


def cap_for(path: str) -> int:
    if path == "/slack/events":
        return SLACK_MAX_BODY
    if path == "/v2" or path.startswith("/v2/"):
        return API_MAX_BODY
    return DEFAULT_MAX_BODY


class BodyTooLarge(ApiError):
    """Raised by the app's ``receive`` once the body passed its cap. An ``ApiError``, so the
    alert API answers it as its own 413 (in its envelope) without logging an error."""

    def __init__(self, cap: int) -> None:
        super().__init__(413, f"Request body is too large (at most {cap // 1024} KiB).")


class BodyLimit:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope.get("path", "")
        cap = cap_for(path)
        length = next((v for k, v in scope.get("headers", []) if k == b"content-length"), None)
        # The alert API refuses an announced Content-Length itself, before reading, in OpsGenie's
        # envelope (``alert_api.read_body``); every other route is refused here.
        api = cap_for(path) == API_MAX_BODY
        if length is not None and not api and (not re.fullmatch(rb"[0-9]{1,20}", length) or int(length) > cap):
            # A body announced a little over the cap is read and thrown away by the server after
            # the 413 (an ordinary client writes it all before reading the answer); a bigger one
            # ends the connection, so nobody is made to take in megabytes for nothing.
            modest = re.fullmatch(rb"[0-9]{1,20}", length) is not None and int(length) <= cap + DRAIN_LIMIT
            await self._refuse(send, cap, close=not modest)
            return
        announced_over = length is not None and (not re.fullmatch(rb"[0-9]{1,20}", length) or int(length) > cap)
        received = 0
        exceeded = False  # the body passed the cap: the answer is a 413, whatever the app says
        answered = False  # a 413 went out: whatever the app sends after is dropped
        started = False
        body_done = False  # the whole request body was received (or the client went away)

        async def counting_receive() -> Message:
            nonlocal received, exceeded, body_done
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)
                if received > cap:
                    exceeded = True
                    raise BodyTooLarge(cap)
            elif message["type"] == "http.disconnect":
                body_done = True
            return message

        async def drain() -> None:
            """Read the rest of a body the app answered without reading (a 404, a 401 …),
            up to the cap: a server that answers and closes while the client is still sending
            makes the client's kernel see a reset, and the client gets no answer at all."""
            nonlocal received, body_done
            while not body_done and received <= cap:
                message = await receive()
                if message["type"] != "http.request":
                    break
                received += len(message.get("body", b""))
                body_done = not message.get("more_body", False)

        async def guarded_send(message: Message) -> None:
            nonlocal started, answered
            if answered:
                return
            if message["type"] == "http.response.start":
                if exceeded and message["status"] != 413:  # e.g. a form handler that swallowed the error
                    answered = True
                    await self._refuse(send, cap)
                    return
                if not exceeded and not announced_over:  # an announced excess is refused unread
                    await drain()
                started = True
            await send(message)

        try:
            await self.app(scope, counting_receive, guarded_send)
        except BodyTooLarge:
            pass
        if exceeded and not started and not answered:
            await self._refuse(send, cap)

    @staticmethod
    async def _refuse(send: Send, cap: int, close: bool = True) -> None:
        body = json.dumps({"message": f"Request body is too large (at most {cap // 1024} KiB)."}).encode()
        headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        if close:  # the rest of the body will not be read: no next request on this connection
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})
