"""notification rules (issue 15, item 3): a person's channels and delays (notification_rule),
the address they verified (user.verified_email), and pages that wait for their delay or a retry
(page.due_at, rule_id, attempts, locked_until, last_error)

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-26 01:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, storage.base.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "notification_rule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("webhook_url", sa.String(length=2000), nullable=True),
        sa.Column("webhook_secret", sa.String(length=100), nullable=True),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_notification_rule_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_notification_rule")),
    )
    op.create_index(op.f("ix_notification_rule_user_id"), "notification_rule", ["user_id"])
    # Plain ADD COLUMN on both databases (no batch rebuild of "user" or "page").
    op.add_column("user", sa.Column("verified_email", sa.String(length=254), nullable=True))
    op.add_column("page", _utc("due_at", nullable=True))
    op.add_column("page", sa.Column("rule_id", sa.Integer(), nullable=True))
    op.add_column("page", sa.Column("attempts", sa.Integer(), nullable=False, server_default="0"))
    op.add_column("page", _utc("locked_until", nullable=True))
    op.add_column("page", sa.Column("last_error", sa.String(length=300), nullable=True))
    op.create_index(
        "ix_page_waiting_due",
        "page",
        ["due_at"],
        sqlite_where=sa.text("status = 'waiting'"),
        postgresql_where=sa.text("status = 'waiting'"),
    )


def downgrade() -> None:
    op.drop_index("ix_page_waiting_due", table_name="page")
    with op.batch_alter_table("page") as batch:
        for column in ("last_error", "locked_until", "attempts", "rule_id", "due_at"):
            batch.drop_column(column)
    with op.batch_alter_table("user") as batch:
        batch.drop_column("verified_email")
    op.drop_index(op.f("ix_notification_rule_user_id"), table_name="notification_rule")
    op.drop_table("notification_rule")
