"""SQLite's connection runs on the event loop's thread (``storage.sqlite_inline``): what that
may not cost. Another process's write lock is waited for without blocking the loop (the server
keeps answering, and the waiting request commits the moment the lock is free); a lock held
past the deadline fails as it always did; checkpoints run on a thread of their own, keep the
WAL file bounded and stop with the engine.

The lock is held by a plain ``sqlite3`` connection on a thread of the test (standing for the
CLI, ``genie worker`` or a second ``genie serve``: another connection to the same file)."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.exc import OperationalError

from bot.services import alerts, teams
from storage import session as storage_session
from storage import sqlite_inline
from storage.session import make_engine
from tests.conftest import Database, Genie, eventually


@pytest.fixture(autouse=True)
def sqlite_only(database: Database) -> None:
    if database.backend != "sqlite":
        pytest.skip("the inline connection is SQLite's")


def _path(genie: Genie) -> str:
    return genie.settings.database_url.split("///", 1)[1]


class LockHolder(threading.Thread):
    """Another connection that takes SQLite's write lock (``BEGIN IMMEDIATE``), holds it for
    ``hold`` seconds, then commits: ``taken`` and ``released`` say when (monotonic)."""

    def __init__(self, path: str, hold: float) -> None:
        super().__init__(daemon=True)
        self.path, self.hold = path, hold
        self.taken = threading.Event()
        self.released_at = 0.0

    def run(self) -> None:
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
        try:
            conn.execute("BEGIN IMMEDIATE")
            self.taken.set()
            time.sleep(self.hold)
            self.released_at = time.monotonic()
            conn.execute("COMMIT")
        finally:
            conn.close()

    async def start_and_wait(self) -> None:
        self.start()
        assert await asyncio.to_thread(self.taken.wait, 5)


async def _team_key(genie: Genie) -> str:
    async with genie.sessionmaker.begin() as s:
        return await alerts.team_key(s, await teams.add_team(s, "Payments", "C0PAY"))


async def _post_alert(genie: Genie, key: str, alias: str):
    return await genie.http.post(
        "/v2/alerts",
        json={"message": f"Disk full ({alias})", "alias": alias},
        headers={"Authorization": f"GenieKey {key}"},
    )


async def test_a_lock_held_elsewhere_does_not_stop_the_server_and_the_alert_commits_when_it_is_released(
    genie: Genie,
):
    key = await _team_key(genie)
    holder = LockHolder(_path(genie), hold=0.5)
    await holder.start_and_wait()

    posting = asyncio.create_task(_post_alert(genie, key, "during-lock"))
    # While the other connection holds the lock, requests that need no database are answered
    # at once: the loop is not stuck in SQLite's busy handler.
    slowest = 0.0
    while holder.is_alive():
        started = time.monotonic()
        assert (await genie.http.get("/healthz")).status_code == 200
        slowest = max(slowest, time.monotonic() - started)
        await asyncio.sleep(0.02)
    assert slowest < 0.1, f"/healthz took {slowest * 1000:.0f} ms while another connection held the lock"

    response = await posting
    answered = time.monotonic()
    assert response.status_code == 202, response.text
    assert not posting.exception()
    # It waited for the lock, and committed right after it came free.
    assert answered - holder.released_at < 0.5
    assert await genie.scalar("SELECT count(*) FROM alert WHERE alias = 'during-lock'") == 1


@pytest.fixture
def short_lock_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    """The deadline for another process's lock, 30 s in production, 0.3 s here: read by
    ``make_engine`` when the ``genie`` fixture (listed after this one) builds its engine."""
    monkeypatch.setattr(storage_session, "SQLITE_BUSY_TIMEOUT_MS", 300)


async def test_a_lock_held_past_the_deadline_fails_with_database_is_locked(short_lock_deadline: None, genie: Genie):
    key = await _team_key(genie)
    holder = LockHolder(_path(genie), hold=3.0)
    await holder.start_and_wait()

    # The same error SQLite's busy timeout gave, after the same deadline (0.3 s here), long
    # before the lock is released (a loaded CI machine took 1.2 s).
    started = time.monotonic()
    with pytest.raises(OperationalError, match="database is locked") as raised:
        async with genie.sessionmaker.begin() as session:
            await session.execute(text("SELECT 1"))
    waited = time.monotonic() - started
    assert isinstance(raised.value.orig, sqlite3.OperationalError)
    assert 0.3 <= waited < 2.5, waited

    # An alert sent meanwhile is refused, not taken: nothing was committed.
    response = await _post_alert(genie, key, "too-late")
    assert response.status_code >= 500
    assert holder.is_alive()
    await asyncio.to_thread(holder.join, 5)
    assert await genie.scalar("SELECT count(*) FROM alert WHERE alias = 'too-late'") == 0
    # Once the lock is free, the same connection works again.
    assert (await _post_alert(genie, key, "after")).status_code == 202


async def test_checkpoints_keep_the_wal_bounded_and_truncate_it_when_idle(
    genie: Genie, monkeypatch: pytest.MonkeyPatch
):
    monkeypatch.setattr(sqlite_inline, "CHECKPOINT_EVERY_S", 0.05)
    monkeypatch.setattr(sqlite_inline, "RESTART_AT_FRAMES", 100)  # 400 KB
    monkeypatch.setattr(sqlite_inline, "TRUNCATE_WAL_OVER_BYTES", 1 << 40)  # not while writing
    wal = Path(_path(genie) + "-wal")
    key = await _team_key(genie)
    assert any(t.name == "genie-sqlite-checkpoint" for t in threading.enumerate())

    sizes = []
    for round_ in range(4):
        for i in range(50):
            assert (await _post_alert(genie, key, f"wal-{round_}-{i}")).status_code == 202
        sizes.append(wal.stat().st_size if wal.exists() else 0)
    assert await genie.scalar("SELECT count(*) FROM alert") == 200
    # 200 alerts write ~19 MB of WAL frames (measured). Without checkpoints (the connection's own
    # are off) the file grows by all of them; checkpointed, it is started over: its size is the
    # high-water mark of a burst between two looks (1.2-4.1 MB seen, loaded or quiet).
    assert 0 < max(sizes) < 8 * 1024 * 1024, sizes

    # Idle: the thread truncates it.
    monkeypatch.setattr(sqlite_inline, "TRUNCATE_WAL_OVER_BYTES", 0)

    # Idle: the thread truncates it.
    async def truncated() -> bool:
        return wal.stat().st_size == 0

    await eventually(truncated, timeout=5)


async def test_the_checkpoint_thread_stops_with_the_engine(tmp_path: Path):
    def checkpointers() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "genie-sqlite-checkpoint"]

    before = len(checkpointers())
    path = tmp_path / "genie.db"
    engine = make_engine(f"sqlite+aiosqlite:///{path}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)"))
        for _ in range(200):
            await conn.execute(text("INSERT INTO t (v) VALUES (:v)"), {"v": "x" * 500})
    async with engine.connect() as conn:
        assert (await conn.execute(text("PRAGMA wal_autocheckpoint"))).scalar() == 0
    assert len(checkpointers()) == before + 1
    await engine.dispose()
    assert len(checkpointers()) == before
    # Every connection closed: SQLite checkpointed the WAL into the file and removed it.
    assert not os.path.exists(f"{path}-wal")
    check = sqlite3.connect(path)
    assert check.execute("SELECT count(*) FROM t").fetchone() == (200,)
    check.close()


async def test_no_transaction_begins_while_the_checkpoint_thread_takes_the_lock(tmp_path: Path):
    """A transaction's ``BEGIN IMMEDIATE`` runs on the connection at once
    (``sqlite_inline.begin_at_once``) — but not while the checkpoint thread wants the write lock
    to start the WAL over (``pausing``): then it waits, off the loop, and begins the moment the
    thread is done; a transaction already begun is never held back."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'genie.db'}")
    try:
        async with engine.begin() as conn:
            await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
            inline = (await conn.get_raw_connection()).driver_connection
        assert isinstance(inline, sqlite_inline.InlineConnection)

        async def write() -> None:
            async with engine.begin() as conn:
                await conn.execute(text("INSERT INTO t DEFAULT VALUES"))

        inline.pausing = True
        try:
            waiting = asyncio.create_task(write())
            await asyncio.sleep(0.1)
            assert not waiting.done() and not inline.in_transaction  # nothing began meanwhile
        finally:
            inline.pausing = False
        await asyncio.wait_for(waiting, 5)
        async with engine.connect() as conn:
            assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    finally:
        await engine.dispose()


async def test_in_memory_databases_still_work():
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY)"))
        await conn.execute(text("INSERT INTO t DEFAULT VALUES"))
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 1
    await engine.dispose()


async def test_a_long_read_moves_off_the_loop_inside_its_transaction_and_writes_are_never_interrupted(
    tmp_path: Path,
):
    """A read still running after ``OFFLOAD_READS_AFTER_S`` is interrupted and run again on a
    worker thread, in the same transaction (it sees the session's own uncommitted row), while
    the loop runs other tasks; a long write is not interrupted (SQLite would roll back the
    whole transaction)."""
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'genie.db'}")
    async with engine.begin() as conn:
        await conn.execute(text("CREATE TABLE t (id INTEGER PRIMARY KEY, v INTEGER)"))
        # A write that runs far longer than the read budget: stays on the loop, whole.
        await conn.execute(
            text(
                "INSERT INTO t (v) WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 300000) "
                "SELECT i % 1000 FROM n"
            )
        )
    inline = None
    ticks = 0
    reading = True

    async def ticker() -> None:
        nonlocal ticks
        while reading:
            ticks += 1
            await asyncio.sleep(0.001)

    async with engine.begin() as conn:
        inline = (await conn.get_raw_connection()).driver_connection
        assert isinstance(inline, sqlite_inline.InlineConnection)
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 300000
        await conn.execute(text("INSERT INTO t (v) VALUES (-1)"))
        before = inline.offloaded
        tick = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        started = time.monotonic()
        slow = text("SELECT count(*) FROM t AS a JOIN t AS b ON a.v = b.v WHERE a.id % 50 = 0 OR a.v = -1")
        got = (await conn.execute(slow)).scalar()
        took = time.monotonic() - started
        reading = False
        await tick
        assert inline.offloaded == before + 1
        # 6,000 rows of a times the 300 rows of b with each v, plus the uncommitted -1 row itself.
        assert got == 6000 * 300 + 1
        # Other tasks ran while it did: the loop was not held for the read's duration.
        assert took > 0.1 and ticks > took / 0.01, (took, ticks)
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT count(*) FROM t"))).scalar() == 300001
    await engine.dispose()


async def test_genie_sqlite_driver_thread_gives_aiosqlite_back_and_bad_values_stop_the_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import aiosqlite

    from bot.config import ConfigError, Settings

    monkeypatch.setenv("GENIE_SQLITE_DRIVER", "thread")
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'genie.db'}")
    async with engine.begin() as conn:
        assert isinstance((await conn.get_raw_connection()).driver_connection, aiosqlite.Connection)
        assert (await conn.execute(text("PRAGMA busy_timeout"))).scalar() == 30000
    await engine.dispose()

    with pytest.raises(ConfigError, match="GENIE_SQLITE_DRIVER"):
        Settings.from_env({"GENIE_SQLITE_DRIVER": "threads"})
    assert Settings.from_env({"GENIE_SQLITE_DRIVER": "thread"})


async def test_what_genie_runs_again_and_again_is_prepared_once(genie: Genie):
    """SQLite prepares a statement again on every run when one of its parameters is compared
    with a column a partial index's WHERE names (``alert.status = ?`` against
    ``uq_alert_open_alias``): it must see the value to know whether the index may serve. For the
    gate's query that was ~100 µs of every click, against ~15 µs to run it. The statements of
    alerts taken in by the API, posted, clicked (the gate, Acknowledge, Close) and redrawn — and
    the background loops' polls meanwhile — are each prepared once (SQLite's own count,
    ``sqlite_stmt.reprep``, on Genie's connection)."""
    from tests.helpers import buttons, link_person
    from tests.slack_driver import SlackUser

    await genie.add_user("alice@example.com", "Alice Smith")
    key = await _team_key(genie)
    async with genie.sessionmaker.begin() as s:
        await teams.add_member(s, "Payments", "alice@example.com")
    await link_person(genie, "U0ALICE", "alice@example.com")
    alice = SlackUser("U0ALICE")
    rounds = 4
    for i in range(rounds):
        assert (await _post_alert(genie, key, f"prepared-{i}")).status_code == 202
    posts = await genie.fake.wait_for("chat.postMessage", count=rounds)
    for n, action in enumerate(("alert_acknowledge", "alert_close"), start=1):
        for post in posts:
            button = buttons(post.args["blocks"])[action]
            r = await genie.slack.block_action(
                alice, action, button["value"], container="message", channel_id="C0PAY", message_ts=f"1.{n}"
            )
            assert r.status_code == 200, r.text
        await genie.fake.wait_for("chat.update", count=n * rounds)
    async with genie.sessionmaker() as s:
        try:
            stats = (await s.execute(text("SELECT sql, run, reprep FROM sqlite_stmt"))).all()
        except OperationalError:
            pytest.skip("this SQLite was built without the sqlite_stmt table (SQLITE_ENABLE_STMTVTAB)")
    ran = [(sql, run, reprep) for sql, run, reprep in stats if run >= rounds]
    assert len(ran) >= 8, ran  # the statements of the paths above were seen
    prepared_again = [(sql[:160], run, reprep) for sql, run, reprep in ran if reprep > 1]
    assert prepared_again == []


async def test_statements_on_the_driver_return_what_sqlalchemy_returns(db_url: str):
    """The hot statements a click, an API batch and a delivery run on the inline connection
    directly (``repositories.run``: SQLAlchemy's compiled text, its bind and result processors,
    its events) give the rows, values, types, names and rowcount SQLAlchemy's own execute gives
    for the same statement and parameters — each run in a transaction rolled back, from the
    same rows, and write the same text into the same rows: two pending posts (so that a claim's ``IN`` list is expanded for one and two),
    an open alert. Each is seen by a ``before_cursor_execute`` listener once, as SQLAlchemy's
    would be; a driver's error is SQLAlchemy's exception."""
    from datetime import UTC, datetime

    from sqlalchemy import event, exc

    from bot.services import outbox, slack_events
    from bot.slack import render
    from storage import repositories as repo
    from storage.session import make_sessionmaker

    engine = make_engine(db_url)
    sessionmaker = make_sessionmaker(engine)
    now = datetime(2026, 1, 2, 3, 4, 5, 6000, tzinfo=UTC)
    try:
        async with sessionmaker.begin() as s:
            team = await teams.add_team(s, "Payments", "C0PAY")
            batch = [
                alerts.NewAlert(team, alerts.parse_create({"message": f"Disk {i}", "alias": f"d-{i}"}), f"r-{i}")
                for i in range(2)
            ]
            created = await alerts.create_alerts(s, batch, now=now)
        first, second = (c.alert_id for c in created)
        async with sessionmaker() as s:
            posts = list((await s.execute(text("SELECT id FROM outbox ORDER BY id"))).scalars())
        assert len(posts) == 2
        later = datetime(2026, 1, 2, 3, 5, tzinfo=UTC)
        columns = ("acknowledged", "acknowledged_at", "acknowledged_by", "updated_at")
        cases = [
            (outbox._heads_query(), {"heads_limit": 5}),
            (outbox._claim_many(), outbox.claim_params(posts, later)),
            (outbox._claim_many(), outbox.claim_params(posts[:1], later)),
            (outbox._deliver_and_claim_next(), outbox.settle_params(posts[0], "C0PAY", "post", later)),
            (
                alerts._stop_statement("acknowledge", columns),
                {"alert_id": first, "new_acknowledged": True, "new_acknowledged_at": later}
                | {"new_acknowledged_by": "Alice", "new_updated_at": later},
            ),
            (render._render_read("sqlite", ()), {"render_alert_id": second}),
            (slack_events._take_in("sqlite"), {"event_id": "Ev1", "received_at": later}),
        ]
        seen: list[str] = []

        def count(conn, cursor, statement, *args):
            if not statement.startswith("BEGIN"):
                seen.append(statement)

        async def written(s) -> list[tuple]:
            """Every row the statements may write, as stored (SQLite's text, not read back)."""
            tables = ("alert", "outbox", "slack_event")
            return [tuple(r) for t in tables for r in await s.execute(text(f"SELECT * FROM {t} ORDER BY 1"))]

        event.listen(engine.sync_engine, "before_cursor_execute", count)
        for statement, params in cases:
            assert repo.prepared(engine.sync_engine.dialect, statement) is not None
            async with sessionmaker() as s:
                result = await s.execute(statement, params)
                rows = [tuple(r) for r in result.all()] if result.returns_rows else []
                expected = (list(result.keys()) if result.returns_rows else None, rows, result.rowcount)
                stored = await written(s)
                await s.rollback()
            del seen[:]
            async with sessionmaker() as s:
                ran = await repo.run(s, statement, params)
                got = (list(ran.rows[0]._fields) if ran.rows else expected[0], [tuple(r) for r in ran], ran.rowcount)
                assert len(seen) == 1, seen
                assert await written(s) == stored, str(statement)[:80]
                await s.rollback()
            assert got == expected, str(statement)[:80]
            assert [[type(v) for v in row] for row in got[1]] == [[type(v) for v in row] for row in expected[1]]
            assert expected[1] or expected[2] == 1, str(statement)[:80]  # each case finds its rows
        event.remove(engine.sync_engine, "before_cursor_execute", count)
        take_in = slack_events._take_in("sqlite")
        async with sessionmaker() as s:  # one session, transaction after transaction: each its own
            for event_id, commit in (("Ev2", True), ("Ev3", False), ("Ev4", True)):
                async with s.begin() as transaction:
                    assert (await repo.run(s, take_in, {"event_id": event_id, "received_at": later})).rowcount == 1
                    if not commit:
                        await transaction.rollback()
        async with sessionmaker() as s:
            assert list((await s.execute(text("SELECT event_id FROM slack_event ORDER BY 1"))).scalars()) == [
                "Ev2",
                "Ev4",
            ]
        async with sessionmaker() as s:
            await repo.run(s, slack_events._take_in("sqlite"), {"event_id": "Ev1", "received_at": later})
            with pytest.raises(exc.IntegrityError):
                await repo.driver_execute(
                    s, "INSERT INTO slack_event (event_id, received_at) VALUES (?, ?)", ("Ev1", "")
                )
            await s.rollback()
    finally:
        await engine.dispose()
