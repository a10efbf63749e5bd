"""What the fake PagerDuty and fake OpsGenie share: a Starlette app served by uvicorn on a
loopback port in its own thread (like ``tests/fake_slack.py``), a record of the requests it
answered, and failures queued on demand (429 with headers, 5xx, a body that is not JSON).

    fake = FakePagerDuty(key="pd-key").start()
    fake.fail("/users", status=429, headers={"Retry-After": "1"})   # the next GET /users only
    fake.fail("/users", status=200, body="<html>oops")               # malformed
    fake.fail("/users", status=503, times=9, after=1)                # page 2 on keeps failing
"""

from __future__ import annotations

import hmac
from abc import ABC, abstractmethod
import socket
import threading
import time
from dataclasses import dataclass, field

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response


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


class FakeService(ABC):
    def __init__(self, key: str) -> None:
        self.key = key
        self._lock = threading.Lock()
        self.requests: list[Seen] = []
        self._failures: list[Failure] = []
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self.url = ""

    # --- what tests set up and read ------------------------------------------------------------
    def fail(self, path: str, *, status: int, body: str | None = None, headers: dict[str, str] | None = None,
             times: int = 1, after: int = 0) -> None:
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
                        return Response(failure.body, failure.status, headers=failure.headers,
                                        media_type="application/json")
                    return JSONResponse({"message": f"fake failure {failure.status}"}, failure.status,
                                        headers=failure.headers)
        return None

    # --- lifecycle ---------------------------------------------------------------------------------
    def start(self) -> "FakeService":
        app = Starlette(routes=self.routes())
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)


def int_param(request: Request, name: str, default: int, *, low: int = 0, high: int = 10**6) -> int | None:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError:
        return None
    return number if low <= number <= high else None


