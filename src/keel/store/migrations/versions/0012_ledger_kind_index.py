"""The newest ledger entry of a kind for a flow, found at once: the engine checks every row
it acts on (the active version, the autonomy level, a hold, a running rollout) against it.

Revision ID: 0012
Revises: 0011
"""

from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_ledger_kind_flow_seq", "ledger", ["kind", "flow", "seq"])


def downgrade() -> None:
    op.drop_index("ix_ledger_kind_flow_seq", table_name="ledger")
