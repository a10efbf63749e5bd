"""Tokens and secrets never reach a log. A whole journey — /genie connect, sign in, confirm the
link, an alert through the API with a team key, clicks allowed and refused (the refusal carries
a fresh link) — with every logger at DEBUG in-process, and again against ``genie serve`` as a
process; then every captured line is searched for each secret: link tokens (and their parts),
nonces, the session cookie, the CSRF cookie and form token, the API key, the signing secret,
the bot token, GENIE_SECRET_KEY and the password."""

from __future__ import annotations

import asyncio
import collections
import html
import json
import logging
import re
from http import HTTPStatus
from urllib.parse import urlsplit

import httpx
import uvicorn

from bot.config import Settings
from bot.server import build_asgi_app, make_runtime
from bot.services import alerts, teams, users
from storage.session import make_engine, make_sessionmaker
from tests.conftest import PASSWORD, SECRET_KEY, SIGNING_SECRET, Browser, genie_env
from tests.fake_slack import FakeSlack
from tests.hardening import bolt_idle, report
from tests.helpers import buttons, connect_url, walk
from tests.loopback import loopback_socket
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackDriver, SlackUser

ALICE, MALLORY = SlackUser("U0ALICE"), SlackUser("U0STRANGER")
BOT_TOKEN = "xoxb-test-token"


async def _setup(sessionmaker) -> str:
    """Alice in Payments (channel C0PAY); the team's API key."""
    async with sessionmaker.begin() as s:
        await users.add_user(s, "alice@example.com", "Alice Smith", PASSWORD)
        team = await teams.add_team(s, "Payments", "C0PAY")
        await teams.add_member(s, "Payments", "alice@example.com")
        return await alerts.team_key(s, team)


async def journey(url: str, http: httpx.AsyncClient, fake: FakeSlack, key: str, sessionmaker) -> set[str]:
    """Walk it; return every secret value that went by."""
    secrets = {SIGNING_SECRET, BOT_TOKEN, SECRET_KEY, PASSWORD, key}
    slack = SlackDriver(http, SIGNING_SECRET, fake)
    link = connect_url(await slack.command(ALICE, "connect"))
    path = urlsplit(link).path
    secrets.add(path.removeprefix("/link/"))

    browser = Browser(url)
    try:
        await browser.get(f"/login?next={path}")
        secrets.add(browser.http.cookies["genie_csrf"])
        secrets.add(browser.last_csrf)
        signed_in = await browser.post("/login", {"email": "alice@example.com", "password": PASSWORD, "next": path})
        assert signed_in.status_code == 303
        secrets.add(browser.http.cookies["genie_session"])
        await browser.get(path)
        assert (await browser.post(path)).status_code == 200
        assert (await browser.post("/logout")).status_code == 303
    finally:
        await browser.aclose()

    created = await http.post(
        "/v2/alerts",
        headers={"Authorization": f"GenieKey {key}"},
        json={"message": "Checkout error rate above 5%", "alias": "checkout"},
    )
    assert created.status_code == 202
    post = (await fake.wait_for("chat.postMessage", channel="C0PAY", timeout=15))[0].args
    value = next(d["value"] for d in walk(post["blocks"]) if d.get("action_id") == "alert_acknowledge")
    refused = await slack.block_action(MALLORY, "alert_acknowledge", value, container="message", channel_id="C0PAY")
    assert refused.status_code == 200
    said = (await fake.wait_for("response_url", timeout=15))[-1].args
    secrets.add(urlsplit(buttons(said["blocks"])["connect_link"]["url"]).path.removeprefix("/link/"))
    assert (
        await slack.block_action(ALICE, "alert_acknowledge", value, container="message", channel_id="C0PAY")
    ).status_code == 200
    await fake.wait_for("chat.update", timeout=15)

    async with sessionmaker() as s:
        from sqlalchemy import text

        secrets.update(n for (n,) in (await s.execute(text("SELECT nonce FROM link_request"))).all())
    return secrets


def leaks(secrets: set[str], log: str) -> list[str]:
    """Each secret found in ``log`` (also URL- or HTML-escaped; tokens also by their parts)."""
    found = []
    for secret in secrets:
        forms = {secret, html.escape(secret), json.dumps(secret)[1:-1]}
        forms |= {part for part in re.split(r"[.]", secret) if len(part) >= 10}
        found += [f"{secret[:6]}… as {form[:12]}…" for form in forms if form and form in log]
    return found


async def test_no_secret_in_any_log_line_at_debug_in_process(genie, caplog):
    caplog.set_level(logging.DEBUG)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith(("bot", "slack_bolt", "slack_sdk", "starlette", "httpx", "httpcore")):
            caplog.set_level(logging.DEBUG, logger=name)
    key = await _setup(genie.sessionmaker)
    secrets = await journey(genie.url, genie.http, genie.fake, key, genie.sessionmaker)
    await bolt_idle()
    # httpx/httpcore are this test's own HTTP client (Genie speaks to Slack with aiohttp): what
    # the client logs about its requests and their cookies is not Genie's log.
    records = [r for r in caplog.records if not r.name.startswith(("httpx", "httpcore"))]
    text = "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in records)
    assert len(records) > 50 and any(r.levelno == logging.DEBUG for r in records)  # logged, at DEBUG
    by_logger = {f"{r.name}: {leaks(secrets, r.getMessage())}" for r in records if leaks(secrets, r.getMessage())}
    assert not leaks(secrets, text), "\n".join(sorted(by_logger))
    report("test_secrets_in_logs::in_process", secrets=len(secrets), log_lines=len(records))


async def test_no_secret_in_the_genie_serve_log(db_url, fake_slack, tmp_path):
    port = free_port()
    env = clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN=BOT_TOKEN,
        SLACK_API_URL=fake_slack.api_url,
    )
    engine = make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    server = GenieServer.start(env, port, cwd=tmp_path)
    try:
        await server.wait_healthy()
        key = await _setup(sessionmaker)
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            secrets = await journey(server.url, http, fake_slack, key, sessionmaker)
            # A key in the query string is refused — and must not be printed by the access log either.
            assert (await http.get("/v2/alerts", params={"apiKey": key})).status_code == 401
    finally:
        server.stop()
        await engine.dispose()
    log = server.log()
    assert "/link/[redacted]" in log and "POST /v2/alerts" in log, log
    assert not leaks(secrets, log), leaks(secrets, log)
    report("test_secrets_in_logs::genie_serve", secrets=len(secrets), log_lines=len(log.splitlines()))


_SECRET_SHAPES = [
    "/link/{s}",
    "/invite/{s}",
    "/account/email/{s}",
    "?apiKey={s}",
    "&api_key={s}",
    "?token={s}",
    "GenieKey {s}",
    "geniekey\t{s}",
    "Authorization: Token token={s}",
    "TOKEN  TOKEN={s}",
]


def _redacted_in_full(text: str) -> str:
    """``logs.redact`` without its quick look first: the four substitutions on every text."""
    from bot import logs

    text = logs._PAGERDUTY_KEY.sub(r"\1[redacted]", text)
    for pattern in (logs._LINK_PATH, logs._QUERY_KEY, logs._GENIE_KEY):
        text = pattern.sub(r"\1[redacted]", text)
    return text


def test_the_quick_look_before_redacting_never_lets_a_secret_through():
    """``redact`` first looks whether a text could hold a secret at all (one pass of a pattern
    that matches wherever any of the four could begin) and returns the others as they are: it
    must give what the four substitutions give on every text — each shape of secret, in any
    case, with text around it — and leave the texts without one unchanged."""
    from hypothesis import given, settings
    from hypothesis import strategies as st

    from bot import logs

    for shape in _SECRET_SHAPES:
        text = f'127.0.0.1 - "POST {shape.format(s="s3cr3t-Value_9")} HTTP/1.1" 200'
        assert "s3cr3t" not in logs.redact(text), text
        assert logs.redact(text) == _redacted_in_full(text)
    for plain in ("POST /slack/events", "GET /healthz HTTP/1.1", "token budget", "/links/a", ""):
        assert logs.redact(plain) == plain == _redacted_in_full(plain)

    @settings(max_examples=400, deadline=None)
    @given(
        st.lists(
            st.one_of(
                st.sampled_from(_SECRET_SHAPES).map(lambda shape: shape.format(s="abc123")),
                st.text(alphabet="/?&=: \tabcdeklnoprstuvwyAEGIKTK", max_size=12),
            ),
            max_size=5,
        ),
        st.booleans(),
    )
    def same(parts: list[str], upper: bool) -> None:
        text = "".join(parts)
        text = text.upper() if upper else text
        assert logs.redact(text) == _redacted_in_full(text)

    same()


async def test_the_access_log_prints_each_request_once_redacted_in_batches_and_all_at_shutdown(
    db_url, fake_slack, caplog, monkeypatch
):
    """``genie serve``'s access log (``logs.AccessLog``): uvicorn's line for every request, its
    link token and query-string key redacted, the lines of a moment in one record — and the ones
    still held when the server stops are printed as it stops (here nothing else prints them:
    the batch's timer is an hour)."""
    from bot.logs import AccessLog

    monkeypatch.setattr(AccessLog, "FLUSH_S", 3600)
    caplog.set_level(logging.INFO, logger="genie.access")
    sock = loopback_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    engine = make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    app = build_asgi_app(await make_runtime(Settings.from_env(genie_env(db_url, fake_slack, url)), sessionmaker))
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        while not server.started:
            await asyncio.sleep(0.01)
        key = await _setup(sessionmaker)
        token = "Zm9vYmFyYmF6cXV4LnRva2Vu.c2lnbmF0dXJlLXBhcnQ"
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            answers = await asyncio.gather(
                *[http.get(f"/link/{token}{i}") for i in range(6)],
                *[http.get("/v2/alerts", params={"apiKey": key}) for _ in range(3)],
                *[
                    http.post("/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": f"m{i}"})
                    for i in range(3)
                ],
            )
        assert [a.status_code for a in answers[6:]] == [401] * 3 + [202] * 3
        assert not [r for r in caplog.records if r.name == "genie.access"]  # held, not printed per request
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, timeout=10)
        await engine.dispose()
        sock.close()

    records = [r for r in caplog.records if r.name == "genie.access"]
    lines = "\n".join(r.getMessage() for r in records).splitlines()
    assert len(records) == 1, records
    shape = re.compile(r'INFO:     127\.0\.0\.1:\d+ - "(GET|POST) (\S+) HTTP/1\.1" (\d{3}) ([A-Za-z ]+)')
    seen = collections.Counter()
    for line in lines:
        match = shape.fullmatch(line)
        assert match, line
        seen[match.groups()] += 1
    link_status = answers[0].status_code
    assert seen == {
        ("GET", "/link/[redacted]", str(link_status), HTTPStatus(link_status).phrase): 6,
        ("GET", "/v2/alerts?apiKey=[redacted]", "401", "Unauthorized"): 3,
        ("POST", "/v2/alerts", "202", "Accepted"): 3,
    }
    assert not leaks({key, token}, "\n".join(lines))


async def test_the_access_log_prints_whole_lines_in_records_a_pipe_keeps_whole(caplog, monkeypatch):
    """``genie serve --workers N`` processes share one stdout: each record the access log prints
    is one write of at most 4,000 bytes (a pipe keeps a write of up to 4,096 whole), made of
    whole lines, every line once and in order."""
    from bot.logs import AccessLog

    monkeypatch.setattr(AccessLog, "FLUSH_S", 3600)
    caplog.set_level(logging.INFO, logger="genie.access")
    log = AccessLog()
    for i in range(300):
        scope = {"client": ("10.0.0.5", 40000 + i), "method": "GET", "path": f"/alerts/{i}/" + "é" * (i % 90)}
        log.answered(scope, 200)
    log.flush()
    printed = [r.getMessage() for r in caplog.records if r.name == "genie.access"]
    assert len(printed) > 1 and all(len(text.encode()) + 1 <= 4000 for text in printed)
    lines = "\n".join(printed).splitlines()
    assert [line.split('"GET ')[1].split("/")[2] for line in lines] == [str(i) for i in range(300)]
