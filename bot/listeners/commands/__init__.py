from slack_bolt.async_app import AsyncApp

from bot.listeners.commands.genie import genie_command


def register(app: AsyncApp) -> None:
    app.command("/genie")(genie_command)
