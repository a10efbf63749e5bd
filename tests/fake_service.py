"""What the fake PagerDuty and fake OpsGenie share: a Starlette app served on a loopback port
in its own thread (``tests/loopback.py``, as the fake Slack is), a record of the requests it
answered, and failures queued on demand (429 with headers, 5xx, a body that is not JSON).

    fake = FakePagerDuty(key="pd-key").start()
    fake.fail("/users", status=429, headers={"Retry-After": "1"})   # the next GET /users only
    fake.fail("/users", status=200, body="<html>oops")               # malformed
    fake.fail("/users", status=503, times=9, after=1)                # page 2 on keeps failing
"""

from __future__ import annotations

import hmac
import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from tests.loopback import LoopbackServer


@dataclass
class Seen:
    path: str
    query: dict[str, str]
    headers: dict[str, str]


@dataclass
class Failure:
    path: str
    status: int
    body: str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    times: int = 1
    after: int = 0  # let this many requests for the path through first


class FakeService(LoopbackServer, ABC):
    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        self._failures: list[Failure] = []

    # --- what tests set up and read ------------------------------------------------------------
    def fail(
        self,
        path: str,
        *,
        status: int,
        body: str | None = None,
        headers: dict[str, str] | None = None,
        times: int = 1,
        after: int = 0,
    ) -> None:
        """The next ``times`` requests for ``path`` (after ``after`` good ones) get this answer."""
        with self._lock:
            self._failures.append(Failure(path, status, body, dict(headers or {}), times, after))

    def reset(self) -> None:
        with self._lock:
            self.requests.clear()
            self._failures.clear()

    def seen(self, path: str | None = None) -> list[Seen]:
        with self._lock:
            return [r for r in self.requests if path is None or r.path == path]

    # --- for subclasses ----------------------------------------------------------------------------
    @abstractmethod
    def routes(self) -> list:
        """The fake API's Starlette routes (each fake provides its own)."""

    def authorized(self, request: Request, scheme: str) -> bool:
        """Constant-time check of ``Authorization: <scheme><key>``."""
        given = request.headers.get("authorization", "").encode()
        return hmac.compare_digest(given, f"{scheme}{self.key}".encode())

    def before(self, request: Request) -> Response | None:
        """Record the request, then answer with a queued failure for its path if there is one."""
        with self._lock:
            self.requests.append(Seen(request.url.path, dict(request.query_params), dict(request.headers)))
            for failure in self._failures:
                if failure.path == request.url.path:
                    if failure.after > 0:
                        failure.after -= 1
                        break
                    failure.times -= 1
                    if failure.times <= 0:
                        self._failures.remove(failure)
                    if failure.body is not None:
                        return Response(
                            failure.body, failure.status, headers=failure.headers, media_type="application/json"
                        )
                    return JSONResponse(
                        {"message": f"fake failure {failure.status}"}, failure.status, headers=failure.headers
                    )
        return None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> FakeService:
        self.serve(Starlette(routes=self.routes()))
        return self


def int_param(request: Request, name: str, default: int, *, low: int = 0, high: int = 10**6) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None
