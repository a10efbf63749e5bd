"""Invitations: people imported from a directory (or added without a password) get a one-time
link to choose their password — ``genie user invite``, then ``/invite/{token}`` in a browser.

Driven as an operator and a person would: the CLI as a real process on the same database, the
pages over HTTP with cookies and CSRF, the Slack DM through the fake Slack."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import timedelta
from pathlib import Path

from bot.services import external_accounts, users
from bot.services.audit import Who
from bot.services.external_accounts import ReportedAccount
from tests.conftest import SECRET_KEY, eventually, genie_env, page_text
from tests.hardening import changes, outbox_idle, snapshot
from tests.test_cli import base_env, ok, user_error
from tests.test_cli import genie as run_genie

NEW_PASSWORD = "correct-horse-battery-staple-7"
WORKSPACE = "T0GENIE01"


def _cli_env(genie, db_url: str) -> dict[str, str]:
    return base_env(**genie_env(db_url, genie.fake, genie.url))


async def _invite(genie, db_url: str, tmp_path: Path, email: str, *extra: str) -> str:
    run = await asyncio.to_thread(run_genie, tmp_path, _cli_env(genie, db_url), "user", "invite", email, *extra)
    ok(run, f"invitation for {email}")
    urls = re.findall(r"^(http\S+/invite/\S+)$", run.stdout, re.M)
    assert len(urls) == 1, str(run)
    assert urls[0].startswith(genie.url + "/invite/")
    return urls[0][len(genie.url) :]


async def _password_hash(genie, email: str) -> str | None:
    return await genie.scalar('SELECT password_hash FROM "user" WHERE email = :e', e=email)


async def test_an_invited_person_sets_a_password_once_and_is_signed_in(genie, db_url, tmp_path):
    await genie.add_user("carol@example.com", "Carol Diaz", password=None)
    genie.fake.add_user("U0CAROL", "Carol Diaz", "carol@example.com")  # her confirmed Slack email is hers
    async with genie.sessionmaker.begin() as s:  # Carol's Slack account, matched by a directory sync
        account = await external_accounts.upsert(
            s,
            ReportedAccount(
                "slack",
                "U0CAROL",
                WORKSPACE,
                handle="carol",
                email="carol@example.com",
                email_verified=True,
                attrs={"team_id": WORKSPACE},
            ),
        )
        await external_accounts.auto_link(s, account, allowed=True, who=Who.cli("slack sync"))
    path = await _invite(genie, db_url, tmp_path, "carol@example.com")

    # She is told in Slack too (the outbox of the running Genie delivers it).
    dms = await genie.fake.wait_for("chat.postMessage", channel="U0CAROL", timeout=15)
    assert genie.url + path in dms[0].args["text"]
    await eventually(lambda: genie.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL"))

    browser = genie.browser()
    before = await snapshot(genie.sessionmaker)
    page = await browser.get(path)
    assert page.status_code == 200
    assert "Welcome to Genie, Carol Diaz" in page_text(page) and "carol@example.com" in page_text(page)
    # A forged form (no CSRF token), then mistakes: nothing changes.
    assert (
        await browser.post(path, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD}, csrf=False)
    ).status_code == 403
    mismatch = await browser.post(path, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD + "x"})
    assert mismatch.status_code == 400 and "not the same" in page_text(mismatch)
    short = await browser.post(path, {"password": "short", "password_again": "short"})
    assert short.status_code == 400 and "at least 8 characters" in page_text(short)
    assert changes(before, await snapshot(genie.sessionmaker)) == {}

    done = await browser.post(path, {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert done.status_code == 303 and done.headers["location"] == "/account?welcome=1"
    account_page = await browser.get(done.headers["location"])
    assert account_page.status_code == 200
    assert "Your password is set and you are signed in." in page_text(account_page)
    assert await _password_hash(genie, "carol@example.com") is not None

    # The link worked once: a second submit and a second look both say so, and change nothing.
    # (Setting the password queued a notice to her verified Slack account: delivered first, so
    # that its delivery is not taken for a change the replays made.)
    await outbox_idle(genie)
    after = await snapshot(genie.sessionmaker)
    again = await genie.browser().get(path)
    assert again.status_code == 410 and "already been used" in page_text(again)
    replay = await browser.post(path, {"password": "another-password-9", "password_again": "another-password-9"})
    assert replay.status_code == 410 and "already been used" in page_text(replay)
    assert changes(after, await snapshot(genie.sessionmaker)) == {}
    # And the new password signs her in.
    assert (await genie.browser().login("carol@example.com", NEW_PASSWORD)).status_code == 303


async def test_concurrent_submits_of_one_invitation_set_one_password(genie, db_url, tmp_path):
    await genie.add_user("dan@example.com", "Dan", password=None)
    path = await _invite(genie, db_url, tmp_path, "dan@example.com", "--no-slack")
    browsers = [genie.browser() for _ in range(8)]
    for b in browsers:
        assert (await b.get(path)).status_code == 200
    answers = await asyncio.gather(
        *(
            b.post(path, {"password": f"password-number-{i}", "password_again": f"password-number-{i}"})
            for i, b in enumerate(browsers)
        )
    )
    codes = sorted(a.status_code for a in answers)
    assert codes.count(303) == 1 and codes.count(410) == 7, codes
    winner = next(i for i, a in enumerate(answers) if a.status_code == 303)
    assert (await genie.browser().login("dan@example.com", f"password-number-{winner}")).status_code == 303
    assert not genie.fake.calls("chat.postMessage")  # --no-slack


async def test_tampered_expired_and_stale_invitations_land_on_a_friendly_page(genie, db_url, tmp_path):
    await genie.add_user("erin@example.com", "Erin", password=None)
    user_id = await genie.scalar('SELECT id FROM "user" WHERE email = :e', e="erin@example.com")
    path = await _invite(genie, db_url, tmp_path, "erin@example.com")
    before = await snapshot(genie.sessionmaker)
    browser = genie.browser()

    tampered = await browser.get(path[:-3] + ("AAA" if not path.endswith("AAA") else "BBB"))
    assert tampered.status_code == 410 and "isn't valid" in page_text(tampered)
    assert (await browser.get("/invite/" + "x" * 600)).status_code == 410

    async with genie.sessionmaker() as s:  # signed 8 days ago, valid for 7
        erin = await s.get(users.User, user_id)
        old = users.Invites((SECRET_KEY,), clock=lambda: time.time() - 8 * 86400).make(erin, timedelta(days=7))
        forged = users.Invites(("another-deployment-key-000000000",)).make(erin)
    expired = await browser.get(f"/invite/{old}")
    assert expired.status_code == 410 and "has expired" in page_text(expired)
    foreign = await browser.get(f"/invite/{forged}")
    assert foreign.status_code == 410 and "isn't valid" in page_text(foreign)
    await browser.get("/login")  # a page with a form: the browser holds a good CSRF token
    posted = await browser.post(f"/invite/{old}", {"password": NEW_PASSWORD, "password_again": NEW_PASSWORD})
    assert posted.status_code == 410
    assert changes(before, await snapshot(genie.sessionmaker)) == {}

    # A password set another way (an admin's set-password) makes the invitation worthless.
    async with genie.sessionmaker.begin() as s:
        await users.set_password(s, "erin@example.com", "set-by-an-admin-1")
    stale = await browser.get(path)
    assert stale.status_code == 410 and "already been used" in page_text(stale)
    # Deactivated people cannot use theirs either.
    path2 = await _invite(genie, db_url, tmp_path, "erin@example.com")
    async with genie.sessionmaker.begin() as s:
        await users.set_active(s, "erin@example.com", False)
    gone = await browser.get(path2)
    assert gone.status_code == 410 and "deactivated" in page_text(gone)


async def test_invite_command_refuses_what_it_cannot_do(genie, db_url, tmp_path):
    env = _cli_env(genie, db_url)
    await genie.add_user("fay@example.com", "Fay", password=None)
    user_error(await asyncio.to_thread(run_genie, tmp_path, env, "user", "invite", "nobody@example.com"), "no user")
    user_error(
        await asyncio.to_thread(run_genie, tmp_path, env, "user", "invite", "fay@example.com", "--days", "0"), "--days"
    )
    async with genie.sessionmaker.begin() as s:
        await users.set_active(s, "fay@example.com", False)
    user_error(await asyncio.to_thread(run_genie, tmp_path, env, "user", "invite", "fay@example.com"), "deactivated")


async def _signed_in_elsewhere(genie, email: str, password: str):
    browser = genie.browser()
    assert (await browser.login(email, password)).status_code == 303
    assert (await browser.get("/account")).status_code == 200
    return browser


async def test_password_changes_and_deactivation_end_every_session(genie, db_url, tmp_path):
    """Issue 13 item 7: a password change (by an admin, or through an invitation) signs the
    person out everywhere, and deactivate → activate revives no old session."""
    from tests.conftest import PASSWORD

    env = _cli_env(genie, db_url)
    await genie.add_user("gus@example.com", "Gus Grant")
    laptop = await _signed_in_elsewhere(genie, "gus@example.com", PASSWORD)
    ok(
        await asyncio.to_thread(
            run_genie,
            tmp_path,
            env,
            "user",
            "set-password",
            "gus@example.com",
            "--password-stdin",
            stdin=NEW_PASSWORD + "\n",
        ),
        "password set",
    )
    assert (await laptop.get("/account")).status_code == 303  # back to sign-in
    assert await genie.scalar("SELECT count(*) FROM web_session") == 0

    laptop = await _signed_in_elsewhere(genie, "gus@example.com", NEW_PASSWORD)
    ok(await asyncio.to_thread(run_genie, tmp_path, env, "user", "deactivate", "gus@example.com"), "deactivated")
    ok(await asyncio.to_thread(run_genie, tmp_path, env, "user", "activate", "gus@example.com"), "now active")
    assert (await laptop.get("/account")).status_code == 303
    assert await genie.scalar("SELECT count(*) FROM web_session") == 0

    # An invitation used on one browser ends the session another browser had (someone who knew
    # the old password, or a stolen cookie), and keeps only the one it starts.
    laptop = await _signed_in_elsewhere(genie, "gus@example.com", NEW_PASSWORD)
    path = await _invite(genie, db_url, tmp_path, "gus@example.com", "--no-slack")
    phone = genie.browser()
    await phone.get(path)
    done = await phone.post(path, {"password": "a-third-password-3", "password_again": "a-third-password-3"})
    assert done.status_code == 303
    assert (await laptop.get("/account")).status_code == 303
    assert (await phone.get("/account")).status_code == 200
    assert await genie.scalar("SELECT count(*) FROM web_session") == 1


async def test_an_unused_invitation_expires_after_three_days_by_default(genie, db_url, tmp_path):
    await genie.add_user("hal@example.com", "Hal")
    run = await asyncio.to_thread(
        run_genie, tmp_path, _cli_env(genie, db_url), "user", "invite", "hal@example.com", "--no-slack"
    )
    ok(run, "expires in 3 days")
    token = re.findall(r"/invite/(\S+)$", run.stdout, re.M)[0]
    user_id = await genie.scalar('SELECT id FROM "user" WHERE email = :e', e="hal@example.com")
    async with genie.sessionmaker() as s:  # the same link, as if signed 3 days and a minute ago
        hal = await s.get(users.User, user_id)
        made = users.Invites((SECRET_KEY,), clock=lambda: time.time() - 3 * 86400 - 60).make(hal)
        fresh = users.Invites((SECRET_KEY,), clock=lambda: time.time() - 3 * 86400 + 60).make(hal)
    assert users.Invites((SECRET_KEY,)).load(token)[0] == user_id
    old = await genie.browser().get(f"/invite/{made}")
    assert old.status_code == 410 and "has expired" in page_text(old)
    assert (await genie.browser().get(f"/invite/{fresh}")).status_code == 200
