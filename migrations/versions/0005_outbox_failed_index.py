"""outbox: index the failed messages (the gauge counts them every second)

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 13:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.create_index(
            "ix_outbox_failed",
            ["id"],
            unique=False,
            sqlite_where=sa.text("failed_at IS NOT NULL"),
            postgresql_where=sa.text("failed_at IS NOT NULL"),
        )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_outbox_failed",
            sqlite_where=sa.text("failed_at IS NOT NULL"),
            postgresql_where=sa.text("failed_at IS NOT NULL"),
        )
