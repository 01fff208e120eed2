"""The retrieval index's tables, in SQLAlchemy Core; migration 0016 creates them.

A document may have several versions in the index: the live one and those it superseded,
each with its live period, so that a search can ask what was live "as of" an instant.
Access lists belong to the document (one current list for all its versions). Chunks carry
their own copy of the vector (float32 bytes), so the SQLite default can score them in
NumPy and a PostgreSQL deployment can rebuild its pgvector column from them. Chunk ids
(``seq``) are never reused (AUTOINCREMENT on SQLite, a sequence on PostgreSQL): a number
once withdrawn never names other text, which is what lets a vector cache be trusted for
the ids a query selects.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, LargeBinary, MetaData, String, Table, Text

metadata = MetaData()

# One row per embedding space; ``generation`` grows with every write to the space's chunks
# or documents, so a cache knows whether the store changed since it was filled.
index_spaces = Table(
    "index_spaces",
    metadata,
    Column("space_id", String(128), primary_key=True),
    Column("dimension", Integer, nullable=False),
    Column("generation", Integer, nullable=False),
)

# Each indexed version of a document (epoch seconds throughout): when it is valid
# (``valid_from``/``valid_until``, None = open) and when it was the document's live
# version (``live_from``, and ``live_until`` set when a newer version superseded it; None
# while live). ``collection`` is the document's, the same on all its versions.
index_versions = Table(
    "index_versions",
    metadata,
    Column("document_id", String(128), primary_key=True),
    Column("version", String(64), primary_key=True),
    Column("collection", String(128), nullable=False),
    Column("valid_from", Float),
    Column("valid_until", Float),
    Column("live_from", Float, nullable=False),
    Column("live_until", Float),
    # With ``version`` in it, SQLite plans a search from the permitted documents to their
    # chunks, not from every chunk of the space to its version row (100 times slower at 1%).
    Index("ix_index_versions_collection", "collection", "document_id", "version"),
    Index("ix_index_versions_version", "version"),
)

# A document's access list: one row per key (``person:…``, ``group:…``, ``role:…``).
index_access = Table(
    "index_access",
    metadata,
    Column("document_id", String(128), primary_key=True),
    Column("key", String(320), primary_key=True),
    Index("ix_index_access_key", "key", "document_id"),
)

index_chunks = Table(
    "index_chunks",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("chunk_id", String(128), nullable=False),
    Column("document_id", String(128), nullable=False),
    Column("version", String(64), nullable=False),
    Column("space_id", String(128), nullable=False),
    Column("ordinal", Integer, nullable=False),
    Column("text", Text, nullable=False),
    Column("start_char", Integer, nullable=False),
    Column("end_char", Integer, nullable=False),
    Column("page", Integer),
    Column("vector", LargeBinary, nullable=False),
    Index("ix_index_chunks_chunk_id", "chunk_id", unique=True),
    Index("ix_index_chunks_document", "document_id", "version"),
    Index("ix_index_chunks_space", "space_id", "seq"),
    sqlite_autoincrement=True,
)
