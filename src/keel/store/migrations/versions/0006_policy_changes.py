"""Policy change management: proposals, approvals, and the activation history of each flow.

Revision ID: 0006
Revises: 0005

Decisions recorded before this migration name the policy version that made them; the
activation history is inferred from them (each time a flow's decisions start naming
another version), so "which version was active then" has an answer for old data too.
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "policy_changes",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("base_version", sa.String(64), nullable=False),
        sa.Column("author", sa.String(256), nullable=False),
        sa.Column("editors", sa.Text, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("updated_at", sa.String(32), nullable=False),
    )
    op.create_index("ix_policy_changes_flow", "policy_changes", ["flow", "created_at"])
    op.create_table(
        "policy_approvals",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("change_id", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("approver", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("approved_at", sa.String(32), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
    )
    op.create_index("ix_policy_approvals_change", "policy_approvals", ["change_id"])
    activations = op.create_table(
        "flow_activations",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("activated_at", sa.String(32), nullable=False),
        sa.Column("activated_by", sa.String(256), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("change_id", sa.String(64)),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("record_id", sa.String(64)),
    )
    op.create_index("ix_flow_activations_flow", "flow_activations", ["flow", "activated_at"])
    rows = []
    last: dict[str, str] = {}
    found = op.get_bind().execute(
        sa.text("SELECT flow, policy_version, recorded_at FROM decisions ORDER BY seq")
    )
    for flow, version, recorded_at in found:
        if last.get(flow) != version:
            last[flow] = version
            rows.append(
                {
                    "flow": flow,
                    "version": version,
                    "activated_at": recorded_at,
                    "activated_by": "keel",
                    "kind": "inferred",
                    "change_id": None,
                    "reason": "inferred from the first decision this version made",
                    "record_id": None,
                }
            )
    if rows:
        op.bulk_insert(activations, rows)


def downgrade() -> None:
    op.drop_table("flow_activations")
    op.drop_table("policy_approvals")
    op.drop_table("policy_changes")
