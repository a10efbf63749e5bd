"""``genie worker``: the background loops without serving HTTP — outbox delivery to Slack, the
escalation engine, the heartbeat monitor, e-mail and webhook pages, on-call hand-offs, cleanup
(``bot.background``). Beside ``genie serve --no-worker`` processes, so that rendering and Slack
calls never share an event loop with the requests Slack and people are waiting on.

SIGTERM or SIGINT: stop claiming, let the Slack calls in flight finish (up to 30 s), exit 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal

from bot.cli.common import admin_settings
from bot.cli.serve import add_runtime_options, freeze_start_up, run_forever
from bot.logs import install_log_redaction
from migrations.apply import upgrade
from storage.session import make_engine, make_sessionmaker


def cmd_worker(args: argparse.Namespace) -> int:
    from bot.background import Background
    from bot.server import build_worker_app, make_runtime

    settings = admin_settings()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()
    log = logging.getLogger("bot")

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            if not args.no_migrate:
                await upgrade(engine)
            rt = await make_runtime(settings, make_sessionmaker(engine))
            background = Background(rt)
            freeze_start_up()
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, stop.set)
            if rt.clients is not None:  # one kept-alive HTTP session for every Slack call
                await rt.clients.open(rt.slack, rt.worker.client if rt.worker is not None else None)
            try:
                await background.start()
                log.info(
                    "Genie worker running (outbox %s); SIGTERM stops it",
                    "on" if rt.worker is not None else "off: Slack is not configured",
                )
                if args.port is not None:
                    await serve_health(build_worker_app(rt), settings, args.host, args.port, stop)
                else:
                    await stop.wait()
                log.info("Genie worker stopping: finishing the Slack calls in flight")
                await background.stop()
            finally:
                if rt.clients is not None:
                    await rt.clients.close()
            log.info("Genie worker stopped")
        finally:
            await engine.dispose()

    run_forever(run, args.loop)
    return 0


async def serve_health(app, settings, host: str, port: int, stop: asyncio.Event) -> None:
    """``/healthz``, ``/readyz``, ``/metrics`` on ``host:port`` until ``stop`` is set."""
    import uvicorn

    from bot.server import uvicorn_config

    server = uvicorn.Server(uvicorn_config(app, settings, host, port, log_level="warning", lifespan="off"))
    server.capture_signals = contextlib.nullcontext  # SIGTERM is the worker's (``stop``), not uvicorn's
    task = asyncio.create_task(server.serve())
    try:
        await stop.wait()
    finally:
        server.should_exit = True
        await task


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "worker",
        help="run the background loops (Slack delivery, escalations, heartbeats, pages, hand-offs) without serving",
    )
    p.add_argument("--host", default="127.0.0.1", help="with --port: the address to serve health and metrics on")
    p.add_argument(
        "--port", type=int, default=None, help="serve /healthz, /readyz and /metrics on this port (default: none)"
    )
    add_runtime_options(p)
    p.set_defaults(func=cmd_worker)
