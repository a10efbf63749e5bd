"""Slack email ownership: what Slack said about a linking identity's email, whether a link was
made by a confirmed matching email, and whether the person still has to review it

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 21:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("link_request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("slack_handle", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("slack_email_confirmed", sa.Boolean(), nullable=True))
    with op.batch_alter_table("slack_link", schema=None) as batch_op:
        batch_op.add_column(sa.Column("email_verified", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.add_column(sa.Column("needs_review", sa.Boolean(), nullable=False, server_default=sa.false()))
    # Links made by a confirmed email (genie slack sync, Slack's user events) are verified by
    # construction; the others cannot be told now and count as unverified.
    op.execute("UPDATE slack_link SET email_verified = true WHERE via = 'email'")


def downgrade() -> None:
    with op.batch_alter_table("slack_link", schema=None) as batch_op:
        batch_op.drop_column("needs_review")
        batch_op.drop_column("email_verified")
    with op.batch_alter_table("link_request", schema=None) as batch_op:
        batch_op.drop_column("slack_email_confirmed")
        batch_op.drop_column("slack_handle")
