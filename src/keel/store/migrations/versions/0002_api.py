"""Decision index, API keys, grants and audit events.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


_PATHS = ("subject_id", "action", "status", "policy.version")  # constants, not input


def upgrade() -> None:
    op.create_table(
        "decisions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("flow", sa.String(64), nullable=False),
        sa.Column("subject_id", sa.String(128)),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("policy_version", sa.String(64), nullable=False),
    )
    op.create_index("ix_decisions_flow_seq", "decisions", ["flow", "seq"])
    op.create_index("ix_decisions_subject", "decisions", ["subject_id"])
    op.create_index("ix_decisions_recorded_at", "decisions", ["recorded_at"])
    # Decisions recorded before this migration get their index rows from the ledger.
    if op.get_bind().dialect.name == "sqlite":
        fields = [f"json_extract(record, '$.body.{p}')" for p in _PATHS]
    else:
        fields = [f"(record::json #>> '{{body,{p.replace('.', ',')}}}')" for p in _PATHS]
    subject, action, status, version = fields
    # The interpolated expressions are built from the constant paths above.
    backfill = (
        "INSERT INTO decisions (id, seq, flow, subject_id, action, status, recorded_at, "  # noqa: S608
        f"policy_version) SELECT record_id, seq, flow, {subject}, {action}, {status}, "
        f"recorded_at, {version} FROM ledger WHERE kind = 'decision'"
    )
    op.execute(backfill)
    op.create_table(
        "api_keys",
        sa.Column("prefix", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(128), nullable=False),
        sa.Column("owner", sa.String(128), nullable=False),
        sa.Column("secret_sha256", sa.String(64), nullable=False),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("expires_at", sa.String(32)),
        sa.Column("revoked_at", sa.String(32)),
    )
    op.create_table(
        "grants",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("flow", sa.String(64)),
        sa.Column("created_at", sa.String(32), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
    )
    op.create_index("ix_grants_principal", "grants", ["principal"])
    op.create_table(
        "audit_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("time", sa.String(32), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("principal", sa.String(256), nullable=False),
        sa.Column("action", sa.String(64), nullable=False),
        sa.Column("target", sa.String(256), nullable=False),
        sa.Column("outcome", sa.String(32), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
    )
    op.create_index("ix_audit_time", "audit_events", ["time"])


def downgrade() -> None:
    for table in ("audit_events", "grants", "api_keys", "decisions"):
        op.drop_table(table)
