from slack_bolt.async_app import AsyncApp

from bot.listeners.events.app_home import app_home_opened
from bot.listeners.events.directory import directory_member
from bot.listeners.events.installs import app_uninstalled, tokens_revoked


def register(app: AsyncApp) -> None:
    app.event("app_home_opened")(app_home_opened)
    app.event("app_uninstalled")(app_uninstalled)
    app.event("tokens_revoked")(tokens_revoked)
    app.event("team_join")(directory_member)
    app.event("user_change")(directory_member)
