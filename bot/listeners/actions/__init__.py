from slack_bolt.async_app import AsyncApp

from bot.ids import Action
from bot.listeners.actions import alerts
from bot.listeners.actions.linking import ack_only, disconnect


def register(app: AsyncApp) -> None:
    app.action(Action.CONNECT_LINK)(ack_only)
    app.action(Action.HOME_DISCONNECT)(disconnect)
    app.action(Action.ALERT_ACKNOWLEDGE)(alerts.acknowledge)
    app.action(Action.ALERT_CLOSE)(alerts.close)
    app.action(Action.ALERT_ASSIGN)(alerts.assign)
    app.action(Action.ALERT_TAKE)(alerts.take)
