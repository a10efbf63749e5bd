"""The whole linking journey as a person walks it: /genie connect in Slack, open the link,
sign in, confirm, see the DM and App Home, then undo it three ways."""

from __future__ import annotations

from urllib.parse import urlsplit

from tests.conftest import ALICE, BOB, PASSWORD, eventually, page_text
from tests.helpers import ack_json, block_text, buttons, connect_url, link_through_slack


async def _profile_recorded(genie, slack_user_id: str):
    async def check():
        return await genie.scalar(
            "SELECT slack_name FROM link_request WHERE slack_user_id = :u AND superseded_at IS NULL", u=slack_user_id
        )

    return await eventually(check)


async def test_connect_sign_in_confirm_dm_and_home(genie):
    await genie.add_user("alice@example.com", "Alice Smith")

    response = await genie.slack.command(ALICE, "connect")
    body = ack_json(response)
    assert body["response_type"] == "ephemeral"
    text = block_text(body["blocks"])
    assert "<@U0ALICE>" in text and "not yet connected" in text and "expires in 10 minutes" in text
    url = connect_url(response)
    assert url.startswith(genie.url + "/link/")
    assert await _profile_recorded(genie, "U0ALICE") == "Alice Smith"

    browser = genie.browser()
    path = urlsplit(url).path
    page = await browser.get(path)
    assert page.status_code == 200
    assert "Sign in to Genie" in page_text(page) and "Alice Smith" in page_text(page)
    assert page.headers["referrer-policy"] == "no-referrer"
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0

    signed_in = await browser.post("/login", {"email": "alice@example.com", "password": PASSWORD, "next": path})
    assert signed_in.status_code == 303 and signed_in.headers["location"] == path
    cookie = signed_in.headers["set-cookie"]
    assert "genie_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie  # base URL is http here

    confirm = await browser.get(path)
    words = page_text(confirm)
    assert "Connect this Slack account?" in words
    assert "Alice Smith U0ALICE · alice@example.com" in words and "acme" in words
    assert "alice@example.com" in words and "Careful" not in words
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0  # GET never links

    done = await browser.post(path)
    assert done.status_code == 200, done.text
    assert "You're connected" in page_text(done)
    rows = await genie.rows(
        "SELECT u.email, l.workspace_id, l.slack_user_id, l.slack_email FROM slack_link l "
        'JOIN "user" u ON u.id = l.user_id'
    )
    assert rows == [("alice@example.com", "T0GENIE01", "U0ALICE", "alice@example.com")]

    dm = await genie.fake.wait_for("chat.postMessage", channel="U0ALICE")
    assert "You're connected as alice@example.com" in dm[0].args["text"]
    home = await genie.fake.wait_for("views.publish", user_id="U0ALICE")
    assert "Connected as Alice Smith" in block_text(home[-1].args["view"]["blocks"])
    assert "home_disconnect" in buttons(home[-1].args["view"]["blocks"])

    # Running it again says as whom, and offers Disconnect.
    again = ack_json(await genie.slack.command(ALICE, "connect"))
    assert "connected to Genie as *Alice Smith* (alice@example.com)" in block_text(again["blocks"])
    assert buttons(again["blocks"])["home_disconnect"]["confirm"]["title"]["text"] == "Disconnect from Genie?"

    status = ack_json(await genie.slack.command(ALICE, "status"))
    assert "connected to Genie as *Alice Smith*" in status["text"]

    # The link worked once.
    reused = await browser.post(path)
    assert reused.status_code == 410 and "already been used" in page_text(reused)


async def test_app_home_disconnect_removes_link_and_republishes(genie):
    await link_through_slack(genie, ALICE, "alice@example.com")
    genie.fake.clear()

    opened = await genie.slack.open_home(ALICE)
    assert opened.status_code == 200
    home = await genie.fake.wait_for("views.publish", user_id="U0ALICE")
    view = home[-1].args["view"]
    assert view["type"] == "home"
    disconnect = buttons(view["blocks"])["home_disconnect"]
    assert disconnect["confirm"]["confirm"]["text"] == "Disconnect"

    genie.fake.clear()
    clicked = await genie.slack.block_action(ALICE, "home_disconnect", disconnect["value"], container="view")
    assert clicked.status_code == 200
    home = await genie.fake.wait_for("views.publish", user_id="U0ALICE")  # published after the unlink commits
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0
    assert "not connected" in block_text(home[-1].args["view"]["blocks"])


async def test_unlinked_home_says_how_to_connect(genie):
    await genie.slack.open_home(BOB)
    home = await genie.fake.wait_for("views.publish", user_id="U0BOB")
    text = block_text(home[-1].args["view"]["blocks"])
    assert "You are not connected" in text and "/genie connect" in text


async def test_disconnect_from_ephemeral_replaces_message(genie):
    await link_through_slack(genie, ALICE, "alice@example.com")
    clicked = await genie.slack.block_action(ALICE, "home_disconnect", "disconnect", container="ephemeral")
    assert clicked.status_code == 200
    said = await genie.fake.wait_for("response_url")
    assert said[-1].args["replace_original"] is True
    assert "Disconnected" in said[-1].args["text"]
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0


async def test_slash_disconnect_and_status_and_help(genie):
    await link_through_slack(genie, ALICE, "alice@example.com")
    gone = ack_json(await genie.slack.command(ALICE, "disconnect"))
    assert "Disconnected" in gone["text"] and "alice@example.com" in gone["text"]
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0
    again = ack_json(await genie.slack.command(ALICE, "disconnect"))
    assert "nothing to disconnect" in again["text"]
    status = ack_json(await genie.slack.command(ALICE, "status"))
    assert "not connected" in status["text"]
    helped = ack_json(await genie.slack.command(ALICE, "help"))
    assert "/genie connect" in block_text(helped["blocks"])
    unknown = ack_json(await genie.slack.command(ALICE, "frobnicate now"))
    assert "I don't know `frobnicate`" in block_text(unknown["blocks"]) and "/genie status" in block_text(
        unknown["blocks"]
    )
    empty = ack_json(await genie.slack.command(ALICE, ""))
    assert "/genie disconnect" in block_text(empty["blocks"])


async def test_account_page_lists_and_disconnects(genie):
    browser = await link_through_slack(genie, ALICE, "alice@example.com")
    page = await browser.get("/account")
    assert page.status_code == 200
    words = page_text(page)
    assert "Alice Smith" in words and "U0ALICE" in words and "acme" in words
    link_id = await genie.scalar("SELECT id FROM slack_link")
    genie.fake.clear()
    gone = await browser.post(f"/account/links/{link_id}/disconnect")
    assert gone.status_code == 303 and gone.headers["location"] == "/account?disconnected=1"
    assert await genie.scalar("SELECT count(*) FROM slack_link") == 0
    home = await genie.fake.wait_for("views.publish", user_id="U0ALICE")
    assert "not connected" in block_text(home[-1].args["view"]["blocks"])
    after = await browser.get("/account?disconnected=1")
    assert "Disconnected." in page_text(after) and "No Slack account is connected" in page_text(after)


async def test_account_needs_sign_in_and_sign_out_ends_session(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    browser = genie.browser()
    anonymous = await browser.get("/account")
    assert anonymous.status_code == 303 and anonymous.headers["location"] == "/login?next=/account"
    await browser.login("alice@example.com")
    assert (await browser.get("/account")).status_code == 200
    assert await genie.scalar("SELECT count(*) FROM web_session") == 1
    out = await browser.post("/logout")
    assert out.status_code == 303
    assert await genie.scalar("SELECT count(*) FROM web_session") == 0
    assert (await browser.get("/account")).status_code == 303
