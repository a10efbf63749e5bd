"""Serving while the outbox drains (issue 14, part 2): Genie as one process, or as a web process
and a worker process — the row, and ``--split`` for the other rows.

Row 6, per database, one process vs web + worker, alternating round by round:

1. A **backlog** of alerts is queued through the alert API of a ``genie serve --no-worker`` that
   is then stopped (nothing has delivered them): ``backlog`` alerts over ``channels`` teams'
   channels, while the fake Slack allows 1 ``chat.postMessage`` per second per channel (429 +
   ``Retry-After`` beyond), as Slack does.
2. Genie starts — ``genie serve`` (one process: serving, outbox worker, everything) or
   ``genie serve --no-worker`` + ``genie worker`` — and delivery of the backlog begins.
3. At once, Acknowledge clicks arrive open loop at ``rate``/s (each on a different open alert);
   latency counts from when each click was due (after ``WARMUP`` clicks at 50/s). **ack** is what Slack's 3 s sees; **committed**
   is click → ``acknowledged_at``. Then the round waits until the outbox is empty.

    python -m bench.run --quick --only serving --db sqlite
    python -m bench.run --quick --only click,ingest --split     # the other rows against web + worker

``--split`` makes ``start_genie`` (``bench.run``) start web + worker instead of one process;
``BENCH_SERVE_ARGS`` adds options to ``genie serve``/``genie worker`` (e.g. ``--loop asyncio
--http h11``, to measure what each default brings); ``BENCH_WORKER_NICE=10`` runs the worker
under ``nice -n 10``.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from bench.run import Bench, Server, World

#: Clicks sent to each freshly started Genie before the measured ones.
WARMUP = 20
#: Set from the command line (``configure``).
SPLIT = False


@dataclass
class ServingPlan:
    backlog: int
    channels: int
    clicks: int
    rate: float


PLANS = {
    "full": ServingPlan(backlog=500, channels=50, clicks=600, rate=150),
    "quick": ServingPlan(backlog=500, channels=50, clicks=150, rate=15),
    "smoke": ServingPlan(backlog=8, channels=4, clicks=10, rate=50),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--split",
        action="store_true",
        help="run Genie as `genie serve --no-worker` + `genie worker` (two processes) in the rows that start one",
    )


def configure(args: argparse.Namespace) -> None:
    global SPLIT
    SPLIT = bool(getattr(args, "split", False))


def extra_args() -> list[str]:
    return os.environ.get("BENCH_SERVE_ARGS", "").split()


def worker_argv(serve_argv: list[str]) -> list[str]:
    """``… -m bot serve --host H --port P …`` → ``… -m bot worker`` (py-spy's wrapper dropped)."""
    i = serve_argv.index("serve")
    start = serve_argv.index("--") + 1 if "--" in serve_argv[:i] else 0
    nice = os.environ.get("BENCH_WORKER_NICE")  # e.g. 10: the worker yields the CPU to serving
    return (
        (["nice", "-n", nice] if nice else [])
        + serve_argv[start:i]
        + ["worker", "--no-migrate"]
        + worker_options(extra_args())
    )


def worker_options(args: list[str]) -> list[str]:
    """``genie serve``'s options that ``genie worker`` takes too (not ``--http VALUE``)."""
    out, skip = [], False
    for a in args:
        if skip:
            skip = False
        elif a == "--http":
            skip = True
        else:
            out.append(a)
    return out


class Worker:
    """A ``genie worker`` subprocess: no port; started once it logs that it runs."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], cwd: Path, log_path: Path) -> None:
        self.name, self.argv, self.env, self.cwd, self.log_path = name, argv, env, cwd, log_path
        self.proc: subprocess.Popen | None = None
        self._interrupted = False

    async def start(self, timeout: float = 60.0) -> Worker:
        import asyncio

        self._log = open(self.log_path, "ab")
        offset = self.log_path.stat().st_size
        self.proc = subprocess.Popen(
            self.argv, env=self.env, cwd=self.cwd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while b"Genie worker running" not in self.log_path.read_bytes()[offset:]:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}; see {self.log_path}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not start; see {self.log_path}")
            await asyncio.sleep(0.05)
        return self

    def interrupt(self) -> None:
        if self.proc is not None and self.proc.poll() is None and not self._interrupted:
            self._interrupted = True
            os.killpg(self.proc.pid, signal.SIGTERM)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.interrupt()
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if self.proc is not None:
            self._log.close()
        self.proc = None


async def start(
    name: str, argv: list[str], env: dict[str, str], work: Path, port: int, *, split: bool | None, worker: bool = True
):
    """Genie as ``bench.run.start_genie`` asked: one process, or (``--split``) web + worker, or a
    web process alone (``worker=False``: nothing delivers)."""
    from bench.run import Server

    split = SPLIT if split is None else split
    if not split:
        return await Server(name, argv + extra_args(), env, work, work / f"{name}.log", port).start()
    web = await Server(name, argv + ["--no-worker"] + extra_args(), env, work, work / f"{name}.log", port).start()
    if not worker:
        return web
    try:
        worker = await Worker(f"{name}-worker", worker_argv(argv), env, work, work / f"{name}-worker.log").start()
    except BaseException:
        web.stop()
        raise
    return SplitGenie(web, worker)


class SplitGenie:
    """Web + worker, looking like one ``bench.run.Server`` (its ``port`` is the web's)."""

    def __init__(self, web: Server, worker: Worker) -> None:
        self.web, self.worker = web, worker
        self.name, self.port, self.proc = web.name, web.port, web.proc

    def interrupt(self) -> None:
        self.web.interrupt()
        self.worker.interrupt()

    def cpu(self) -> float:
        """CPU seconds both processes have used so far (row 1a's CPU per click)."""
        from bench.run import group_cpu

        return sum(group_cpu(p.pid) for p in (self.web.proc, self.worker.proc) if p is not None and p.poll() is None)

    def stop(self) -> None:
        self.interrupt()
        self.web.stop()
        self.worker.stop()


# --- row 7 ---------------------------------------------------------------------------------------
async def scenario_serving(bench: Bench, backend: str) -> None:
    from bench import run

    p, sp = bench.plan, PLANS[bench.plan.name]
    teams = list(range(10, 10 + sp.channels))
    channels = {f"C0T{t}" for t in teams}
    run.log(
        f"{backend}: (7) Acknowledge clicks at {sp.rate:.0f}/s while the outbox drains {sp.backlog} alerts to "
        f"{sp.channels} channels at 1 msg/s each; one process vs web + worker, {p.rounds} round pairs"
    )
    world = await run.make_world(
        backend,
        "serving",
        max(1000, 100 * (sp.channels + 10)),
        hot=2 * p.rounds * (sp.clicks + WARMUP) + 10,
        confirms=0,
        key_teams=teams,
        work=bench.work,
        pg_url=bench.args.pg_url,
        src=bench.args.genie_src,
    )
    results: dict[str, list] = {"one process": [], "web + worker": []}
    message = getattr(bench, "message", None)
    bench.message = run.alert_message_template(world.layout)
    try:
        for r in range(p.rounds):
            for label, split in (("one process", False), ("web + worker", True)):
                await _queue_backlog(bench, world, backend, sp, teams, f"backlog-{backend}-{r}-{label}")
                bench.fake.limit_per_channel(1.0)
                started = time.monotonic()
                world.genie = await _start(bench, world, f"genie-{backend}-serving-{r}-{split}", split)
                try:
                    # A fresh process's first requests are slow (lazy imports, first statements):
                    # a few clicks first, while the backlog already drains, as it would in production.
                    await run.loadgen(
                        bench.click_spec(world.genie.port, world, world.take_hot(WARMUP), "open", rate=50)
                    )
                    s = await bench.click_round(world, "genie", sp.clicks, mode="open", rate=sp.rate)
                finally:
                    world.genie.stop()
                    world.genie = None
                    bench.fake.limit_per_channel(None)
                posted = [c for c in bench.fake.calls("chat.postMessage") if c.args.get("channel") in channels]
                s.extra["backlog_posted_during_round"] = sum(1 for c in posted if c.at >= started)
                results[label].append(s)
                run.log(
                    f"  r{r + 1} {label:13}: ack p50 {run.ms(s.ack, 0.5):6.1f} p99 {run.ms(s.ack, 0.99):7.1f} ms; "
                    f"committed p50 {run.ms(s.done, 0.5):6.1f} p99 {run.ms(s.done, 0.99):7.1f} ms; {s.extra}"
                )
    finally:
        bench.fake.limit_per_channel(None)
        bench.message = message
        if not bench.args.keep:
            await world.db.drop()
    for label, samples in results.items():
        ack = [v for s in samples for v in s.ack]
        done = [v for s in samples for v in s.done]
        lost = sum(s.total - s.ok for s in samples)
        bench.rows.append(
            run.Row(
                f"7 click ack @{sp.rate:.0f}/s during a {sp.backlog}-alert backlog, {label} ({backend})",
                "p99 ≤ 100 ms",
                run.median([s.rps for s in samples]),
                run.ms(ack, 0.5),
                run.ms(ack, 0.99),
                None,
                run.ms(done, 0.5),
                run.ms(done, 0.99),
                "",
                (run.ms(ack, 0.99) or 1e9) <= 100 and lost == 0,
                f"{sp.clicks} clicks/round open loop while {sp.backlog} queued alerts drain to {sp.channels} channels "
                f"(1 msg/s each); bare columns: click → committed p50/p99 (not bare Bolt); outbox empty "
                f"{', '.join(str(s.extra.get('outbox_drain_s')) for s in samples)} s after each round's last click",
            )
        )
    bench.details[f"serving_{backend}"] = {
        label: [run.asdict_sample(s) for s in samples] for label, samples in results.items()
    }


async def _start(bench: Bench, world: World, name: str, split: bool):
    from bench import run

    genie = await run.start_genie(name, world.db.url, bench.fake, bench.work, None, bench.args.genie_src, split=split)
    return genie


async def _queue_backlog(bench: Bench, world: World, backend: str, sp: ServingPlan, teams: list[int], prefix: str):
    """``sp.backlog`` alerts accepted by a web process with no worker, which is then stopped."""
    from bench import run

    holder = await run.start_genie(
        f"{prefix}-queue", world.db.url, bench.fake, bench.work, None, bench.args.genie_src, split=True, worker=False
    )
    try:
        res = await run.loadgen(
            dict(
                kind="ingest",
                port=holder.port,
                mode="closed",
                concurrency=8,
                keys=[world.keys[t] for t in teams],
                count=sp.backlog,
                prefix=prefix,
            )
        )
    finally:
        holder.stop()
    accepted = sum(1 for s in res["samples"] if s[2] == 202)
    if accepted != sp.backlog:
        raise RuntimeError(f"backlog: only {accepted}/{sp.backlog} alerts accepted")
