"""Genie's benchmark: what Genie costs next to a bare Bolt app, and how it grows.

    .venv/bin/python -m bench.run                    # full run: SQLite and PostgreSQL, growth to 1M rows
    .venv/bin/python -m bench.run --quick            # a couple of minutes: growth to 100k rows
    .venv/bin/python -m bench.run --quick --db sqlite
    .venv/bin/python -m bench.run --help

It starts the fake Slack (``tests/fake_slack.py``) on loopback in this process; Genie as
``genie serve`` runs it (``python -m bot serve --port P``, uvicorn, in a subprocess, on a
database seeded here with bulk SQL); a bare Bolt AsyncApp whose action listener only calls
``ack()`` (``bench/bare_app.py``, same server stack, same signing secret) in another
subprocess; and drives both with signed requests from a load generator in a third process
(``bench/loadgen.py``), alternating rounds Genie / bare / Genie / bare so that a noisy machine
hurts both alike. Between rounds it waits until Genie's outbox has delivered everything, so
background work of one round never lands in the next.

PostgreSQL: ``--pg-url`` (default ``$GENIE_BENCH_POSTGRES_URL`` or
``postgresql+asyncpg://postgres@127.0.0.1:5432/postgres``); the benchmark makes and drops its
own scratch databases there.

What each row measures is printed under the table; ``bench/RESULTS.md`` explains the rows and
records past results.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from bench import seed as seeding
from bench import serving
from bench.fake import RateLimitedFakeSlack
from bench.httpc import Pool
from bench.storm import run_storm
from tests.processes import UNPACED

REPO = Path(__file__).resolve().parent.parent
SIGNING_SECRET = "bench-signing-secret-0123456789abcdef"
SECRET_KEY = "bench-secret-key-0123456789abcdefghijklmnop"
BOT_TOKEN = "xoxb-bench-token"
PASSWORD = "bench passphrase 0123456789"
TEAM_DOMAIN = "acme"
DEFAULT_PG = "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
LATENCY_TARGET_MS = 250.0
# Issue 14's targets (this round): the click's cost next to bare Bolt, its ack and commit
# latency at 200 clicks/s, and the alert API's accepted rate.
CLICK_RATIO_TARGET = 2.0  # bare req/s ÷ Genie committed/s
CLICK_CPU_TARGET = 3.0  # Genie CPU ms per click (its delivery included) ÷ bare CPU ms per ack
ACK_TARGET_MS = 100.0
COMMITTED_TARGET_MS = 500.0
INGEST_TARGET_RPS = 300.0


# --- plans -----------------------------------------------------------------------------------
@dataclass
class Plan:
    name: str
    rounds: int  # Genie/bare pairs per compared row
    base_n: int  # rows of each kind in the database of rows 1-3 and 5
    click_rate: float  # offered clicks/s, open loop
    click_open: int  # clicks per open-loop round
    click_closed: int  # clicks per closed-loop round
    closed_concurrency: int
    connect: int  # /genie connect per round
    confirm: int  # link confirms per round
    web_concurrency: int
    ingest: int  # POST /v2/alerts per round
    drain_channels: int
    drain_per_channel: int
    growth_sizes: list[int]
    growth_rate: float  # clicks/s offered in the growth rows: low, to measure the click, not a queue
    growth_clicks: int
    growth_rounds: int
    race_confirms: int
    race_clicks: int
    warmup: int = 60


PLANS = {
    "full": Plan(
        "full",
        rounds=3,
        base_n=10_000,
        click_rate=200,
        click_open=1200,
        click_closed=1200,
        closed_concurrency=16,
        connect=600,
        confirm=400,
        web_concurrency=8,
        ingest=800,
        drain_channels=10,
        drain_per_channel=10,
        growth_sizes=[1_000, 100_000, 1_000_000],
        growth_rate=20,
        growth_clicks=300,
        growth_rounds=3,
        race_confirms=500,
        race_clicks=200,
    ),
    "quick": Plan(
        "quick",
        rounds=2,
        base_n=10_000,
        click_rate=200,
        click_open=600,
        click_closed=600,
        closed_concurrency=16,
        connect=300,
        confirm=200,
        web_concurrency=8,
        ingest=400,
        drain_channels=5,
        drain_per_channel=5,
        growth_sizes=[1_000, 100_000],
        growth_rate=20,
        growth_clicks=160,
        growth_rounds=2,
        race_confirms=500,
        race_clicks=200,
    ),
    # A few requests of every kind: keeps the benchmark from rotting (tests/test_bench_smoke.py).
    "smoke": Plan(
        "smoke",
        rounds=1,
        base_n=200,
        click_rate=50,
        click_open=25,
        click_closed=25,
        closed_concurrency=4,
        connect=10,
        confirm=10,
        web_concurrency=4,
        ingest=10,
        drain_channels=2,
        drain_per_channel=2,
        growth_sizes=[200, 400],
        growth_rate=50,
        growth_clicks=10,
        growth_rounds=1,
        race_confirms=20,
        race_clicks=20,
        warmup=0,
    ),
}
SCENARIOS = ("click", "link", "ingest", "growth", "race", "storm", "serving")


# --- results ---------------------------------------------------------------------------------
@dataclass
class Row:
    scenario: str
    target: str
    g_rps: float | None = None
    g_p50: float | None = None  # ms
    g_p99: float | None = None
    b_rps: float | None = None
    b_p50: float | None = None
    b_p99: float | None = None
    ratio: str = ""
    met: bool | None = None
    note: str = ""


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo = int(k)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def ms(values: list[float], q: float) -> float | None:
    v = pct(values, q)
    return None if v is None else v * 1000


def median(values: list[float]) -> float | None:
    return pct(values, 0.5)


def fmt(v: float | None, digits: int = 0) -> str:
    if v is None:
        return "—"
    return f"{v:,.{digits}f}" if v >= 10 or digits == 0 else f"{v:.1f}"


def table(rows: list[Row]) -> str:
    head = ["scenario", "target", "Genie req/s", "p50 ms", "p99 ms", "bare req/s", "p50 ms", "p99 ms", "ratio", "met"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        met = "—" if r.met is None else ("met" if r.met else "**not met**")
        cells = [
            r.scenario,
            r.target,
            fmt(r.g_rps),
            fmt(r.g_p50, 1),
            fmt(r.g_p99, 1),
            fmt(r.b_rps),
            fmt(r.b_p50, 1),
            fmt(r.b_p99, 1),
            r.ratio or "—",
            met,
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- processes -------------------------------------------------------------------------------
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def wait_healthy(port: int, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server on port {port} exited with {proc.returncode}; see its log")
        pool = Pool("127.0.0.1", port, timeout=2)
        try:
            status, _, _ = await pool.request("GET", "/healthz")
            if status == 200:
                return
        except (TimeoutError, OSError, asyncio.IncompleteReadError):
            pass
        finally:
            pool.close()
        if time.monotonic() > deadline:
            raise RuntimeError(f"server on port {port} did not become healthy")
        await asyncio.sleep(0.1)


class Server:
    """A server subprocess (Genie or the bare app), its log in the work directory."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path, port: int) -> None:
        self.name, self.argv, self.env, self.cwd, self.log_path, self.port = name, argv, env, cwd, log_path, port
        self.proc: subprocess.Popen | None = None

    async def start(self) -> Server:
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        await wait_healthy(self.port, self.proc)
        return self

    def interrupt(self) -> None:
        """Ask it to shut down: uvicorn does so gracefully (the outbox worker stops); so does py-spy,
        writing its profile. Only once: a second SIGINT makes uvicorn quit at once."""
        if self.proc is not None and self.proc.poll() is None and not self._interrupted:
            self._interrupted = True
            os.killpg(self.proc.pid, signal.SIGINT)

    _interrupted = False

    def cpu(self) -> float:
        """CPU seconds its processes have used so far (0 if it is not running)."""
        return group_cpu(self.proc.pid) if self.proc is not None and self.proc.poll() is None else 0.0

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.interrupt()
            try:
                self.proc.wait(timeout=120 if self.argv[0].endswith("py-spy") else 15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)  # the group: py-spy's child too
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None


def group_cpu(pgid: int) -> float:
    """CPU seconds (user + system) used so far by the live processes of process group ``pgid``
    (a server started with ``start_new_session``: its pid is the group's id), from /proc."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # gone meanwhile
            continue
        fields = stat.rsplit(")", 1)[1].split()  # state ppid pgrp session … utime(11) stime(12)
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def stop_all(servers: list[Server]) -> None:
    """Interrupt them all at once, then wait for each (they shut down in parallel)."""
    for server in servers:
        server.interrupt()
    for server in servers:
        server.stop()


def clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(("GENIE_", "SLACK_")) and k != "DATABASE_URL"}


async def start_genie(
    name: str,
    db_url: str,
    fake: RateLimitedFakeSlack,
    work: Path,
    profile: Path | None = None,
    src: Path | None = None,
    extra_env: dict[str, str] | None = None,
    split: bool | None = None,  # web + worker processes (bench.serving; None: as --split says)
    worker: bool = True,
) -> Server:
    port = free_port()
    env = (
        clean_env()
        | ({"PYTHONPATH": str(src)} if src else {})
        | {
            "DATABASE_URL": db_url,
            "GENIE_SECRET_KEY": SECRET_KEY,
            "GENIE_BASE_URL": f"http://127.0.0.1:{port}",
            "SLACK_SIGNING_SECRET": SIGNING_SECRET,
            "SLACK_BOT_TOKEN": BOT_TOKEN,
            "SLACK_API_URL": fake.api_url,
        }
        | (extra_env or {})
    )
    # Exactly as an operator runs it; the working directory has no .env.
    argv = [sys.executable, "-m", "bot", "serve", "--host", "127.0.0.1", "--port", str(port)]
    if profile is not None:
        profile.mkdir(parents=True, exist_ok=True)
        spy = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
        argv = [
            spy,
            "record",
            "--format",
            "raw",
            "--rate",
            os.environ.get("BENCH_PYSPY_RATE", "100"),  # samples a second (a short row needs more)
            *os.environ.get("BENCH_PYSPY_FLAGS", "--nonblocking").split(),
            "-o",
            str(profile / f"{name}.txt"),
            "--",
        ] + argv
    return await serving.start(name, argv, env, work, port, split=split, worker=worker)


async def start_bare(fake: RateLimitedFakeSlack, work: Path) -> Server:
    port = free_port()
    env = clean_env() | {
        "SLACK_SIGNING_SECRET": SIGNING_SECRET,
        "SLACK_BOT_TOKEN": BOT_TOKEN,
        "SLACK_API_URL": fake.api_url,
        "PYTHONPATH": str(REPO),
    }
    argv = [sys.executable, "-m", "bench.bare_app", "--host", "127.0.0.1", "--port", str(port)]
    return await Server("bare", argv, env, work, work / "bare.log", port).start()


async def loadgen(spec: dict[str, Any]) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.loadgen",
        cwd=REPO,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=clean_env() | {"PYTHONPATH": str(REPO)},
    )
    out, err = await proc.communicate(json.dumps(spec).encode())
    if proc.returncode != 0:
        raise RuntimeError(f"load generator failed: {err.decode()[-2000:]}")
    result = json.loads(out)
    if result["errors"]:
        log(f"  load generator errors (first ones): {result['errors'][:3]}")
    return result


# --- databases -------------------------------------------------------------------------------
class Database:
    """A scratch database: a SQLite file in the work directory, or a PostgreSQL database."""

    def __init__(self, backend: str, name: str, work: Path, pg_url: str, src: Path | None = None) -> None:
        self.backend, self.name, self.src = backend, name, src
        self._pg_admin = pg_url
        if backend == "sqlite":
            self.path = work / (name + ".db")
            self.url = f"sqlite+aiosqlite:///{self.path}"
        else:
            self.pg_name = f"genie_bench_{name}_{os.getpid()}"
            self.url = make_url(pg_url).set(database=self.pg_name).render_as_string(hide_password=False)
        self.engine: AsyncEngine | None = None

    async def create(self) -> None:
        from migrations.apply import upgrade
        from storage.session import make_engine

        if self.backend == "postgres":
            admin = create_async_engine(self._pg_admin, isolation_level="AUTOCOMMIT")
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))
                await conn.execute(text(f'CREATE DATABASE "{self.pg_name}"'))
            await admin.dispose()
        else:
            self._remove_files()
        if self.src is None:
            engine = make_engine(self.url)
            await upgrade(engine)
            await engine.dispose()
        else:  # that checkout's own migrations
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "bot",
                "db",
                "upgrade",
                cwd=self.src,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                env=clean_env() | {"PYTHONPATH": str(self.src), "DATABASE_URL": self.url},
            )
            _, err = await proc.communicate()
            if proc.returncode:
                raise RuntimeError(f"genie db upgrade failed: {err.decode()[-2000:]}")
        # Reads only, with no BEGIN IMMEDIATE: the benchmark never holds Genie's write lock.
        self.engine = create_async_engine(self.url)

    async def drop(self) -> None:
        if self.engine is not None:
            await self.engine.dispose()
        if self.backend == "postgres":
            admin = create_async_engine(self._pg_admin, isolation_level="AUTOCOMMIT")
            async with admin.connect() as conn:
                await conn.execute(text(f'DROP DATABASE IF EXISTS "{self.pg_name}" WITH (FORCE)'))
            await admin.dispose()
        else:
            self._remove_files()

    def _remove_files(self) -> None:
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.path}{suffix}").unlink(missing_ok=True)

    async def scalar(self, statement, **params) -> Any:
        async with self.engine.connect() as conn:
            return (
                await conn.execute(statement if not isinstance(statement, str) else text(statement), params)
            ).scalar()

    async def rows(self, statement, **params) -> list[Any]:
        async with self.engine.connect() as conn:
            return list(await conn.execute(statement if not isinstance(statement, str) else text(statement), params))

    async def pending_outbox(self) -> int:
        return await self.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL")

    async def quiesce(self, timeout: float = 600.0) -> float:
        """Wait until the outbox is delivered; seconds waited."""
        start = time.monotonic()
        while await self.pending_outbox():
            if time.monotonic() - start > timeout:
                log(f"  outbox still has {await self.pending_outbox()} pending after {timeout:.0f} s")
                break
            await asyncio.sleep(0.1)
        return time.monotonic() - start

    async def acked_at(self, ids: list[int], timeout: float = 300.0) -> dict[int, datetime]:
        """When each clicked alert was acknowledged, waiting until all are (or time runs out)."""
        from storage.models import Alert

        lo, hi = min(ids), max(ids)
        deadline = time.monotonic() + timeout
        while True:
            done = await self.scalar(
                select(func.count()).select_from(Alert).where(Alert.id.between(lo, hi), Alert.acknowledged.is_(True))
            )
            if done >= len(ids) or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        rows = await self.rows(
            select(Alert.id, Alert.acknowledged_at).where(Alert.id.between(lo, hi), Alert.acknowledged_at.is_not(None))
        )
        wanted = set(ids)
        return {i: at for i, at in rows if i in wanted}


# --- the world a benchmark database holds ------------------------------------------------------
@dataclass
class World:
    db: Database
    layout: seeding.Layout
    genie: Server | None = None
    keys: dict[int, str] = field(default_factory=dict)  # team id -> API key
    _next_hot: int = 0

    def take_hot(self, count: int) -> list[int]:
        ids = self.layout.hot_alerts[self._next_hot : self._next_hot + count]
        if len(ids) < count:
            raise RuntimeError("ran out of seeded open alerts; raise hot in the plan")
        self._next_hot += count
        return ids

    _next_confirm: int = 0

    def take_confirms(self, count: int) -> list[tuple[str, str]]:
        pairs = self.layout.confirm_nonces[self._next_confirm : self._next_confirm + count]
        if len(pairs) < count:
            raise RuntimeError("ran out of seeded link requests; raise confirms in the plan")
        self._next_confirm += count
        return pairs


async def make_world(
    backend: str,
    name: str,
    n: int,
    *,
    hot: int,
    confirms: int,
    key_teams: list[int],
    work: Path,
    pg_url: str,
    src: Path | None = None,
) -> World:
    from bot.services import alerts, users
    from storage.models import Team
    from storage.session import make_engine, make_sessionmaker

    db = Database(backend, name, work, pg_url, src)
    await db.create()
    started = time.monotonic()
    layout = await seeding.seed(db.url, n, hot=hot, confirms=confirms, password_hash=users.hash_password(PASSWORD))
    log(
        f"  seeded {backend} '{name}': {n:,} users, links, link requests, alerts (+ timeline, outbox) "
        f"in {time.monotonic() - started:.1f} s"
    )
    world = World(db, layout)
    engine = make_engine(db.url)
    async with make_sessionmaker(engine).begin() as session:
        for team_id in key_teams:
            world.keys[team_id] = await alerts.team_key(session, await session.get(Team, team_id))
    await engine.dispose()
    return world


def alert_message_template(layout: seeding.Layout) -> dict:
    """The message a click arrives with (Slack sends the whole message): Genie's own rendering
    of a Payments alert with its 100 members in the Assign… select."""
    from bot.blocks.alerts import AlertView, alert_message

    view = AlertView(
        id=layout.hot_alerts[0],
        message="Checkout error rate above 5%",
        priority="P2",
        status="open",
        created_at=datetime.now(UTC),
        team_name="Payments",
        description="Error rate on checkout is above 5% for 5 minutes.",
        tags=("checkout", "p1"),
        details={"host": "web-1"},
        source="bench",
        entity="web-1",
        members=[(i, f"Bench User {i}") for i in range(1, 101)],
    )
    text_, blocks = alert_message(view)
    return {
        "type": "message",
        "user": "U0GENIEBOT",
        "bot_id": "B0GENIE",
        "ts": "1700000000.000100",
        "text": text_,
        "blocks": blocks,
    }


# --- rounds ----------------------------------------------------------------------------------
@dataclass
class Sample:
    rps: float  # completed per second
    ack: list[float]  # HTTP latencies, s
    done: list[float]  # to completion (Genie: transition committed), s
    ok: int
    total: int
    extra: dict = field(default_factory=dict)


class Bench:
    def __init__(self, args: argparse.Namespace, plan: Plan, work: Path) -> None:
        self.args, self.plan, self.work = args, plan, work
        self.fake = RateLimitedFakeSlack().start()
        self.bare: Server | None = None
        self.rows: list[Row] = []
        self.details: dict[str, Any] = {}
        self._bare_ids = 10**8

    def click_spec(self, port: int, world: World, ids: list[int], mode: str, **kw) -> dict:
        return dict(
            kind="click",
            port=port,
            mode=mode,
            secret=SIGNING_SECRET,
            users=world.layout.clickers,
            team_id=seeding.WORKSPACE,
            team_domain=TEAM_DOMAIN,
            channel=seeding.PAYMENTS_CHANNEL,
            alert_ids=ids,
            response_url=f"{self.fake.url}/response",
            message=self.message,
            **kw,
        )

    async def click_round(
        self, world: World, target: str, count: int, *, mode: str, rate: float | None = None, concurrency: int = 16
    ) -> Sample:
        """``count`` clicks, each Acknowledge on a different open alert (so each one transitions)."""
        server = world.genie if target == "genie" else self.bare
        if target == "genie":
            ids, port = world.take_hot(count), world.genie.port
        else:
            ids, port = list(range(self._bare_ids, self._bare_ids + count)), self.bare.port
            self._bare_ids += count
        cpu_before = server.cpu()
        res = await loadgen(self.click_spec(port, world, ids, mode, rate=rate, concurrency=concurrency))
        samples = res["samples"]
        ack = [s[1] for s in samples]
        ok = sum(1 for s in samples if s[2] == 200)
        if target == "bare":
            cpu_ms = (server.cpu() - cpu_before) * 1000 / max(ok, 1)
            return Sample(rps=ok / res["elapsed"], ack=ack, done=ack, ok=ok, total=count, extra={"cpu_ms": cpu_ms})
        # Wait for the clicks Slack would have seen acknowledged (a refused connection never reached Genie).
        done_at = await world.db.acked_at([i for i, s in zip(ids, samples) if s[2] == 200] or ids)
        done = [done_at[i].timestamp() - (res["t0_wall"] + s[0]) for i, s in zip(ids, samples) if i in done_at]
        last = max((at.timestamp() for at in done_at.values()), default=res["t0_wall"]) - res["t0_wall"]
        drain = await world.db.quiesce()
        # Its CPU from the first click to the outbox empty: the click's whole cost, delivery included.
        cpu_ms = (server.cpu() - cpu_before) * 1000 / max(len(done_at), 1)
        return Sample(
            rps=len(done_at) / max(last, res["elapsed"]),
            ack=ack,
            done=done,
            ok=min(ok, len(done_at)),
            total=count,
            extra={
                "outbox_drain_s": round(drain, 2),
                "http_elapsed_s": round(res["elapsed"], 2),
                "transitions": len(done_at),
                "cpu_ms": round(cpu_ms, 2),
            },
        )

    async def warm(self, world: World) -> None:
        n = self.plan.warmup
        if not n:
            return
        await self.click_round(world, "genie", n, mode="open", rate=50)
        await self.click_round(world, "bare", n, mode="open", rate=50)

    # --- row 1: the gated click -----------------------------------------------------------
    async def scenario_click(self, backend: str, world: World) -> None:
        p = self.plan
        log(
            f"{backend}: (1) gated Acknowledge click, closed loop x{p.closed_concurrency}, then open loop at "
            f"{p.click_rate:.0f}/s; {p.rounds} Genie/bare round pairs"
        )
        closed = {"genie": [], "bare": []}
        opened = {"genie": [], "bare": []}
        for r in range(p.rounds):
            for target in ("genie", "bare"):
                s = await self.click_round(
                    world, target, p.click_closed, mode="closed", concurrency=p.closed_concurrency
                )
                closed[target].append(s)
                log(
                    f"  closed r{r + 1} {target:5}: {s.rps:7.1f}/s done, ack p99 {ms(s.ack, 0.99):7.1f} ms, "
                    f"done p99 {ms(s.done, 0.99):7.1f} ms, ok {s.ok}/{s.total} {s.extra}"
                )
            for target in ("genie", "bare"):
                s = await self.click_round(world, target, p.click_open, mode="open", rate=p.click_rate)
                opened[target].append(s)
                log(
                    f"  open   r{r + 1} {target:5}: ack p50 {ms(s.ack, 0.5):6.1f} p99 {ms(s.ack, 0.99):7.1f} ms; "
                    f"done p50 {ms(s.done, 0.5):6.1f} p99 {ms(s.done, 0.99):7.1f} ms, ok {s.ok}/{s.total} {s.extra}"
                )
        g_rps = median([s.rps for s in closed["genie"]])
        b_rps = median([s.rps for s in closed["bare"]])
        ratio = b_rps / g_rps if g_rps else float("inf")
        g_cpu = median([s.extra["cpu_ms"] for s in closed["genie"]]) or 0.0
        b_cpu = median([s.extra["cpu_ms"] for s in closed["bare"]]) or 0.0
        cpu_ratio = g_cpu / b_cpu if b_cpu else float("inf")
        pool = lambda ss, attr: [v for s in ss for v in getattr(s, attr)]  # noqa: E731
        lost = sum(s.total - s.ok for s in closed["genie"] + opened["genie"])
        self.rows.append(
            Row(
                f"1a click throughput ({backend})",
                f"cost ratio ≤ {CLICK_RATIO_TARGET:.1f} (CPU ≤ {CLICK_CPU_TARGET:.0f}×)",
                g_rps,
                ms(pool(closed["genie"], "done"), 0.5),
                ms(pool(closed["genie"], "done"), 0.99),
                b_rps,
                ms(pool(closed["bare"], "ack"), 0.5),
                ms(pool(closed["bare"], "ack"), 0.99),
                f"{ratio:.2f} (CPU {cpu_ratio:.1f}×)",
                ratio <= CLICK_RATIO_TARGET and cpu_ratio <= CLICK_CPU_TARGET and lost == 0,
                f"closed loop, {p.closed_concurrency} clients, {p.click_closed} clicks/round; Genie req/s = transitions "
                f"committed per second (median of {p.rounds} rounds); latencies click → transition committed; "
                f"ratio = bare req/s ÷ Genie req/s; CPU per click {g_cpu:.2f} ms (Genie's processes, from the first "
                f"click until its outbox is empty, so the chat.update is counted) vs {b_cpu:.2f} ms per bare ack",
            )
        )
        g_ack, b_ack = pool(opened["genie"], "ack"), pool(opened["bare"], "ack")
        g_done = pool(opened["genie"], "done")
        offered = f"{p.click_rate:.0f}/s"
        self.rows.append(
            Row(
                f"1b click ack @{offered} ({backend})",
                f"p99 ≤ {ACK_TARGET_MS:.0f} ms",
                median([s.rps for s in opened["genie"]]),
                ms(g_ack, 0.5),
                ms(g_ack, 0.99),
                median([s.rps for s in opened["bare"]]),
                ms(b_ack, 0.5),
                ms(b_ack, 0.99),
                f"{ms(g_ack, 0.99) / ms(b_ack, 0.99):.2f}" if b_ack else "",
                (ms(g_ack, 0.99) or 1e9) <= ACK_TARGET_MS,
                "open loop at a fixed rate; HTTP response (Bolt's ack) latency; ratio = Genie p99 ÷ bare p99",
            )
        )
        self.rows.append(
            Row(
                f"1c click → committed @{offered} ({backend})",
                f"p99 ≤ {COMMITTED_TARGET_MS:.0f} ms",
                median([s.rps for s in opened["genie"]]),
                ms(g_done, 0.5),
                ms(g_done, 0.99),
                median([s.rps for s in opened["bare"]]),
                ms(b_ack, 0.5),
                ms(b_ack, 0.99),
                f"{ms(g_done, 0.99) / ms(b_ack, 0.99):.2f}" if b_ack else "",
                (ms(g_done, 0.99) or 1e9) <= COMMITTED_TARGET_MS and lost == 0,
                "same rounds; Genie: click sent → acknowledgement committed (alert.acknowledged_at, written by the "
                "transition); bare: its ack",
            )
        )
        self.details[f"click_{backend}"] = {
            "closed": [asdict_sample(s) for s in closed["genie"]],
            "open": [asdict_sample(s) for s in opened["genie"]],
            "bare_closed": [asdict_sample(s) for s in closed["bare"]],
            "bare_open": [asdict_sample(s) for s in opened["bare"]],
        }

    # --- row 2: /genie connect and link confirm ---------------------------------------------
    async def scenario_link(self, backend: str, world: World) -> None:
        p = self.plan
        log(f"{backend}: (2) /genie connect and link confirm, closed loop x{p.web_concurrency}")
        from bot.services.slack_links import LinkTokens

        tokens = LinkTokens([SECRET_KEY], 600)
        results: dict[str, dict[str, list[Sample]]] = {
            "connect": {"genie": [], "bare": []},
            "confirm": {"genie": [], "bare": []},
        }
        for r in range(p.rounds):
            for target in ("genie", "bare"):
                port = world.genie.port if target == "genie" else self.bare.port
                tag = f"UN{backend[0].upper()}{r}{target[0].upper()}X"
                users = [f"{tag}{i}" for i in range(p.connect)]
                if target == "genie":
                    for u in users:
                        self.fake.add_user(u, f"Connect Person {u}", f"{u.lower()}@bench.example")
                res = await loadgen(
                    dict(
                        kind="command",
                        port=port,
                        mode="closed",
                        concurrency=p.web_concurrency,
                        secret=SIGNING_SECRET,
                        users=users,
                        team_id=seeding.WORKSPACE,
                        team_domain=TEAM_DOMAIN,
                        text="connect",
                        response_url=f"{self.fake.url}/response",
                    )
                )
                s = self._http_sample(res)
                if target == "genie":
                    s.extra["profiles_recorded_after_s"] = round(await self._wait_profiles(world, tag, len(users)), 2)
                results["connect"][target].append(s)
                log(
                    f"  connect r{r + 1} {target:5}: {s.rps:7.1f}/s, p50 {ms(s.ack, 0.5):6.1f} p99 "
                    f"{ms(s.ack, 0.99):7.1f} ms, ok {s.ok}/{s.total} {s.extra}"
                )
            for target in ("genie", "bare"):
                port = world.genie.port if target == "genie" else self.bare.port
                pairs = (
                    world.take_confirms(p.confirm) if target == "genie" else [(f"n{i}", "") for i in range(p.confirm)]
                )
                toks = [tokens.dump(nonce) for nonce, _ in pairs]
                calls_before = len(self.fake.calls("views.publish"))
                res = await loadgen(
                    dict(
                        kind="confirm",
                        port=port,
                        mode="closed",
                        concurrency=p.web_concurrency,
                        tokens=toks,
                        login=target == "genie",
                        email=world.layout.web_email,
                        password=PASSWORD,
                    )
                )
                s = self._http_sample(res)
                if target == "genie":
                    s.extra["dm_and_home_after_s"] = round(
                        await self._wait_calls("views.publish", calls_before + len(pairs)), 2
                    )
                results["confirm"][target].append(s)
                log(
                    f"  confirm r{r + 1} {target:5}: {s.rps:7.1f}/s, p50 {ms(s.ack, 0.5):6.1f} p99 "
                    f"{ms(s.ack, 0.99):7.1f} ms, ok {s.ok}/{s.total} {s.extra}"
                )
        for kind, label in (("connect", "2a /genie connect"), ("confirm", "2b link confirm POST")):
            g, b = results[kind]["genie"], results[kind]["bare"]
            g_lat, b_lat = [v for s in g for v in s.ack], [v for s in b for v in s.ack]
            g_rps, b_rps = median([s.rps for s in g]), median([s.rps for s in b])
            failed = sum(s.total - s.ok for s in g)
            self.rows.append(
                Row(
                    f"{label} ({backend})",
                    f"p99 ≤ {LATENCY_TARGET_MS:.0f} ms, all OK",
                    g_rps,
                    ms(g_lat, 0.5),
                    ms(g_lat, 0.99),
                    b_rps,
                    ms(b_lat, 0.5),
                    ms(b_lat, 0.99),
                    f"{b_rps / g_rps:.2f}" if g_rps else "",
                    (ms(g_lat, 0.99) or 1e9) <= LATENCY_TARGET_MS and failed == 0,
                    (
                        "signed slash command from a new Slack user each time; Genie writes the link request before "
                        "acking, then asks users.info and records the profile"
                        if kind == "connect"
                        else "signed in once, then confirms fresh links (CSRF form POST): redeem + link + page; DM and Home "
                        "tab after the response; bare = Starlette form POST"
                    )
                    + f"; closed loop x{p.web_concurrency}; "
                    f"ratio = bare req/s ÷ Genie req/s (informational)",
                )
            )
        self.details[f"link_{backend}"] = {
            k: {t: [asdict_sample(s) for s in v] for t, v in d.items()} for k, d in results.items()
        }

    def _http_sample(self, res: dict, ok_status: int = 200) -> Sample:
        samples = res["samples"]
        ok = sum(1 for s in samples if s[2] == ok_status)
        lat = [s[1] for s in samples]
        return Sample(
            rps=ok / res["elapsed"],
            ack=lat,
            done=lat,
            ok=ok,
            total=len(samples),
            extra={"statuses": _statuses(samples)} if ok != len(samples) else {},
        )

    async def _wait_profiles(self, world: World, tag: str, count: int, timeout: float = 120.0) -> float:
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            done = await world.db.scalar(
                "SELECT count(*) FROM link_request WHERE slack_user_id LIKE :p AND slack_email IS NOT NULL", p=f"{tag}%"
            )
            if done >= count:
                break
            await asyncio.sleep(0.05)
        await world.db.quiesce()
        return time.monotonic() - start

    async def _wait_calls(self, method: str, count: int, timeout: float = 120.0) -> float:
        start = time.monotonic()
        while len(self.fake.calls(method)) < count and time.monotonic() - start < timeout:
            await asyncio.sleep(0.05)
        return time.monotonic() - start

    # --- row 3: alert API ingest and the outbox drain ----------------------------------------
    async def scenario_ingest(self, backend: str, world: World) -> None:
        p = self.plan
        log(
            f"{backend}: (3) POST /v2/alerts, closed loop x{p.web_concurrency}; then the outbox drain at "
            f"1 message/s per channel"
        )
        keys = [world.keys[t] for t in range(2, 10)]
        res_by: dict[str, list[Sample]] = {"genie": [], "bare": []}
        for r in range(p.rounds):
            for target in ("genie", "bare"):
                port = world.genie.port if target == "genie" else self.bare.port
                cpu_before = world.genie.cpu() if target == "genie" else 0.0
                res = await loadgen(
                    dict(
                        kind="ingest",
                        port=port,
                        mode="closed",
                        concurrency=p.web_concurrency,
                        keys=keys,
                        count=p.ingest,
                        prefix=f"ingest-{backend}-{r}-{target}",
                    )
                )
                s = self._http_sample(res, ok_status=202)
                if target == "genie":
                    s.extra["outbox_drain_s"] = round(await world.db.quiesce(), 2)
                    # Its processes' CPU until the outbox is empty: each alert's request, commit and post.
                    s.extra["cpu_ms"] = round((world.genie.cpu() - cpu_before) * 1000 / max(s.ok, 1), 2)
                res_by[target].append(s)
                log(
                    f"  ingest r{r + 1} {target:5}: {s.rps:7.1f}/s, p50 {ms(s.ack, 0.5):6.1f} p99 "
                    f"{ms(s.ack, 0.99):7.1f} ms, ok {s.ok}/{s.total} {s.extra}"
                )
        g, b = res_by["genie"], res_by["bare"]
        g_lat, b_lat = [v for s in g for v in s.ack], [v for s in b for v in s.ack]
        g_rps, b_rps = median([s.rps for s in g]), median([s.rps for s in b])
        failed = sum(s.total - s.ok for s in g)
        self.rows.append(
            Row(
                f"3a alert API ingest ({backend})",
                f"≥ {INGEST_TARGET_RPS:.0f} accepted/s, all 202",
                g_rps,
                ms(g_lat, 0.5),
                ms(g_lat, 0.99),
                b_rps,
                ms(b_lat, 0.5),
                ms(b_lat, 0.99),
                f"{b_rps / g_rps:.2f}" if g_rps else "",
                (g_rps or 0) >= INGEST_TARGET_RPS and failed == 0,
                f"accepted alerts/s (202: committed with its outbox row), 8 teams' keys, closed loop x{p.web_concurrency}; "
                f"outbox delivered the posts in {', '.join(str(s.extra.get('outbox_drain_s')) for s in g)} s after each "
                f"round; Genie's CPU {', '.join(str(s.extra.get('cpu_ms')) for s in g)} ms per accepted alert (its "
                f"processes, until the outbox is empty: request, commit and post); bare = Starlette JSON POST; "
                f"ratio = bare ÷ Genie (informational)",
            )
        )
        await self._drain(backend, world)

    async def _drain(self, backend: str, world: World) -> None:
        p = self.plan
        teams = list(range(10, 10 + p.drain_channels))
        channels = {f"C0T{t}" for t in teams}
        total = p.drain_channels * p.drain_per_channel
        before = {c.args.get("channel") for c in self.fake.calls("chat.postMessage")} & channels
        assert not before, "drain channels must be fresh"
        first_outbox_id = await world.db.scalar("SELECT coalesce(max(id), 0) FROM outbox")
        self.fake.limit_per_channel(1.0)
        try:
            start = time.monotonic()
            res = await loadgen(
                dict(
                    kind="ingest",
                    port=world.genie.port,
                    mode="closed",
                    concurrency=p.web_concurrency,
                    keys=[world.keys[t] for t in teams],
                    count=total,
                    prefix=f"drain-{backend}",
                )
            )
            accepted = sum(1 for s in res["samples"] if s[2] == 202)
            floor = p.drain_per_channel - 1  # seconds: one message per second per channel
            deadline = time.monotonic() + 3 * floor + 60
            while True:
                posts = [c for c in self.fake.calls("chat.postMessage") if c.args.get("channel") in channels]
                if len(posts) >= total or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.05)
            await asyncio.sleep(1.5 if p.name != "smoke" else 0.5)  # anything posted twice would show up now
            posts = [c for c in self.fake.calls("chat.postMessage") if c.args.get("channel") in channels]
            drained = max((c.at for c in posts), default=start) - start
            limited = self.fake.limited
        finally:
            self.fake.limit_per_channel(None)
        # Order: per channel, Slack received the posts in the order Genie queued them (outbox id).
        ids_by_channel: dict[str, list[int]] = {}
        for c in posts:
            m = re.search(r"#(\d+) ", c.args.get("text") or "")
            ids_by_channel.setdefault(c.args["channel"], []).append(int(m.group(1)) if m else -1)
        outbox_rows = await world.db.rows(
            "SELECT channel, alert_id, id, delivered_at IS NOT NULL, failed_at IS NOT NULL FROM outbox "
            "WHERE kind = 'alert.post' AND id > :first AND channel IN ("
            + ", ".join(f"'{c}'" for c in sorted(channels))
            + ")",
            first=first_outbox_id,
        )
        queued: dict[str, list[int]] = {}
        for channel, alert_id, _, _, _ in sorted(outbox_rows, key=lambda r: r[2]):
            queued.setdefault(channel, []).append(alert_id)
        failed = sum(1 for r in outbox_rows if r[4])
        unique = {i for ids in ids_by_channel.values() for i in ids}
        in_order = all(ids_by_channel.get(ch, []) == queued.get(ch, []) for ch in channels)
        lost = total - len(unique)
        dupes = len(posts) - len(unique)
        ok = accepted == total and lost == 0 and dupes == 0 and failed == 0 and in_order and drained <= 1.5 * floor + 1
        delays = sorted(c.at - start for c in posts)
        self.rows.append(
            Row(
                f"3b outbox drain, Slack at 1 msg/s/channel ({backend})",
                "0 lost, order kept, ≤ 1.5× floor",
                len(posts) / drained if drained > 0 else None,
                ms(delays, 0.5),
                ms(delays, 0.99),
                None,
                None,
                None,
                f"{drained / floor:.2f}× floor" if floor else "",
                ok,
                f"{total} alerts to {p.drain_channels} channels at once; all {len(posts)} posted in {drained:.1f} s "
                f"(floor {floor} s); lost {lost}, duplicated {dupes}, failed {failed}, per-channel order "
                f"{'kept' if in_order else 'BROKEN'}; {limited} answers were 429 Retry-After; p50/p99 = time from the "
                f"burst's start to each post",
            )
        )
        self.details[f"drain_{backend}"] = {
            "posted": len(posts),
            "drain_s": drained,
            "floor_s": floor,
            "limited": limited,
            "lost": lost,
            "dupes": dupes,
            "in_order": in_order,
        }

    # --- row 5: races ------------------------------------------------------------------------
    async def scenario_race(self, backend: str, world: World) -> None:
        p = self.plan
        log(
            f"{backend}: (5) {p.race_confirms} concurrent confirms of one link; {p.race_clicks} concurrent clicks "
            f"on one alert"
        )
        from bot.services.slack_links import LinkTokens

        token = LinkTokens([SECRET_KEY], 600).dump(world.layout.race_nonce)
        res = await loadgen(
            dict(
                kind="confirm",
                port=world.genie.port,
                mode="burst",
                tokens=[token] * p.race_confirms,
                login=True,
                email=world.layout.web_email,
                password=PASSWORD,
                timeout=120,
            )
        )
        wins = sum(1 for s in res["samples"] if s[2] == 200)
        identity = await world.db.scalar(
            "SELECT slack_user_id FROM link_request WHERE nonce = :n", n=world.layout.race_nonce
        )
        links = await world.db.scalar("SELECT count(*) FROM slack_link WHERE slack_user_id = :u", u=identity)
        lat = [s[1] for s in res["samples"]]
        self.rows.append(
            Row(
                f"5a {p.race_confirms} concurrent confirms of one link ({backend})",
                "exactly 1 success",
                None,
                ms(lat, 0.5),
                ms(lat, 0.99),
                None,
                None,
                None,
                f"{wins}/{p.race_confirms}",
                wins == 1 and links == 1,
                f"{wins} confirmed page(s), {links} link row(s); statuses {_statuses(res['samples'])}; all answered in "
                f"{res['elapsed']:.2f} s",
            )
        )
        alert_id = world.layout.race_alert
        users = world.layout.clickers
        res = await loadgen(
            self.click_spec(world.genie.port, world, [alert_id] * p.race_clicks, "burst", timeout=120)
            | {"users": [users[i % len(users)] for i in range(p.race_clicks)]}
        )
        deadline = time.monotonic() + 120
        while True:
            decided = await world.db.scalar(
                "SELECT count(*) FROM alert_event WHERE alert_id = :a AND action = 'acknowledge'", a=alert_id
            )
            if decided >= p.race_clicks or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        outcomes = dict(
            await world.db.rows(
                "SELECT outcome, count(*) FROM alert_event WHERE alert_id = :a AND "
                "action = 'acknowledge' GROUP BY outcome",
                a=alert_id,
            )
        )
        from storage.models import AlertEvent

        last = await world.db.scalar(select(func.max(AlertEvent.at)).where(AlertEvent.alert_id == alert_id))
        took = last.timestamp() - res["t0_wall"] if last else None
        lat = [s[1] for s in res["samples"]]
        applied = outcomes.get("applied", 0)
        self.rows.append(
            Row(
                f"5b {p.race_clicks} concurrent clicks on one alert ({backend})",
                "exactly 1 transition",
                None,
                ms(lat, 0.5),
                ms(lat, 0.99),
                None,
                None,
                None,
                f"{applied}/{p.race_clicks}",
                applied == 1 and sum(outcomes.values()) == p.race_clicks,
                f"timeline: {outcomes}; every click decided {took:.2f} s after the burst started; p50/p99 = acks"
                if took is not None
                else f"timeline: {outcomes}",
            )
        )
        await world.db.quiesce()

    # --- row 4: growth -----------------------------------------------------------------------
    async def scenario_growth(self, backend: str) -> None:
        p = self.plan
        sizes = p.growth_sizes
        log(
            f"{backend}: (4) growth: click at {p.growth_rate:.0f}/s on databases of {', '.join(f'{s:,}' for s in sizes)} "
            f"rows"
        )
        worlds: dict[int, World] = {}
        try:
            for size in sizes:
                world = await make_world(
                    backend,
                    f"growth{size}",
                    size,
                    key_teams=[],
                    hot=p.growth_rounds * p.growth_clicks + p.warmup + 10,
                    confirms=0,
                    work=self.work,
                    pg_url=self.args.pg_url,
                    src=self.args.genie_src,
                )
                worlds[size] = world
            self.message = alert_message_template(worlds[sizes[0]].layout)
            genies = await asyncio.gather(
                *(
                    start_genie(
                        f"genie-{backend}-growth{size}",
                        world.db.url,
                        self.fake,
                        self.work,
                        self.args.profile,
                        self.args.genie_src,
                    )
                    for size, world in worlds.items()
                )
            )
            for world, genie in zip(worlds.values(), genies):
                world.genie = genie
                if p.warmup:
                    await self.click_round(world, "genie", p.warmup, mode="open", rate=50)
            samples: dict[int, list[Sample]] = {s: [] for s in sizes}
            bare: list[Sample] = []
            for r in range(p.growth_rounds):
                for size in sizes:
                    s = await self.click_round(worlds[size], "genie", p.growth_clicks, mode="open", rate=p.growth_rate)
                    samples[size].append(s)
                    log(
                        f"  r{r + 1} {size:>9,}: done p50 {ms(s.done, 0.5):6.1f} p99 {ms(s.done, 0.99):7.1f} ms, "
                        f"ack p50 {ms(s.ack, 0.5):6.1f} ms"
                    )
                s = await self.click_round(worlds[sizes[0]], "bare", p.growth_clicks, mode="open", rate=p.growth_rate)
                bare.append(s)
            b_ack = [v for s in bare for v in s.ack]
            base = ms([v for s in samples[sizes[0]] for v in s.done], 0.5)
            for size in sizes:
                done = [v for s in samples[size] for v in s.done]
                ratio = (ms(done, 0.5) or 0) / base if base else float("inf")
                last = size == sizes[-1]
                self.rows.append(
                    Row(
                        f"4 growth: click at {_size(size)} rows ({backend})",
                        "p50 ratio ≤ 1.2" if last else "(baseline)" if size == sizes[0] else "",
                        median([s.rps for s in samples[size]]),
                        ms(done, 0.5),
                        ms(done, 0.99),
                        median([s.rps for s in bare]),
                        ms(b_ack, 0.5),
                        ms(b_ack, 0.99),
                        f"{ratio:.2f}",
                        (ratio <= 1.2) if last else None,
                        f"{_size(size)} users, links, link requests, alerts (+ their timeline and outbox rows); "
                        f"open loop {p.growth_rate:.0f}/s; click → committed; ratio = p50 ÷ p50 at {_size(sizes[0])}"
                        if last
                        else "",
                    )
                )
            largest = worlds[sizes[-1]]
            groups = await explain_click(largest.db.url, largest.layout, self.args.genie_src)
            self.details[f"explain_{backend}"] = groups
            for group, plans in groups.items():
                unindexed = [q for q in plans if q["unindexed"]]
                scans = sorted({t for q in unindexed for t in q["unindexed"]})
                self.rows.append(
                    Row(
                        f"4 growth: {group} queries at {_size(sizes[-1])} rows ({backend})",
                        "every lookup indexed",
                        ratio=f"{len(plans) - len(unindexed)}/{len(plans)} indexed",
                        met=not unindexed,
                        note=(f"full scan of {', '.join(scans)}: " + "; ".join(q["sql"][:90] for q in unindexed))
                        if unindexed
                        else f"EXPLAIN{' QUERY PLAN' if backend == 'sqlite' else ''} of each statement",
                    )
                )
        finally:
            stop_all([w.genie for w in worlds.values() if w.genie])
            for world in worlds.values():
                if not self.args.keep:
                    await world.db.drop()

    # --- a backend -------------------------------------------------------------------------
    async def run_backend(self, backend: str, scenarios: list[str]) -> None:
        p = self.plan
        self.fake.clear()  # each backend starts with a fake Slack that has seen nothing (fresh channels)
        main_rows = [s for s in scenarios if s not in ("growth", "storm", "serving")]
        if main_rows:
            hot = p.warmup + p.rounds * (p.click_closed + p.click_open) + 10
            confirms = p.rounds * p.confirm
            log(f"{backend}: seeding the main database ({p.base_n:,} rows per kind)")
            world = await make_world(
                backend,
                "main",
                p.base_n,
                hot=hot,
                confirms=confirms,
                key_teams=list(range(2, 10 + p.drain_channels)),
                work=self.work,
                pg_url=self.args.pg_url,
                src=self.args.genie_src,
            )
            self.message = alert_message_template(world.layout)
            try:
                world.genie = await start_genie(
                    f"genie-{backend}-main",
                    world.db.url,
                    self.fake,
                    self.work,
                    self.args.profile,
                    self.args.genie_src,
                    UNPACED,  # rows 1–3, 5: every alert posted on its own (row 6 is the storm, paced)
                )
                await self.warm(world)
                for name in ("click", "link", "ingest", "race"):
                    if name in main_rows:
                        await getattr(self, f"scenario_{name}")(backend, world)
            finally:
                if world.genie:
                    world.genie.stop()
                if not self.args.keep:
                    await world.db.drop()
        if "growth" in scenarios:
            await self.scenario_growth(backend)
        if "storm" in scenarios:
            await run_storm(self, backend)
        if "serving" in scenarios:
            await serving.scenario_serving(self, backend)

    async def run(self) -> None:
        self.bare = await start_bare(self.fake, self.work)
        try:
            for backend in self.args.backends:
                await self.run_backend(backend, self.args.only)
        finally:
            stop_all([self.bare])
            self.fake.stop()


def _statuses(samples: list) -> dict[str, int]:
    out: dict[str, int] = {}
    for s in samples:
        out[str(s[2])] = out.get(str(s[2]), 0) + 1
    return out


def _size(n: int) -> str:
    return (
        f"{n // 1_000_000}M"
        if n >= 1_000_000 and n % 1_000_000 == 0
        else f"{n // 1000}k"
        if n >= 1000 and n % 1000 == 0
        else str(n)
    )


def asdict_sample(s: Sample) -> dict:
    return {
        "rps": round(s.rps, 1),
        "ok": s.ok,
        "total": s.total,
        "ack_p50_ms": ms(s.ack, 0.5),
        "ack_p99_ms": ms(s.ack, 0.99),
        "done_p50_ms": ms(s.done, 0.5),
        "done_p99_ms": ms(s.done, 0.99),
        **s.extra,
    }


# --- EXPLAIN the click's statements ------------------------------------------------------------
async def explain_click(url: str, layout: seeding.Layout, src: Path | None) -> dict[str, list[dict]]:
    """``bench/explain.py`` in a subprocess (so that ``--genie-src`` explains that checkout's queries)."""
    env = clean_env() | {"PYTHONPATH": str(src)} if src else clean_env()
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(REPO / "bench" / "explain.py"),
        url,
        layout.clickers[0],
        str(layout.hot_alerts[-1]),
        cwd=REPO,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"explain failed: {err.decode()[-2000:]}")
    return json.loads(out)


# --- the command ---------------------------------------------------------------------------------
def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = "unknown"
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return {
        "nproc": str(os.cpu_count()),
        "cpu": model,
        "ram": mem,
        "python": platform.python_version(),
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.run",
        description="Genie's cost next to a bare Bolt app, and how it grows (issue 5). Prints a table.",
    )
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="fewer requests, growth only to 100k rows (minutes)")
    mode.add_argument(
        "--smoke", action="store_true", help="a few requests of each kind, seconds (keeps it from rotting)"
    )
    parser.add_argument(
        "--db",
        choices=["sqlite", "postgres", "both"],
        default=None,
        help="database(s) to run on (default: both; --smoke: sqlite)",
    )
    parser.add_argument(
        "--only",
        default=",".join(SCENARIOS),
        help=f"comma-separated scenarios to run (default all: {','.join(SCENARIOS)})",
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("GENIE_BENCH_POSTGRES_URL", DEFAULT_PG),
        help="PostgreSQL server for scratch databases (default %(default)s)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write the rows and per-round details as JSON")
    parser.add_argument(
        "--keep", action="store_true", help="keep the work directory and databases (logs, for profiling)"
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        type=Path,
        help="run each Genie under `py-spy record` (pip install py-spy) and write its collapsed "
        "stacks to DIR/<name>.txt (slows Genie a little: for finding hot spots, not for figures)",
    )
    parser.add_argument(
        "--genie-src",
        metavar="DIR",
        type=Path,
        help="run Genie from another checkout of this repository (e.g. a `git worktree` of an "
        "older commit) for before/after figures; the benchmark itself runs from this one",
    )
    serving.add_arguments(parser)
    args = parser.parse_args(argv)
    serving.configure(args)
    args.plan = "smoke" if args.smoke else "quick" if args.quick else "full"
    db = args.db or ("sqlite" if args.smoke else "both")
    args.backends = ["sqlite", "postgres"] if db == "both" else [db]
    args.only = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.only) - set(SCENARIOS)
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    plan = PLANS[args.plan]
    work = Path(tempfile.mkdtemp(prefix="genie-bench-"))
    log(f"plan {plan.name} on {', '.join(args.backends)}; work directory {work}")
    bench = Bench(args, plan, work)
    started = time.monotonic()
    try:
        asyncio.run(bench.run())
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        report(args, argv, plan, bench, started)
    return 0  # a target not met is a result, not a failure of the command


def report(args: argparse.Namespace, argv: list[str] | None, plan: Plan, bench: Bench, started: float) -> None:
    """The table (also of a run that stopped half-way: the rows measured so far)."""
    info = machine()
    command = "python -m bench.run " + " ".join(sys.argv[1:] if argv is None else argv)
    print(
        f"\nGenie benchmark — {info['date']} — {info['nproc']} × {info['cpu']}, {info['ram']} RAM, "
        f"Python {info['python']} — `{command.strip()}` — {time.monotonic() - started:.0f} s\n"
    )
    print(table(bench.rows))
    print()
    for r in bench.rows:
        if r.note:
            print(f"- {r.scenario}: {r.note}")
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "machine": info,
                    "command": command,
                    "plan": asdict(plan),
                    "rows": [asdict(r) for r in bench.rows],
                    "details": bench.details,
                },
                indent=2,
                default=str,
            )
        )


if __name__ == "__main__":
    raise SystemExit(main())
