"""Alembic environment. ``migrations.apply`` hands us an open connection (inside a transaction
that, on PostgreSQL, holds an advisory lock so several processes can start at once)."""

from __future__ import annotations

import asyncio

from alembic import context

import storage.models  # noqa: F401  (registers the tables on Base.metadata)
from storage.base import Base

config = context.config
target_metadata = Base.metadata


def _run(connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


async def _run_with_own_engine() -> None:
    from storage.session import make_engine

    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    async with engine.begin() as conn:
        await conn.run_sync(_run)
    await engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
elif (connection := config.attributes.get("connection")) is not None:
    _run(connection)
else:  # plain `alembic` command line, e.g. `alembic revision --autogenerate`
    asyncio.run(_run_with_own_engine())
