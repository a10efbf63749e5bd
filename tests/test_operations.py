"""What a load balancer and an operator see: ``/healthz`` (the process is up), ``/readyz`` (it
can reach its database: 503 when it cannot, so traffic goes to processes that can) and
``/metrics`` (Prometheus: requests by route template, gate decisions, the outbox).

Readiness is tested from the outside, on ``genie serve`` processes whose database is missing
or goes away and comes back; metrics through the real app after real requests, clicks and
deliveries, and against the README, which must name every metric."""

from __future__ import annotations

import asyncio
import signal
import uuid

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import make_url

from bot import metrics
from bot.services import alerts, slack_links, teams, users
from bot.services.alerts import CreateAlert
from bot.services.slack_links import SlackIdentity, SlackProfile
from storage.session import make_engine, make_sessionmaker
from tests.conftest import POSTGRES_URL, SECRET_KEY, eventually
from tests.fake_slack import TEAM_ID
from tests.helpers import buttons
from tests.processes import REPO, GenieServer, clean_env, free_port
from tests.slack_driver import SlackUser

ALICE, BOB, MALLORY, STRANGER = (SlackUser(u) for u in ("U0ALICE", "U0BOB", "U0MALLORY", "U0STRANGER"))


# --- readiness ---------------------------------------------------------------------------------------
async def _status(http: httpx.AsyncClient, path: str) -> tuple[int, str]:
    response = await http.get(path)
    return response.status_code, response.text


@pytest.mark.parametrize("where", ["postgresql", "sqlite"])
async def test_readyz_is_503_while_the_database_cannot_be_reached(where, tmp_path):
    """A process whose database is not there is alive (``/healthz``) but not ready."""
    url = {
        "postgresql": f"postgresql+asyncpg://genie@127.0.0.1:{free_port()}/genie",  # nothing listens there
        "sqlite": f"sqlite+aiosqlite:///{tmp_path}/no-such-directory/genie.db",
    }[where]
    port = free_port()
    env = clean_env(DATABASE_URL=url, GENIE_SECRET_KEY=SECRET_KEY, GENIE_BASE_URL=f"http://127.0.0.1:{port}")
    server = GenieServer.start(env, port, cwd=tmp_path, args=("--no-migrate",))
    try:
        await server.wait_healthy()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            status, body = await _status(http, "/readyz")
            assert status == 503 and body.startswith("database unreachable: "), (status, body)
            assert await _status(http, "/healthz") == (200, "ok")
        assert server.proc.poll() is None, "a database outage must not stop the process"
    finally:
        server.stop()


class Cable:
    """A TCP proxy between Genie and PostgreSQL that the test can cut (every connection dropped,
    new ones refused) and mend — a network partition, or the database restarting."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.listen_port = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def connect(self) -> Cable:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.listen_port)
        self.listen_port = self._server.sockets[0].getsockname()[1]
        return self

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.transport.abort()
        self._writers.clear()
        self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(self.host, self.port)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update({writer, up_writer})

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except ConnectionError:
                pass
            finally:
                dst.transport.abort()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.difference_update({writer, up_writer})


@pytest.mark.skipif(not POSTGRES_URL, reason="needs PostgreSQL: set GENIE_TEST_POSTGRES_URL")
@pytest.mark.parametrize("database", ["postgres"], indirect=True)
async def test_readyz_follows_the_database_down_and_up_again(db_url, tmp_path):
    real = make_url(db_url)
    cable = await Cable(real.host or "127.0.0.1", real.port or 5432).connect()
    via_cable = real.set(host="127.0.0.1", port=cable.listen_port).render_as_string(hide_password=False)
    port = free_port()
    env = clean_env(DATABASE_URL=via_cable, GENIE_SECRET_KEY=SECRET_KEY, GENIE_BASE_URL=f"http://127.0.0.1:{port}")
    server = GenieServer.start(env, port, cwd=tmp_path)
    try:
        await server.wait_healthy()
        engine = make_engine(db_url)  # straight to PostgreSQL, not through the cable
        async with make_sessionmaker(engine).begin() as s:
            key = await alerts.team_key(s, await teams.add_team(s, "Payments"))
        await engine.dispose()
        async with httpx.AsyncClient(base_url=server.url, timeout=30) as http:
            assert await _status(http, "/readyz") == (200, "ready")

            await cable.cut()
            down = await eventually(lambda: _is(http, "/readyz", 503), timeout=15)
            assert down.startswith("database unreachable: ")
            assert await _status(http, "/healthz") == (200, "ok")  # alive: restarting it would not help

            await cable.connect()
            await eventually(lambda: _is(http, "/readyz", 200), timeout=15)
            assert await _status(http, "/healthz") == (200, "ok")

            # Cut again while no request asks, and mend: the pool's connections all died (as in
            # a restart of PostgreSQL). Connections are not pinged on every use (storage.session):
            # one idle for a while is, and the first that fails in use (a background loop's, here
            # usually) replaces every older one — the next alert is taken in, not a 503.
            await cable.cut()
            await cable.connect()
            await asyncio.sleep(2.5)  # longer than PING_AFTER_IDLE_S: the idle connections are pinged
            alert = await http.post(
                "/v2/alerts", json={"message": "Disk full on db-1"}, headers={"Authorization": f"GenieKey {key}"}
            )
            assert alert.status_code == 202, alert.text
        assert server.proc.poll() is None
    finally:
        server.stop()
        if cable._server is not None:
            await cable.cut()


async def _is(http: httpx.AsyncClient, path: str, status: int) -> str | None:
    answer, body = await _status(http, path)
    return body if answer == status else None


# --- metrics ------------------------------------------------------------------------------------------
async def _scrape(genie) -> tuple[dict[tuple[str, tuple], float], str]:
    response = await genie.http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }
    return samples, response.text


def _delta(before: dict, after: dict, name: str, **labels: str) -> float:
    key = (name, tuple(sorted(labels.items())))
    return after.get(key, 0.0) - before.get(key, 0.0)


async def _outbox_drained(genie, count: int) -> bool:
    return (
        await genie.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NOT NULL") >= count
        and await genie.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL") == 0
    )


async def test_metrics_count_requests_clicks_and_deliveries(genie):
    """Values are per process and cumulative, so the test compares two scrapes."""
    async with genie.sessionmaker.begin() as s:
        await teams.add_team(s, "Payments", "C0PAY")
        for email, name, slack_id, member in [
            ("alice@example.com", "Alice Smith", "U0ALICE", True),
            ("bob@example.com", "Bob Jones", "U0BOB", True),
            ("mallory@example.com", "Mallory Evil", "U0MALLORY", False),
        ]:
            user = await users.add_user(s, email, name)
            if member:
                await teams.add_member(s, "Payments", email)
            request = await slack_links.issue_link(s, SlackIdentity(TEAM_ID, slack_id), SlackProfile(), 600)
            await slack_links.redeem(s, request.nonce, user, replace=False, ownership_confirmed=True)
    before, _ = await _scrape(genie)

    # Requests: the link token is in the path, and must not end up in a label.
    token = f"NotARealToken{uuid.uuid4().hex}"
    assert (await genie.http.get("/healthz")).status_code == 200
    assert (await genie.http.get(f"/link/{token}")).status_code == 400
    assert (await genie.http.get(f"/no/such/page/{token}")).status_code == 404

    # A delivery: the alert's post.
    async with genie.sessionmaker.begin() as s:
        alert, _ = await alerts.create_alert(
            s,
            await teams.require_team(s, "Payments"),
            CreateAlert(message="Checkout error rate above 5%"),
            str(uuid.uuid4()),
        )
    genie.rt.wake_outbox()
    [post] = await genie.fake.wait_for("chat.postMessage", channel="C0PAY")
    await eventually(lambda: _outbox_drained(genie, 1))
    value = buttons(post.args["blocks"])["alert_acknowledge"]["value"]
    close = buttons(post.args["blocks"])["alert_close"]["value"]

    # Clicks: one acknowledgement applied, one too late, two refused, one forged.
    async def click(who: SlackUser, action_id: str, button_value: str) -> None:
        response = await genie.slack.block_action(who, action_id, button_value, container="message", channel_id="C0PAY")
        assert response.status_code == 200

    await click(ALICE, "alert_acknowledge", value)
    await eventually(lambda: _outbox_drained(genie, 2))  # and the update that says so
    await click(BOB, "alert_acknowledge", value)
    await click(MALLORY, "alert_close", close)
    await click(STRANGER, "alert_acknowledge", value)
    await click(ALICE, "alert_acknowledge", "not a Genie button")
    await genie.fake.wait_for("response_url", count=4)  # the four who were told why not

    async def settled():  # the last click is counted after its ack; the gauges refresh every second
        after, body = await _scrape(genie)
        done = (
            _delta(
                before, after, "genie_gate_decisions_total", action="acknowledge", outcome="invalid", reason="bad_value"
            )
            == 1
            and after[("genie_outbox_depth", ())] == 0
        )
        return (after, body) if done else None

    after, body = await eventually(settled, timeout=10)

    http = "genie_http_requests_total"
    assert _delta(before, after, http, method="GET", route="/healthz", status="200") == 1
    assert _delta(before, after, http, method="GET", route="/link/{token}", status="400") == 1
    assert _delta(before, after, http, method="GET", route="unmatched", status="404") == 1
    assert _delta(before, after, http, method="POST", route="/slack/events", status="200") == 5
    assert _delta(before, after, "genie_http_request_duration_seconds_count", route="/healthz") == 1
    assert token not in body and "/no/such/page" not in body  # templates only, never paths

    gate = "genie_gate_decisions_total"
    assert _delta(before, after, gate, action="acknowledge", outcome="applied", reason="member") == 1
    assert _delta(before, after, gate, action="acknowledge", outcome="noop", reason="member") == 1
    assert _delta(before, after, gate, action="close", outcome="denied", reason="not_member") == 1
    assert _delta(before, after, gate, action="acknowledge", outcome="denied", reason="not_linked") == 1

    assert _delta(before, after, "genie_outbox_delivered_total", kind="alert.post") == 1
    assert _delta(before, after, "genie_outbox_delivered_total", kind="alert.update") == 1
    assert after[("genie_outbox_oldest_pending_age_seconds", ())] == 0
    assert after[("genie_outbox_failed_messages", ())] == 0


def test_every_metric_is_named_in_the_readme():
    readme = (REPO / "README.md").read_text()
    names = []
    for family in metrics.REGISTRY.collect():
        names.append(f"{family.name}_total" if family.type == "counter" else family.name)
    assert len(names) >= 9
    missing = [name for name in names if f"`{name}" not in readme]
    assert not missing, f"README.md does not document {missing}"


@pytest.mark.parametrize("how", ["SIGTERM", "SIGINT"])
async def test_a_stop_signal_ends_genie_serve_after_it_closed_its_database(how, tmp_path):
    """A supervisor's SIGTERM or a Ctrl-C: uvicorn shuts down gracefully, then Genie closes its
    database pool and exits 0. (uvicorn raising the signal again after ``serve()`` killed the
    process before the pool was closed on SIGTERM, and cancelled the close on SIGINT, logging an
    ERROR at every Ctrl-C.)"""
    port = free_port()
    env = clean_env(
        DATABASE_URL=f"sqlite+aiosqlite:///{tmp_path}/genie.db",
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_SIGNING_SECRET="s" * 32,
        SLACK_BOT_TOKEN="xoxb-test",
        SLACK_API_URL="http://127.0.0.1:9/api/",
    )
    server = GenieServer.start(env, port, cwd=tmp_path)
    try:
        await server.wait_healthy()
        server.proc.send_signal(getattr(signal, how))
        code = await asyncio.to_thread(server.proc.wait, 20)
    finally:
        if server.proc.poll() is None:
            server.kill()
    log = server.log()
    assert code == 0, log
    assert "Genie stopped; its database connections are closed" in log, log
    assert "Exception closing connection" not in log and "CancelledError" not in log, log
