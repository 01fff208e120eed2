"""Reciprocal-rank fusion of the keyword and vector candidate lists: a pure function."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from keel.index.records import Weights


@dataclass(frozen=True)
class Fused:
    """One key's place after fusion: its rank (from 1) in each list, or ``None``."""

    key: int
    keyword_rank: int | None
    vector_rank: int | None
    fused: float


def fuse(keyword: Sequence[int], vector: Sequence[int], weights: Weights, k: int) -> list[Fused]:
    """The ``k`` best keys of two ranked lists (best first), by
    ``Σ w_i / (rrf_k + rank_i)``.

    Ranks, not scores, are combined: BM25 and cosine scores live on different scales, and
    a rank needs no calibration. Ties (equal fused scores) are broken by the better
    vector rank, then the better keyword rank, then the smaller key, so the order is
    deterministic. A list with weight 0 adds nothing: a key only it holds is left out, and
    a key both hold keeps that list's rank for the record.
    """
    ranks: dict[int, list[int | None]] = {}
    for rank, key in enumerate(keyword, 1):
        ranks.setdefault(key, [None, None])[0] = rank
    for rank, key in enumerate(vector, 1):
        ranks.setdefault(key, [None, None])[1] = rank
    out = []
    for key, (k_rank, v_rank) in ranks.items():
        score = 0.0
        if k_rank is not None:
            score += weights.keyword / (weights.rrf_k + k_rank)
        if v_rank is not None:
            score += weights.vector / (weights.rrf_k + v_rank)
        if score > 0:
            out.append(Fused(key, k_rank, v_rank, score))
    big = len(ranks) + 1
    out.sort(key=lambda f: (-f.fused, f.vector_rank or big, f.keyword_rank or big, f.key))
    return out[:k]
