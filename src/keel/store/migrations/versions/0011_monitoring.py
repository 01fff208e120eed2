"""Monitoring: monitor runs, alarms, and the holds the governor puts on flows.

Revision ID: 0011
Revises: 0010
"""

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "monitor_runs",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("slot", sa.Integer),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("finished_at", sa.String(32)),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("current_since", sa.String(32), nullable=False),
        sa.Column("current_until", sa.String(32), nullable=False),
        sa.Column("baseline_since", sa.String(32), nullable=False),
        sa.Column("breaches", sa.Text),
        sa.Column("result", sa.Text),
        sa.Column("note", sa.Text),
        sa.UniqueConstraint("flow", "slot", name="uq_monitor_runs_slot"),
    )
    op.create_index("ix_monitor_runs_flow", "monitor_runs", ["flow", "started_at"])
    op.create_table(
        "alarms",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("monitor", sa.String(32), nullable=False),
        sa.Column("severity", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.String(32), nullable=False),
        sa.Column("last_seen_at", sa.String(32), nullable=False),
        sa.Column("notified_at", sa.String(32), nullable=False),
        sa.Column("runs", sa.Integer, nullable=False),
        sa.Column("suppressed", sa.Integer, nullable=False),
        sa.Column("clean_runs", sa.Integer, nullable=False),
        sa.Column("summary", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("actions", sa.Text, nullable=False),
        sa.Column("resolved_at", sa.String(32)),
        sa.Column("resolved_by", sa.String(256)),
        sa.Column("resolve_reason", sa.Text),
        sa.Column("record_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_alarms_flow_state", "alarms", ["flow", "state", "monitor"])
    op.create_table(
        "flow_holds",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("hold", sa.String(16), nullable=False),
        sa.Column("previous", sa.String(16), nullable=False),
        sa.Column("set_by", sa.String(256), nullable=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("alarm_id", sa.String(64)),
        sa.Column("evidence", sa.Text),
        sa.Column("record_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_flow_holds_flow", "flow_holds", ["flow", "id"])


def downgrade() -> None:
    op.drop_table("flow_holds")
    op.drop_table("alarms")
    op.drop_table("monitor_runs")
