"""signin_failure.pending: a sign-in whose password is still being checked (argon2 runs outside
any transaction) counts against its (account, address) at once, but not against the address as a
whole until it has failed — forty people behind one address signing in at the same moment are
not a guesser

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-25 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("signin_failure", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("signin_failure", schema=None) as batch_op:
        batch_op.drop_column("pending")
