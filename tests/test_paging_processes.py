"""The escalation engine in real ``genie serve`` processes on one PostgreSQL (issue 15,
"Engineering"): what the fake Slack received is counted per (alert, person, step).

- Two processes share the database while alerts escalate: every step pages each of its people
  exactly once, whichever process fired it.
- A process is SIGKILLed while many steps are due and started again: the escalation resumes,
  every due page is sent; the engine queues none twice (one page row each), and no DM reaches
  Slack twice — not even one whose Slack call was in flight at the kill: the restarted process
  finds it in the DM's history (by the metadata every page carries) and adopts it.

The policy's steps all wait 0 minutes, so every step is due at once in real time (no clock to move
across processes): step 1 pages Alice, step 2 Bob, step 3 Carol.

PostgreSQL only: SQLite is one file on one machine, for one process.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from bot.services import alerts, escalation, slack_links, teams, users
from bot.services.escalation import StepSpec
from bot.services.slack_links import SlackIdentity, SlackProfile
from storage.session import make_engine, make_sessionmaker
from tests.conftest import POSTGRES_URL, SECRET_KEY, SIGNING_SECRET
from tests.fake_slack import TEAM_ID, FakeSlack
from tests.helpers import block_text
from tests.processes import GenieServer, clean_env, free_port

pytestmark = [
    pytest.mark.skipif(not POSTGRES_URL, reason="several processes share PostgreSQL: set GENIE_TEST_POSTGRES_URL"),
    pytest.mark.parametrize("database", ["postgres"], indirect=True),
]

PEOPLE = {"U0ALICE": "alice@example.com", "U0BOB": "bob@example.com", "U0CAROL": "carol@example.com"}
#: A page DM: "You are paged for alert #12 … escalation of Payments, step 2."
PAGED = re.compile(r"You are paged for alert #(\d+).*?step (\d+)", re.S)


async def _setup(db_url: str) -> str:
    """Payments (C0PAY) with Alice, Bob and Carol, linked in Slack, and a policy of three steps
    due at once (one person each); the team's API key."""
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            key = await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY"))
            for slack_id, email in PEOPLE.items():
                user = await users.add_user(s, email, email.split("@")[0].title())
                await teams.add_member(s, "Payments", email)
                request = await slack_links.issue_link(s, SlackIdentity(TEAM_ID, slack_id), SlackProfile(), 600)
                await slack_links.redeem(s, request.nonce, user, replace=False, ownership_confirmed=True)
            await escalation.set_policy(
                s, "Payments", "default", [StepSpec(0, "user", email) for email in PEOPLE.values()]
            )
    finally:
        await engine.dispose()
    return key


def _start(db_url: str, fake: FakeSlack, tmp_path: Path, name: str) -> GenieServer:
    port = free_port()
    env = clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN=f"xoxb-genie-{name}",
        SLACK_API_URL=fake.api_url,
        GENIE_OUTBOX_LEASE_SECONDS="2",
    )
    return GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / f"genie-{name}-{port}.log")


def _paged(fake: FakeSlack) -> Counter:
    """The page DMs Slack received, counted per (alert, Slack user, step)."""
    counted: Counter = Counter()
    for call in fake.calls("chat.postMessage"):
        if call.args.get("channel") not in PEOPLE:
            continue
        found = PAGED.search(block_text(call.args.get("blocks") or []))
        if found:
            counted[(int(found[1]), call.args["channel"], int(found[2]))] += 1
    return counted


def _expected(alert_ids: list[int]) -> set[tuple[int, str, int]]:
    return {(a, who, step) for a in alert_ids for step, who in enumerate(PEOPLE, start=1)}


async def _post_alerts(url: str, key: str, count: int, prefix: str) -> None:
    """A monitoring tool posting ``count`` alerts to one process."""
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        for i in range(count):
            response = await http.post(
                "/v2/alerts", headers={"Authorization": f"GenieKey {key}"}, json={"message": f"{prefix} {i}"}
            )
            assert response.status_code == 202, response.text


async def _alert_ids(db_url: str) -> list[int]:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            return list((await conn.execute(text("SELECT id FROM alert ORDER BY id"))).scalars())
    finally:
        await engine.dispose()


async def _duplicate_page_rows(db_url: str) -> list:
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT alert_id, user_id, step, repeat_round, count(*) FROM page "
                    "GROUP BY alert_id, user_id, step, repeat_round HAVING count(*) > 1"
                )
            )
            return list(result.all())
    finally:
        await engine.dispose()


async def _in_flight(db_url: str) -> set[tuple[int, str, int]]:
    """The page DMs whose delivery had started and not been recorded (the process died between
    its Slack call and its commit, or during the call): (alert, Slack user, step)."""
    engine = make_engine(db_url)
    try:
        async with engine.connect() as conn:
            result = await conn.execute(
                text(
                    "SELECT p.alert_id, p.target, p.step FROM outbox o "
                    "JOIN page p ON p.id = CAST(o.payload->>'page' AS integer) "
                    "WHERE o.kind = 'page' AND o.first_attempt_at IS NOT NULL "
                    "AND o.delivered_at IS NULL AND o.failed_at IS NULL"
                )
            )
            return {(a, target, step + 1) for a, target, step in result.all()}
    finally:
        await engine.dispose()


async def _wait_for_pages(fake: FakeSlack, want: int, servers: list[GenieServer], timeout: float) -> Counter:
    deadline = time.monotonic() + timeout
    while True:
        counted = _paged(fake)
        if sum(counted.values()) >= want:
            return counted
        if time.monotonic() > deadline:
            logs = "\n".join(s.log()[-4000:] for s in servers)
            raise AssertionError(f"{sum(counted.values())} of {want} page DMs after {timeout}s\n{logs}")
        await asyncio.sleep(0.1)


def _show_logs(servers: list[GenieServer]) -> None:
    for server in servers:
        lines = server.log().splitlines()
        print(f"--- genie {server.url}, last {min(len(lines), 60)} log lines:", *lines[-60:], sep="\n")


async def test_two_processes_page_each_person_once_per_step(db_url, fake_slack, tmp_path):
    fake_slack.add_user("U0CAROL", "Carol Diaz", "carol@example.com")
    key = await _setup(db_url)
    servers = [_start(db_url, fake_slack, tmp_path, name) for name in ("a", "b")]
    try:
        await asyncio.gather(*(s.wait_healthy(timeout=60) for s in servers))
        per_server = 20
        # Alerts arrive at both processes at once; each one's engine fires whatever is due.
        await asyncio.gather(*(_post_alerts(s.url, key, per_server, f"load {s.url}") for s in servers))
        ids = await _alert_ids(db_url)
        assert len(ids) == 2 * per_server
        await _wait_for_pages(fake_slack, 3 * len(ids), servers, timeout=20)
        await asyncio.sleep(1.5)  # a late duplicate would arrive now
        counted = _paged(fake_slack)
        assert set(counted) == _expected(ids)
        assert {k: n for k, n in counted.items() if n != 1} == {}
        assert await _duplicate_page_rows(db_url) == []
        # Which process sent how many (each bot token is one process) is up to scheduling: on a
        # busy machine one may claim every batch. Both had due work (each took half the alerts),
        # and whatever the split, nothing went out twice.
        tokens = Counter(c.token for c in fake_slack.calls("chat.postMessage") if c.args.get("channel") in PEOPLE)
        print("page DMs sent per process:", dict(tokens))
        assert set(tokens) <= {"xoxb-genie-a", "xoxb-genie-b"}
    finally:
        for server in servers:
            server.kill()
        _show_logs(servers)


async def test_sigkill_during_an_escalation_resumes_after_the_restart_and_pages_each_once(db_url, fake_slack, tmp_path):
    fake_slack.add_user("U0CAROL", "Carol Diaz", "carol@example.com")
    await _setup(db_url)
    count = 80
    # The alerts arrive while no process runs: when one starts, 80 first steps are due at once.
    engine = make_engine(db_url)
    try:
        async with make_sessionmaker(engine).begin() as s:
            team = await teams.require_team(s, "Payments")
            for i in range(count):
                await alerts.create_alert(s, team, alerts.CreateAlert(message=f"crash {i}"), f"req-{i}")
    finally:
        await engine.dispose()
    ids = await _alert_ids(db_url)
    want = 3 * count
    # Slack answers a little late, so the kill lands while pages are in flight.
    fake_slack.fail("chat.postMessage", delay=0.02, times=100_000)
    first = _start(db_url, fake_slack, tmp_path, "first")
    servers = [first]
    try:
        await first.wait_healthy(timeout=60)
        await _wait_for_pages(fake_slack, 20, servers, timeout=20)
        first.kill()
        before = sum(_paged(fake_slack).values())
        assert before < want, "the escalation had finished before the kill: nothing to resume"
        in_flight = await _in_flight(db_url)
        second = _start(db_url, fake_slack, tmp_path, "second")
        servers.append(second)
        await second.wait_healthy(timeout=60)
        await _wait_for_pages(fake_slack, want, servers, timeout=25)
        await asyncio.sleep(2.5)  # past the outbox lease (2 s): a page taken over twice would show now
        counted = _paged(fake_slack)
        assert set(counted) == _expected(ids)
        # The engine fires each step once: one page row and one outbox message each.
        assert await _duplicate_page_rows(db_url) == []
        # Not even a page DM whose Slack call was in flight at the kill reaches Slack twice: the
        # restarted process looks in the DM's history before posting it again.
        twice = {k: n for k, n in counted.items() if n != 1}
        assert twice == {}, (twice, in_flight)
        print(f"page DMs in flight at the kill: {len(in_flight)}, sent twice: {len(twice)}")
        assert any(c.token == "xoxb-genie-second" for c in fake_slack.calls("chat.postMessage"))
    finally:
        for server in servers:
            server.kill()
        _show_logs(servers)
