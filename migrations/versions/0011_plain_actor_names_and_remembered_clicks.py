"""Actors stored as plain names plus a separate Slack identity (alert.acknowledged_by_slack,
closed_by_slack), existing `<@U…>` names moved out of the text; and the click a person made
before connecting, remembered with their link request (link_request.pending_*)

Data: an `acknowledged_by`/`closed_by` of the form `<@U…> (anonymous)` was written by Genie for
an anonymous Slack click — or sent as the API's `user` field by anyone with a key. It is moved to
the Slack column only when the alert's timeline holds that anonymous Slack click (an applied
acknowledge/close via Slack, anonymous, by that Slack user); otherwise it stays as the plain
text it is (shown escaped from now on). Timeline rows of Slack clicks whose actor name is Genie's
old markup (`<@U…>`, `<@U…> (anonymous)`, for that row's own Slack user) get the plain name.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-25 21:00:00.000000
"""

import re
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_ANONYMOUS = re.compile(r"<@([UW][A-Z0-9]{2,20})> \(anonymous\)")
_MENTION = re.compile(r"<@([UW][A-Z0-9]{2,20})>")

alert = sa.table(
    "alert",
    sa.column("id", sa.Integer),
    sa.column("acknowledged_by", sa.String),
    sa.column("closed_by", sa.String),
    sa.column("acknowledged_by_slack", sa.String),
    sa.column("closed_by_slack", sa.String),
)
event = sa.table(
    "alert_event",
    sa.column("id", sa.Integer),
    sa.column("alert_id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("outcome", sa.String),
    sa.column("via", sa.String),
    sa.column("actor_name", sa.String),
    sa.column("slack_user_id", sa.String),
    sa.column("anonymous", sa.Boolean),
)


def upgrade() -> None:
    with op.batch_alter_table("alert", schema=None, recreate="never") as batch_op:  # see downgrade
        batch_op.add_column(sa.Column("acknowledged_by_slack", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("closed_by_slack", sa.String(length=32), nullable=True))
    with op.batch_alter_table("link_request", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pending_action", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("pending_alert_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pending_assignee_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("pending_channel", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("pending_message_ts", sa.String(length=32), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_link_request_pending_alert_id_alert"), "alert", ["pending_alert_id"], ["id"], ondelete="SET NULL"
        )

    bind = op.get_bind()
    # Alerts: only what the timeline shows was Genie's own anonymous Slack click moves.
    for column, action in (("acknowledged_by", "acknowledge"), ("closed_by", "close")):
        rows = bind.execute(sa.select(alert.c.id, alert.c[column]).where(alert.c[column].like("<@%> (anonymous)")))
        for alert_id, name in rows.all():
            match = _ANONYMOUS.fullmatch(name or "")
            if match is None:
                continue
            clicked = bind.execute(
                sa.select(event.c.id)
                .where(
                    event.c.alert_id == alert_id,
                    event.c.action == action,
                    event.c.outcome == "applied",
                    event.c.via == "slack",
                    event.c.anonymous == sa.true(),
                    event.c.slack_user_id == match.group(1),
                )
                .limit(1)
            ).first()
            if clicked is None:  # written through the API's `user` field: it is text, not a mention
                continue
            bind.execute(
                alert.update()
                .where(alert.c.id == alert_id)
                .values({column: f"Slack user {match.group(1)} (anonymous)", f"{column}_slack": match.group(1)})
            )
    # Timeline: Slack clicks named with Genie's old markup for the row's own Slack user.
    rows = bind.execute(
        sa.select(event.c.id, event.c.actor_name, event.c.slack_user_id).where(
            event.c.via == "slack", event.c.actor_name.like("<@%>%")
        )
    )
    for event_id, name, slack_user_id in rows.all():
        anonymous, plain = _ANONYMOUS.fullmatch(name or ""), _MENTION.fullmatch(name or "")
        found = anonymous or plain
        if found is None or found.group(1) != slack_user_id:
            continue
        new = f"Slack user {slack_user_id}" + (" (anonymous)" if anonymous else "")
        bind.execute(event.update().where(event.c.id == event_id).values(actor_name=new))


def downgrade() -> None:
    bind = op.get_bind()
    for column in ("acknowledged_by", "closed_by"):
        rows = bind.execute(
            sa.select(alert.c.id, alert.c[f"{column}_slack"]).where(alert.c[f"{column}_slack"].isnot(None))
        )
        for alert_id, slack_user_id in rows.all():
            bind.execute(
                alert.update().where(alert.c.id == alert_id).values({column: f"<@{slack_user_id}> (anonymous)"})
            )
    rows = bind.execute(
        sa.select(event.c.id, event.c.actor_name, event.c.slack_user_id).where(
            event.c.via == "slack", event.c.actor_name.like("Slack user %")
        )
    )
    for event_id, name, slack_user_id in rows.all():
        if name == f"Slack user {slack_user_id} (anonymous)":
            bind.execute(
                event.update().where(event.c.id == event_id).values(actor_name=f"<@{slack_user_id}> (anonymous)")
            )
        elif name == f"Slack user {slack_user_id}":
            bind.execute(event.update().where(event.c.id == event_id).values(actor_name=f"<@{slack_user_id}>"))
    with op.batch_alter_table("link_request", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("fk_link_request_pending_alert_id_alert"), type_="foreignkey")
        batch_op.drop_column("pending_message_ts")
        batch_op.drop_column("pending_channel")
        batch_op.drop_column("pending_assignee_id")
        batch_op.drop_column("pending_alert_id")
        batch_op.drop_column("pending_action")
    # Never recreate `alert` on SQLite: dropping the old table inside the migration's transaction
    # (foreign keys on) would cascade to its timeline and outbox rows. SQLite 3.35+ drops columns.
    with op.batch_alter_table("alert", schema=None, recreate="never") as batch_op:
        batch_op.drop_column("closed_by_slack")
        batch_op.drop_column("acknowledged_by_slack")
