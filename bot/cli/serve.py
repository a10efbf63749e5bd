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
import importlib.util
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from bot.cli.common import load_settings
from bot.logs import install_log_redaction
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


def run_forever(main: Callable[[], Coroutine[Any, Any, None]], loop: str) -> None:
    with asyncio.Runner(loop_factory=event_loop_factory(loop)) as runner:
        runner.run(main())


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the app (Bolt, Starlette, uvicorn) is a second of start-up
    # that every other command would pay for nothing.
    import uvicorn

    from bot.server import build_asgi_app, make_runtime, uvicorn_config

    settings = load_settings(socket_mode=args.socket_mode)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    http = args.http if args.http != "auto" else ("httptools" if installed("httptools") else "h11")

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            if not args.no_migrate:
                await upgrade(engine)
            rt = await make_runtime(settings, make_sessionmaker(engine))
            app = build_asgi_app(rt, run_background=not args.no_worker)
            config = uvicorn_config(app, settings, args.host, args.port, log_level="info", http=http)
            logging.getLogger("bot").info(
                "Genie listening on http://%s:%s (public URL %s)%s",
                args.host,
                args.port,
                settings.base_url,
                "; background work is left to `genie worker`" if args.no_worker else "",
            )
            await uvicorn.Server(config).serve()
        finally:
            await engine.dispose()

    run_forever(run, args.loop)
    return 0


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
        "--http",
        choices=["auto", "h11", "httptools"],
        default="auto",
        help="HTTP parser (default: httptools when installed; Genie does not install it: no gain measured)",
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_serve)
