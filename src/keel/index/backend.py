"""Opening the retrieval index on the store's backend."""

from __future__ import annotations

from keel.index.base import ChunkIndex
from keel.index.postgres import PostgresIndex
from keel.index.sqlite import SqliteIndex
from keel.store.database import Database


def open_index(db: Database) -> ChunkIndex:
    """The index on ``db``'s backend: SQLite (the embedded default) or PostgreSQL."""
    return SqliteIndex(db) if db.is_sqlite else PostgresIndex(db)
