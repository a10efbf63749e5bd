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


class LoopbackServer:
    url: str = ""
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    def serve(self, app) -> None:
        """Serve ``app`` until stop(); returns once uvicorn is accepting connections."""
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

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=5)
