"""Declarative base with a naming convention, so Alembic migrations name constraints the same
way on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import DateTime, MetaData, String, TypeDecorator, literal_column
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.sql.elements import ColumnElement

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


def constant(value: str) -> ColumnElement[str]:
    """A string constant written into a statement's SQL rather than bound: compare a column
    that a partial index's WHERE names (``alert.status``: ``uq_alert_open_alias`` is ``WHERE
    status = 'open'``; ``page.status``) with this. SQLite cannot tell whether ``status = ?``
    lets it use such an index until it sees the value, so it prepares the statement again on
    every run (re-binding the parameter expires it): for the gate's query that was ~100 µs of
    a click's CPU, against ~15 µs to run it. PostgreSQL's plans can use the partial index too."""
    return literal_column("'" + value.replace("'", "''") + "'", String())


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC timestamps on every backend.

    SQLite has no time zones: values are stored naive in UTC and come back aware, so
    comparisons (``expires_at > now``) mean the same on SQLite and PostgreSQL.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given; use timezone-aware UTC times")
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
