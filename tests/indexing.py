"""Helpers for the retrieval index's tests: a real index on SQLite or PostgreSQL with
pgvector, and a small deterministic embedding so vector ranking means something."""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from keel.index.backend import open_index
from keel.index.base import ChunkIndex
from keel.index.records import IndexedChunk
from keel.store.database import Database, open_database
from tests.conftest import fresh_pgvector_database

DIM = 64


def embed(text: str) -> np.ndarray:
    """A normalised bag of hashed words: texts sharing words point the same way."""
    vector = np.zeros(DIM, np.float32)
    for word in re.findall(r"\w+", text.lower()):
        digest = hashlib.sha256(word.encode()).digest()
        vector[digest[0] % DIM] += 1.0 if digest[1] % 2 else -1.0
    norm = float(np.linalg.norm(vector))
    if norm == 0:
        vector[0] = 1.0
        return vector
    return vector / norm


def chunk(chunk_id: str, text: str, ordinal: int = 0, page: int | None = None) -> IndexedChunk:
    return IndexedChunk(chunk_id, ordinal, text, 0, len(text), page, embed(text))


@contextlib.contextmanager
def opened_index(backend: str, tmp_path: Path) -> Iterator[tuple[Database, ChunkIndex]]:
    """A migrated database and its index: a SQLite file, or a fresh PostgreSQL database
    with the pgvector extension (skipped, naming pgvector, where the server lacks it; a
    failure under ``make test``)."""
    if backend == "sqlite":
        db = open_database(f"sqlite:///{tmp_path}/index.db")
        try:
            yield db, open_index(db)
        finally:
            db.close()
        return
    with fresh_pgvector_database() as url:
        db = open_database(url)
        try:
            yield db, open_index(db)
        finally:
            db.close()
