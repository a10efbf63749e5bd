"""Slack glue. Each folder exposes ``register(app)``; listeners ack first, call one service,
hand the result to a builder and make one Slack call. ``context`` holds what every listener
reads (the runtime, who acted, ``tell``), ``middleware`` Genie's Bolt middleware, ``errors`` the
error handler; the screen in front of Bolt is ``bot.slack.screening``."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from bot.listeners import actions, commands, errors, events, middleware
from bot.runtime import Runtime


def register_listeners(app: AsyncApp, rt: Runtime) -> None:
    middleware.install(app, rt)
    actions.register(app)  # (first: Bolt tries listeners in order, and clicks are the most)
    commands.register(app)
    events.register(app)
    app.error(errors.on_error)
