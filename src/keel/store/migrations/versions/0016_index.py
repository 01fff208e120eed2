"""The retrieval index: document versions with their live periods, access lists, chunks
and the keyword index.

SQLite gets an FTS5 table (BM25) keyed by chunk ``seq``; PostgreSQL a generated
``tsvector`` column with a GIN index. The pgvector column is not created here: a
PostgreSQL server without the pgvector extension must still migrate for everything else
Keel stores, and an extension installed later would never be seen by a migration that
already ran. The index creates it on its first write instead (``keel.index.postgres``).

Revision ID: 0016
Revises: 0015
"""

import sqlalchemy as sa
from alembic import op

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "index_spaces",
        sa.Column("space_id", sa.String(128), primary_key=True),
        sa.Column("dimension", sa.Integer, nullable=False),
        sa.Column("generation", sa.Integer, nullable=False),
    )
    op.create_table(
        "index_versions",
        sa.Column("document_id", sa.String(128), primary_key=True),
        sa.Column("version", sa.String(64), primary_key=True),
        sa.Column("collection", sa.String(128), nullable=False),
        sa.Column("valid_from", sa.Float),
        sa.Column("valid_until", sa.Float),
        sa.Column("live_from", sa.Float, nullable=False),
        sa.Column("live_until", sa.Float),
    )
    # With ``version`` in it, SQLite plans a search from the permitted documents to their
    # chunks, not from every chunk of the space to its version row (100 times slower at 1%).
    op.create_index(
        "ix_index_versions_collection", "index_versions", ["collection", "document_id", "version"]
    )
    op.create_index("ix_index_versions_version", "index_versions", ["version"])
    op.create_table(
        "index_access",
        sa.Column("document_id", sa.String(128), primary_key=True),
        sa.Column("key", sa.String(320), primary_key=True),
    )
    op.create_index("ix_index_access_key", "index_access", ["key", "document_id"])
    op.create_table(
        "index_chunks",
        sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("chunk_id", sa.String(128), nullable=False),
        sa.Column("document_id", sa.String(128), nullable=False),
        sa.Column("version", sa.String(64), nullable=False),
        sa.Column("space_id", sa.String(128), nullable=False),
        sa.Column("ordinal", sa.Integer, nullable=False),
        sa.Column("text", sa.Text, nullable=False),
        sa.Column("start_char", sa.Integer, nullable=False),
        sa.Column("end_char", sa.Integer, nullable=False),
        sa.Column("page", sa.Integer),
        sa.Column("vector", sa.LargeBinary, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_index_chunks_chunk_id", "index_chunks", ["chunk_id"], unique=True)
    op.create_index("ix_index_chunks_document", "index_chunks", ["document_id", "version"])
    op.create_index("ix_index_chunks_space", "index_chunks", ["space_id", "seq"])
    if op.get_bind().dialect.name == "sqlite":
        # The FTS table keeps its own copy of the text, deleted by rowid on withdrawal.
        op.execute("CREATE VIRTUAL TABLE index_fts USING fts5(text, tokenize = 'porter unicode61')")
    else:
        op.execute(
            "ALTER TABLE index_chunks ADD COLUMN tsv tsvector "
            "GENERATED ALWAYS AS (to_tsvector('english', text)) STORED"
        )
        op.execute("CREATE INDEX ix_index_chunks_tsv ON index_chunks USING gin (tsv)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE index_fts")
    else:
        op.execute("DROP TABLE IF EXISTS index_vectors")
    op.drop_table("index_chunks")
    op.drop_table("index_access")
    op.drop_table("index_versions")
    op.drop_table("index_spaces")
