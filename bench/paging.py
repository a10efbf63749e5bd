"""Benchmark of the escalation engine (issue 15): the cost of a tick with many open alerts being
escalated, the latency of a burst of due steps, and "who is on call" over many schedules.

    .venv/bin/python -m bench.paging                       # SQLite: 10,000 alerts, 1,000 due, 1,000 schedules
    .venv/bin/python -m bench.paging --db postgres --pg-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres
    .venv/bin/python -m bench.paging --alerts 1000 --due 100 --schedules 100   # quick
    .venv/bin/python -m bench.paging --apply-teams 100   # + genie apply of 100 teams x 10 layered schedules

In-process, against a scratch database (a temporary SQLite file, or a PostgreSQL database it
creates and drops): the policy's first step is a schedule whose on-call person has a Slack link,
so each due step resolves the schedule at that moment, writes its page, timeline rows and outbox
message, and moves its timer on — all that a real step does except the Slack call (the outbox
worker's, measured by ``bench/run.py``). Alerts and timers are inserted in bulk.

``--apply-teams N`` also times ``genie apply`` (``bot.services.config_as_code``) of a document
declaring N teams of 10 schedules each (two layers, restrictions, an override): the first run
(creates everything), the second (compares everything, changes nothing), and "who is on call"
across all those teams as ``genie schedule list`` asks it.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
import uuid
from datetime import timedelta
from pathlib import Path

from sqlalchemy import insert, text
from sqlalchemy.engine import make_url

from bot.services import config_as_code, escalation, paging, schedules, teams, users
from bot.services.escalation import StepSpec
from bot.services.schedules import RotationSpec
from migrations.apply import upgrade
from storage.base import utcnow
from storage.models import Alert, AlertEscalation, SlackLink, Team
from storage.session import make_engine, make_sessionmaker


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(args: argparse.Namespace) -> None:
    admin = None
    if args.db == "postgres":
        name = f"genie_bench_paging_{uuid.uuid4().hex[:8]}"
        admin = make_engine(args.pg_url)
        async with admin.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            await conn.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(args.pg_url).set(database=name).render_as_string(hide_password=False)
    else:
        url = f"sqlite+aiosqlite:///{Path(tempfile.mkdtemp()) / 'paging.db'}"
    engine = make_engine(url)
    try:
        await upgrade(engine)
        db = make_sessionmaker(engine)
        now = utcnow().replace(microsecond=0)
        start = now - timedelta(days=3)
        async with db.begin() as s:
            team = await teams.add_team(s, "Payments", "C0PAY")
            people = []
            for i in range(20):
                user = await users.add_user(s, f"p{i:02d}@example.com", f"Person {i:02d}")
                await teams.add_member(s, "Payments", user.email)
                s.add(
                    SlackLink(
                        user_id=user.id, workspace_id="T0BENCH", slack_user_id=f"U0P{i:02d}", slack_team_id="T0BENCH"
                    )
                )
                people.append(user.email)
        t = time.perf_counter()
        for i in range(args.schedules):
            async with db.begin() as s:
                rotation = RotationSpec("week", [people[i % 20], people[(i + 1) % 20]], 1, "weeks", start, "UTC")
                await schedules.create_schedule(s, "Payments", f"s{i:04d}", "UTC", [rotation])
        print(f"seeded {args.schedules} schedules in {time.perf_counter() - t:.1f} s")
        async with db.begin() as s:
            await escalation.set_policy(
                s, "Payments", "default", [StepSpec(0, "schedule", "s0000"), StepSpec(10, "user", people[5])]
            )
            policy_id = (await escalation.require_policy(s, "Payments"))[1].id
            team_id = (await s.get(Team, team.id)).id
        t = time.perf_counter()
        batch = 1000
        for first in range(0, args.alerts, batch):
            ids = range(first, min(args.alerts, first + batch))
            async with db.begin() as s:
                rows = [
                    dict(
                        uid=str(uuid.uuid4()),
                        team_id=team_id,
                        message=f"alert {i}",
                        alias=f"a{i}",
                        tags=[],
                        details={},
                        responders=[],
                        priority="P3",
                        status="open",
                        acknowledged=False,
                        count=1,
                        created_at=now,
                        updated_at=now,
                        last_occurred_at=now,
                    )
                    for i in ids
                ]
                alert_ids = list((await s.execute(insert(Alert).returning(Alert.id), rows)).scalars())
                await s.execute(
                    insert(AlertEscalation),
                    [
                        dict(
                            alert_id=a,
                            policy_id=policy_id,
                            step=0,
                            repeat_round=0,
                            round_started_at=now,
                            due_at=now if n + first < args.due else now + timedelta(hours=1),
                        )
                        for n, a in enumerate(alert_ids)
                    ],
                )
        print(f"seeded {args.alerts} open alerts being escalated ({args.due} due) in {time.perf_counter() - t:.1f} s")

        # An idle tick: nothing due among all those timers.
        engine_ = paging.PagingEngine(db, lambda: now - timedelta(seconds=1))
        idle = []
        for _ in range(50):
            t = time.perf_counter()
            assert await engine_.run_once() == 0
            idle.append(time.perf_counter() - t)

        # A burst: every due step fired by one engine as its tick does (``BATCH`` alerts a
        # transaction); each step's latency is from the tick's start to its batch's commit.
        latencies: list[float] = []
        t0 = time.perf_counter()
        cache: dict = {}  # as the engine's tick keeps it
        fired: set[int] = set()
        while True:
            async with db.begin() as s:
                rows = await paging.claim_due(s, now, paging.BATCH, fired)
                assert await paging.fire_claimed(s, rows, now, cache) == len(rows)
            fired.update(r.alert_id for r in rows)
            latencies += [time.perf_counter() - t0] * len(rows)
            if len(rows) < paging.BATCH:
                break
        burst = time.perf_counter() - t0
        assert len(latencies) == args.due

        async with db() as s:
            t = time.perf_counter()
            found = await schedules.who_is_on_call(s, await s.get(Team, team_id), now)
            whole = time.perf_counter() - t
        assert len(found) == args.schedules and all(shift.who is not None for _, shift in found)

        print()
        print(f"| {args.db} | value |")
        print("|---|---|")
        print(
            f"| idle tick, {args.alerts:,} timers, none due (p50 / p99) | {statistics.median(idle) * 1000:.2f} ms / "
            f"{pct(idle, 0.99) * 1000:.2f} ms |"
        )
        print(
            f"| burst of {len(latencies):,} due steps: all fired in | {burst:.2f} s "
            f"({burst / max(1, len(latencies)) * 1000:.2f} ms a step) |"
        )
        print(
            f"| latency of a due step in that burst (p50 / p99) | {pct(latencies, 0.5):.2f} s / "
            f"{pct(latencies, 0.99):.2f} s |"
        )
        print(
            f"| who is on call, {args.schedules:,} schedules | {whole * 1000:.0f} ms "
            f"({whole / args.schedules * 1000:.2f} ms a schedule) |"
        )
        if args.apply_teams:
            await bench_apply(db, args.apply_teams, people, now)
    finally:
        await engine.dispose()
        if admin is not None:
            async with admin.connect() as conn:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{name}"'))
            await admin.dispose()


def apply_document(n_teams: int, people: list[str], now) -> str:
    """N teams of 10 schedules: a weekly daytime layer and a daily night layer, one override."""
    start = (now - timedelta(days=10)).strftime("%Y-%m-%dT09:00:00+00:00")
    lines = ["teams:"]
    for t in range(n_teams):
        crew = [people[(t + k) % len(people)] for k in range(4)]
        lines += [f"  - name: Team{t:03d}", f"    members: [{', '.join(crew)}]", "    schedules:"]
        for k in range(10):
            lines += [
                f"      - name: s{k}",
                "        time_zone: Europe/Berlin",
                "        rotations:",
                "          - name: days",
                f"            participants: [{crew[k % 4]}, {crew[(k + 1) % 4]}]",
                "            length: 1",
                "            unit: weeks",
                f"            start: {start}",
                '            restrictions: ["Mon 08:00-Fri 18:00"]',
                "          - name: nights",
                f"            participants: [{crew[(k + 2) % 4]}, {crew[(k + 3) % 4]}]",
                "            length: 1",
                "            unit: days",
                f"            start: {start}",
                '            restrictions: ["18:00-08:00", "Sat 08:00-Sun 18:00"]',
                "        overrides:",
                f"          - who: {crew[0]}",
                f"            start: {(now + timedelta(days=2)).strftime('%Y-%m-%dT18:00:00+00:00')}",
                f"            end: {(now + timedelta(days=3)).strftime('%Y-%m-%dT09:00:00+00:00')}",
            ]
    return "\n".join(lines) + "\n"


async def bench_apply(db, n_teams: int, people: list[str], now) -> None:
    text = apply_document(n_teams, people, now)
    doc = config_as_code.load(text, "bench.yaml")
    timings = []
    for _ in range(2):
        t = time.perf_counter()
        async with db.begin() as s:
            plan = await config_as_code.apply(s, doc, "bench.yaml")
        timings.append((time.perf_counter() - t, len(plan.changes)))
    assert timings[1][1] == 0, "a second apply changed something"
    t = time.perf_counter()
    on_call = 0
    async with db() as s:
        found = [await teams.require_team(s, f"Team{k:03d}") for k in range(n_teams)]
        for listed in (await schedules.who_is_on_call_many(s, found, now)).values():
            on_call += sum(1 for _, shift in listed if shift.who is not None)
    whole = time.perf_counter() - t
    n = n_teams * 10
    print(
        f"| genie apply, {n_teams} teams x 10 schedules (2 layers, restrictions, an override): first run "
        f"| {timings[0][0]:.1f} s ({timings[0][1]:,} changes) |"
    )
    print(f"| genie apply, the same file again (nothing to change) | {timings[1][0]:.1f} s |")
    print(
        f"| who is on call, {n:,} layered schedules over {n_teams} teams ({on_call:,} with somebody) "
        f"| {whole * 1000:.0f} ms ({whole / n * 1000:.2f} ms a schedule) |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default="postgresql+asyncpg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--alerts", type=int, default=10_000)
    parser.add_argument("--due", type=int, default=1_000)
    parser.add_argument("--schedules", type=int, default=1_000)
    parser.add_argument("--apply-teams", type=int, default=0, help="also time genie apply of N teams x 10 schedules")
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
