"""The baseline: a bare Bolt AsyncApp whose listeners only ``ack()``, served exactly as
``genie serve`` serves Genie (Bolt's Starlette adapter, uvicorn with the same options and the
same INFO logging, the same signing secret, bot token and Web API base URL).

    SLACK_SIGNING_SECRET=… SLACK_BOT_TOKEN=xoxb-… SLACK_API_URL=http://127.0.0.1:PORT/api/ \\
        python -m bench.bare_app --port 3001

For the web and API rows it also answers ``POST /link/{token}`` (reads the form, returns a
small page) and ``POST /v2/alerts`` (reads the JSON, answers 202): the cost of the server
stack alone, next to which Genie's page and API costs are shown.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os

import uvicorn
from slack_bolt.adapter.starlette.async_handler import AsyncSlackRequestHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.web.async_client import AsyncWebClient
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Route


def build() -> Starlette:
    app = AsyncApp(
        client=AsyncWebClient(token=os.environ["SLACK_BOT_TOKEN"], base_url=os.environ["SLACK_API_URL"]),
        signing_secret=os.environ["SLACK_SIGNING_SECRET"],
        process_before_response=False,
        raise_error_for_unhandled_request=False,
    )

    async def only_ack(ack) -> None:
        await ack()

    app.action("alert_acknowledge")(only_ack)
    app.command("/genie")(only_ack)
    handler = AsyncSlackRequestHandler(app)

    async def slack_events(request: Request) -> Response:
        return await handler.handle(request)

    async def form_post(request: Request) -> Response:
        form = await request.form()
        return HTMLResponse(f"<!doctype html><title>ok</title><p>{len(form)} fields</p>")

    async def api_post(request: Request) -> Response:
        body = json.loads(await request.body())
        return JSONResponse(
            {"result": "Request will be processed", "took": 0.0, "requestId": str(len(body))}, status_code=202
        )

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    return Starlette(
        routes=[
            Route("/slack/events", slack_events, methods=["POST"]),
            Route("/link/{token}", form_post, methods=["POST"]),
            Route("/v2/alerts", api_post, methods=["POST"]),
            Route("/healthz", healthz, methods=["GET"]),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=3001)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = uvicorn.Config(
        build(), host=args.host, port=args.port, log_level="info", proxy_headers=True, server_header=False
    )
    asyncio.run(uvicorn.Server(config).serve())


if __name__ == "__main__":
    main()
