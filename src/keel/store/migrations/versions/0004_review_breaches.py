"""Review deadline breaches: when the breach event for a review was recorded.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("reviews") as batch:
        batch.add_column(sa.Column("breached_at", sa.String(32)))
    op.create_index("ix_reviews_due", "reviews", ["state", "due_at"])


def downgrade() -> None:
    op.drop_index("ix_reviews_due", "reviews")
    with op.batch_alter_table("reviews") as batch:
        batch.drop_column("breached_at")
