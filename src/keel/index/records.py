"""What the retrieval index stores and returns: chunks in, hits out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import numpy as np
from numpy.typing import NDArray

from keel.errors import InputError


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


class Fusion(StrEnum):
    """How the keyword and vector lists are fused (``keel.index.fusion``).

    ``rrf``: reciprocal rank, ``Σ w_i / (rrf_k + rank_i)``; ``minmax``: each list's scores
    scaled to 0–1 over its candidates, then ``Σ w_i · s_i / Σ w_i``; ``zscore``: the same
    with each list's scores standardised (mean 0, standard deviation 1) instead.
    """

    RRF = "rrf"
    MINMAX = "minmax"
    ZSCORE = "zscore"


@dataclass(frozen=True)
class Weights:
    """Fusion settings: the ``method`` and each list's weight. For ``rrf``,
    ``fused = Σ w_i / (rrf_k + rank_i)`` over the keyword and vector lists (ranks from 1);
    ``rrf_k`` is unused by the score-based methods. ``candidates`` is how many results each
    list contributes before fusion; at least the ``k`` asked for is always taken.

    The defaults were chosen on the development split of Keel's evaluation set
    (``tests/fixtures/knowledge/eval-dev``), never on its test split: see
    ``bench/RESULTS.md``.
    """

    keyword: float = 1.0
    vector: float = 1.0
    rrf_k: float = 5.0  # 60 until the dev-split comparison: 0.797 → 0.824 nDCG@10 on dev
    candidates: int = 100
    method: Fusion = Fusion.RRF

    def __post_init__(self) -> None:
        # a settings file or request gives the method as text: refuse an unknown one here,
        # by name, rather than at the first search
        try:
            object.__setattr__(self, "method", Fusion(self.method))
        except ValueError:
            known = ", ".join(m.value for m in Fusion)
            raise InputError(
                f"unknown fusion method {self.method!r}: use one of {known}",
                {"method": str(self.method), "known": [m.value for m in Fusion]},
            ) from None


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
