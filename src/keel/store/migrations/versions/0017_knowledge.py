"""Knowledge collections, their documents and every version of each (keel.knowledge.tables).

Revision ID: 0017
Revises: 0016
"""

import sqlalchemy as sa
from alembic import op

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "knowledge_collections",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("settings", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
        sa.Column("last_synced_at", sa.Float),
    )
    op.create_table(
        "knowledge_documents",
        sa.Column("document_id", sa.String(128), primary_key=True),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("source_uri", sa.Text, nullable=False),
        sa.Column("owner", sa.String(320), nullable=False),
        sa.Column("classification", sa.String(16), nullable=False),
        sa.Column("access", sa.Text),
        sa.Column("valid_from", sa.Float),
        sa.Column("valid_until", sa.Float),
        sa.Column("subjects", sa.Text, nullable=False),
        sa.Column("metadata", sa.Text, nullable=False),
        sa.Column("version", sa.String(64)),
        sa.Column("revision", sa.Integer, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("updated_at", sa.Float, nullable=False),
    )
    op.create_index(
        "ix_knowledge_documents_collection", "knowledge_documents", ["collection", "source_uri"]
    )
    op.create_table(
        "knowledge_versions",
        sa.Column("document_id", sa.String(128), primary_key=True),
        sa.Column("revision", sa.Integer, primary_key=True),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("collection", sa.String(64), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("format", sa.String(8), nullable=False),
        sa.Column("bytes_sha256", sa.String(64), nullable=False),
        sa.Column("chars", sa.Integer, nullable=False),
        sa.Column("chunks", sa.Integer, nullable=False),
        sa.Column("record_id", sa.String(64), nullable=False),
        sa.Column("created_at", sa.Float, nullable=False),
        sa.Column("ended_at", sa.Float),
    )
    op.create_index(
        "ix_knowledge_versions_version", "knowledge_versions", ["document_id", "version"]
    )


def downgrade() -> None:
    op.drop_table("knowledge_versions")
    op.drop_table("knowledge_documents")
    op.drop_table("knowledge_collections")
