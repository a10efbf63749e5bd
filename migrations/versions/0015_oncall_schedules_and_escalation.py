"""on call (issue 15): schedules (rotations with ordered participants, restrictions, overrides)
and escalation policies with ordered steps; the escalation engine's next-due rows
(alert_escalation) and notifications (page)

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-26 00:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import storage.base

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def _utc(name: str, nullable: bool = False) -> sa.Column:
    return sa.Column(name, storage.base.UTCDateTime(timezone=True), nullable=nullable)


def upgrade() -> None:
    op.create_table(
        "oncall_schedule",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_oncall_schedule_team_id_team"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_schedule")),
        sa.UniqueConstraint("team_id", "name", name="uq_oncall_schedule_team_name"),
    )
    op.create_table(
        "oncall_rotation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("layer", sa.Integer(), nullable=False),
        sa.Column("length", sa.Integer(), nullable=False),
        sa.Column("length_unit", sa.String(length=10), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        _utc("starts_at"),
        _utc("ends_at", nullable=True),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["oncall_schedule.id"],
            name=op.f("fk_oncall_rotation_schedule_id_oncall_schedule"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_rotation")),
        sa.UniqueConstraint("schedule_id", "name", name="uq_oncall_rotation_schedule_name"),
        sa.UniqueConstraint("schedule_id", "layer", name="uq_oncall_rotation_schedule_layer"),
    )
    op.create_table(
        "oncall_participant",
        sa.Column("rotation_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(
            ["rotation_id"],
            ["oncall_rotation.id"],
            name=op.f("fk_oncall_participant_rotation_id_oncall_rotation"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_oncall_participant_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("rotation_id", "position", name=op.f("pk_oncall_participant")),
    )
    op.create_index(op.f("ix_oncall_participant_user_id"), "oncall_participant", ["user_id"])
    op.create_table(
        "oncall_restriction",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("rotation_id", sa.Integer(), nullable=False),
        sa.Column("start_day", sa.Integer(), nullable=True),
        sa.Column("start_minute", sa.Integer(), nullable=False),
        sa.Column("end_day", sa.Integer(), nullable=True),
        sa.Column("end_minute", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["rotation_id"],
            ["oncall_rotation.id"],
            name=op.f("fk_oncall_restriction_rotation_id_oncall_rotation"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_restriction")),
    )
    op.create_index(op.f("ix_oncall_restriction_rotation_id"), "oncall_restriction", ["rotation_id"])
    op.create_table(
        "oncall_override",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        _utc("starts_at"),
        _utc("ends_at"),
        sa.Column("created_by", sa.String(length=200), nullable=True),
        _utc("created_at"),
        sa.ForeignKeyConstraint(
            ["schedule_id"],
            ["oncall_schedule.id"],
            name=op.f("fk_oncall_override_schedule_id_oncall_schedule"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["user.id"], name=op.f("fk_oncall_override_user_id_user"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_oncall_override")),
    )
    op.create_index("ix_oncall_override_schedule_ends", "oncall_override", ["schedule_id", "ends_at"])
    op.create_index(op.f("ix_oncall_override_user_id"), "oncall_override", ["user_id"])
    op.create_table(
        "escalation_policy",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("team_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("repeat", sa.Integer(), nullable=False),
        sa.Column("repeat_after_minutes", sa.Integer(), server_default=sa.text("10"), nullable=False),
        _utc("created_at"),
        _utc("updated_at"),
        sa.ForeignKeyConstraint(
            ["team_id"], ["team.id"], name=op.f("fk_escalation_policy_team_id_team"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_policy")),
        sa.UniqueConstraint("team_id", name=op.f("uq_escalation_policy_team_id")),
    )
    op.create_table(
        "escalation_step",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("delay_minutes", sa.Integer(), nullable=False),
        sa.Column("target_kind", sa.String(length=10), nullable=False),
        sa.Column("target_schedule_id", sa.Integer(), nullable=True),
        sa.Column("target_user_id", sa.Integer(), nullable=True),
        sa.Column("target_team_id", sa.Integer(), nullable=True),
        sa.Column("target_channel", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["escalation_policy.id"],
            name=op.f("fk_escalation_step_policy_id_escalation_policy"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["target_schedule_id"],
            ["oncall_schedule.id"],
            name=op.f("fk_escalation_step_target_schedule_id_oncall_schedule"),
        ),
        sa.ForeignKeyConstraint(["target_user_id"], ["user.id"], name=op.f("fk_escalation_step_target_user_id_user")),
        sa.ForeignKeyConstraint(["target_team_id"], ["team.id"], name=op.f("fk_escalation_step_target_team_id_team")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_escalation_step")),
        sa.UniqueConstraint("policy_id", "position", name="uq_escalation_step_policy_position"),
    )
    op.create_index(op.f("ix_escalation_step_target_schedule_id"), "escalation_step", ["target_schedule_id"])
    op.create_index(op.f("ix_escalation_step_target_user_id"), "escalation_step", ["target_user_id"])
    # The escalation engine (bot.services.paging): a next-due row per alert being escalated, and
    # one row per notification.
    op.create_table(
        "alert_escalation",
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("policy_id", sa.Integer(), nullable=False),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("repeat_round", sa.Integer(), nullable=False),
        _utc("round_started_at"),
        _utc("due_at"),
        sa.ForeignKeyConstraint(
            ["alert_id"], ["alert.id"], name=op.f("fk_alert_escalation_alert_id_alert"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["escalation_policy.id"],
            name=op.f("fk_alert_escalation_policy_id_escalation_policy"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("alert_id", name=op.f("pk_alert_escalation")),
    )
    op.create_index("ix_alert_escalation_due", "alert_escalation", ["due_at"])
    op.create_index(op.f("ix_alert_escalation_policy_id"), "alert_escalation", ["policy_id"])
    op.create_table(
        "page",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("alert_id", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=True),
        sa.Column("step", sa.Integer(), nullable=False),
        sa.Column("repeat_round", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("target", sa.String(length=32), nullable=True),
        sa.Column("status", sa.String(length=10), nullable=False),
        sa.Column("reason", sa.String(length=300), nullable=True),
        _utc("created_at"),
        _utc("settled_at", nullable=True),
        sa.Column("slack_channel", sa.String(length=32), nullable=True),
        sa.Column("slack_ts", sa.String(length=32), nullable=True),
        sa.ForeignKeyConstraint(["alert_id"], ["alert.id"], name=op.f("fk_page_alert_id_alert"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["user.id"], name=op.f("fk_page_user_id_user"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_page")),
    )
    op.create_index("ix_page_alert_user", "page", ["alert_id", "user_id"])
    op.create_index(op.f("ix_page_user_id"), "page", ["user_id"])


def downgrade() -> None:
    op.drop_index(op.f("ix_page_user_id"), table_name="page")
    op.drop_index("ix_page_alert_user", table_name="page")
    op.drop_table("page")
    op.drop_index(op.f("ix_alert_escalation_policy_id"), table_name="alert_escalation")
    op.drop_index("ix_alert_escalation_due", table_name="alert_escalation")
    op.drop_table("alert_escalation")
    op.drop_index(op.f("ix_escalation_step_target_user_id"), table_name="escalation_step")
    op.drop_index(op.f("ix_escalation_step_target_schedule_id"), table_name="escalation_step")
    op.drop_table("escalation_step")
    op.drop_table("escalation_policy")
    op.drop_index(op.f("ix_oncall_override_user_id"), table_name="oncall_override")
    op.drop_index("ix_oncall_override_schedule_ends", table_name="oncall_override")
    op.drop_table("oncall_override")
    op.drop_index(op.f("ix_oncall_restriction_rotation_id"), table_name="oncall_restriction")
    op.drop_table("oncall_restriction")
    op.drop_index(op.f("ix_oncall_participant_user_id"), table_name="oncall_participant")
    op.drop_table("oncall_participant")
    op.drop_table("oncall_rotation")
    op.drop_table("oncall_schedule")
