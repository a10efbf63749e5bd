"""Indexes for the web side's alert list and reports (issue 17): the list pages newest first by
id within the person's teams (keyset on ``(team_id, id)``); reports read a period by
``created_at`` (per team, or all teams for an admin) and the timeline's acknowledgements,
closes and refused clicks by ``(action, at)``

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-26 00:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Plain CREATE INDEX on both backends: no table rebuild (the alert table is never recreated).
    op.create_index("ix_alert_team_id", "alert", ["team_id", "id"])
    op.create_index("ix_alert_created_at", "alert", ["created_at"])
    op.create_index("ix_alert_team_created", "alert", ["team_id", "created_at"])
    op.create_index("ix_alert_event_action_at", "alert_event", ["action", "at"])


def downgrade() -> None:
    op.drop_index("ix_alert_event_action_at", table_name="alert_event")
    op.drop_index("ix_alert_team_created", table_name="alert")
    op.drop_index("ix_alert_created_at", table_name="alert")
    op.drop_index("ix_alert_team_id", table_name="alert")
