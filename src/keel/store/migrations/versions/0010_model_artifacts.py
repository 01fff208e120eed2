"""Model versions pinned with policy versions: stored model files, and the pins.

Revision ID: 0010
Revises: 0009
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "model_artifacts",
        sa.Column("version", sa.String(80), primary_key=True),
        sa.Column("filename", sa.String(256), nullable=False),
        sa.Column("size", sa.Integer, nullable=False),
        sa.Column("data", sa.LargeBinary, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
    )
    with op.batch_alter_table("policy_changes") as batch:
        batch.add_column(sa.Column("models", sa.Text))
    with op.batch_alter_table("flow_activations") as batch:
        batch.add_column(sa.Column("models", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("flow_activations") as batch:
        batch.drop_column("models")
    with op.batch_alter_table("policy_changes") as batch:
        batch.drop_column("models")
    op.drop_table("model_artifacts")
