"""The decisions index counts guardrail hits and fallbacks, for trust metrics.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.add_column(
            sa.Column("guardrail_hits", sa.Integer, nullable=False, server_default="0")
        )
        batch.add_column(sa.Column("fallback", sa.Integer, nullable=False, server_default="0"))
    # Decisions recorded before this migration: read both from their ledger records.
    if op.get_bind().dialect.name == "sqlite":
        hits = "json_array_length(json_extract(l.record, '$.body.guardrails.hits'))"
        fallback = "json_extract(l.record, '$.body.fallback') IS NOT NULL"
    else:
        hits = "json_array_length(l.record::json #> '{body,guardrails,hits}')"
        fallback = "(l.record::json #>> '{body,fallback}') IS NOT NULL"
    # The interpolated expressions are the constants above.
    op.execute(
        f"UPDATE decisions SET guardrail_hits = (SELECT {hits} FROM ledger l "  # noqa: S608
        "WHERE l.seq = decisions.seq), "
        f"fallback = (SELECT CASE WHEN {fallback} THEN 1 ELSE 0 END FROM ledger l "
        "WHERE l.seq = decisions.seq)"
    )


def downgrade() -> None:
    with op.batch_alter_table("decisions") as batch:
        batch.drop_column("fallback")
        batch.drop_column("guardrail_hits")
