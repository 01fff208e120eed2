"""The knowledge service's own tables, in SQLAlchemy Core; migration 0017 creates them.

The index (``keel.index.tables``) holds what is searched: each document's live chunks,
vectors and effective access list. These tables hold what is governed: collections and
their settings, documents with their owner, classification and the access list as it was
set (``NULL``: inherit the collection's default), and every version a document ever had,
live, superseded or withdrawn. A collection row names the ledger entry that recorded its
settings (``record_id``) and the digest of those settings, so a row changed outside Keel
is refused when it is loaded.
"""

from __future__ import annotations

from sqlalchemy import Column, Float, Index, Integer, MetaData, String, Table, Text

metadata = MetaData()

knowledge_collections = Table(
    "knowledge_collections",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("settings", Text, nullable=False),  # canonical JSON of CollectionSettings
    Column("digest", String(64), nullable=False),  # sha256 of ``settings``
    Column("record_id", String(64), nullable=False),  # the ledger entry that recorded it
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Column("last_synced_at", Float),  # the last folder sync that finished
)

knowledge_documents = Table(
    "knowledge_documents",
    metadata,
    Column("document_id", String(128), primary_key=True),
    Column("collection", String(64), nullable=False),
    Column("source_uri", Text, nullable=False),
    Column("owner", String(320), nullable=False),
    Column("classification", String(16), nullable=False),
    Column("access", Text),  # JSON list of access keys; NULL: the collection's default
    Column("valid_from", Float),
    Column("valid_until", Float),
    Column("subjects", Text, nullable=False),  # JSON list of data-subject ids
    Column("metadata", Text, nullable=False),  # JSON object
    Column("version", String(64)),  # the live version; NULL once withdrawn
    Column("revision", Integer, nullable=False),  # the number of versions ingested
    Column("state", String(16), nullable=False),  # live | withdrawn
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    Index("ix_knowledge_documents_collection", "collection", "source_uri"),
)

knowledge_versions = Table(
    "knowledge_versions",
    metadata,
    Column("document_id", String(128), primary_key=True),
    Column("revision", Integer, primary_key=True),  # 1, 2, … in the order ingested
    Column("version", String(64), nullable=False),  # sha256 of the extracted text
    Column("collection", String(64), nullable=False),
    Column("state", String(16), nullable=False),  # live | superseded | withdrawn
    Column("format", String(8), nullable=False),
    Column("bytes_sha256", String(64), nullable=False),
    Column("chars", Integer, nullable=False),
    Column("chunks", Integer, nullable=False),
    Column("record_id", String(64), nullable=False),  # the ingest's ledger entry
    Column("created_at", Float, nullable=False),
    Column("ended_at", Float),  # when it was superseded or withdrawn
    Index("ix_knowledge_versions_version", "document_id", "version"),
)
