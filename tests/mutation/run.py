"""Mutation testing of the trust core: apply each mutant in ``mutants.py`` to a throw-away copy
of the repository, run its fast tests there (SQLite, ``-x``), and report which were killed.

    .venv/bin/python tests/mutation/run.py              # all mutants, one at a time
    .venv/bin/python tests/mutation/run.py G1 K3        # some of them
    .venv/bin/python tests/mutation/run.py --json out.json

Not part of the normal test run (it runs the chosen tests once per mutant: about 40 minutes on
a busy 2-core machine; give several ids to run a part). A baseline run of every mutant's tests,
unmutated, must pass first (``--no-baseline`` when they were just run green). Mutants marked
``postgres`` also run on PostgreSQL when GENIE_TEST_POSTGRES_URL is set: their fault shows only
in a real race. Exit status 0 when every mutant was killed; SECURITY.md records the last run and
argues each survivor."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from tests.mutation.mutants import MUTANTS  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
PYTHON = REPO / ".venv" / "bin" / "python"


def copy_repo(to: Path) -> None:
    files = (
        subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, check=True, capture_output=True
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = REPO / name
        if source.is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, to / name)


def pytest(copy: Path, tests: tuple[str, ...], timeout: int, postgres: bool = False) -> tuple[int, str]:
    # SQLite only, unless the mutant needs a real race (and GENIE_TEST_POSTGRES_URL is set).
    env = {k: v for k, v in os.environ.items() if postgres or k != "GENIE_TEST_POSTGRES_URL"}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    try:
        done = subprocess.run(
            [str(PYTHON), "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *tests],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        return -1, "timeout"
    lines = (done.stdout + done.stderr).strip().splitlines()
    if os.environ.get("GENIE_MUTATION_VERBOSE"):
        print("\n".join(lines[-60:]))
    return done.returncode, next(
        (l for l in reversed(lines) if " passed" in l or " failed" in l or " error" in l), lines[-1] if lines else ""
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("ids", nargs="*", help="mutant ids (default: all)")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--timeout", type=int, default=600)
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmutated run (when just run green)")
    args = parser.parse_args()
    chosen = [m for m in MUTANTS if not args.ids or m.id in args.ids]
    results = []
    with tempfile.TemporaryDirectory(prefix="genie-mutants-") as tmp:
        copy = Path(tmp)
        copy_repo(copy)
        # The copy, not the checkout, must be what the tests import.
        where = subprocess.run(
            [str(PYTHON), "-c", "import bot; print(bot.__file__)"], cwd=copy, capture_output=True, text=True, check=True
        ).stdout.strip()
        assert where.startswith(str(copy)), f"tests would import {where}, not the mutated copy"
        baseline = tuple(dict.fromkeys(t for m in chosen for t in m.tests))
        rc, summary = (0, "skipped") if args.no_baseline else pytest(copy, baseline, args.timeout * 3)
        print(f"baseline (unmutated): {summary}", flush=True)
        if rc != 0:
            print("the unmutated tests fail: fix that first (GENIE_MUTATION_VERBOSE=1 shows why)", file=sys.stderr)
            return 2
        for mutant in chosen:
            target = copy / mutant.path
            original = target.read_text(encoding="utf-8")
            if original.count(mutant.old) != 1:
                results.append({"id": mutant.id, "outcome": "stale", "what": mutant.what, "tests": list(mutant.tests)})
                print(
                    f"{mutant.id:4} STALE    {mutant.path}: the text to mutate occurs {original.count(mutant.old)} times",
                    flush=True,
                )
                continue
            target.write_text(original.replace(mutant.old, mutant.new), encoding="utf-8")
            started = time.monotonic()
            try:
                rc, summary = pytest(copy, mutant.tests, args.timeout, mutant.postgres)
            finally:
                target.write_text(original, encoding="utf-8")
            outcome = "survived" if rc == 0 else "timeout" if rc == -1 else "killed"
            results.append(
                {
                    "id": mutant.id,
                    "area": mutant.area,
                    "outcome": outcome,
                    "what": mutant.what,
                    "tests": list(mutant.tests),
                    "summary": summary,
                    "seconds": round(time.monotonic() - started, 1),
                }
            )
            print(
                f"{mutant.id:4} {outcome.upper():8} {mutant.what} — {summary} ({time.monotonic() - started:.0f} s)",
                flush=True,
            )
    killed = sum(r["outcome"] in ("killed", "timeout") for r in results)
    print(
        f"\n{killed} of {len(results)} mutants killed; survived: "
        f"{[r['id'] for r in results if r['outcome'] == 'survived'] or 'none'}; "
        f"stale: {[r['id'] for r in results if r['outcome'] == 'stale'] or 'none'}"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    return 0 if killed == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
