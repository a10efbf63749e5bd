"""Serving and background work in separate processes (issue 14): ``genie serve --no-worker`` answers
Slack and the API, ``genie worker`` delivers — one database, the fake Slack, real processes.

- An alert posted to the web process's API is in Slack promptly, an Acknowledge click on it
  updates the message promptly: the web process wakes the worker after each commit (NOTIFY on
  PostgreSQL, a datagram on SQLite), not at the worker's 2-second poll. Only the worker talks to
  the channel (each process has its own bot token string, so the fake's record says who called),
  over one kept-alive connection.
- A worker stopped with SIGTERM while a post is in flight finishes it: the post is recorded, not
  sent again by the next worker, and the worker exits 0.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
from sqlalchemy import text

from bot.services import alerts, slack_links, teams, users
from bot.services.slack_links import SlackIdentity, SlackProfile
from storage.session import make_engine, make_sessionmaker
from tests.conftest import SECRET_KEY, SIGNING_SECRET, eventually
from tests.fake_slack import TEAM_ID, FakeSlack
from tests.helpers import block_text, buttons
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackDriver, SlackUser

#: What the issue asks of a split deployment: an alert or a click reaches Slack within this.
PROMPT = 2.0


async def _setup(db_url: str) -> str:
    """Payments (C0PAY) with Alice as a linked member; the team's API key."""
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            key = await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY"))
            user = await users.add_user(s, "alice@example.com", "Alice")
            await teams.add_member(s, "Payments", "alice@example.com")
            request = await slack_links.issue_link(s, SlackIdentity(TEAM_ID, "U0ALICE"), SlackProfile(), 600)
            await slack_links.redeem(s, request.nonce, user, replace=False, ownership_confirmed=True)
    finally:
        await engine.dispose()
    return key


async def _scalar(db_url: str, sql: str):
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            return (await conn.execute(text(sql))).scalar()
    finally:
        await engine.dispose()


def _env(db_url: str, fake: FakeSlack, port: int, token: str) -> dict[str, str]:
    return clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN=token,
        SLACK_API_URL=fake.api_url,
        GENIE_OUTBOX_LEASE_SECONDS="2",
    )


async def _split(db_url: str, fake: FakeSlack, tmp_path: Path) -> tuple[GenieServer, GenieServer]:
    port = free_port()
    web = GenieServer.start(
        _env(db_url, fake, port, "xoxb-web"), port, cwd=tmp_path, args=("--no-worker", "--no-migrate")
    )
    health = free_port()
    worker = GenieServer.start_worker(
        _env(db_url, fake, port, "xoxb-worker"),
        cwd=tmp_path,
        log_path=tmp_path / "worker.log",
        args=("--no-migrate", "--port", str(health)),
    )
    worker.url = f"http://127.0.0.1:{health}"  # health and metrics only
    await web.wait_healthy()
    await worker.wait_log("Genie worker running")
    return web, worker


async def test_web_process_wakes_the_worker_for_a_post_and_an_acknowledgement(db_url, fake_slack, tmp_path):
    key = await _setup(db_url)
    web, worker = await _split(db_url, fake_slack, tmp_path)
    try:
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
            sent = time.monotonic()
            response = await http.post(
                "/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": "Checkout is failing"}
            )
            assert response.status_code == 202, response.text
            [post] = await fake_slack.wait_for("chat.postMessage", channel="C0PAY", timeout=10)
            assert post.at - sent < PROMPT, f"posted {post.at - sent:.2f} s after the 202"
            await eventually(lambda: _scalar(db_url, "SELECT slack_ts IS NOT NULL FROM alert"), timeout=10)

            ts = await _scalar(db_url, "SELECT slack_ts FROM alert")
            value = buttons(post.args["blocks"])["alert_acknowledge"]["value"]
            clicked = time.monotonic()
            answer = await SlackDriver(http, SIGNING_SECRET, fake_slack).block_action(
                SlackUser("U0ALICE"),
                "alert_acknowledge",
                value,
                container="message",
                channel_id="C0PAY",
                message_ts=ts,
                message={"ts": ts, "blocks": post.args["blocks"]},
            )
            assert answer.status_code == 200
            [update] = await fake_slack.wait_for("chat.update", channel="C0PAY", timeout=10)
            assert update.at - clicked < PROMPT, f"updated {update.at - clicked:.2f} s after the click"
            assert "*Acknowledged* by Alice" in block_text(update.args["blocks"])

            # The deliveries are counted where they happen: the worker's /metrics, not the web's.
            async def update_counted() -> bool:  # counted once its delivery is committed, just after the call
                text = (await http.get(f"{worker.url}/metrics")).text
                return 'genie_outbox_delivered_total{kind="alert.update"} 1.0' in text

            await eventually(update_counted, timeout=10)
            assert "genie_outbox_delivered_total{" not in (await http.get("/metrics")).text

        # Only the worker spoke to the channel, and over one kept-alive connection.
        chat = [c for c in fake_slack.calls() if c.method.startswith("chat.")]
        assert {c.token for c in chat} == {"xoxb-worker"}
        assert len({c.peer for c in chat}) == 1, [c.peer for c in chat]
        print(
            f"\n[split] 202 -> chat.postMessage {post.at - sent:.3f} s; click -> chat.update {update.at - clicked:.3f} s"
        )
    finally:
        web.stop()
        worker.stop()
    assert worker.proc.returncode == 0, worker.log()


async def test_sigterm_lets_the_worker_finish_its_slack_call(db_url, fake_slack, tmp_path):
    key = await _setup(db_url)
    web, worker = await _split(db_url, fake_slack, tmp_path)
    try:
        fake_slack.fail("chat.postMessage", delay=1.5)  # Slack posts at once and answers late
        async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:
            response = await http.post(
                "/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": "Disk full"}
            )
            assert response.status_code == 202
        await fake_slack.wait_for("chat.postMessage", channel="C0PAY", timeout=10)  # the call is in flight
        worker.proc.send_signal(signal.SIGTERM)
        assert worker.proc.wait(timeout=20) == 0, worker.log()
        # It waited for Slack's answer and recorded it: delivered, the alert knows its message.
        assert await _scalar(db_url, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL") == 0
        assert await _scalar(db_url, "SELECT slack_ts IS NOT NULL FROM alert")
        assert "Genie worker stopped" in worker.log()

        # A new worker finds nothing left to send: the alert is in the channel once.
        again = GenieServer.start_worker(
            _env(db_url, fake_slack, 0, "xoxb-worker"), cwd=tmp_path, log_path=tmp_path / "worker2.log"
        )
        try:
            await again.wait_log("Genie worker running")
            async with httpx.AsyncClient(base_url=web.url, timeout=10) as http:  # something to deliver after it
                await http.post("/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": "Next"})
            await fake_slack.wait_for("chat.postMessage", count=2, channel="C0PAY", timeout=10)
            posts = [c.args.get("text", "") for c in fake_slack.calls("chat.postMessage")]
            assert len(posts) == 2 and sum("Disk full" in t for t in posts) == 1, posts
        finally:
            again.stop()
    finally:
        web.stop()
        worker.stop()


def _children(pid: int) -> list[int]:
    return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]


async def test_serve_with_two_workers_serves_and_delivers_and_stops(db_url, fake_slack, tmp_path):
    key = await _setup(db_url)
    port = free_port()
    server = GenieServer.start(
        _env(db_url, fake_slack, port, "xoxb-genie"), port, cwd=tmp_path, args=("--workers", "2")
    )
    try:
        await server.wait_healthy()
        serving = _children(server.pid)
        assert len(serving) == 2  # the supervisor and its two serving processes
        async with httpx.AsyncClient(base_url=server.url, timeout=10) as http:
            for i in range(6):  # new connections: the kernel spreads them over both processes
                async with httpx.AsyncClient(base_url=server.url, timeout=10) as one:
                    response = await one.post(
                        "/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": f"Alert {i}"}
                    )
                assert response.status_code == 202, response.text
            posts = await fake_slack.wait_for("chat.postMessage", count=6, channel="C0PAY", timeout=10)
            assert all(any(f"Alert {i}" in c.args["text"] for c in posts) for i in range(6))
            assert (await http.get("/readyz")).status_code == 200
    finally:
        server.stop()
    assert server.proc.returncode == 0, server.log()
    log = server.log()
    assert log.count("Genie listening") == 2  # both served …
    assert log.count("Outbox worker started") == 1  # … and one ran the background loops
    assert len(fake_slack.calls("chat.postMessage")) == 6  # each alert once
    for pid in serving:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
