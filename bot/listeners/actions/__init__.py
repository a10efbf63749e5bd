from slack_bolt.async_app import AsyncApp

from bot.ids import Action
from bot.listeners.actions.linking import ack_only, disconnect


def register(app: AsyncApp) -> None:
    app.action(Action.CONNECT_LINK)(ack_only)
    app.action(Action.HOME_DISCONNECT)(disconnect)
