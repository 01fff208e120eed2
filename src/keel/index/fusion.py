"""Fusion of the keyword and vector candidate lists into one ranking: pure functions.

``fuse`` is reciprocal-rank fusion; ``fuse_scores`` is a convex combination of each list's
normalised scores (min-max or z-score), the score-based fusion that Bruch, Gai and Ingber
compare with RRF in "An Analysis of Fusion Functions for Hybrid Retrieval" (ACM TOIS,
2023). ``fuse_lists`` picks one by ``Weights.method``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from keel.index.records import Fusion, Weights

# (key, score), best first: one list's candidates as its store returned them
Scored = Sequence[tuple[int, float]]


@dataclass(frozen=True)
class Fused:
    """One key's place after fusion: its rank (from 1) in each list, or ``None``."""

    key: int
    keyword_rank: int | None
    vector_rank: int | None
    fused: float


def fuse_lists(keyword: Scored, vector: Scored, weights: Weights, k: int) -> list[Fused]:
    """The ``k`` best keys of two scored lists (best first), fused by ``weights.method``."""
    if weights.method is Fusion.RRF:
        return fuse([key for key, _ in keyword], [key for key, _ in vector], weights, k)
    return fuse_scores(keyword, vector, weights, k)


def fuse(keyword: Sequence[int], vector: Sequence[int], weights: Weights, k: int) -> list[Fused]:
    """The ``k`` best keys of two ranked lists (best first), by
    ``Σ w_i / (rrf_k + rank_i)``.

    Ranks, not scores, are combined: BM25 and cosine scores live on different scales, and
    a rank needs no calibration. Ties (equal fused scores) are broken by the better
    vector rank, then the better keyword rank, then the smaller key, so the order is
    deterministic. A list with weight 0 adds nothing: a key only it holds is left out, and
    a key both hold keeps that list's rank for the record.
    """
    ranks = _ranks(keyword, vector)
    out = []
    for key, (k_rank, v_rank) in ranks.items():
        score = 0.0
        if k_rank is not None:
            score += weights.keyword / (weights.rrf_k + k_rank)
        if v_rank is not None:
            score += weights.vector / (weights.rrf_k + v_rank)
        if score > 0:
            out.append(Fused(key, k_rank, v_rank, score))
    return _best(out, len(ranks), k)


def fuse_scores(keyword: Scored, vector: Scored, weights: Weights, k: int) -> list[Fused]:
    """The ``k`` best keys of two scored lists by ``(w_k·s_k + w_v·s_v) / (w_k + w_v)``,
    each list's scores normalised over its own candidates (``minmax`` or ``zscore``).

    Normalising per query puts BM25 (unbounded, its scale set by the query's words) and
    cosine on one scale, so that the fused score keeps how far apart two candidates are,
    which ranks throw away. A key missing from a list takes that list's lowest normalised
    score: it ranked below every candidate the list returned. Ties and zero weights are
    handled as in ``fuse``; a key only a zero-weight list holds is left out.
    """
    ranks = _ranks([key for key, _ in keyword], [key for key, _ in vector])
    k_norm = _normalised([s for _, s in keyword], weights.method)
    v_norm = _normalised([s for _, s in vector], weights.method)
    k_floor, v_floor = min(k_norm, default=0.0), min(v_norm, default=0.0)
    total = weights.keyword + weights.vector
    out = []
    for key, (k_rank, v_rank) in ranks.items():
        in_weighted = (k_rank is not None and weights.keyword > 0) or (
            v_rank is not None and weights.vector > 0
        )
        if not in_weighted:
            continue
        k_part = k_norm[k_rank - 1] if k_rank is not None else k_floor
        v_part = v_norm[v_rank - 1] if v_rank is not None else v_floor
        score = (weights.keyword * k_part + weights.vector * v_part) / total
        out.append(Fused(key, k_rank, v_rank, score))
    return _best(out, len(ranks), k)


def _normalised(scores: Sequence[float], method: Fusion) -> list[float]:
    """One list's scores on a common scale: min-max to 0–1 (all 1 when they are equal,
    as a single candidate's is), or z-scores (all 0 when they are equal)."""
    if not scores:
        return []
    low, high = min(scores), max(scores)
    if method is Fusion.MINMAX:
        return [1.0 if high == low else (s - low) / (high - low) for s in scores]
    mean = math.fsum(scores) / len(scores)
    spread = math.sqrt(math.fsum((s - mean) ** 2 for s in scores) / len(scores))
    return [0.0 if spread == 0 else (s - mean) / spread for s in scores]


def _ranks(keyword: Sequence[int], vector: Sequence[int]) -> dict[int, list[int | None]]:
    """Each key's rank (from 1) in the keyword and the vector list, ``None`` where absent."""
    ranks: dict[int, list[int | None]] = {}
    for rank, key in enumerate(keyword, 1):
        ranks.setdefault(key, [None, None])[0] = rank
    for rank, key in enumerate(vector, 1):
        ranks.setdefault(key, [None, None])[1] = rank
    return ranks


def _best(out: list[Fused], seen: int, k: int) -> list[Fused]:
    big = seen + 1
    out.sort(key=lambda f: (-f.fused, f.vector_rank or big, f.keyword_rank or big, f.key))
    return out[:k]
