"""Outcomes reported for decisions.

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "outcomes",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("decision_seq", sa.Integer, nullable=False),
        sa.Column("label", sa.String(64), nullable=False),
        sa.Column("value", sa.Float),
        sa.Column("observed_at", sa.String(32), nullable=False),
        sa.Column("reported_at", sa.String(32), nullable=False),
        sa.Column("reported_by", sa.String(256), nullable=False),
        sa.Column("source", sa.String(256), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_outcomes_flow_seq", "outcomes", ["flow", "decision_seq"])


def downgrade() -> None:
    op.drop_index("ix_outcomes_flow_seq", "outcomes")
    op.drop_table("outcomes")
