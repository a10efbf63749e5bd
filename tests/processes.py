"""Genie as operating-system processes, for the tests that look from the outside: ``genie serve``
runs as a subprocess (``python -m bot serve``) with an environment of its own, its output goes
to a log file, and the test talks to it over HTTP — as an operator's supervisor and a load
balancer do.

    server = GenieServer.start(clean_env(DATABASE_URL=url, ...), free_port(), cwd=tmp_path)
    await server.wait_healthy()
    ...
    server.kill()      # SIGKILL: a crash, an OOM kill — no shutdown, no cleanup
    server.stop()      # SIGTERM: a graceful shutdown (SIGKILL after 15 s)
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests import forkserver

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


#: The fake Slack takes any number of calls unless a test limits it (``limit_per_channel``), so
#: tests do not pace channels or collapse storms into digests unless they ask to
#: (``tests/test_storm.py`` sets Slack's real pace): a test posting 20 alerts to a channel
#: still sees 20 messages, in well under 20 s.
UNPACED = {
    "GENIE_SLACK_CHANNEL_RATE": "100",
    "GENIE_SLACK_CHANNEL_BURST": "100",
    "GENIE_SLACK_UPDATE_RATE": "100",
    "GENIE_SLACK_UPDATE_BURST": "100",
    "GENIE_SLACK_DIGEST_THRESHOLD": "0",
}


def clean_env(**settings: str) -> dict[str, str]:
    """This machine's environment without any Genie or Slack setting, plus ``UNPACED`` and
    ``settings``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "SLACK_")) and k != "DATABASE_URL"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(UNPACED)
    env.update(settings)
    return env


@dataclass
class GenieServer:
    url: str
    log_path: Path
    proc: forkserver.ForkedProcess

    @classmethod
    def start(
        cls, env: dict[str, str], port: int, *, cwd: Path, log_path: Path | None = None, args: tuple[str, ...] = ()
    ) -> GenieServer:
        """``genie serve --port PORT ARGS`` in ``cwd``; returns at once (see ``wait_healthy``)."""
        log_path = log_path or cwd / f"genie-serve-{port}.log"
        log_path.write_bytes(b"")
        proc = forkserver.start(["serve", "--port", str(port), *args], env=env, cwd=cwd, output=log_path)
        return cls(f"http://127.0.0.1:{port}", log_path, proc)

    @classmethod
    def start_worker(cls, env: dict[str, str], *, cwd: Path, log_path: Path, args: tuple[str, ...] = ()) -> GenieServer:
        """``genie worker ARGS``: no HTTP (``url`` is empty); ``wait_log`` for its start-up line."""
        log_path.write_bytes(b"")
        return cls("", log_path, forkserver.start(["worker", *args], env=env, cwd=cwd, output=log_path))

    async def wait_log(self, text: str, timeout: float = 30.0) -> None:
        """Until ``text`` is in the process's output; fails with the log if it exits first."""
        deadline = time.monotonic() + timeout
        while text not in self.log():
            if self.proc.poll() is not None:
                raise AssertionError(f"process exited with {self.proc.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{text!r} not logged after {timeout}s:\n{self.log()}")
            await asyncio.sleep(0.05)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)

    def kill(self) -> None:
        """SIGKILL: no shutdown, no cleanup, exactly like a crash or an OOM kill."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    async def wait_healthy(self, timeout: float = 30.0) -> None:
        """Until ``/healthz`` answers 200; fails with the server's log if it exits or never does."""
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.url, timeout=2) as http:
            while True:
                if self.proc.poll() is not None:
                    raise AssertionError(f"genie serve exited with {self.proc.returncode}:\n{self.log()}")
                try:
                    if (await http.get("/healthz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise AssertionError(f"genie serve not healthy after {timeout}s:\n{self.log()}")
                await asyncio.sleep(0.1)
