"""Helpers for the hardening tests (fuzzing, faults, retries): wait for Genie's work after
Slack's ack, and compare the whole database before and after a request."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from storage.base import Base

#: Bolt runs a listener after its ack() in a task running this coroutine
#: (slack_bolt.listener.asyncio_runner, process_before_response=False). It is a private name:
#: if a Bolt release renames it, ``bolt_idle`` would wait for nothing, so this fails at import.
_BOLT_TASK = "run_ack_function_asynchronously"


def _check_bolt_task_name() -> None:
    import inspect

    from slack_bolt.listener import asyncio_runner

    if f"async def {_BOLT_TASK}(" not in inspect.getsource(asyncio_runner):
        raise ImportError(
            f"slack_bolt.listener.asyncio_runner no longer defines {_BOLT_TASK}: tests/hardening.py "
            "must learn how this Bolt version runs listeners after ack()"
        )


_check_bolt_task_name()


def _bolt_tasks() -> list[asyncio.Task]:
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done() and getattr(t.get_coro(), "__qualname__", "").endswith(_BOLT_TASK)
    ]


async def bolt_idle(timeout: float = 15.0) -> None:
    """Wait until every Slack listener that Bolt started after acking has finished (the
    server runs in this test's event loop, so its tasks are visible here)."""
    deadline = time.monotonic() + timeout
    while tasks := _bolt_tasks():
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"Slack listeners still running after {timeout} s: {tasks}")
        await asyncio.wait(tasks, timeout=remaining)


async def outbox_idle(genie, timeout: float = 20.0) -> None:
    """Wait until the outbox worker has delivered (or failed) everything queued so far."""
    deadline = time.monotonic() + timeout
    while await genie.scalar("SELECT count(*) FROM outbox WHERE delivered_at IS NULL AND failed_at IS NULL"):
        assert time.monotonic() < deadline, "the outbox did not drain"
        genie.rt.wake_outbox()
        await asyncio.sleep(0.02)


Snapshot = dict[str, Counter]


async def snapshot(sessionmaker: async_sessionmaker[AsyncSession]) -> Snapshot:
    """Every row of every table, as a multiset of tuples per table."""
    shot: Snapshot = {}
    async with sessionmaker() as session:
        for table in Base.metadata.sorted_tables:
            rows = (await session.execute(select(table))).all()
            shot[table.name] = Counter(tuple(_plain(v) for v in row) for row in rows)
    return shot


def _plain(value: Any) -> Any:
    return repr(value) if isinstance(value, (dict, list)) else value


def changes(before: Snapshot, after: Snapshot) -> dict[str, tuple[list, list]]:
    """``{table: (rows added, rows removed)}`` for the tables that changed (an updated row is
    one removed and one added)."""
    found = {}
    for name in after:
        added = list((after[name] - before.get(name, Counter())).elements())
        removed = list((before.get(name, Counter()) - after[name]).elements())
        if added or removed:
            found[name] = (added, removed)
    return found


def columns(table: str) -> list[str]:
    return [c.name for c in Base.metadata.tables[table].columns]


def as_dicts(table: str, rows: list[tuple]) -> list[dict[str, Any]]:
    names = columns(table)
    return [dict(zip(names, row)) for row in rows]


def report(test: str, **counts: Any) -> None:
    """Note what a hardening test tried (inputs, faults, kills …): printed (``pytest -s``) and,
    with ``GENIE_HARDENING_REPORT=path``, appended to that file as JSON lines (SECURITY.md's
    counts come from there)."""
    import json
    import os

    line = json.dumps({"test": test, **counts}, default=str)
    print(f"\nHARDENING {line}")
    path = os.environ.get("GENIE_HARDENING_REPORT")
    if path:
        with open(path, "a") as out:
            out.write(line + "\n")
