"""slack_throttle: refused clicks and /genie connect per Slack identity, for rate limits that
hold across processes; index for pruning link requests

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "slack_throttle",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("workspace_id", sa.String(length=32), nullable=False),
        sa.Column("slack_user_id", sa.String(length=32), nullable=False),
        sa.Column("at", storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_slack_throttle")),
    )
    with op.batch_alter_table("slack_throttle", schema=None) as batch_op:
        batch_op.create_index(
            "ix_slack_throttle_identity", ["workspace_id", "slack_user_id", "kind", "at"], unique=False
        )
        batch_op.create_index("ix_slack_throttle_at", ["at"], unique=False)
    with op.batch_alter_table("link_request", schema=None) as batch_op:
        batch_op.create_index("ix_link_request_expires_at", ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("link_request", schema=None) as batch_op:
        batch_op.drop_index("ix_link_request_expires_at")
    with op.batch_alter_table("slack_throttle", schema=None) as batch_op:
        batch_op.drop_index("ix_slack_throttle_at")
        batch_op.drop_index("ix_slack_throttle_identity")
    op.drop_table("slack_throttle")
