"""An ASGI app served by uvicorn on a free loopback port, in a thread of its own with its own
event loop: how the fakes of Slack, PagerDuty and OpsGenie run beside the app under test.

    class FakeThing(LoopbackServer):
        def start(self) -> "FakeThing":
            self.serve(Starlette(routes=[...]))
            return self

    fake = FakeThing().start()   # fake.url is http://127.0.0.1:<port>
    fake.stop()
"""

from __future__ import annotations

import socket
import threading
import time

import uvicorn


def loopback_socket() -> socket.socket:
    """A listening-ready TCP socket bound to a free loopback port, for ``uvicorn.Server.serve(sockets=…)``.

    Made with ``proto=IPPROTO_TCP``, not the default 0: uvicorn does not set TCP_NODELAY itself,
    asyncio's transport does (``base_events._set_nodelay``), and only on a socket whose ``proto``
    says TCP — an accepted connection inherits the listener's 0. Without it, Nagle's algorithm
    and the client's delayed ACK stall every request on a kept-alive connection by ~44 ms
    (one ``chat.update`` against the fake Slack: 44 ms, 0.6 ms with this)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


class LoopbackServer:
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def serve(self, app) -> None:
        """Serve ``app`` until stop(); returns once uvicorn is accepting connections."""
        sock = loopback_socket()
        self.url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{type(self).__name__} did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
