"""``python -m bot ARGS`` as a real process, without paying Python's start-up for each one.

A test that runs ``genie`` (``python -m bot …``) as an operator would needs a process of its own:
its own environment, working directory, standard input and output, exit status, and — for
``genie serve`` — a pid that can be killed. Starting Python and importing Genie (Bolt, slack-sdk,
SQLAlchemy, Alembic) costs about a second each time, which was a third of the suite's run time.

So each test process starts one *zygote* on first use: a Python process that has imported Genie
and waits on a Unix socket. For every command it forks: the fork changes to the command's working
directory, replaces its environment, points file descriptors 0/1/2 at the files the test chose,
and runs ``bot.cli.main`` exactly as ``python -m bot`` does, then exits with its status; a small
per-command parent reports the pid at once and the exit status (``-SIGNAL`` when killed) at the
end. Nothing of Genie is mocked or shared: each command is a separate operating-system process
that starts from a pristine imported state, as if Python had just loaded it.

    done = run(["user", "list"], env=env, cwd=tmp_path)             # like subprocess.run(text=True)
    proc = start(["serve", "--port", "8000"], env=env, cwd=tmp_path, output=log_path)
    proc.kill(); proc.wait()
"""

from __future__ import annotations

import atexit
import json
import os
import select
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


# --- the client, in the test process -------------------------------------------------------------
class ForkedProcess:
    """The part of ``subprocess.Popen`` the tests use, for a process the zygote forked."""

    def __init__(self, conn: socket.socket, args: list[str]) -> None:
        self.args = args
        self._conn = conn
        self._file = conn.makefile("r", encoding="utf-8")
        self.pid: int = json.loads(self._file.readline())["pid"]
        self.returncode: int | None = None
        self._lock = threading.Lock()

    def _read_status(self, timeout: float | None) -> int | None:
        with self._lock:
            if self.returncode is not None:
                return self.returncode
            ready, _, _ = select.select([self._conn], [], [], timeout)
            if not ready:
                return None
            line = self._file.readline()
            self.returncode = int(json.loads(line)["returncode"]) if line else -signal.SIGKILL
            self._file.close()
            self._conn.close()
            return self.returncode

    def poll(self) -> int | None:
        return self._read_status(0.0)

    def wait(self, timeout: float | None = None) -> int:
        status = self._read_status(timeout)
        if status is None:
            raise subprocess.TimeoutExpired(self.args, timeout or 0)
        return status

    def send_signal(self, sig: int) -> None:
        if self.returncode is None:
            try:
                os.kill(self.pid, sig)
            except ProcessLookupError:
                pass

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


class _Zygote:
    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="genie-zygote-")
        self.path = os.path.join(self.dir, "sock")
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.forkserver import _zygote_main; _zygote_main()", self.path],
            cwd=REPO,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while not os.path.exists(self.path):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("the test fork server did not start")
            time.sleep(0.01)
        atexit.register(self.close)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def request(self, payload: dict) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        conn.connect(self.path)
        conn.sendall(json.dumps(payload).encode() + b"\n")
        return conn


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _get_zygote() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
        return _zygote


def start(
    args: list[str] | tuple[str, ...],
    *,
    env: dict[str, str],
    cwd: Path | str,
    stdin: Path | str | None = None,
    output: Path | str | None = None,
    stderr: Path | str | None = None,
) -> ForkedProcess:
    """``python -m bot ARGS`` with ``env`` in ``cwd``: stdin from the file ``stdin`` (else
    /dev/null), stdout to ``output`` and stderr to ``stderr`` (else to ``output`` too)."""
    payload = {
        "args": list(args),
        "env": dict(env),
        "cwd": str(cwd),
        "stdin": str(stdin) if stdin else os.devnull,
        "stdout": str(output) if output else os.devnull,
        "stderr": str(stderr) if stderr else (str(output) if output else os.devnull),
    }
    return ForkedProcess(_get_zygote().request(payload), list(args))


def run(
    args: list[str] | tuple[str, ...],
    *,
    env: dict[str, str],
    cwd: Path | str,
    input: str | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess:
    """Like ``subprocess.run([python, -m, bot, *args], capture_output=True, text=True)``."""
    with tempfile.TemporaryDirectory(prefix="genie-run-") as tmp:
        files = {name: Path(tmp) / name for name in ("stdin", "stdout", "stderr")}
        files["stdin"].write_text(input or "", encoding="utf-8")
        proc = start(args, env=env, cwd=cwd, stdin=files["stdin"], output=files["stdout"], stderr=files["stderr"])
        try:
            code = proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        return subprocess.CompletedProcess(
            [sys.executable, "-m", "bot", *args],
            code,
            files["stdout"].read_text(encoding="utf-8", errors="replace"),
            files["stderr"].read_text(encoding="utf-8", errors="replace"),
        )


# --- the zygote ----------------------------------------------------------------------------------
def _zygote_main() -> None:
    import selectors

    path = sys.argv[1]
    # The imports ``python -m bot`` would make, done once; a fork starts from here.
    import bot.cli  # noqa: F401
    import bot.server  # noqa: F401
    import migrations.apply  # noqa: F401

    sys.path[:] = [str(REPO) if p in ("", ".") else p for p in sys.path]
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the per-command parents reap themselves
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path + ".tmp")
    listener.listen(64)
    os.rename(path + ".tmp", path)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    selector.register(sys.stdin, selectors.EVENT_READ)  # closed when the test process ends
    while True:
        for key, _ in selector.select():
            if key.fileobj is sys.stdin:
                os._exit(0)
            conn, _ = listener.accept()
            if os.fork() == 0:
                listener.close()
                signal.signal(signal.SIGCHLD, signal.SIG_DFL)
                _command_parent(conn)
            conn.close()


def _command_parent(conn: socket.socket) -> None:
    """Forks the command, reports its pid, waits for it, reports its status; never returns."""
    try:
        request = json.loads(conn.makefile("r", encoding="utf-8").readline())
        pid = os.fork()
        if pid == 0:
            conn.close()
            _command(request)
        conn.sendall(json.dumps({"pid": pid}).encode() + b"\n")
        _, status = os.waitpid(pid, 0)
        code = os.waitstatus_to_exitcode(status)
        conn.sendall(json.dumps({"returncode": code}).encode() + b"\n")
    finally:
        os._exit(0)


def _command(request: dict) -> None:
    """In the forked command: become ``python -m bot ARGS`` in its own directory and environment."""
    import io
    import random
    import traceback

    code = 1
    try:
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        for fd, name, flags in (
            (0, "stdin", os.O_RDONLY),
            (1, "stdout", os.O_WRONLY | os.O_CREAT | os.O_APPEND),
            (2, "stderr", os.O_WRONLY | os.O_CREAT | os.O_APPEND),
        ):
            opened = os.open(request[name], flags, 0o644)
            os.dup2(opened, fd)
            os.close(opened)
        sys.stdin = io.TextIOWrapper(open(0, "rb", closefd=False), encoding="utf-8")
        sys.stdout = io.TextIOWrapper(
            open(1, "wb", buffering=0, closefd=False), encoding="utf-8", line_buffering=True, write_through=True
        )
        sys.stderr = io.TextIOWrapper(
            open(2, "wb", buffering=0, closefd=False),
            encoding="utf-8",
            errors="backslashreplace",
            line_buffering=True,
            write_through=True,
        )
        sys.argv = [str(REPO / "bot" / "__main__.py"), *request["args"]]
        random.seed()
        from bot.cli import main

        try:
            result = main(request["args"])
            code = 0 if result is None else int(result)
        except SystemExit as exit_:
            if exit_.code is None or isinstance(exit_.code, int):
                code = exit_.code or 0
            else:
                print(exit_.code, file=sys.stderr)
                code = 1
        except KeyboardInterrupt:
            code = 130
        except BaseException:
            traceback.print_exc()
            code = 1
        # What the interpreter does on its way out: wait for non-daemon threads, run atexit.
        for thread in threading.enumerate():
            if thread is not threading.main_thread() and not thread.daemon:
                thread.join()
        atexit._run_exitfuncs()
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)
