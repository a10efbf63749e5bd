"""Multi-workspace mode: install through Slack's OAuth v2 flow (answered by the fake Slack's
``oauth.v2.access``), tokens looked up per request and per outbox message in slack-sdk's
installation store on Genie's database, Enterprise Grid org-wide installs, uninstall cleanup."""

from __future__ import annotations

import re
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.config import ConfigError, Settings
from bot.services import alerts, slack_links, teams, users
from bot.services.alerts import CreateAlert
from tests import forkserver
from tests.conftest import eventually
from tests.helpers import connect_url
from tests.slack_driver import SlackUser

OAUTH = {"SLACK_BOT_TOKEN": None, "SLACK_CLIENT_ID": "1234.5678", "SLACK_CLIENT_SECRET": "client-secret-0123456789"}
BETA_ALICE = SlackUser("U0BALICE", team_id="T0BETA", team_domain="beta")
GRID_BOB = SlackUser("U0GBOB", team_id="T0GRIDWS", enterprise_id="E0ORG", team_domain="grid-ws", org_install=True)


@pytest.fixture
def genie_settings() -> dict:
    return OAUTH


async def _install(genie, code: str, team_id: str | None, **kw) -> str:
    """Walk Slack's OAuth flow as a browser does: /slack/install, then Slack's redirect back."""
    token = genie.fake.grant(code, team_id, **kw)
    start = await genie.http.get("/slack/install")
    assert start.status_code in (200, 302), start.text
    cookie = re.search(r"slack-app-oauth-state=([^;]+)", start.headers["set-cookie"]).group(1)
    authorize = start.headers.get("location") or re.search(
        r'href="(https://slack.com/oauth/v2/authorize[^"]+)"', start.text
    ).group(1).replace("&amp;", "&")
    query = parse_qs(urlsplit(authorize).query)
    assert query["client_id"] == ["1234.5678"]
    assert set(query["scope"][0].split(",")) >= {"commands", "chat:write", "users:read.email"}
    assert query["redirect_uri"] == [genie.url + "/slack/oauth_redirect"]
    done = await genie.http.get(
        f"/slack/oauth_redirect?code={code}&state={query['state'][0]}",
        headers={"Cookie": f"slack-app-oauth-state={cookie}"},
    )
    assert done.status_code == 200, done.text
    return token


async def test_oauth_settings_are_validated():
    with pytest.raises(ConfigError, match="^SLACK_CLIENT_SECRET"):
        Settings.from_env({"SLACK_CLIENT_ID": "1.2", "SLACK_SIGNING_SECRET": "s" * 20})
    with pytest.raises(ConfigError, match="^SLACK_SIGNING_SECRET"):
        Settings.from_env({"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "c" * 20})
    assert (
        Settings.from_env(
            {"SLACK_CLIENT_ID": "1.2", "SLACK_CLIENT_SECRET": "c" * 20, "SLACK_SIGNING_SECRET": "s" * 20}
        ).slack_mode
        == "oauth"
    )


async def test_install_then_connect_and_link_in_that_workspace_with_its_own_token(genie):
    token = await _install(genie, "code-beta", "T0BETA", team_name="Beta")
    rows = await genie.rows("SELECT team_id, enterprise_id, bot_token IS NOT NULL FROM slack_bots")
    assert rows == [("T0BETA", None, True)]
    assert [c.args.get("code") for c in genie.fake.calls("oauth.v2.access")] == ["code-beta"]

    # A state that was not issued (or was used) is refused, and nothing is installed.
    replay = await genie.http.get("/slack/oauth_redirect?code=x&state=not-a-state")
    assert replay.status_code == 400
    assert await genie.scalar("SELECT count(*) FROM slack_bots") == 1
    # A state that was issued and used once, replayed (with its cookie) for another workspace's code.
    genie.fake.grant("code-gamma", "T0GAMMA", team_name="Gamma")
    start = await genie.http.get("/slack/install")
    cookie = re.search(r"slack-app-oauth-state=([^;]+)", start.headers["set-cookie"]).group(1)
    authorize = start.headers.get("location") or re.search(
        r'href="(https://slack.com/oauth/v2/authorize[^"]+)"', start.text
    ).group(1).replace("&amp;", "&")
    state = parse_qs(urlsplit(authorize).query)["state"][0]
    token = genie.fake.grant("code-beta-again", "T0BETA", team_name="Beta")  # a reinstall: Beta's token now
    used = await genie.http.get(
        f"/slack/oauth_redirect?code=code-beta-again&state={state}",
        headers={"Cookie": f"slack-app-oauth-state={cookie}"},
    )
    assert used.status_code == 200
    again = await genie.http.get(
        f"/slack/oauth_redirect?code=code-gamma&state={state}", headers={"Cookie": f"slack-app-oauth-state={cookie}"}
    )
    assert again.status_code == 401  # Bolt: the state was consumed
    assert "code-gamma" not in [c.args.get("code") for c in genie.fake.calls("oauth.v2.access")]
    assert await genie.rows("SELECT DISTINCT team_id FROM slack_bots") == [("T0BETA",)]

    await genie.add_user("alice@example.com", "Alice Smith")
    genie.fake.add_user("U0BALICE", "Alice Smith", "alice@example.com", team_id="T0BETA")
    url = connect_url(await genie.slack.command(BETA_ALICE, "connect"))
    path = urlsplit(url).path
    browser = genie.browser()
    await browser.login("alice@example.com", next_path=path)
    await browser.get(path)
    assert (await browser.post(path)).status_code == 200
    assert await genie.rows("SELECT workspace_id, slack_user_id FROM slack_link") == [("T0BETA", "U0BALICE")]
    dm = await genie.fake.wait_for("chat.postMessage", channel="U0BALICE")
    assert dm[-1].token == token  # Beta's own bot spoke

    # The team's channel lives in Beta: its alerts are posted with Beta's token.
    async with genie.sessionmaker.begin() as s:
        team = await teams.add_team(s, "Payments", "C0BETAPAY", workspace="T0BETA")
        await alerts.create_alert(s, team, CreateAlert(message="Checkout down"), str(uuid.uuid4()))
    genie.rt.wake_outbox()
    post = await genie.fake.wait_for("chat.postMessage", channel="C0BETAPAY")
    assert post[-1].token == token


async def test_an_uninstalled_workspace_is_forgotten(genie):
    await _install(genie, "code-beta", "T0BETA")
    gone = await genie.slack.event(BETA_ALICE, {"type": "app_uninstalled", "event_ts": "1.2"})
    assert gone.status_code == 200
    await eventually(lambda: _no_bots(genie))
    # Alerts for a channel there cannot be delivered; the operator sees why.
    async with genie.sessionmaker.begin() as s:
        team = await teams.add_team(s, "Payments", "C0BETAPAY", workspace="T0BETA")
        await alerts.create_alert(s, team, CreateAlert(message="Checkout down"), str(uuid.uuid4()))
    genie.rt.wake_outbox()

    async def failed():
        return await genie.scalar("SELECT last_error FROM outbox WHERE failed_at IS NOT NULL")

    assert "not installed in workspace T0BETA" in await eventually(failed)
    assert genie.fake.calls("chat.postMessage") == []
    # A request from that workspace is no longer served.
    await genie.slack.command(BETA_ALICE, "connect")
    assert await genie.scalar("SELECT count(*) FROM link_request") == 0


async def _no_bots(genie):
    return await genie.scalar("SELECT count(*) FROM slack_bots") == 0


async def test_enterprise_grid_org_wide_install_serves_every_workspace_of_the_org(genie):
    token = await _install(genie, "code-org", None, enterprise_id="E0ORG", org_wide=True)
    rows = await genie.rows("SELECT team_id, enterprise_id, is_enterprise_install FROM slack_bots")
    assert [(t, e, bool(i)) for t, e, i in rows] == [(None, "E0ORG", True)]
    response = await genie.slack.command(GRID_BOB, "connect")
    url = connect_url(response)
    assert url.startswith(genie.url + "/link/")
    assert await genie.rows("SELECT workspace_id, slack_team_id, enterprise_id FROM link_request") == [
        ("E0ORG", "T0GRIDWS", "E0ORG")
    ]
    users_info = await genie.fake.wait_for("users.info")
    assert users_info[-1].token == token


async def test_a_workspace_that_never_installed_is_not_served(genie):
    await _install(genie, "code-beta", "T0BETA")
    stranger = SlackUser("U0X", team_id="T0NOTINSTALLED")
    response = await genie.slack.command(stranger, "connect")
    # Bolt finds no installation: it answers 200 with nothing (Slack shows nothing) and no
    # listener runs — no link, no Slack call made with anyone's token.
    assert response.status_code == 200 and response.text == ""
    assert genie.fake.calls("users.info") == []
    assert "/link/" not in response.text
    assert await genie.scalar("SELECT count(*) FROM link_request") == 0


async def test_workspace_list_shows_installations_and_admins_see_settings_on_home(genie, tmp_path):
    import asyncio
    import json

    from bot.services import access

    await _install(genie, "code-beta", "T0BETA", team_name="Beta")
    async with genie.sessionmaker.begin() as s:
        await access.set_workspace_setting(s, "T0BETA", "allow_anonymous_actions", "true")
    env = {"DATABASE_URL": genie.settings.database_url, "GENIE_SECRET_KEY": "k" * 32, "PATH": "/usr/bin:/bin"}
    done = await asyncio.to_thread(forkserver.run, ["workspace", "list", "--json"], env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = json.loads(done.stdout)
    assert [(r["workspace"], r["name"], r["settings"]) for r in rows] == [
        ("T0BETA", "Beta", {"allow_anonymous_actions": "true"})
    ]

    await genie.add_user("root@example.com", "Ada Admin", admin=True)
    async with genie.sessionmaker.begin() as s:
        # Slack vouches for it by the admin's own confirmed email: admin settings show on Home.
        req = await slack_links.issue_link(
            s,
            slack_links.SlackIdentity("T0BETA", "U0BADMIN"),
            slack_links.SlackProfile(email="root@example.com", email_confirmed=True),
            600,
        )
        await slack_links.redeem(s, req.nonce, await users.require_user(s, "root@example.com"), replace=True)
    await genie.slack.open_home(SlackUser("U0BADMIN", team_id="T0BETA"))
    home = (await genie.fake.wait_for("views.publish", user_id="U0BADMIN"))[-1]
    from tests.helpers import block_text

    assert "Anonymous actions by people who haven't connected: *allowed* in this workspace" in block_text(
        home.args["view"]["blocks"]
    )
    assert home.token.startswith("xoxb-T0BETA-")
