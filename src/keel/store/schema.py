"""The tables Keel stores, in SQLAlchemy Core. Alembic migrations create them."""

from __future__ import annotations

from sqlalchemy import (
    Column,
    Float,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData()

# One row per ledger entry. ``record`` is the canonical JSON the hash covers; the other
# columns are copies for querying and are themselves covered through ``record``.
ledger = Table(
    "ledger",
    metadata,
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("kind", String(32), nullable=False),
    Column("record_id", String(64), nullable=False),
    Column("flow", String(64)),
    Column("recorded_at", String(32), nullable=False),
    Column("record", Text, nullable=False),
    Column("prev_hash", String(64), nullable=False),
    Column("hash", String(64), nullable=False),
    Index("ix_ledger_record_id", "record_id", unique=True),
    Index("ix_ledger_flow_seq", "flow", "seq"),
)

# The chain head, one row. Appenders lock it, so one chain holds across processes.
ledger_head = Table(
    "ledger_head",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("seq", Integer, nullable=False),
    Column("hash", String(64), nullable=False),
)

# Consumption of rate and exposure limits, for sliding windows that survive restarts.
guardrail_usage = Table(
    "guardrail_usage",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("flow", String(64), nullable=False),
    Column("guardrail", String(64), nullable=False),
    Column("segment", String(128), nullable=False),
    Column("ts", Float, nullable=False),
    Column("amount", Float, nullable=False),
    Index("ix_guardrail_usage_ts", "ts"),
)

# Every policy version ever used, by content hash: what-if and audits rebuild it from here.
policy_versions = Table(
    "policy_versions",
    metadata,
    Column("version", String(64), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("document", Text, nullable=False),
    Column("created_at", String(32), nullable=False),
)

# Personal and sensitive inputs, encrypted (AES-256-GCM). The ledger holds only salted
# digests of them, so deleting a row here erases the data without breaking the chain.
protected_values = Table(
    "protected_values",
    metadata,
    Column("record_id", String(64), primary_key=True),
    Column("key_id", String(32), nullable=False),
    Column("nonce", LargeBinary, nullable=False),
    Column("ciphertext", LargeBinary, nullable=False),
)
