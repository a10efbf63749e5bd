"""The account-takeover path of issue 13 (items 1 and 2): a phished one-time link must not
become the victim's account.

Mallory runs ``/genie connect`` and sends Alice the link; Alice confirms. Before, Mallory's
Slack account then received Alice's password links (``genie user invite`` DMed every linked
Slack account), and the confirm page did not even warn when Slack gave no email. Now a
password link — and every notice about the account — goes only to a Slack account whose
confirmed Slack email is the person's own (asked of Slack when sending, and again when the
outbox delivers); an unknown email is a warning state with a second step; a workspace may
require a matching email; and the person hears of a new, unvouched link where they are, with
one-click undo.

Driven as people do it: signed Slack requests, the fake Slack for ``users.info`` and DMs,
browsers with cookies and CSRF, the CLI as a real process on the same database."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from bot.services import slack_links, users
from tests.conftest import MALLORY, eventually, page_text
from tests.hardening import changes, snapshot
from tests.helpers import block_text, connect_url, signed_in
from tests.slack_driver import SlackUser
from tests.test_cli import genie as run_genie
from tests.test_cli import ok
from tests.test_invite import _cli_env

OTHER_WORKSPACE = "T0OTHER01"
NEW_PASSWORD = "correct-horse-battery-staple-7"


async def _connect_path(genie, who: SlackUser) -> str:
    """``/genie connect`` as ``who``; the path of its link once Slack's profile is recorded."""
    path = urlsplit(connect_url(await genie.slack.command(who, "connect"))).path
    await genie.fake.wait_for("users.info", user=who.user_id)
    await eventually(
        lambda: genie.scalar(
            "SELECT count(*) FROM link_request WHERE slack_user_id = :u AND slack_handle IS NOT NULL", u=who.user_id
        )
    )
    return path


async def _links(genie) -> list[tuple]:
    return await genie.rows(
        "SELECT u.email, l.slack_user_id, l.email_verified, l.needs_review FROM slack_link l "
        'JOIN "user" u ON u.id = l.user_id ORDER BY l.slack_user_id'
    )


def _dms(genie, user_id: str) -> list[str]:
    return [c.args.get("text") or "" for c in genie.fake.calls("chat.postMessage") if c.args.get("channel") == user_id]


async def _outbox_idle(genie) -> bool:
    return not await genie.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL")


async def _phish(genie, who: SlackUser, victim: str, path: str | None = None):
    """The victim confirms the attacker's link, through both steps; returns their browser."""
    path = path or await _connect_path(genie, who)
    browser = await signed_in(genie, victim, path)
    assert (await browser.get(path)).status_code == 200
    second = await browser.post(path)
    assert second.status_code == 409 and "Is this Slack account really yours?" in page_text(second)
    done = await browser.post(path, {"mine": "yes"})
    assert done.status_code == 200 and "You're connected" in page_text(done)
    return browser


# --- item 1: password links only to a Slack account that verifiably is the person's -------------
async def test_a_phished_slack_account_never_receives_the_password_link(genie, db_url, tmp_path):
    await genie.add_user("alice@example.com", "Alice Smith")
    # Alice's own Slack account, whose confirmed email is hers: linked in one step.
    path = await _connect_path(genie, SlackUser("U0ALICE"))
    alice = await signed_in(genie, "alice@example.com", path)
    await alice.get(path)
    assert (await alice.post(path)).status_code == 200
    # Mallory's, in another workspace, phished into Alice's account.
    mallory = SlackUser("U0MALLORY", team_id=OTHER_WORKSPACE)
    genie.fake.add_user("U0MALLORY", "Alice Smith", "mallory@evil.example", team_id=OTHER_WORKSPACE)
    await _phish(genie, mallory, "alice@example.com")
    assert await _links(genie) == [
        ("alice@example.com", "U0ALICE", True, False),
        ("alice@example.com", "U0MALLORY", False, True),
    ]
    await eventually(lambda: _outbox_idle(genie))
    genie.fake.clear()

    run = await asyncio.to_thread(run_genie, tmp_path, _cli_env(genie, db_url), "user", "invite", "alice@example.com")
    ok(run, "invitation for alice@example.com", "also sent to them in Slack (U0ALICE)")
    assert (
        "not sent to Slack user U0MALLORY: its confirmed Slack email is mallory@evil.example, not "
        "alice@example.com — a password link goes only to a Slack account whose confirmed email is the "
        "person's own; give them the link above yourself"
    ) in run.stdout
    url = next(line for line in run.stdout.splitlines() if "/invite/" in line)
    await genie.fake.wait_for("chat.postMessage", channel="U0ALICE", timeout=15)
    await eventually(lambda: _outbox_idle(genie))
    assert any(url in text for text in _dms(genie, "U0ALICE"))
    assert _dms(genie, "U0MALLORY") == []  # the link is nowhere in Mallory's Slack

    # Alice sets her password from the link on her phone: the session on her laptop (or one
    # anyone else held) ends, and she is told in her own Slack account only.
    genie.fake.clear()
    phone = genie.browser()
    invite_path = url[len(genie.url) :]
    await phone.get(invite_path)
    done = await phone.post(invite_path, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert done.status_code == 303
    assert (await alice.get("/account")).status_code == 303
    notice = await genie.fake.wait_for("chat.postMessage", channel="U0ALICE", timeout=15)
    assert "was just set through an invitation link" in notice[0].args["text"]
    await eventually(lambda: _outbox_idle(genie))
    assert _dms(genie, "U0MALLORY") == []


async def test_a_slack_account_without_a_confirmed_email_is_refused_the_link_too(genie, db_url, tmp_path):
    """No email (users.info without users:read.email, or empty), an unconfirmed one, or Slack
    failing: the admin gets the link and one line saying why; no DM."""
    await genie.add_user("alice@example.com", "Alice Smith")
    genie.fake.add_user("U0NOMAIL", "Alice Smith", None)
    await _phish(genie, SlackUser("U0NOMAIL"), "alice@example.com")
    genie.fake.add_user("U0NOMAIL", "Alice Smith", "alice@example.com", is_email_confirmed=False)
    await eventually(lambda: _outbox_idle(genie))
    genie.fake.clear()
    run = await asyncio.to_thread(run_genie, tmp_path, _cli_env(genie, db_url), "user", "invite", "alice@example.com")
    ok(run, "invitation for alice@example.com")
    assert (
        "not sent to Slack user U0NOMAIL: Slack gives no confirmed email for it (its email is not confirmed by Slack)"
    ) in run.stdout
    assert "also sent" not in run.stdout
    genie.fake.fail("users.info", error="missing_scope")
    run = await asyncio.to_thread(run_genie, tmp_path, _cli_env(genie, db_url), "user", "invite", "alice@example.com")
    ok(run, "not sent to Slack user U0NOMAIL: Slack could not say whose account it is (users.info: missing_scope)")
    assert await genie.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL") == 0
    assert _dms(genie, "U0NOMAIL") == []


async def test_the_outbox_asks_slack_again_before_delivering_a_password_link(genie, db_url, tmp_path):
    """Between ``genie user invite`` and delivery, the Slack account's email changed: the outbox
    checks again and fails the message, saying why, instead of sending it."""
    from bot.ids import Intent
    from bot.services import outbox
    from bot.slack.notify import queue_owner_dm

    await genie.add_user("alice@example.com", "Alice Smith")
    path = await _connect_path(genie, SlackUser("U0ALICE"))
    alice = await signed_in(genie, "alice@example.com", path)
    await alice.get(path)
    assert (await alice.post(path)).status_code == 200
    await eventually(lambda: _outbox_idle(genie))
    genie.fake.clear()
    genie.fake.add_user("U0ALICE", "Alice Smith", "someone-else@example.com")  # changed in Slack since
    async with genie.sessionmaker.begin() as s:
        user = await users.user_by_email(s, "alice@example.com")
        [link] = await slack_links.links_of_user(s, user.id)
        await queue_owner_dm(
            s,
            link,
            user.email,
            outbox.intent(Intent.INVITE, email=user.email, url="https://genie.example/invite/x", days=7),
        )
    genie.rt.wake_outbox()
    error = await eventually(
        lambda: genie.scalar("SELECT last_error FROM outbox WHERE failed_at IS NOT NULL"), timeout=15
    )
    assert "not sent to Slack user U0ALICE: its confirmed Slack email is someone-else@example.com" in error
    assert _dms(genie, "U0ALICE") == []


# --- item 2: the phishing warning no longer fails open ------------------------------------------
async def test_an_unknown_slack_email_is_a_warning_of_its_own_with_a_second_step(genie):
    await genie.add_user("alice@example.com", "Alice Smith", admin=True)
    # Alice's own, verified Slack account, in another workspace: where she hears of new links.
    genie.fake.add_user("U0ALICE2", "Alice Smith", "alice@example.com", team_id=OTHER_WORKSPACE)
    own = SlackUser("U0ALICE2", team_id=OTHER_WORKSPACE)
    path = await _connect_path(genie, own)
    browser = await signed_in(genie, "alice@example.com", path)
    await browser.get(path)
    assert (await browser.post(path)).status_code == 200
    home = await genie.fake.wait_for("views.publish", user_id="U0ALICE2")
    assert "Anonymous actions by people who haven't connected" in block_text(home[-1].args["view"]["blocks"])
    await eventually(lambda: _outbox_idle(genie))
    genie.fake.clear()

    # Mallory's Slack account gives no email (no users:read.email, or none set) and calls
    # itself "Alice Smith".
    genie.fake.add_user("U0MALLORY", "Alice Smith", None, name="totally-alice")
    path = await _connect_path(genie, MALLORY)
    page = await browser.get(path)
    words = page_text(page)
    assert page.status_code == 200 and "Slack did not tell Genie whose Slack account this is" in words
    assert "Slack handle @totally-alice , Slack user id U0MALLORY" in words
    before = await snapshot(genie.sessionmaker)
    second = await browser.post(path)  # the first step does not link
    assert second.status_code == 409 and "Is this Slack account really yours?" in page_text(second)
    assert "Yes, @totally-alice (U0MALLORY) is my own Slack account — connect it" in page_text(second)
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    done = await browser.post(path, {"mine": "yes"})
    assert done.status_code == 200
    assert ("alice@example.com", "U0MALLORY", False, True) in await _links(genie)

    # Not only the "You're connected" DM (to Mallory): Alice's own Slack account is told, with the way back.
    notice = await genie.fake.wait_for("chat.postMessage", channel="U0ALICE2", timeout=15)
    assert "A new Slack account, Alice Smith (U0MALLORY)" in notice[0].args["text"]
    assert "Slack gave no email for it" in notice[0].args["text"]
    assert f"{genie.url}/account" in notice[0].args["text"]
    # The Home tab of the unvouched account shows no admin settings.
    home = await genie.fake.wait_for("views.publish", user_id="U0MALLORY")
    blocks = block_text(home[-1].args["view"]["blocks"])
    assert "Workspace settings* are not shown here" in blocks and "Anonymous actions" not in blocks

    # At her next sign-in, /account shows the new link with Undo; looking changes nothing.
    later = await signed_in(genie, "alice@example.com", "/account")
    before = await snapshot(genie.sessionmaker)
    account = await later.get("/account")
    assert "A new Slack account was connected to your Genie account" in page_text(account)
    assert "Slack did not confirm it is yours (Slack gave no email for it)" in page_text(account)
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    link_id = await genie.scalar("SELECT id FROM slack_link WHERE slack_user_id = 'U0MALLORY'")
    assert f'action="/account/links/{link_id}/disconnect"' in account.text
    assert (await later.post(f"/account/links/{link_id}/disconnect", csrf=False)).status_code == 403
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    undone = await later.post(f"/account/links/{link_id}/disconnect")
    assert undone.status_code == 303
    assert await _links(genie) == [("alice@example.com", "U0ALICE2", True, False)]
    assert "A new Slack account" not in page_text(await later.get("/account"))


async def test_this_is_me_clears_the_banner_and_only_for_ones_own_link(genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("bob@example.com", "Bob Jones")
    genie.fake.add_user("U0NOMAIL", "Alice Smith", None)
    browser = await _phish(genie, SlackUser("U0NOMAIL"), "alice@example.com")
    link_id = await genie.scalar("SELECT id FROM slack_link")
    bob = await signed_in(genie, "bob@example.com", "/account")
    await bob.get("/account")
    assert (await bob.post(f"/account/links/{link_id}/keep")).status_code == 404  # not Bob's
    await browser.get("/account")
    assert (await browser.post(f"/account/links/{link_id}/keep", csrf=False)).status_code == 403
    assert await genie.scalar("SELECT needs_review FROM slack_link") in (True, 1)
    kept = await browser.post(f"/account/links/{link_id}/keep")
    assert kept.status_code == 303 and kept.headers["location"] == "/account?kept=1"
    assert await _links(genie) == [("alice@example.com", "U0NOMAIL", False, False)]
    assert "A new Slack account" not in page_text(await browser.get("/account"))


async def test_a_workspace_may_require_a_matching_confirmed_email_to_link(genie, db_url, tmp_path):
    await genie.add_user("alice@example.com", "Alice Smith")
    ok(
        await asyncio.to_thread(
            run_genie,
            tmp_path,
            _cli_env(genie, db_url),
            "workspace",
            "set",
            "require_email_match",
            "true",
            "--workspace",
            "T0GENIE01",
        ),
        "require_email_match = true for workspace T0GENIE01",
    )
    path = await _connect_path(genie, MALLORY)
    browser = await signed_in(genie, "alice@example.com", path)
    page = await browser.get(path)
    assert (
        "This workspace connects a Slack account only when Slack confirms its email is your Genie email"
        in page_text(page)
    )
    assert 'id="confirm' not in page.text
    before = await snapshot(genie.sessionmaker)
    for form in ({}, {"mine": "yes"}, {"mine": "yes", "replace": "yes"}):
        refused = await browser.post(path, form)
        assert refused.status_code == 403 and "Slack reports mallory@evil.example" in page_text(refused)
    assert changes(before, await snapshot(genie.sessionmaker)) == {}
    # Her own Slack account, whose confirmed email is hers, links as always.
    path = await _connect_path(genie, SlackUser("U0ALICE"))
    await browser.get(path)
    assert (await browser.post(path)).status_code == 200
    assert await _links(genie) == [("alice@example.com", "U0ALICE", True, False)]
