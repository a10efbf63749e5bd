"""on call in Slack (issue 15): a schedule's optional Slack user group (``@payments-oncall``)
and the record of each hand-off's user-group sync and shift reminder (``oncall_handoff``; one
row per schedule, kind and shift start, so each is done once)

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-26 01:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("oncall_schedule") as batch:
        batch.add_column(sa.Column("slack_usergroup", sa.String(length=32), nullable=True))
    op.create_table(
        "oncall_handoff",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("shift_start", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("detail", sa.String(length=300), nullable=True),
        sa.Column("created_at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["oncall_schedule.id"],
            name=op.f("fk_oncall_handoff_schedule_id_oncall_schedule"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_oncall_handoff_user_id_user"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_handoff")),
        sa.UniqueConstraint("schedule_id", "kind", "shift_start", name="uq_oncall_handoff_once"),
    )


def downgrade() -> None:
    op.drop_table("oncall_handoff")
    with op.batch_alter_table("oncall_schedule") as batch:
        batch.drop_column("slack_usergroup")
