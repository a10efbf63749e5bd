"""Crash safety, counted: ``genie serve`` is SIGKILLed at random moments (seeded) while a
monitoring tool posts alerts in a loop, people confirm links and the outbox delivers to Slack
(whose answers are slowed, so kills land mid-delivery too), then restarted — many times in one
test. Afterwards:

- every alert answered 202 is in the database (202 means committed);
- every confirm that showed "You're connected" is a link;
- every alert in the database is in its Slack channel exactly once: none lost, none posted twice
  (a worker that died mid-post is followed by one that looks in the channel's history first).
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter
from urllib.parse import urlsplit

import httpx
from sqlalchemy import text

from bot.services import alerts, teams, users
from storage.session import make_engine, make_sessionmaker
from tests.conftest import PASSWORD, SECRET_KEY, SIGNING_SECRET, Browser, page_text
from tests.hardening import report
from tests.helpers import connect_url
from tests.processes import GenieServer, clean_env, free_port
from tests.slack_driver import SlackDriver, SlackUser

SEED = int(os.environ.get("GENIE_CRASH_SEED", "20261123"))
KILLS = int(os.environ.get("GENIE_CRASH_KILLS", "15"))
TEAMS = {"Payments": "C0PAY", "Search": "C0SEARCH", "Ops": "C0OPS"}
TRANSPORT_ERRORS = (httpx.TransportError, httpx.HTTPStatusError)


async def _setup(sessionmaker, people: int) -> dict[str, str]:
    async with sessionmaker.begin() as s:
        keys = {}
        for name, channel in TEAMS.items():
            keys[name] = await alerts.team_key(s, await teams.add_team(s, name, channel))
        password_hash = users.hash_password(PASSWORD)  # one argon2 hash for all: setup stays quick
        for i in range(people):
            user = await users.add_user(s, f"p{i}@example.com", f"Person {i}")
            user.password_hash = password_hash
    return keys


async def _post_alerts(url: str, keys: dict[str, str], accepted: list[str], counter: Counter) -> None:
    """A monitoring tool: one alert after another, round the teams, until the server dies."""
    names = list(keys)
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        while True:
            n = counter["alerts_sent"]
            counter["alerts_sent"] += 1
            team = names[n % len(names)]
            alias = f"crash-{n}"
            try:
                response = await http.post(
                    "/v2/alerts",
                    headers={"Authorization": f"GenieKey {keys[team]}"},
                    json={"message": f"Alert {n}", "alias": alias},
                )
            except TRANSPORT_ERRORS:
                return
            if response.status_code == 202:
                accepted.append(alias)
            await asyncio.sleep(0.03)


async def _confirm_links(url: str, fake, confirmed: list[tuple[str, str]], counter: Counter) -> None:
    """People in turn: /genie connect in Slack, sign in, confirm — until the server dies."""
    async with httpx.AsyncClient(base_url=url, timeout=5) as http:
        slack = SlackDriver(http, SIGNING_SECRET, fake)
        while True:
            i = counter["people_used"]
            counter["people_used"] += 1
            who, email = f"U0P{i:04d}", f"p{i}@example.com"
            browser = Browser(url)
            browser.http.timeout = httpx.Timeout(5)
            try:
                answer = await slack.command(SlackUser(who), "connect")
                if answer.status_code != 200:
                    continue
                path = urlsplit(connect_url(answer)).path
                await browser.login(email, next_path=path)
                await browser.get(path)
                done = await browser.post(path, {"mine": "yes"})
                if done.status_code == 200 and "You're connected" in page_text(done):
                    confirmed.append((who, email))
            except TRANSPORT_ERRORS:
                return
            finally:
                await browser.aclose()


def _serve_env(db_url: str, fake_slack, port: int) -> dict[str, str]:
    """``genie serve``'s environment in these tests: a short outbox lease, so that a killed
    process's claims are taken over within the test."""
    return clean_env(
        DATABASE_URL=db_url,
        GENIE_SECRET_KEY=SECRET_KEY,
        GENIE_BASE_URL=f"http://127.0.0.1:{port}",
        SLACK_SIGNING_SECRET=SIGNING_SECRET,
        SLACK_BOT_TOKEN="xoxb-test-token",
        SLACK_API_URL=fake_slack.api_url,
        GENIE_OUTBOX_LEASE_SECONDS="2",
    )


async def test_sigkill_at_random_moments_loses_and_duplicates_nothing(db_url, fake_slack, tmp_path):
    rng = random.Random(SEED)
    engine = make_engine(db_url)
    db = make_sessionmaker(engine)
    keys = await _setup(db, people=150)
    port = free_port()
    env = _serve_env(db_url, fake_slack, port)
    # Slack posts at once but answers late: a kill often lands between the post and its record.
    fake_slack.fail("chat.postMessage", delay=0.25, times=100_000)
    accepted: list[str] = []
    confirmed: list[tuple[str, str]] = []
    counter: Counter = Counter()
    started = time.monotonic()
    server = None
    servers: list[GenieServer] = []
    try:
        for kill in range(KILLS):
            server = GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / f"serve-{kill}.log")
            servers.append(server)
            await server.wait_healthy(timeout=60)
            workers = [
                asyncio.create_task(_post_alerts(server.url, keys, accepted, counter)),
                asyncio.create_task(_confirm_links(server.url, fake_slack, confirmed, counter)),
            ]
            await asyncio.sleep(rng.uniform(0.2, 2.5))
            server.kill()
            counter["kills"] += 1
            await asyncio.wait_for(asyncio.gather(*workers), timeout=30)
        # The last one lives: it takes over what the dead left and drains the outbox.
        fake_slack._failures.clear()
        server = GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / "serve-final.log")
        servers.append(server)
        await server.wait_healthy(timeout=60)
        deadline = time.monotonic() + 120
        while True:
            async with db() as s:
                pending = (
                    await s.execute(
                        text("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL")
                    )
                ).scalar()
            if pending == 0:
                break
            assert time.monotonic() < deadline, f"{pending} Slack messages still pending"
            await asyncio.sleep(0.2)
        server.stop()

        async with db() as s:
            stored = {
                alias: (aid, channel)
                for aid, alias, channel in (
                    await s.execute(
                        text("SELECT a.id, a.alias, t.slack_channel_id FROM alert a JOIN team t ON t.id = a.team_id")
                    )
                ).all()
            }
            links = {
                (u, e)
                for u, e in (
                    await s.execute(
                        text('SELECT l.slack_user_id, u.email FROM slack_link l JOIN "user" u ON u.id = l.user_id')
                    )
                ).all()
            }
            failed = (await s.execute(text("SELECT count(*) FROM outbox WHERE failed_at IS NOT NULL"))).scalar()
            retaken = (await s.execute(text("SELECT count(*) FROM outbox WHERE attempts > 1"))).scalar()
    finally:
        if server is not None:
            server.kill()
        await engine.dispose()

    lost_alerts = [a for a in accepted if a not in stored]
    lost_links = [c for c in confirmed if c not in links]
    shown: Counter = Counter()
    for channel in TEAMS.values():
        for message in fake_slack.messages(channel):
            alert_id = ((message.get("metadata") or {}).get("event_payload") or {}).get("alert_id")
            shown[(alert_id, channel)] += 1
    twice = {k: n for k, n in shown.items() if n > 1}
    never = [alias for alias, (aid, channel) in stored.items() if shown[(aid, channel)] == 0]
    report(
        "test_crash::sigkill",
        backend=db_url.split(":")[0],
        seed=SEED,
        kills=counter["kills"],
        alerts_sent=counter["alerts_sent"],
        alerts_accepted=len(accepted),
        alerts_stored=len(stored),
        confirms_shown=len(confirmed),
        links_stored=len(links),
        slack_messages=sum(shown.values()),
        deliveries_interrupted=retaken,
        adopted_from_history=sum(s.log().count("adopting it") for s in servers),
        lost_alerts=len(lost_alerts),
        lost_links=len(lost_links),
        posted_twice=len(twice),
        never_posted=len(never),
        failed=failed,
        seconds=round(time.monotonic() - started, 1),
    )
    assert counter["kills"] == KILLS
    assert accepted and confirmed, "the kills came too early for anything to happen"
    assert not lost_alerts, lost_alerts
    assert not lost_links, lost_links
    assert not twice, twice
    assert not never, never
    assert failed == 0


BATCH_KILLS = int(os.environ.get("GENIE_CRASH_BATCH_KILLS", "6"))
#: Monitoring tools posting at once: enough that the ingest writer's transactions carry several
#: alerts each (``bot.services.ingest_batch``).
POSTERS = 16


async def test_sigkill_in_the_middle_of_alert_batches_keeps_each_alert_whole_and_once(db_url, fake_slack, tmp_path):
    """``genie serve`` is SIGKILLed at random moments while many clients post alerts at once, so
    that a kill lands while a batch of alerts is being written (or committed, or answered).
    After a restart: every alert answered 202 is there exactly once, and every alert there is
    whole — its creation on the timeline, its request's record and its Slack post, none of
    those without their alert — whether or not its client heard the 202."""
    rng = random.Random(SEED + 1)
    engine = make_engine(db_url)
    db = make_sessionmaker(engine)
    keys = await _setup(db, people=0)
    port = free_port()
    env = _serve_env(db_url, fake_slack, port)
    accepted: list[str] = []
    counter: Counter = Counter()
    names = list(keys)

    async def post(url: str, poster: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=5) as http:
            while True:
                n = counter["sent"]
                counter["sent"] += 1
                alias = f"batch-{n}"
                try:
                    response = await http.post(
                        "/v2/alerts",
                        headers={"Authorization": f"GenieKey {keys[names[(n + poster) % len(names)]]}"},
                        json={"message": f"Alert {n}", "alias": alias},
                    )
                except TRANSPORT_ERRORS:
                    counter["unanswered"] += 1
                    return
                if response.status_code == 202:
                    accepted.append(alias)

    server = None
    try:
        for kill in range(BATCH_KILLS):
            server = GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / f"batch-{kill}.log")
            await server.wait_healthy(timeout=60)
            posters = [asyncio.create_task(post(server.url, i)) for i in range(POSTERS)]
            # Under load: once this process has accepted some (a busy machine may take a while),
            # then at a random moment.
            deadline, floor = time.monotonic() + 60, len(accepted) + rng.randint(20, 60)
            while len(accepted) < floor and time.monotonic() < deadline:
                await asyncio.sleep(0.01)
            await asyncio.sleep(rng.uniform(0, 0.5))
            server.kill()
            await asyncio.wait_for(asyncio.gather(*posters), timeout=30)
        server = GenieServer.start(env, port, cwd=tmp_path, log_path=tmp_path / "batch-final.log")
        await server.wait_healthy(timeout=60)  # migrations and recovery, as after any crash
        server.stop()
        async with db() as s:

            async def rows(sql: str) -> list:
                return list((await s.execute(text(sql))).all())

            stored = Counter(alias for (alias,) in await rows("SELECT alias FROM alert WHERE alias LIKE 'batch-%'"))
            counted = await rows("SELECT alias, count FROM alert WHERE alias LIKE 'batch-%' AND count <> 1")
            # Per alert: its creation, its request's record, its post (exactly one each).
            whole = await rows(
                "SELECT a.alias, "
                "(SELECT count(*) FROM alert_event e WHERE e.alert_id = a.id AND e.action = 'create'), "
                "(SELECT count(*) FROM api_request r WHERE r.alert_id = a.id), "
                "(SELECT count(*) FROM outbox o WHERE o.alert_id = a.id AND o.kind = 'alert.post') "
                "FROM alert a WHERE a.alias LIKE 'batch-%'"
            )
            orphans = await rows(
                "SELECT 'event', count(*) FROM alert_event e WHERE NOT EXISTS "
                "(SELECT 1 FROM alert a WHERE a.id = e.alert_id) "
                "UNION ALL SELECT 'outbox', count(*) FROM outbox o WHERE o.alert_id IS NOT NULL AND NOT EXISTS "
                "(SELECT 1 FROM alert a WHERE a.id = o.alert_id) "
                "UNION ALL SELECT 'request', count(*) FROM api_request r WHERE r.action = 'Create' AND "
                "(r.alert_id IS NULL OR NOT EXISTS (SELECT 1 FROM alert a WHERE a.id = r.alert_id))"
            )
            # Alerts of one batch share their creation time (one transaction, one clock reading).
            batched = await rows(
                "SELECT count(*) FROM alert WHERE alias LIKE 'batch-%' GROUP BY created_at HAVING count(*) > 1"
            )
    finally:
        if server is not None:
            server.kill()
        await engine.dispose()

    lost = [a for a in accepted if stored[a] == 0]
    twice = {a: n for a, n in stored.items() if n > 1}
    broken = [r for r in whole if tuple(r[1:]) != (1, 1, 1)]
    report(
        "test_crash::sigkill_mid_batch",
        backend=db_url.split(":")[0],
        seed=SEED + 1,
        kills=BATCH_KILLS,
        alerts_sent=counter["sent"],
        alerts_accepted=len(accepted),
        alerts_stored=sum(stored.values()),
        in_flight_at_kills=counter["unanswered"],
        batches_of_several=len(batched),
        largest_batch=max((n for (n,) in batched), default=1),
        lost=len(lost),
        stored_twice=len(twice),
        not_whole=len(broken),
    )
    assert accepted, "the kills came too early for anything to happen"
    assert counter["unanswered"] >= BATCH_KILLS, "every kill should find requests in flight"
    assert batched, "no transaction carried more than one alert: the test did not exercise batches"
    assert not lost, lost
    assert not twice and not counted, (twice, counted)
    assert not broken, broken[:10]
    assert [n for _, n in orphans] == [0, 0, 0], orphans
