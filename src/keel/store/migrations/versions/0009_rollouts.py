"""Shadow and canary rollouts, and the decisions index's record of them.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rollouts",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("mode", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("change_id", sa.String(64)),
        sa.Column("share", sa.Float, nullable=False),
        sa.Column("bounds", sa.Text, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("started_at", sa.String(32), nullable=False),
        sa.Column("started_by", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("ended_at", sa.String(32)),
        sa.Column("ended_by", sa.String(256)),
        sa.Column("end_reason", sa.Text),
    )
    op.create_index("ix_rollouts_flow_state", "rollouts", ["flow", "state"])
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(sa.Column("rollout", sa.String(64)))
        batch.add_column(sa.Column("arm", sa.String(16)))
        batch.add_column(sa.Column("shadow_action", sa.String(64)))
    op.create_index("ix_decisions_rollout", "decisions", ["rollout"])


def downgrade() -> None:
    op.drop_index("ix_decisions_rollout", "decisions")
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("shadow_action")
        batch.drop_column("arm")
        batch.drop_column("rollout")
    op.drop_table("rollouts")
