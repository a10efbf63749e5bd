"""alert.snoozed_until: the end of an OpsGenie-style snooze (POST /v2/alerts/{id}/snooze)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table(
        "alert", schema=None, recreate="never"
    ) as batch_op:  # never rebuild alert: on SQLite that cascades to its events
        batch_op.add_column(sa.Column("snoozed_until", storage.base.UTCDateTime(timezone=True), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table(
        "alert", schema=None, recreate="never"
    ) as batch_op:  # never rebuild alert: on SQLite that cascades to its events
        batch_op.drop_column("snoozed_until")
