"""heartbeats: OpsGenie's Heartbeat API, and the alert a late heartbeat raises

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 21:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "heartbeat",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("interval", sa.Integer(), nullable=False),
        sa.Column("interval_unit", sa.String(length=10), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("alert_message", sa.String(length=130), nullable=True),
        sa.Column("alert_tags", sa.JSON(), nullable=False),
        sa.Column("alert_priority", sa.String(length=2), nullable=False),
        sa.Column("last_ping_at", storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("expires_at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("expired", sa.Boolean(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=True),
        sa.Column("created_at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["team_id"], ["team.id"], name=op.f("fk_heartbeat_team_id_team"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alert.id"], name=op.f("fk_heartbeat_alert_id_alert"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_heartbeat")),
        sa.UniqueConstraint("team_id", "name", name="uq_heartbeat_team_name"),
    )
    op.create_index(
        "ix_heartbeat_due",
        "heartbeat",
        ["expires_at"],
        sqlite_where=sa.text("enabled AND NOT expired"),
        postgresql_where=sa.text("enabled AND NOT expired"),
    )


def downgrade() -> None:
    op.drop_index("ix_heartbeat_due", table_name="heartbeat")
    op.drop_table("heartbeat")
