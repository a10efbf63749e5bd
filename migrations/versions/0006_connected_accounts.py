"""connected accounts beyond Slack: external_account, audit_event, slack_link.via

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 15:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "external_account",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("provider", sa.String(length=20), nullable=False),
        sa.Column("tenant", sa.String(length=100), server_default="", nullable=False),
        sa.Column("external_id", sa.String(length=200), nullable=False),
        sa.Column("handle", sa.String(length=200), nullable=True),
        sa.Column("email", sa.String(length=254), nullable=True),
        sa.Column("email_verified", sa.Boolean(), nullable=False),
        sa.Column("display_name", sa.String(length=200), nullable=True),
        sa.Column("is_bot", sa.Boolean(), nullable=False),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.Column("is_guest", sa.Boolean(), nullable=False),
        sa.Column("is_external", sa.Boolean(), nullable=False),
        sa.Column("attrs", sa.JSON(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("connected_via", sa.String(length=10), nullable=True),
        sa.Column("connected_at", storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("connected_by", sa.String(length=200), nullable=True),
        sa.Column("match", sa.String(length=20), nullable=True),
        sa.Column("match_detail", sa.String(length=300), nullable=True),
        sa.Column("first_seen_at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("updated_at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_external_account_user_id_user"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_external_account")),
        sa.UniqueConstraint("provider", "tenant", "external_id", name="uq_external_account_identity"),
    )
    op.create_index("ix_external_account_email", "external_account", ["email"])
    op.create_index("ix_external_account_provider_handle", "external_account", ["provider", "handle"])
    op.create_index("ix_external_account_user", "external_account", ["user_id"])

    op.create_table(
        "audit_event",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("actor_user_id", sa.Integer(), nullable=True),
        sa.Column("actor", sa.String(length=200), nullable=False),
        sa.Column("via", sa.String(length=10), nullable=False),
        sa.Column("action", sa.String(length=40), nullable=False),
        sa.Column("subject_user_id", sa.Integer(), nullable=True),
        sa.Column("subject_email", sa.String(length=254), nullable=True),
        sa.Column("provider", sa.String(length=20), nullable=True),
        sa.Column("tenant", sa.String(length=100), nullable=True),
        sa.Column("external_id", sa.String(length=200), nullable=True),
        sa.Column("detail", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["actor_user_id"], ["user.id"], name=op.f("fk_audit_event_actor_user_id_user"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["subject_user_id"], ["user.id"], name=op.f("fk_audit_event_subject_user_id_user"), ondelete="SET NULL"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_event")),
    )
    op.create_index("ix_audit_event_at", "audit_event", ["at"])
    op.create_index("ix_audit_event_subject", "audit_event", ["subject_user_id", "id"])

    with op.batch_alter_table("slack_link", schema=None) as batch_op:
        batch_op.add_column(sa.Column("via", sa.String(length=10), server_default="link", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("slack_link", schema=None) as batch_op:
        batch_op.drop_column("via")
    op.drop_index("ix_audit_event_subject", table_name="audit_event")
    op.drop_index("ix_audit_event_at", table_name="audit_event")
    op.drop_table("audit_event")
    op.drop_index("ix_external_account_user", table_name="external_account")
    op.drop_index("ix_external_account_provider_handle", table_name="external_account")
    op.drop_index("ix_external_account_email", table_name="external_account")
    op.drop_table("external_account")
