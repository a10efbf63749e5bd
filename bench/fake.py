"""The tests' fake Slack (``tests/fake_slack.py``), plus Slack's per-channel rate limit on
posting, which the outbox drain row needs: ``chat.postMessage`` allows about one message per
second per channel and answers ``429`` with ``Retry-After`` beyond that.

    fake = RateLimitedFakeSlack().start()
    fake.limit_per_channel(1.0)            # off by default: the fake behaves as before
    fake.limited                           # how many 429s it answered
"""

from __future__ import annotations

import json
import threading
import time
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.fake_slack import FakeSlack

LIMITED_METHODS = ("chat.postMessage",)


class RateLimitedFakeSlack(FakeSlack):
    def __init__(self) -> None:
        super().__init__()
        self._rate: float | None = None
        self._last_ok: dict[str, float] = {}
        self._rl_lock = threading.Lock()
        self.limited = 0

    def limit_per_channel(self, per_second: float | None) -> None:
        """Allow ``per_second`` posts per channel (None: no limit)."""
        with self._rl_lock:
            self._rate = per_second
            self._last_ok.clear()
            self.limited = 0

    async def _api(self, request: Request) -> Response:
        method = request.path_params["method"]
        if self._rate and method in LIMITED_METHODS:
            body = await request.body()  # Starlette keeps it: the base class reads it again
            if "json" in request.headers.get("content-type", ""):
                channel = str((json.loads(body) if body else {}).get("channel", ""))
            else:
                channel = dict(parse_qsl(body.decode())).get("channel", "")
            now = time.monotonic()
            with self._rl_lock:
                last = self._last_ok.get(channel)
                if last is not None and now - last < 1.0 / self._rate:
                    self.limited += 1
                    wait = max(1, round(1.0 / self._rate - (now - last) + 0.5))
                    return JSONResponse(
                        {"ok": False, "error": "ratelimited"}, status_code=429, headers={"Retry-After": str(wait)}
                    )
                self._last_ok[channel] = now
        return await super()._api(request)
