"""Earned autonomy: a flow's autonomy level over time, and requests to raise it.

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "autonomy_changes",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("previous", sa.String(16)),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("approved_by", sa.String(256)),
        sa.Column("changed_at", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text),
        sa.Column("record_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_autonomy_changes_flow", "autonomy_changes", ["flow", "id"])
    op.create_table(
        "autonomy_requests",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("level", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("requested_by", sa.String(256), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("evidence", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("decided_at", sa.String(32)),
        sa.Column("decided_by", sa.String(256)),
    )


def downgrade() -> None:
    op.drop_table("autonomy_requests")
    op.drop_table("autonomy_changes")
