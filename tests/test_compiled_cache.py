"""The engine's compiled-statement cache (``storage.session.CompiledCache``): a statement built
once is found by identity, without hashing its whole cache key again — and never confused with
another way of executing it (other parameter names, executemany) or another statement."""

from __future__ import annotations

from sqlalchemy import func, insert, select

from storage.models import Team
from storage.session import CompiledCache, make_engine, make_sessionmaker

TABLE = Team.__table__


class _Counted(CompiledCache):
    """Counts the lookups that went past identity to SQLAlchemy's own (hashing) cache."""

    def __init__(self) -> None:
        super().__init__()
        self.by_value = 0
        self._by_value = _Counting(self._by_value, self)


class _Counting:
    def __init__(self, lru, owner: _Counted) -> None:
        self.lru, self.owner = lru, owner

    def get(self, key, default=None):
        self.owner.by_value += 1
        return self.lru.get(key, default)

    def __setitem__(self, key, value) -> None:
        self.lru[key] = value


async def _run(db_url: str, cache: CompiledCache, work) -> None:
    engine = make_engine(db_url, execution_options={"compiled_cache": cache})
    try:
        async with make_sessionmaker(engine).begin() as session:
            await work(session)
    finally:
        await engine.dispose()


async def test_a_statement_built_once_is_found_by_identity_and_answers_for_its_own_parameters(db_url: str):
    cache = _Counted()
    channel = select(TABLE.c.slack_channel_id).where(TABLE.c.name == func.lower("ONE"))
    add = insert(TABLE)

    async def work(session):
        await session.execute(add, {"name": "one", "slack_channel_id": "C1"})
        # The same INSERT with other parameter names: other SQL, found as its own entry.
        await session.execute(add, {"name": "two"})
        # … and as an executemany.
        await session.execute(add, [{"name": "three", "slack_team_id": "T3"}, {"name": "four", "slack_team_id": "T4"}])
        assert (await session.scalar(channel)) == "C1"
        looked_up_by_value = cache.by_value
        for i in range(3):
            assert (await session.scalar(channel)) == "C1"
            await session.execute(add, {"name": f"again {i}", "slack_channel_id": f"C{i}"})
            await session.execute(add, {"name": f"bare {i}"})
        assert cache.by_value == looked_up_by_value  # (each found by identity)
        rows = (
            await session.execute(
                select(TABLE.c.name, TABLE.c.slack_channel_id, TABLE.c.slack_team_id).order_by(TABLE.c.id)
            )
        ).all()
        assert [tuple(r) for r in rows] == [
            ("one", "C1", None),
            ("two", None, None),
            ("three", None, "T3"),
            ("four", None, "T4"),
            ("again 0", "C0", None),
            ("bare 0", None, None),
            ("again 1", "C1", None),
            ("bare 1", None, None),
            ("again 2", "C2", None),
            ("bare 2", None, None),
        ]

    await _run(db_url, cache, work)


async def test_an_equal_statement_built_again_is_found_by_value_and_the_identity_table_stays_bounded(
    db_url: str, monkeypatch
):
    monkeypatch.setattr(CompiledCache, "IDENTITY_ENTRIES", 3)
    cache = _Counted()

    async def work(session):
        for i in range(12):  # built anew each time: equal keys, new objects
            await session.execute(insert(TABLE), {"name": f"team {i}", "slack_channel_id": str(i)})
            which = select(TABLE.c.slack_channel_id).where(TABLE.c.name == f"team {i}")
            assert (await session.scalar(which)) == str(i)
        assert len(cache._by_identity) <= 3
        assert cache.by_value >= 24

    await _run(db_url, cache, work)


def test_every_engine_gets_one():
    engine = make_engine("sqlite+aiosqlite:///:memory:")
    assert isinstance(engine.sync_engine.get_execution_options()["compiled_cache"], CompiledCache)
