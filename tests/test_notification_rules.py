"""A person's notification rules (issue 15, item 3), end to end: rules set on ``/account``
(CSRF, bad values refused and nothing saved, a webhook's secret shown once); the engine pages
by them — an e-mail to a loopback SMTP server (``aiosmtpd``) after its delay (the server's clock
moved), only to an address the person confirmed; a webhook to a loopback receiver that checks
the signature; SMTP down then up and a webhook answering 500 retried with backoff, delivered
once, the failures on the timeline; a DM Slack refuses falls through to e-mail at once; an
acknowledgement first cancels what still waits. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import re
import socket
from datetime import timedelta
from email import message_from_bytes

import pytest
from aiohttp import web
from aiosmtpd.controller import Controller

from bot.services import alerts, escalation, notification_rules, schedules, teams, users
from bot.services.escalation import StepSpec
from bot.services.schedules import RotationSpec
from storage.base import utcnow
from tests.conftest import Genie, eventually, page_text
from tests.test_alert_api import envelope
from tests.test_paging import Clock, World, _link


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Mailbox:
    """An SMTP server on loopback that can be down (nothing listening on its port) and up."""

    def __init__(self) -> None:
        self.port = _free_port()
        self.messages: list = []
        self._controller: Controller | None = None

    async def handle_DATA(self, server, session, envelope):  # aiosmtpd's handler hook
        message = message_from_bytes(envelope.content)
        message.recipients = list(envelope.rcpt_tos)
        self.messages.append(message)
        return "250 OK"

    def up(self) -> None:
        self._controller = Controller(self, hostname="127.0.0.1", port=self.port)
        self._controller.start()

    def down(self) -> None:
        if self._controller is not None:
            self._controller.stop()
            self._controller = None

    def to(self, address: str) -> list:
        return [m for m in self.messages if address in m.recipients]


class Receiver:
    """A webhook receiver on loopback that checks Genie's signature like a real one would."""

    def __init__(self) -> None:
        self.secret: str | None = None
        self.answers: list[int] = []
        self.received: list[dict] = []
        self.bad_signatures = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Genie-Request-Timestamp", "")
        expected = "v0=" + hmac.new(self.secret.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256).hexdigest()
        if not hmac.compare_digest(expected, request.headers.get("X-Genie-Signature", "")):
            self.bad_signatures += 1
            return web.Response(status=401)
        status = self.answers.pop(0) if self.answers else 200
        if status == 200:
            self.received.append(json.loads(body))
        return web.Response(status=status, text="ok")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}/hook"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


#: Tests that see the defaults: https only, no private addresses.
STRICT = {
    "test_the_account_form_refuses_bad_values_and_saves_nothing",
    "test_a_webhook_to_a_private_address_is_refused_at_send_time_and_falls_through",
}


@pytest.fixture
def mailbox():
    box = Mailbox()
    box.up()
    yield box
    box.down()


@pytest.fixture
def genie_settings(mailbox: Mailbox, request) -> dict[str, str]:
    smtp = {
        "GENIE_SMTP_HOST": "127.0.0.1",
        "GENIE_SMTP_PORT": str(mailbox.port),
        "GENIE_SMTP_FROM": "Genie <genie@example.com>",
        "GENIE_SMTP_STARTTLS": "false",
    }
    if request.node.originalname in STRICT:
        return smtp
    return {**smtp, "GENIE_WEBHOOK_ALLOW_HTTP": "true", "GENIE_WEBHOOK_ALLOW_PRIVATE": "true"}


@pytest.fixture
async def world(genie: Genie) -> World:
    """Payments (C0PAY: Alice on call in "primary", Bob); both linked in Slack."""
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("bob@example.com", "Bob Jones")
    keys = {}
    async with genie.sessionmaker.begin() as s:
        keys["Payments"] = await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY"))
        for email in ("alice@example.com", "bob@example.com"):
            await teams.add_member(s, "Payments", email)
        start = (utcnow() - timedelta(days=2)).replace(microsecond=0)
        await schedules.create_schedule(
            s, "Payments", "primary", "UTC", [RotationSpec("week", ["alice@example.com"], 1, "weeks", start, "UTC")]
        )
        await escalation.set_policy(s, "Payments", "default", [StepSpec(0, "schedule", "primary")])
    await _link(genie, "U0ALICE", "alice@example.com")
    await _link(genie, "U0BOB", "bob@example.com")
    clock = Clock()
    genie.rt.now = clock
    return World(genie, keys, clock)


async def _signed_in(genie: Genie, email: str):
    browser = genie.browser()
    await browser.login(email)
    await browser.get("/account")
    return browser


async def _confirm_email(genie: Genie, browser, mailbox: Mailbox, email: str) -> None:
    """The person asks for a confirmation link, opens it from the e-mail and confirms."""
    assert (await browser.post("/account/email/verify")).status_code == 303
    [mail] = mailbox.to(email)
    body = mail.get_payload(decode=True).decode()
    assert "alert" not in mail["Subject"].lower() or "confirm" in mail["Subject"].lower()
    link = re.search(r"(/account/email/[^\s]+)", body).group(1)
    page = await browser.get(link)
    assert page.status_code == 200 and "Yes, this is my address" in page.text
    assert await genie.scalar('SELECT verified_email FROM "user" WHERE email = :e', e=email) is None  # GET: nothing
    assert (await browser.post(link)).status_code == 303
    assert await genie.scalar('SELECT verified_email FROM "user" WHERE email = :e', e=email) == email
    mailbox.messages.clear()


async def _add(browser, channel: str, delay: int | str, url: str = ""):
    return await browser.post("/account/rules", {"channel": channel, "delay": str(delay), "url": url})


async def _channel_pages(world: World, alert_id: int) -> list[tuple]:
    return [p for p in await world.pages(alert_id) if p[3] in ("email", "webhook")]


async def test_an_email_rule_sends_after_its_delay_only_to_a_confirmed_address(world: World, mailbox: Mailbox):
    genie = world.genie
    alice = await _signed_in(genie, "alice@example.com")
    assert (await _add(alice, "slack_dm", 0)).status_code == 303
    assert (await _add(alice, "email", 5)).status_code == 303
    page = await alice.get("/account")
    assert "not confirmed" in page_text(page)

    # Not confirmed yet: the e-mail rule is skipped (and says why); nothing goes to the address.
    first = await world.alert("Unconfirmed address")
    await world.dms("U0ALICE")
    assert ("skipped",) == tuple(p[5] for p in await _channel_pages(world, first))
    assert any(
        "not paged by e-mail: their address is not verified" in (e[2] or "") for e in await world.timeline(first)
    )
    envelope(await world.call("POST", f"/v2/alerts/{first}/close?identifierType=tiny", {}), 202)

    await _confirm_email(genie, alice, mailbox, "alice@example.com")
    alert_id = await world.alert("Disk full on db-1")
    await world.dms("U0ALICE", 2)
    world.clock.move(minutes=4)
    assert await genie.rt.channels.run_once() == 0
    assert mailbox.to("alice@example.com") == []
    world.clock.move(minutes=1, seconds=1)
    genie.rt.channels.wake()
    [mail] = await eventually(lambda: _async(mailbox.to("alice@example.com")))
    assert mail["Subject"] == f"[Genie P3] Alert #{alert_id} (Payments): Disk full on db-1"
    body = mail.get_payload(decode=True).decode()
    assert f"{genie.url}/alerts/{alert_id}" in body and "Priority: P3" in body and "Team:     Payments" in body
    assert "token" not in body and "/link/" not in body  # nothing in it acts without signing in
    await eventually(lambda: _has(world, alert_id, "step 1: e-mail to Alice Smith delivered"))
    assert await genie.rt.channels.run_once() == 0
    assert len(mailbox.to("alice@example.com")) == 1

    # Acknowledged before the e-mail's delay: it is cancelled, never sent.
    third = await world.alert("Acknowledged in time")
    await world.dms("U0ALICE", 3)
    envelope(await world.call("POST", f"/v2/alerts/{third}/acknowledge?identifierType=tiny", {}), 202)
    await eventually(lambda: genie.scalar("SELECT acknowledged FROM alert WHERE id = :a", a=third))
    world.clock.move(minutes=10)
    assert await genie.rt.channels.run_once() == 0
    assert [p[5] for p in await _channel_pages(world, third)] == ["cancelled"]
    assert len(mailbox.to("alice@example.com")) == 1


async def _async(value):
    return value


async def _has(world: World, alert_id: int, text: str) -> bool:
    return any(text in (e[2] or "") for e in await world.timeline(alert_id))


async def test_smtp_down_then_up_is_retried_and_delivered_once(world: World, mailbox: Mailbox):
    genie = world.genie
    alice = await _signed_in(genie, "alice@example.com")
    await _confirm_email(genie, alice, mailbox, "alice@example.com")
    assert (await _add(alice, "email", 0)).status_code == 303
    mailbox.down()
    alert_id = await world.alert()
    await eventually(lambda: _has(world, alert_id, "retrying in 10 s (attempt 1)"))
    events = await world.timeline(alert_id)
    assert any(
        "step 1: e-mail to Alice Smith failed (SMTP server 127.0.0.1" in (e[2] or "") and "unreachable" in e[2]
        for e in events
    )
    assert [p[5] for p in await _channel_pages(world, alert_id)] == ["waiting"]
    mailbox.up()
    assert await genie.rt.channels.run_once() == 0  # not due again yet
    world.clock.move(seconds=11)
    genie.rt.channels.wake()
    await eventually(lambda: _async(mailbox.to("alice@example.com")))
    await eventually(lambda: _has(world, alert_id, "e-mail to Alice Smith delivered"))
    world.clock.move(minutes=30)
    assert await genie.rt.channels.run_once() == 0
    await asyncio.sleep(0.1)
    assert len(mailbox.to("alice@example.com")) == 1
    assert [p[5] for p in await _channel_pages(world, alert_id)] == ["sent"]


async def test_a_signed_webhook_answering_500_is_retried_and_the_secret_is_shown_once(world: World, mailbox: Mailbox):
    genie = world.genie
    receiver = Receiver()
    await receiver.start()
    try:
        alice = await _signed_in(genie, "alice@example.com")
        added = await _add(alice, "webhook", 0, receiver.url)
        assert added.status_code == 200
        receiver.secret = re.search(r'id="webhook-secret">([^<]+)<', added.text).group(1)
        assert receiver.secret.startswith("whsec_")
        again = await alice.get("/account")
        assert receiver.secret not in again.text and receiver.url in again.text  # shown once
        assert (
            await genie.scalar("SELECT webhook_secret FROM notification_rule WHERE channel = 'webhook'")
            == receiver.secret
        )

        receiver.answers = [500]
        alert_id = await world.alert("Queue backlog")
        try:
            await eventually(
                lambda: _has(
                    world,
                    alert_id,
                    "step 1: webhook to Alice Smith failed (the webhook answered 500); retrying in 10 s",
                )
            )
        except AssertionError:
            raise AssertionError(await world.timeline(alert_id)) from None
        assert receiver.received == [] and receiver.bad_signatures == 0
        world.clock.move(seconds=11)
        genie.rt.channels.wake()
        await eventually(lambda: _async(receiver.received))
        [delivery] = receiver.received
        assert delivery["alert"]["tinyId"] == str(alert_id) and delivery["alert"]["message"] == "Queue backlog"
        assert delivery["alert"]["priority"] == "P3" and delivery["alert"]["team"] == "Payments"
        assert delivery["alert"]["url"] == f"{genie.url}/alerts/{alert_id}"
        assert delivery["page"]["step"] == 1 and delivery["page"]["person"]["email"] == "alice@example.com"
        await eventually(lambda: _has(world, alert_id, "webhook to Alice Smith delivered"))
        world.clock.move(minutes=5)
        assert await genie.rt.channels.run_once() == 0
        assert len(receiver.received) == 1 and receiver.bad_signatures == 0
    finally:
        await receiver.stop()


async def test_a_dm_slack_refuses_falls_through_to_email_at_once(world: World, mailbox: Mailbox):
    genie, fake = world.genie, world.genie.fake
    alice = await _signed_in(genie, "alice@example.com")
    await _confirm_email(genie, alice, mailbox, "alice@example.com")
    assert (await _add(alice, "slack_dm", 0)).status_code == 303
    assert (await _add(alice, "email", 30)).status_code == 303
    async with genie.sessionmaker.begin() as s:  # the DM waits one minute, after the channel post
        await escalation.set_policy(s, "Payments", "default", [StepSpec(1, "schedule", "primary")])
    alert_id = await world.alert()
    await fake.wait_for("chat.postMessage", channel="C0PAY")
    fake.fail("chat.postMessage", error="cannot_dm_bot")  # the next post: Alice's DM
    world.clock.move(minutes=1, seconds=1)
    genie.rt.paging.wake()
    await eventually(lambda: _async(mailbox.to("alice@example.com")))  # at once, not 30 minutes on
    events = await world.timeline(alert_id)
    assert (
        "page",
        "failed",
        "step 1: Slack DM to Alice Smith failed: Slack answered cannot_dm_bot; falls through to e-mail at once",
    ) in events
    await eventually(lambda: _has(world, alert_id, "e-mail to Alice Smith delivered"))
    assert [(p[3], p[5]) for p in await world.pages(alert_id)] == [("slack_dm", "failed"), ("email", "sent")]


async def test_the_account_form_refuses_bad_values_and_saves_nothing(genie: Genie):
    await genie.add_user("alice@example.com", "Alice Smith")
    alice = await _signed_in(genie, "alice@example.com")
    forged = await alice.post("/account/rules", {"channel": "slack_dm", "delay": "0", "csrf_token": "forged"})
    assert forged.status_code == 403
    cases = [
        ({"channel": "slack_dm", "delay": "-5"}, "the delay must be a whole number of minutes from 0 to 1440"),
        ({"channel": "email", "delay": "1441"}, "the delay must be a whole number of minutes from 0 to 1440"),
        ({"channel": "sms", "delay": "0"}, "unknown channel 'sms'"),
        ({"channel": "webhook", "delay": "0", "url": "http://hooks.example.com/x"}, "must be https://"),
        ({"channel": "webhook", "delay": "0", "url": "https://127.0.0.1/x"}, "127.0.0.1, a loopback, private"),
        ({"channel": "webhook", "delay": "0", "url": "https://10.1.2.3/x"}, "10.1.2.3, a loopback, private"),
        ({"channel": "webhook", "delay": "0", "url": "https://169.254.169.254/latest"}, "169.254.169.254"),
        ({"channel": "webhook", "delay": "0", "url": "https://[::1]/x"}, "::1, a loopback"),
        ({"channel": "webhook", "delay": "0", "url": "https://localhost/x"}, "a loopback, private"),
        ({"channel": "webhook", "delay": "0", "url": ""}, "a webhook rule needs the URL"),
    ]
    for form, message in cases:
        response = await _add(alice, form["channel"], form["delay"], form.get("url", ""))
        assert response.status_code == 400, form
        assert message in page_text(response), (form, page_text(response)[:300])
    assert await genie.scalar("SELECT count(*) FROM notification_rule") == 0
    # A good rule is saved; someone else's rule id is not theirs to remove.
    assert (await _add(alice, "slack_dm", 0)).status_code == 303
    rule_id = await genie.scalar("SELECT id FROM notification_rule")
    await genie.add_user("bob@example.com", "Bob Jones")
    bob = await _signed_in(genie, "bob@example.com")
    assert (await bob.post(f"/account/rules/{rule_id}/remove")).status_code == 404
    assert (await alice.post(f"/account/rules/{rule_id}/remove")).status_code == 303
    assert await genie.scalar("SELECT count(*) FROM notification_rule") == 0


async def test_a_confirmation_link_works_only_for_its_own_person(genie: Genie, mailbox: Mailbox):
    """Bob (who phished nothing but got hold of Alice's link) cannot confirm her address, nor
    his own with it; a changed token is refused; only Alice, signed in, confirms it."""
    await genie.add_user("alice@example.com", "Alice Smith")
    await genie.add_user("bob@example.com", "Bob Jones")
    alice = await _signed_in(genie, "alice@example.com")
    assert (await alice.post("/account/email/verify")).status_code == 303
    [mail] = mailbox.to("alice@example.com")
    link = re.search(r"(/account/email/[^\s]+)", mail.get_payload(decode=True).decode()).group(1)
    bob = await _signed_in(genie, "bob@example.com")
    assert (await bob.get(link)).status_code == 400
    await bob.get("/account")
    assert (await bob.post(link)).status_code == 400
    assert (await alice.get(link + "x")).status_code == 400
    assert await genie.scalar('SELECT count(*) FROM "user" WHERE verified_email IS NOT NULL') == 0
    await alice.get(link)
    assert (await alice.post(link)).status_code == 303
    assert await genie.rows('SELECT email FROM "user" WHERE verified_email = email') == [("alice@example.com",)]


async def test_two_channel_workers_on_one_database_send_each_page_once(world: World, mailbox: Mailbox):
    """Two workers (each with its own connection pool, as two processes) race for the same due
    e-mail pages: each is sent once."""
    from bot.channels.worker import ChannelWorker
    from storage.session import make_engine, make_sessionmaker

    genie = world.genie
    alice = await _signed_in(genie, "alice@example.com")
    await _confirm_email(genie, alice, mailbox, "alice@example.com")
    assert (await _add(alice, "email", 5)).status_code == 303
    ids = [await world.alert(f"Alert {n}") for n in range(4)]
    for alert_id in ids:  # each step fired (its e-mail waits 5 minutes from then)
        await eventually(lambda a=alert_id: _channel_pages(world, a))
    engines = [make_engine(genie.settings.database_url) for _ in range(2)]
    try:
        workers = [ChannelWorker(make_sessionmaker(e), genie.settings, world.clock) for e in engines]
        world.clock.move(minutes=5, seconds=1)
        genie.rt.channels.wake()  # this process's own worker races them too
        claimed = await asyncio.gather(*(w.run_once() for w in workers), *(w.run_once() for w in workers))
        assert sum(claimed) <= 4
    finally:
        for e in engines:
            await e.dispose()
    try:
        await eventually(lambda: _async(len(mailbox.to("alice@example.com")) == 4))
    except AssertionError:
        raise AssertionError([e for a in ids for e in await world.timeline(a) if e[1] != "applied"]) from None
    subjects = sorted(m["Subject"] for m in mailbox.to("alice@example.com"))
    assert subjects == sorted(f"[Genie P3] Alert #{i} (Payments): Alert {n}" for n, i in enumerate(ids))
    for alert_id in ids:
        await eventually(lambda a=alert_id: _has(world, a, "e-mail to Alice Smith delivered"))
        assert [p[5] for p in await _channel_pages(world, alert_id)] == ["sent"]
    await asyncio.sleep(0.2)
    assert len(mailbox.to("alice@example.com")) == 4


async def test_a_webhook_to_a_private_address_is_refused_at_send_time_and_falls_through(world: World):
    """A rule saved while the deployment allowed private addresses (it no longer does): the
    address is checked again before the request, nothing is sent to it, and the person's next
    channel (a Slack DM 30 minutes on) is due at once."""
    genie = world.genie
    receiver = Receiver()
    await receiver.start()
    try:
        async with genie.sessionmaker.begin() as s:
            alice = await users.require_user(s, "alice@example.com")
            _, receiver.secret = await notification_rules.add_rule(
                s, alice, "webhook", 0, receiver.url, allow_http=True, allow_private=True
            )
            await notification_rules.add_rule(s, alice, "slack_dm", 30)
        alert_id = await world.alert()
        await world.dms("U0ALICE")  # at once, not 30 minutes on
        events = await world.timeline(alert_id)
        assert any(
            "webhook to Alice Smith failed: the webhook URL must be https://" in (e[2] or "")
            and "falls through to Slack DM at once" in e[2]
            for e in events
        ), events
        assert receiver.received == [] and receiver.bad_signatures == 0
        assert [(p[3], p[5]) for p in await world.pages(alert_id)][0] == ("webhook", "failed")
    finally:
        await receiver.stop()
