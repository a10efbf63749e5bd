"""Several ``genie serve`` processes on one PostgreSQL behave as one (DESIGN.md §3; issue 4,
"Several servers, one database").

Each test starts real ``genie serve`` processes against one fresh PostgreSQL database and one
fake Slack, and drives them at the same time, the way a load balancer spreads people and Slack
over them: sign-ins, link confirms, button clicks and API calls alternate between processes.
What is checked afterwards is the database and the fake Slack's record: one link, one
acknowledgement, each alert in its channel exactly once and in order — also when a process is
killed with SIGKILL in the middle of a delivery.

Every process is told the same public URL (the load balancer's) and the same secret key; each
gets its own bot token string, so the fake Slack's record says which process made a call (the
fake accepts any ``xoxb-`` token; in production they share one).

PostgreSQL only: SQLite is one file on one machine, for one process.
"""

from __future__ import annotations

import asyncio
import re
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from alembic.script import ScriptDirectory
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from bot.services import alerts, slack_links, teams, users
from bot.services.slack_links import SlackIdentity, SlackProfile
from migrations.apply import alembic_config
from storage.session import make_engine, make_sessionmaker
from tests.conftest import (
    POSTGRES_URL,
    SECRET_KEY,
    SIGNING_SECRET,
    Browser,
    _pg_create,
    _pg_drop,
    eventually,
    page_text,
)
from tests.fake_slack import TEAM_ID, FakeSlack
from tests.helpers import block_text, buttons, connect_url
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackDriver, SlackUser

pytestmark = [
    pytest.mark.skipif(not POSTGRES_URL, reason="several processes share PostgreSQL: set GENIE_TEST_POSTGRES_URL"),
    pytest.mark.parametrize("database", ["postgres"], indirect=True),
]

PASSWORD = "correct horse battery staple"
#: What every process is told its public URL is: the load balancer in front of them.
PUBLIC_URL = "http://genie.example.test"
#: The outbox lease in the crash test: short, so the survivors take over soon after a kill.
LEASE_SECONDS = "3"
CHANNELS = {"Payments": "C0PAY", "Search": "C0SEARCH", "Ops": "C0OPS"}
ALICE = SlackUser("U0ALICE")
#: What a worker logs when it finds in the channel the post of an attempt that died.
ADOPTED = re.compile(r"Alert #(\d+) was already posted to \S+ by an earlier attempt .*; adopting it")


# --- the processes -----------------------------------------------------------------------------
@dataclass
class Node:
    """One ``genie serve`` process, and clients that talk to it as Slack and scripts do."""

    name: str
    server: GenieServer
    token: str
    http: httpx.AsyncClient
    slack: SlackDriver

    @property
    def url(self) -> str:
        return self.server.url

    async def metrics(self) -> dict[tuple[str, tuple], float]:
        response = await self.http.get("/metrics")
        assert response.status_code == 200
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(response.text)
            for s in family.samples
        }


@pytest.fixture
def cluster(db_url: str, fake_slack: FakeSlack, tmp_path: Path):
    """``await cluster("a", "b")`` starts those processes at the same time and waits until each
    is healthy; ``url=`` points them at another database, ``lease=`` sets
    GENIE_OUTBOX_LEASE_SECONDS (else the default, 60). All are killed at the end."""
    nodes: list[Node] = []

    async def start(*names: str, url: str = db_url, lease: str | None = None) -> list[Node]:
        started = []
        for name in names:
            port, token = free_port(), f"xoxb-genie-{name}"
            env = clean_env(
                DATABASE_URL=url,
                GENIE_SECRET_KEY=SECRET_KEY,
                GENIE_BASE_URL=PUBLIC_URL,
                SLACK_SIGNING_SECRET=SIGNING_SECRET,
                SLACK_BOT_TOKEN=token,
                SLACK_API_URL=fake_slack.api_url,
            )
            if lease is not None:
                env["GENIE_OUTBOX_LEASE_SECONDS"] = lease
            server = GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / f"genie-{name}-{port}.log")
            http = httpx.AsyncClient(base_url=server.url, timeout=60)
            node = Node(name, server, token, http, SlackDriver(http, SIGNING_SECRET, fake_slack))
            nodes.append(node)
            started.append(node)
        await asyncio.gather(*(n.server.wait_healthy(timeout=60) for n in started))
        return started

    yield start
    for node in nodes:
        node.server.kill()
        # Shown by pytest only when the test failed: what each process said.
        lines = node.server.log().splitlines()
        print(f"--- genie {node.name} ({node.url}), last {min(len(lines), 80)} log lines:", *lines[-80:], sep="\n")


@pytest.fixture
async def db(db_url: str):
    """The test's own connection to the database the processes share."""
    engine = make_engine(db_url)
    yield make_sessionmaker(engine)
    await engine.dispose()


@pytest.fixture
async def empty_database(database):
    """A brand-new PostgreSQL database with no tables at all (not even alembic_version)."""
    name = f"genie_mp_{uuid.uuid4().hex[:10]}"
    url = await _pg_create(database.template, name)
    yield url
    await _pg_drop(database.template, name)


async def scalar(db, sql: str, **params):
    async with db() as session:
        return (await session.execute(text(sql), params)).scalar()


async def rows(db, sql: str, **params) -> list:
    async with db() as session:
        return list((await session.execute(text(sql), params)).all())


def total(scrapes: list[dict], name: str, **labels: str) -> float:
    """A metric summed over processes: matching samples whose labels include ``labels``."""
    return sum(
        value
        for scrape in scrapes
        for (n, have), value in scrape.items()
        if n == name and set(labels.items()) <= set(have)
    )


def alert_of(message: dict) -> int | None:
    return ((message.get("metadata") or {}).get("event_payload") or {}).get("alert_id")


async def seed_people(
    db, count: int, prefix: str, *, team: str | None = None, link_prefix: str | None = None
) -> list[str]:
    """``count`` Genie users (all with PASSWORD), optionally members of ``team`` and linked to
    Slack users ``{link_prefix}00…``; their emails."""
    password_hash = users.hash_password(PASSWORD)  # hashed once: argon2 is slow on purpose
    emails = [f"{prefix}{i:02d}@example.com" for i in range(count)]
    async with db.begin() as session:
        for i, email in enumerate(emails):
            user = await users.add_user(session, email, f"{prefix.title()} {i:02d}")
            user.password_hash = password_hash
            if team is not None:
                await teams.add_member(session, team, email)
            if link_prefix is not None:
                request = await slack_links.issue_link(
                    session, SlackIdentity(TEAM_ID, f"{link_prefix}{i:02d}"), SlackProfile(), 600
                )
                await slack_links.redeem(session, request.nonce, user, replace=False, ownership_confirmed=True)
    return emails


async def seed_teams(db) -> dict[str, str]:
    """The three teams of CHANNELS; their API keys by team name."""
    keys = {}
    async with db.begin() as session:
        for name, channel in CHANNELS.items():
            team = await teams.add_team(session, name, channel)
            keys[name] = await alerts.team_key(session, team)
    return keys


async def create_alert(node: Node, key: str, message: str) -> None:
    response = await node.http.post(
        "/v2/alerts", json={"message": message}, headers={"Authorization": f"GenieKey {key}"}
    )
    assert response.status_code == 202, (node.name, response.status_code, response.text)


async def all_delivered(db, count: int):
    done = await rows(db, "SELECT id FROM outbox WHERE delivered_at IS NOT NULL")
    pending = await scalar(db, "SELECT count(*) FROM outbox WHERE delivered_at IS NULL")
    return len(done) >= count and pending == 0


# --- migrations ----------------------------------------------------------------------------------
async def test_three_processes_started_at_once_on_an_empty_database_migrate_it_once(cluster, empty_database):
    started = time.monotonic()
    nodes = await cluster("m1", "m2", "m3", url=empty_database)
    healthy_after = time.monotonic() - started

    for node in nodes:
        ready = await node.http.get("/readyz")
        assert (ready.status_code, ready.text) == (200, "ready"), node.server.log()
        assert node.server.proc.poll() is None
        log = node.server.log()
        assert "Traceback" not in log and "ERROR" not in log, log

    engine = make_engine(empty_database)
    try:
        db = make_sessionmaker(engine)
        head = ScriptDirectory.from_config(alembic_config()).get_current_head()
        assert await rows(db, "SELECT version_num FROM alembic_version") == [(head,)]
        tables = {r[0] for r in await rows(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
        assert {"alert", "outbox", "slack_link", "link_request", "alembic_version"} <= tables
    finally:
        await engine.dispose()
    print(f"\n[multiprocess] 3 processes started together on an empty database: all healthy in {healthy_after:.1f} s")


# --- (a) one link, confirmed once ---------------------------------------------------------------------
async def test_forty_confirms_of_one_link_across_two_processes_link_it_once(cluster, db, fake_slack):
    emails = await seed_people(db, 40, "person")
    a, b = nodes = await cluster("a", "b")

    path = urlsplit(connect_url(await a.slack.command(ALICE, "connect"))).path
    assert path.startswith("/link/")
    await fake_slack.wait_for("users.info", user="U0ALICE", timeout=30)  # the profile, looked up after the ack

    # Forty people, each signed in on one process and shown the confirm page by the other
    # (sessions and CSRF tokens live in the database and under the shared key).
    browsers = [Browser("") for _ in emails]

    async def sign_in_and_open(i: int) -> None:
        here, there = nodes[i % 2], nodes[(i + 1) % 2]
        browser = browsers[i]
        await browser.get(f"{here.url}/login?next={path}")
        signed_in = await browser.post(f"{here.url}/login", {"email": emails[i], "password": PASSWORD, "next": path})
        assert signed_in.status_code == 303, page_text(signed_in)
        page = await browser.get(f"{there.url}{path}")
        assert page.status_code == 200 and "Connect this Slack account?" in page_text(page), page_text(page)

    try:
        await asyncio.gather(*(sign_in_and_open(i) for i in range(len(emails))))
        started = time.monotonic()
        results = await asyncio.gather(
            *(browsers[i].post(f"{nodes[i % 2].url}{path}", {"mine": "yes"}) for i in range(len(emails)))
        )
        took = time.monotonic() - started
    finally:
        for browser in browsers:
            await browser.aclose()

    codes = Counter(r.status_code for r in results)
    assert codes == {200: 1, 410: 39}, codes
    assert all("already been used" in page_text(r) for r in results if r.status_code == 410)
    winner = emails[next(i for i, r in enumerate(results) if r.status_code == 200)]

    # The database: one link, to the winner; the request consumed by the winner.
    links = await rows(
        db, 'SELECT u.email, l.workspace_id, l.slack_user_id FROM slack_link l JOIN "user" u ON u.id = l.user_id'
    )
    assert links == [(winner, TEAM_ID, "U0ALICE")]
    assert await rows(db, 'SELECT u.email FROM link_request r JOIN "user" u ON u.id = r.consumed_by_user_id') == [
        (winner,)
    ]
    # Slack: the one DM saying so, from whichever process won.
    dm = await fake_slack.wait_for("chat.postMessage", channel="U0ALICE", timeout=30)
    # The DM goes through the outbox: one row was queued, and once nothing is left to deliver
    # Slack has heard everything it will (no fixed sleep to prove there is no second DM).
    assert await scalar(db, "SELECT count(*) FROM outbox WHERE channel = 'U0ALICE'") == 1
    await eventually(
        lambda: scalar(db, "SELECT count(*) = 0 FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"),
        timeout=30,
    )
    dms = fake_slack.calls("chat.postMessage")
    assert len([c for c in dms if c.args.get("channel") == "U0ALICE"]) == 1
    assert f"You're connected as {winner}" in dm[0].args["text"]

    # Both processes took their twenty confirms, counted under the route's template only.
    scrapes = [await n.metrics() for n in nodes]
    for scrape in scrapes:
        assert total([scrape], "genie_http_requests_total", method="POST", route="/link/{token}") == 20
    assert total(scrapes, "genie_http_requests_total", method="POST", route="/link/{token}", status="200") == 1
    assert total(scrapes, "genie_http_requests_total", method="POST", route="/link/{token}", status="410") == 39
    token = path.removeprefix("/link/")
    for node in nodes:
        assert token not in (await node.http.get("/metrics")).text
    print(f"\n[multiprocess] 40 concurrent confirms over 2 processes: {dict(codes)} in {took:.2f} s")


# --- (b) one acknowledgement ------------------------------------------------------------------------
async def test_forty_acknowledge_clicks_across_two_processes_make_one_transition(cluster, db, fake_slack):
    keys = await seed_teams(db)
    await seed_people(db, 40, "member", team="Payments", link_prefix="U0CLICK")
    a, b = nodes = await cluster("a", "b")

    await create_alert(a, keys["Payments"], "Checkout error rate above 5%")
    [post] = await fake_slack.wait_for("chat.postMessage", channel="C0PAY", timeout=30)
    alert_id = alert_of(post.args)
    value = buttons(post.args["blocks"])["alert_acknowledge"]["value"]
    await eventually(lambda: all_delivered(db, 1), timeout=30)

    clickers = [SlackUser(f"U0CLICK{i:02d}") for i in range(40)]
    started = time.monotonic()
    answers = await asyncio.gather(
        *(
            nodes[i % 2].slack.block_action(who, "alert_acknowledge", value, container="message", channel_id="C0PAY")
            for i, who in enumerate(clickers)
        )
    )
    assert [r.status_code for r in answers] == [200] * 40  # every click acked at once
    told = await fake_slack.wait_for("response_url", count=39, timeout=30)
    took = time.monotonic() - started

    events = await rows(
        db,
        "SELECT action, outcome, actor_name, slack_user_id FROM alert_event "
        "WHERE alert_id = :a AND action = 'acknowledge' ORDER BY id",
        a=alert_id,
    )
    applied = [e for e in events if e.outcome == "applied"]
    assert len(applied) == 1 and len(events) == 40
    assert Counter(e.outcome for e in events) == {"applied": 1, "noop": 39}
    assert {e.slack_user_id for e in events} == {c.user_id for c in clickers}  # everyone's click is on record
    winner = applied[0].actor_name
    assert await rows(db, "SELECT acknowledged, acknowledged_by FROM alert WHERE id = :a", a=alert_id) == [
        (True, winner)
    ]

    # The 39 losers — and only they — were told who won, each in an ephemeral message. No fixed
    # sleep to prove no 40th: each listener counts its decision once committed, and only a
    # loser says anything after that; with all 40 counted and 39 messages here, none can follow.
    async def all_decided() -> bool:
        scrapes = [await n.metrics() for n in nodes]
        return total(scrapes, "genie_gate_decisions_total", action="acknowledge") == 40

    await eventually(all_decided, timeout=30)
    told = fake_slack.calls("response_url")
    assert len(told) == 39
    assert all(f"already acknowledged by {winner}" in t.args["text"] for t in told), told[0].args
    assert all(t.args.get("response_type") == "ephemeral" for t in told)

    # The channel's message was updated once, to name the winner.
    await eventually(lambda: all_delivered(db, 2), timeout=30)
    updates = [c for c in fake_slack.calls("chat.update") if c.args.get("channel") == "C0PAY"]
    assert len(updates) == 1
    [shown] = fake_slack.messages("C0PAY")
    assert f"Acknowledged* by {winner}" in block_text(shown["blocks"])

    # Each process judged its twenty clicks; together: one applied, 39 noops.
    scrapes = [await n.metrics() for n in nodes]
    for scrape in scrapes:
        assert total([scrape], "genie_http_requests_total", method="POST", route="/slack/events") >= 20
    assert total(scrapes, "genie_gate_decisions_total", action="acknowledge", outcome="applied", reason="member") == 1
    assert total(scrapes, "genie_gate_decisions_total", action="acknowledge", outcome="noop", reason="member") == 39
    print(
        f"\n[multiprocess] 40 concurrent Acknowledge clicks over 2 processes: 1 applied, 39 told who won, "
        f"in {took:.2f} s"
    )


# --- (c) every alert once, in order ------------------------------------------------------------------
async def test_sixty_alerts_through_both_processes_reach_slack_once_each_in_order(cluster, db, fake_slack):
    keys = await seed_teams(db)
    nodes = await cluster("a", "b")

    # Three monitoring tools, one per team, at the same time; each sends its twenty alerts one
    # after the other, alternately to either process (as a load balancer would).
    sent: dict[str, list[str]] = {channel: [] for channel in CHANNELS.values()}

    async def tool(c: int, team: str) -> None:
        for k in range(20):
            message = f"{team} alert {k:02d}"
            await create_alert(nodes[(k + c) % 2], keys[team], message)
            sent[CHANNELS[team]].append(message)

    started = time.monotonic()
    await asyncio.gather(*(tool(c, team) for c, team in enumerate(CHANNELS)))
    accepted = time.monotonic() - started
    await eventually(lambda: all_delivered(db, 60), timeout=60)
    took = time.monotonic() - started

    ids = dict((m, i) for i, m in await rows(db, "SELECT id, message FROM alert"))
    assert len(ids) == 60
    for channel, messages in sent.items():
        shown = [alert_of(m) for m in fake_slack.messages(channel)]
        assert shown == [ids[m] for m in messages], channel  # each exactly once, in creation order

    posts = fake_slack.calls("chat.postMessage")
    assert Counter(alert_of(c.args) for c in posts) == {i: 1 for i in ids.values()}  # no second attempt either
    # Either worker may deliver any of it (a worker that settles a message claims its channel's
    # next one, so one process can carry a whole burst): what matters is once each, in order.
    by_process = Counter(c.token for c in posts)
    assert set(by_process) <= {n.token for n in nodes}, by_process
    assert await scalar(db, "SELECT count(*) FROM outbox WHERE attempts <> 1 OR failed_at IS NOT NULL") == 0
    assert await scalar(db, "SELECT count(*) FROM alert WHERE slack_ts IS NULL") == 0

    scrapes = [await n.metrics() for n in nodes]
    assert total(scrapes, "genie_outbox_delivered_total", kind="alert.post") == 60
    assert total(scrapes, "genie_http_requests_total", method="POST", route="/v2/alerts", status="202") == 60
    split = {n.name: by_process[n.token] for n in nodes}
    print(
        f"\n[multiprocess] 60 alerts over 2 processes, 3 channels: accepted in {accepted:.2f} s, all in Slack "
        f"after {took:.2f} s; posts by process {split}"
    )


# --- (d) a process killed in the middle of delivering ----------------------------------------------
async def test_a_process_killed_mid_delivery_loses_nothing_and_duplicates_nothing(cluster, db, fake_slack):
    keys = await seed_teams(db)
    a, b = await cluster("a", "b", lease=LEASE_SECONDS)

    # Slack is slow: the next posts are in the channel at once but answered after 4 s.
    fake_slack.fail("chat.postMessage", delay=4, times=3)
    sent: dict[str, list[str]] = {channel: [] for channel in CHANNELS.values()}
    for k in range(4):
        for team in CHANNELS:
            message = f"{team} before the crash {k}"
            await create_alert(a, keys[team], message)  # a's worker is woken by its own commits
            sent[CHANNELS[team]].append(message)

    # Kill a while Slack is still answering one of its posts.
    async def a_is_posting():
        return [c for c in fake_slack.calls("chat.postMessage") if c.token == a.token]

    await eventually(a_is_posting, timeout=15)
    a.server.kill()
    killed_at = time.monotonic()
    # Every post a made was among the slow ones, so all were still waiting for Slack's answer.
    cut_off = [alert_of(c.args) for c in await a_is_posting()]
    assert await scalar(
        db, "SELECT count(*) FROM outbox WHERE alert_id = ANY(:ids) AND delivered_at IS NULL", ids=cut_off
    ) == len(cut_off)  # a died before recording them

    # Work goes on through b; then a comes back (a restarted process, on another port).
    for team in CHANNELS:
        message = f"{team} after the crash"
        await create_alert(b, keys[team], message)
        sent[CHANNELS[team]].append(message)
    [a2] = await cluster("a2", lease=LEASE_SECONDS)
    await eventually(lambda: all_delivered(db, 15), timeout=60)
    took = time.monotonic() - killed_at

    ids = dict((m, i) for i, m in await rows(db, "SELECT id, message FROM alert"))
    for channel, messages in sent.items():
        assert [alert_of(m) for m in fake_slack.messages(channel)] == [ids[m] for m in messages], channel
    # The posts a was waiting on were found in the channel and adopted, not posted again.
    posts = Counter(alert_of(c.args) for c in fake_slack.calls("chat.postMessage"))
    assert posts == {i: 1 for i in ids.values()}, posts
    assert fake_slack.calls("conversations.history")
    adopted = {int(n) for n in ADOPTED.findall(b.server.log() + a2.server.log())}
    assert set(cut_off) <= adopted, (cut_off, adopted)
    attempts = dict(await rows(db, "SELECT alert_id, attempts FROM outbox"))
    assert all(attempts[i] == 2 for i in cut_off), attempts  # a's attempt, then the survivor's look
    assert await scalar(db, "SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL") == 0
    for channel in CHANNELS.values():  # each alert knows its one message
        for message in fake_slack.messages(channel):
            assert await scalar(db, "SELECT slack_ts FROM alert WHERE id = :a", a=alert_of(message)) == message["ts"]
    print(
        f"\n[multiprocess] killed a with {len(cut_off)} post(s) in flight; all 15 alerts in Slack exactly once "
        f"{took:.1f} s after the kill (lease {LEASE_SECONDS} s)"
    )


# --- (e) late heartbeats, with two processes looking ------------------------------------------------
#: What a process logs when it raised a late heartbeat's alert (``bot.services.heartbeats``).
RAISED = re.compile(r"Heartbeat (\S+) \(team #\d+\) expired: raised alert #(\d+)")


async def test_late_heartbeats_are_raised_once_each_whichever_process_looks(cluster, db, fake_slack):
    keys = await seed_teams(db)
    a, b = await cluster("a", "b")
    names = [f"job-{i:02d}" for i in range(20)]
    for i, name in enumerate(names):  # created through either process, pinged once
        node = (a, b)[i % 2]
        body = {"name": name, "interval": 1, "intervalUnit": "minutes", "enabled": True}
        headers = {"Authorization": f"GenieKey {keys['Payments']}"}
        assert (await node.http.post("/v2/heartbeats", json=body, headers=headers)).status_code == 201
        assert (await node.http.get(f"/v2/heartbeats/{name}/ping", headers=headers)).status_code == 202

    # A minute has passed for all of them (the processes judge by the real clock: the due times
    # are moved back instead). Both processes' monitors find them within their next look.
    async with db.begin() as session:
        await session.execute(text("UPDATE heartbeat SET expires_at = now() - interval '1 second'"))
    started = time.monotonic()
    await eventually(lambda: all_delivered(db, 20), timeout=30)
    took = time.monotonic() - started

    aliases = await rows(db, "SELECT alias, count, status FROM alert ORDER BY alias")
    assert aliases == [(f"heartbeat:{n}", 1, "open") for n in names]
    assert await scalar(db, "SELECT count(*) FROM alert_event WHERE action = 'deduplicate'") == 0
    posts = Counter(alert_of(c.args) for c in fake_slack.calls("chat.postMessage"))
    assert sorted(posts.values()) == [1] * 20, posts
    raised = {n.name: RAISED.findall(n.server.log()) for n in (a, b)}
    assert sorted(name for found in raised.values() for name, _ in found) == names, raised

    # The next ping, through either process, closes each alert once.
    headers = {"Authorization": f"GenieKey {keys['Payments']}"}
    await asyncio.gather(
        *(node.http.post(f"/v2/heartbeats/{name}/ping", headers=headers) for name in names for node in (a, b))
    )
    assert await scalar(db, "SELECT count(*) FROM alert WHERE status = 'closed'") == 20
    assert await scalar(db, "SELECT count(*) FROM alert_event WHERE action = 'close' AND outcome = 'applied'") == 20
    print(
        f"\n[multiprocess] 20 late heartbeats raised once each in {took:.1f} s; by process "
        f"{ {k: len(v) for k, v in raised.items()} }"
    )
