"""What the retrieval index stores and returns: chunks in, hits out."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class IndexedChunk:
    """One chunk of a document version, with its exact source span and its vector.

    ``chunk_id`` is unique across the index; ``start``/``end`` are character offsets into
    the version's text and ``page`` its page (PDF), so a citation can be shown in place.
    """

    chunk_id: str
    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    vector: NDArray[np.float32] = field(repr=False)


@dataclass(frozen=True)
class Validity:
    """When a document may be returned: ``valid_from <= now < valid_until`` (epoch
    seconds), either end open when ``None``."""

    valid_from: float | None = None
    valid_until: float | None = None


@dataclass(frozen=True)
class Weights:
    """Reciprocal-rank fusion settings: ``fused = Σ w_i / (rrf_k + rank_i)`` over the
    keyword and vector lists (ranks from 1). ``candidates`` is how many results each list
    contributes before fusion; at least the ``k`` asked for is always taken."""

    keyword: float = 1.0
    vector: float = 1.0
    rrf_k: float = 60.0
    candidates: int = 100


@dataclass(frozen=True)
class Hit:
    """A chunk a search returned, with both lists' scores and ranks (``None`` where the
    chunk was not in that list) and its fused score.

    ``keyword_score`` is BM25 on SQLite (higher is better) and ``ts_rank_cd`` on
    PostgreSQL; ``vector_score`` is the inner product with the query vector (the cosine
    for normalised vectors).
    """

    chunk_id: str
    document_id: str
    version: str
    ordinal: int
    text: str
    start: int
    end: int
    page: int | None
    keyword_score: float | None
    keyword_rank: int | None
    vector_score: float | None
    vector_rank: int | None
    fused: float
