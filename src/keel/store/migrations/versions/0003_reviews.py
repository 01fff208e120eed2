"""The review queue.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reviews",
        sa.Column("decision_id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("decision_seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("opened_at", sa.String(32), nullable=False),
        sa.Column("due_at", sa.String(32)),
        sa.Column("requested_by", sa.String(256)),
        sa.Column("proposed_action", sa.String(64), nullable=False),
        sa.Column("proposed_value", sa.Float),
        sa.Column("claimed_by", sa.String(256)),
        sa.Column("claimed_at", sa.String(32)),
        sa.Column("resolved_at", sa.String(32)),
        sa.Column("resolution", sa.String(16)),
        sa.Column("final_action", sa.String(64)),
        sa.Column("final_value", sa.Float),
        sa.Column("reviewer", sa.String(256)),
        sa.Column("review_id", sa.String(64)),
    )
    op.create_index("ix_reviews_flow_state", "reviews", ["flow", "state", "opened_at"])
    # Decisions recorded before this migration that wait for a review join the queue.
    op.execute(
        "INSERT INTO reviews (decision_id, flow, decision_seq, kind, state, opened_at, "
        "proposed_action) SELECT id, flow, seq, CASE status WHEN 'advisory' THEN 'advisory' "
        "ELSE 'escalation' END, 'open', recorded_at, action FROM decisions "
        "WHERE status IN ('pending_review', 'advisory')"
    )


def downgrade() -> None:
    op.drop_index("ix_reviews_flow_state", table_name="reviews")
    op.drop_table("reviews")
