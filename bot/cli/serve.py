"""``genie serve``: Slack, web pages and the API — and, unless ``--no-worker``, the background loops
(outbox delivery, escalations, heartbeats, e-mail and webhook pages, hand-offs) in the same process.
``genie worker`` (``bot.cli.worker``) runs those loops without serving.

    genie serve                      # everything in one process (the default)
    genie serve --no-worker          # serving only; a `genie worker` process delivers
    genie worker                     # the background loops only
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import importlib.util
import logging
import os
import signal
import socket
from collections.abc import Callable, Coroutine
from functools import partial
from typing import Any

from bot.cli.common import load_settings
from bot.logs import install_log_redaction, print_access_log_as_is
from migrations.apply import upgrade
from storage.session import make_engine, make_sessionmaker


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def event_loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop's loop when asked or (``auto``) installed — a dependency of Genie, so normally —
    else asyncio's own (None)."""
    if choice == "uvloop" or (choice == "auto" and installed("uvloop")):
        import uvloop

        return uvloop.new_event_loop
    return None


def freeze_start_up() -> None:
    """Put what start-up made — modules, the app, its routes, SQLAlchemy's mappers, ~160,000
    objects — out of the garbage collector's reach (``gc.freeze``), once the process is ready.
    Each full collection walked all of them: 85–125 ms with the event loop stopped, a few times
    a minute under load, and every request in flight waited (the click ack's p99 at 200/s was
    one such pause: bench/RESULTS.md, "Issue 14, fifth round"). They live as long as the process;
    what is made afterwards is collected as before."""
    gc.collect()
    gc.freeze()


def run_forever(main: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        runner.run(main())


def stops_by_itself(server: type) -> type:
    """uvicorn's ``Server`` class, except that a shutdown signal it caught is not raised again once
    ``serve()`` returns. uvicorn (0.29 on) raises it again so that the program around it stops as
    the signal asks; but Genie still has its database pool to close after ``serve()``, and the
    signal raised again ended that half-way: SIGTERM's default action killed the process before
    the pool was closed, and under asyncio's runner SIGINT cancelled the close (``Exception
    closing connection … CancelledError`` logged at every Ctrl-C). Genie stops by itself instead:
    the pool closed, a last log line, exit status 0."""

    class Server(server):
        @contextlib.contextmanager
        def capture_signals(self):
            with super().capture_signals():
                yield
                self._captured_signals = []  # it shut down because of them: nothing to raise again

    return Server


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the app (Bolt, Starlette, uvicorn) is a second of start-up
    # that every other command would pay for nothing.
    import uvicorn

    from bot.server import build_asgi_app, make_runtime, uvicorn_config

    settings = load_settings(socket_mode=args.socket_mode)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    print_access_log_as_is()
    http = args.http if args.http != "auto" else ("httptools" if installed("httptools") else "h11")

    async def run(sock: socket.socket | None = None, background: bool = not args.no_worker) -> None:
        engine = make_engine(settings.database_url)
        try:
            if not args.no_migrate and sock is None:
                await upgrade(engine)
            rt = await make_runtime(settings, make_sessionmaker(engine))
            app = build_asgi_app(rt, run_background=background)
            config = uvicorn_config(app, settings, args.host, args.port, log_level="info", http=http)
            freeze_start_up()
            logging.getLogger("bot").info(
                "Genie listening on http://%s:%s (public URL %s)%s",
                args.host,
                args.port,
                settings.base_url,
                "" if background else "; background work is left to another process",
            )
            await stops_by_itself(uvicorn.Server)(config).serve(sockets=[sock] if sock is not None else None)
        finally:
            await engine.dispose()
        logging.getLogger("bot").info("Genie stopped; its database connections are closed")

    if args.workers <= 1:
        run_forever(run, args.loop)
        return 0
    if not args.no_migrate:
        asyncio.run(migrate(settings.database_url))  # once, before the processes start
    return serve_forked(args, run)


async def migrate(url: str) -> None:
    engine = make_engine(url)
    try:
        await upgrade(engine)
    finally:
        await engine.dispose()


def listening_socket(host: str, port: int) -> socket.socket:
    """Bound and listening, as uvicorn binds its own: from ``getaddrinfo``, so its ``proto`` is TCP
    and asyncio sets TCP_NODELAY on every accepted connection (``tests/loopback.py`` says why)."""
    family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[
        0
    ]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(address)
    sock.listen(2048)
    return sock


def serve_forked(args: argparse.Namespace, run: Callable[..., Coroutine[Any, Any, None]]) -> int:
    """``--workers N``: N serving processes forked from this one, sharing its listening socket (the
    kernel spreads connections over them). The first also runs the background loops (unless
    ``--no-worker``); the others wake it after their commits (``bot.wakeup``). This process only
    supervises: SIGTERM or SIGINT is passed on as SIGTERM (each shuts down gracefully); if one
    exits on its own, the others are stopped and its status is this command's."""
    sock = listening_socket(args.host, args.port)
    children: list[int] = []
    for i in range(args.workers):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child's exit is what the parent sees
            code = 0
            try:
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                signal.signal(signal.SIGINT, signal.default_int_handler)
                run_forever(partial(run, sock, not args.no_worker and i == 0), args.loop)
            except KeyboardInterrupt:  # Ctrl-C reaches the whole process group: a normal stop
                pass
            except BaseException:
                logging.getLogger("bot").exception("serving process %d failed", i + 1)
                code = 1
            finally:
                logging.shutdown()
            os._exit(code)
        children.append(pid)
    sock.close()
    stopping = False

    def stop_children(*_: object) -> None:
        nonlocal stopping
        if stopping:
            return
        stopping = True
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop_children)
    signal.signal(signal.SIGINT, stop_children)
    status = 0
    alive = set(children)
    while alive:
        try:
            pid, code = os.wait()
        except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for old kernels
            continue
        alive.discard(pid)
        exit_code = os.waitstatus_to_exitcode(code)
        if not stopping:  # one died on its own: take the others down with it
            logging.getLogger("bot").error("serving process %d exited with %d; stopping the others", pid, exit_code)
            status = exit_code or 1
            stop_children()
    return status


def add_runtime_options(p: argparse.ArgumentParser) -> None:
    """Options ``genie serve`` and ``genie worker`` share."""
    p.add_argument("--no-migrate", action="store_true", help="do not apply database migrations first")
    p.add_argument(
        "--loop",
        choices=["auto", "asyncio", "uvloop"],
        default="auto",
        help="event loop (default: uvloop when installed, as it is with Genie)",
    )


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run Slack, web pages and the API (and the background loops) in one process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode (SLACK_APP_TOKEN)")
    p.add_argument(
        "--no-worker",
        action="store_true",
        help="serve only: leave outbox delivery, escalations, heartbeats, e-mail/webhook pages and hand-offs "
        "to `genie worker` processes (each commit wakes them)",
    )
    p.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="serve from N processes on one port (the first also runs the background loops unless "
        "--no-worker); for PostgreSQL — on SQLite the processes queue for the file's one write lock",
    )
    p.add_argument(
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="HTTP parser (default: httptools, which Genie installs; h11: the pure-Python one)",
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_serve)
