"""The benchmark (``bench/``) is not a timed test; this only keeps it from rotting: its command
answers ``--help``, and a minimal run (a few requests of every row, SQLite) completes and prints
every row of the table with the race rows exact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def test_bench_help() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--help"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert "--quick" in out.stdout and "--db" in out.stdout


#: The smoke run in three parts that xdist runs side by side (one run of every row took 70–100 s).
SMOKE_PARTS = {
    "click,link,ingest,growth,race": (
        "1a",
        "1b",
        "1c",
        "2a",
        "2b",
        "3a",
        "3b",
        "4 growth: click at",
        "4 growth: click queries",
        "4 growth: outbox loop queries",
        "5a",
        "5b",
    ),
    "storm": ("6a", "6b", "6c"),
    "serving": (
        "7 click ack @50/s during a 8-alert backlog, one process",
        "7 click ack @50/s during a 8-alert backlog, web + worker",
    ),
}


@pytest.mark.parametrize("only", list(SMOKE_PARTS))
def test_bench_smoke_run(tmp_path: Path, only: str) -> None:
    result = tmp_path / "bench.json"
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--smoke", "--only", only, "--json", str(result)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| scenario | target |" in out.stdout
    rows = {r["scenario"].split(" (")[0]: r for r in json.loads(result.read_text())["rows"]}
    for prefix in SMOKE_PARTS[only]:
        assert any(name.startswith(prefix) for name in rows), (prefix, sorted(rows))
    races = [r for name, r in rows.items() if name.startswith(("5a", "5b"))]
    assert all(r["met"] for r in races), races
    if "ingest" in only:
        drain = next(r for name, r in rows.items() if name.startswith("3b"))
        assert "lost 0" in drain["note"] and "order kept" in drain["note"], drain["note"]
    if only == "storm":
        storm = next(r for name, r in rows.items() if name.startswith("6a"))
        assert " 0 lost, 0 outbox rows pending or failed, 0 posted twice" in storm["note"], storm["note"]


def test_paging_bench_smoke_run() -> None:
    """``bench/paging.py`` with a handful of everything, ``--apply-teams`` included (its second
    apply asserts that nothing changed)."""
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.paging",
            "--alerts",
            "20",
            "--due",
            "5",
            "--schedules",
            "5",
            "--apply-teams",
            "2",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert "| genie apply, the same file again (nothing to change) |" in out.stdout
    assert "| who is on call, 20 layered schedules over 2 teams (20 with somebody) |" in out.stdout


def test_statement_counts_run(tmp_path: Path) -> None:
    """``bench/statements.py`` (statements per ingest, click and delivery) runs to its end; the
    counts themselves are guarded in ``tests/test_alert_api.py``."""
    result = tmp_path / "statements.json"
    out = subprocess.run(
        [sys.executable, "bench/statements.py", "-n", "2", "--idle", "0.5", "--json", str(result)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    counted = json.loads(result.read_text())
    for kind in ("ingest", "dedupe", "click"):
        by_task = counted[kind]["per_request"]["statements"]
        # An API alert is written by the process's ingest writer, a click by its click writer (group commit).
        assert by_task.get("ingest-writer" if kind != "click" else "click-writer", 0) > 0, counted[kind]
        assert counted[kind]["per_request"]["statements"]["outbox"] > 0, counted[kind]  # it was delivered
    assert "idle (" in out.stdout


def test_app_cpu_runs() -> None:
    """``bench/app_cpu.py`` (CPU and statements per request through the ASGI app: rows 6c and 1a
    without uvicorn) runs to its end for both kinds: every alert accepted, every click committed
    and its update delivered."""
    for kind in ("ingest", "click"):
        out = subprocess.run(
            [sys.executable, "-m", "bench.app_cpu", kind, "sqlite", "30", "4"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=180,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        assert f"{kind} sqlite:" in out.stdout and "4 clients" in out.stdout, out.stdout
