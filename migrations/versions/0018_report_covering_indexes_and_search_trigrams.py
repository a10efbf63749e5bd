"""Reports at 1M alerts and the search box on PostgreSQL (issue 17): covering indexes for the
report's reads of a period's alerts (``created_at`` first, then every column the report reads,
so each of its passes reads one index and never the wide alert rows) and of their timeline's
acknowledgements and closes; on PostgreSQL, trigram indexes (``pg_trgm``) on ``lower(message)``
and ``lower(alias)`` for the list's search box (``LIKE '%…%'``). Where the ``pg_trgm`` extension
cannot be created (not installed, or the role may not create it), the search works as before,
by scanning, and a warning says why.

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-26 01:40:00.000000
"""

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

log = logging.getLogger("alembic.runtime.migration")

#: The report's columns of an alert (``bot.services.reports``), after the period's.
REPORT_COLUMNS = [
    "created_at",
    "team_id",
    "status",
    "acknowledged",
    "acknowledged_at",
    "closed_at",
    "alias",
    "source",
    "count",
]
EVENT_COLUMNS = ["alert_id", "action", "outcome", "actor_user_id", "at", "anonymous"]
TRIGRAMS = {"ix_alert_message_trgm": "message", "ix_alert_alias_trgm": "alias"}


def _trigrams_available(bind) -> bool:
    if bind.scalar(sa.text("SELECT count(*) FROM pg_extension WHERE extname = 'pg_trgm'")):
        return True
    if not bind.scalar(sa.text("SELECT count(*) FROM pg_available_extensions WHERE name = 'pg_trgm'")):
        log.warning("pg_trgm is not installed on this server: the alert search box scans (no trigram index)")
        return False
    nested = bind.begin_nested()
    try:
        bind.execute(sa.text("CREATE EXTENSION IF NOT EXISTS pg_trgm"))
    except sa.exc.DBAPIError as err:
        nested.rollback()
        log.warning("could not create the pg_trgm extension (%s): the alert search box scans", err.orig)
        return False
    nested.commit()
    return True


def upgrade() -> None:
    # Plain CREATE INDEX on both backends: no table rebuild (the alert table is never recreated).
    op.create_index("ix_alert_report", "alert", REPORT_COLUMNS)
    op.create_index("ix_alert_event_report", "alert_event", EVENT_COLUMNS)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql" and _trigrams_available(bind):
        for name, column in TRIGRAMS.items():
            op.execute(f"CREATE INDEX IF NOT EXISTS {name} ON alert USING gin (lower({column}) gin_trgm_ops)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for name in TRIGRAMS:
            op.execute(f"DROP INDEX IF EXISTS {name}")
    op.drop_index("ix_alert_event_report", table_name="alert_event")
    op.drop_index("ix_alert_report", table_name="alert")
