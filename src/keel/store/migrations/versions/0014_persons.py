"""Persons: the person behind each principal id kept where separation of duties reads it.

Four eyes compares persons, not credentials (``keel.security.persons``). Rows written
before this migration have no person; they are compared by their principal id.

Revision ID: 0014
Revises: 0013
"""

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

COLUMNS = (
    ("reviews", "requested_person", sa.String(256)),  # who asked for the decision
    ("policy_changes", "author_person", sa.String(256)),
    ("policy_changes", "editor_persons", sa.Text),  # JSON list, the author first
    ("policy_approvals", "approver_person", sa.String(256)),
    ("autonomy_requests", "requested_person", sa.String(256)),
    ("flow_holds", "set_by_person", sa.String(256)),
)


def upgrade() -> None:
    for table, column, kind in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column(column, kind))


def downgrade() -> None:
    for table, column, _kind in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column(column)
