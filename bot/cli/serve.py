"""``genie serve``: Slack, web pages and the API in one process."""

from __future__ import annotations

import argparse
import asyncio
import logging

from bot.cli.common import load_settings
from bot.logs import install_log_redaction
from migrations.apply import upgrade
from storage.session import make_engine, make_sessionmaker


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here, not at the top: the app (Bolt, Starlette, uvicorn) is a second of start-up
    # that every other command would pay for nothing.
    import uvicorn

    from bot.server import build_asgi_app, make_runtime, uvicorn_config

    settings = load_settings(socket_mode=args.socket_mode)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    install_log_redaction()

    async def run() -> None:
        engine = make_engine(settings.database_url)
        try:
            if not args.no_migrate:
                await upgrade(engine)
            rt = await make_runtime(settings, make_sessionmaker(engine))
            app = build_asgi_app(rt)
            config = uvicorn_config(app, settings, args.host, args.port, log_level="info")
            logging.getLogger("bot").info(
                "Genie listening on http://%s:%s (public URL %s)", args.host, args.port, settings.base_url
            )
            await uvicorn.Server(config).serve()
        finally:
            await engine.dispose()

    asyncio.run(run())
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="run Slack, web pages and the API in one process")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=3000)
    p.add_argument("--socket-mode", action="store_true", help="connect to Slack over Socket Mode (SLACK_APP_TOKEN)")
    p.add_argument("--no-migrate", action="store_true", help="do not apply database migrations first")
    p.set_defaults(func=cmd_serve)
