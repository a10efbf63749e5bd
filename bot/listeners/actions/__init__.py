from slack_bolt.async_app import AsyncApp

from bot.ids import Action
from bot.listeners.actions import alerts
from bot.listeners.actions.linking import ack_only, disconnect


def register(app: AsyncApp) -> None:
    # Bolt tries each listener's matcher in turn until one matches: the alert buttons, the
    # requests Genie takes most, come first (an action id matches one listener only).
    app.action(Action.ALERT_ACKNOWLEDGE)(alerts.acknowledge)
    app.action(Action.ALERT_CLOSE)(alerts.close)
    app.action(Action.ALERT_ASSIGN)(alerts.assign)
    app.action(Action.ALERT_TAKE)(alerts.take)
    app.action(Action.CONNECT_LINK)(ack_only)
    app.action(Action.HOME_DISCONNECT)(disconnect)
