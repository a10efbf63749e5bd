"""Storm-proof Slack channels (issue 14): outbox lanes and storm digests.

- ``outbox.lane``: ``post`` (new messages) or ``update`` (edits of alerts already in Slack).
  Each lane of a channel is its own queue, so an acknowledgement is never queued behind a
  channel's backlog of new posts; the pending index becomes ``(lane, channel, id)``.
- ``slack_digest``: one message standing for the alerts a storm brought to a channel, with at
  most one open per channel; ``alert.slack_digest_id`` says which digest an alert was delivered
  in, and ``outbox.digest_id`` marks the outbox rows delivered in it (and the digest's own rows).

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-26 04:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.base import UTCDateTime

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = "delivered_at IS NULL AND failed_at IS NULL"


def _add_reference(table: str, column: str) -> None:
    """``table.column`` referencing ``slack_digest.id`` (ON DELETE SET NULL). SQLite adds a
    column with a REFERENCES clause in place (Alembic would rebuild the table for the constraint)."""
    name = f"fk_{table}_{column}_slack_digest"
    if op.get_bind().dialect.name == "sqlite":
        op.execute(
            f'ALTER TABLE "{table}" ADD COLUMN {column} INTEGER '
            f"CONSTRAINT {name} REFERENCES slack_digest (id) ON DELETE SET NULL"
        )
    else:
        op.add_column(table, sa.Column(column, sa.Integer(), nullable=True))
        op.create_foreign_key(name, table, "slack_digest", [column], ["id"], ondelete="SET NULL")


def upgrade() -> None:
    op.create_table(
        "slack_digest",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("slack_team_id", sa.String(length=32), nullable=True),
        sa.Column("enterprise_id", sa.String(length=32), nullable=True),
        sa.Column("team_id", sa.Integer(), nullable=True),
        sa.Column("storm_priority", sa.String(length=2), nullable=False),
        sa.Column("opened_at", UTCDateTime(), nullable=False),
        sa.Column("last_collapsed_at", UTCDateTime(), nullable=False),
        sa.Column("closed_at", UTCDateTime(), nullable=True),
        sa.Column("slack_ts", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_slack_digest_team_id_team"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_digest")),
    )
    op.create_index(
        "uq_slack_digest_open",
        "slack_digest",
        ["channel"],
        unique=True,
        sqlite_where=sa.text("closed_at IS NULL"),
        postgresql_where=sa.text("closed_at IS NULL"),
    )
    # Plain ADD COLUMNs (no table rebuild on SQLite: the alert table may hold millions of rows).
    _add_reference("alert", "slack_digest_id")
    op.create_index(op.f("ix_alert_slack_digest_id"), "alert", ["slack_digest_id"])
    op.add_column("outbox", sa.Column("lane", sa.String(length=8), nullable=False, server_default="post"))
    _add_reference("outbox", "digest_id")
    op.create_index(
        "ix_outbox_pending_lane",
        "outbox",
        ["lane", "channel", "id"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    op.drop_index("ix_outbox_pending_channel", table_name="outbox")


def downgrade() -> None:
    op.create_index(
        "ix_outbox_pending_channel",
        "outbox",
        ["channel", "id"],
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    op.drop_index("ix_outbox_pending_lane", table_name="outbox")
    # Never recreate `alert` or `outbox` on SQLite: dropping the old table inside the migration's
    # transaction (foreign keys on) would cascade to their rows. SQLite 3.35+ drops columns.
    with op.batch_alter_table("outbox", recreate="never") as batch_op:
        batch_op.drop_column("digest_id")
        batch_op.drop_column("lane")
    op.drop_index(op.f("ix_alert_slack_digest_id"), table_name="alert")
    with op.batch_alter_table("alert", recreate="never") as batch_op:
        batch_op.drop_column("slack_digest_id")
    op.drop_index("uq_slack_digest_open", table_name="slack_digest")
    op.drop_table("slack_digest")
