"""Fusion of the keyword and vector lists: reciprocal rank and the score-based convex
combinations (min-max and z-score), on hand-computed cases, and the method as a setting."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pytest

from keel.errors import InputError
from keel.index.fusion import Fused, fuse, fuse_lists, fuse_scores
from keel.index.records import Fusion, Validity, Weights
from tests.indexing import chunk, embed, opened_index

NOW = 1_800_000_000.0
READER = frozenset({"group:readers"})
# keyword: BM25-like scores 10, 6, 2; vector: cosines 0.9, 0.5. Key 3 is in both.
KEYWORD = [(1, 10.0), (2, 6.0), (3, 2.0)]
VECTOR = [(3, 0.9), (4, 0.5)]


def scores(fused: Sequence[Fused]) -> dict[int, float]:
    return {f.key: f.fused for f in fused}


def test_minmax_scales_each_list_to_0_1_and_weighs_them() -> None:
    # keyword scaled: 1 → 1.0, 2 → 0.5, 3 → 0.0; vector: 3 → 1.0, 4 → 0.0; a key missing
    # from a list takes its lowest, 0
    fused = fuse_scores(KEYWORD, VECTOR, Weights(keyword=0.6, vector=0.4, method="minmax"), 10)
    assert scores(fused) == pytest.approx({1: 0.6, 3: 0.4, 2: 0.3, 4: 0.0})
    assert [f.key for f in fused] == [1, 3, 2, 4]  # key 4 scores 0 but is a candidate
    assert (fused[1].keyword_rank, fused[1].vector_rank) == (3, 1)


def test_weights_are_divided_by_their_sum() -> None:
    half = fuse_scores(KEYWORD, VECTOR, Weights(keyword=0.5, vector=0.5, method="minmax"), 10)
    ones = fuse_scores(KEYWORD, VECTOR, Weights(keyword=1.0, vector=1.0, method="minmax"), 10)
    assert scores(half) == pytest.approx(scores(ones))
    assert scores(ones) == pytest.approx({1: 0.5, 3: 0.5, 2: 0.25, 4: 0.0})
    # 1 and 3 tie on 0.5: 3 has a vector rank, so it comes first, as in RRF
    assert [f.key for f in ones] == [3, 1, 2, 4]


def test_zscore_standardises_each_list() -> None:
    # keyword: mean 6, population sd sqrt(32/3), so z = ±sqrt(1.5) and 0; vector: mean 0.7,
    # sd 0.2, z = ±1. Missing keys take the list's lowest z.
    z = math.sqrt(1.5)
    fused = fuse_scores(KEYWORD, VECTOR, Weights(method=Fusion.ZSCORE), 10)
    assert scores(fused) == pytest.approx(
        {1: (z - 1) / 2, 3: (-z + 1) / 2, 2: (0 - 1) / 2, 4: (-z - 1) / 2}
    )
    assert [f.key for f in fused] == [1, 3, 2, 4]


def test_a_zero_weight_list_only_reorders_nothing_and_adds_no_key() -> None:
    only_vector = fuse_scores(KEYWORD, VECTOR, Weights(keyword=0.0, method="minmax"), 10)
    assert [(f.key, f.fused) for f in only_vector] == [(3, 1.0), (4, 0.0)]
    assert only_vector[0].keyword_rank == 3  # reported, adds nothing
    only_keyword = fuse_scores(KEYWORD, VECTOR, Weights(vector=0.0, method="zscore"), 2)
    assert [f.key for f in only_keyword] == [1, 2]  # and k cuts the list


def test_equal_scores_and_empty_lists() -> None:
    single = fuse_scores([(7, 3.5)], [], Weights(method="minmax"), 5)
    assert [(f.key, f.fused) for f in single] == [(7, 0.5)]  # one candidate scales to 1
    flat = fuse_scores([(1, 2.0), (2, 2.0)], [], Weights(method="zscore"), 5)
    assert [(f.key, f.fused) for f in flat] == [(1, 0.0), (2, 0.0)]  # sd 0: all 0, by key
    assert fuse_scores([], [], Weights(method="minmax"), 5) == []


def test_fuse_lists_picks_the_method() -> None:
    rrf = fuse_lists(KEYWORD, VECTOR, Weights(rrf_k=60.0, method="rrf"), 10)
    assert rrf == fuse([1, 2, 3], [3, 4], Weights(rrf_k=60.0, method="rrf"), 10)
    assert scores(rrf)[3] == pytest.approx(1 / 63 + 1 / 61)  # ranks only: scores unused
    minmax = fuse_lists(KEYWORD, VECTOR, Weights(keyword=0.6, vector=0.4, method="minmax"), 10)
    assert scores(minmax) == pytest.approx({1: 0.6, 3: 0.4, 2: 0.3, 4: 0.0})


def test_the_defaults_are_those_chosen_on_the_dev_split() -> None:
    """RRF, equal weights, rrf_k 5, 100 candidates: bench/RESULTS.md has the comparison."""
    assert Weights() == Weights(keyword=1.0, vector=1.0, rrf_k=5.0, candidates=100, method="rrf")


def test_the_method_is_a_setting_and_an_unknown_one_is_refused() -> None:
    assert Weights(method="zscore").method is Fusion.ZSCORE  # type: ignore[arg-type]
    with pytest.raises(InputError, match="unknown fusion method 'cosine': use one of rrf"):
        Weights(method="cosine")  # type: ignore[arg-type]


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("method", list(Fusion))
def test_the_index_search_fuses_by_the_method(backend: str, method: Fusion, tmp_path: Path) -> None:
    """Each method through a real index: the hit that tops both lists comes first, and
    every fused score is the method's combination of the hits' own list scores."""
    texts = {
        "limits": "A credit limit increase needs two years of history and a low utilisation.",
        "rates": "Interest rates on revolving credit are reviewed every quarter.",
        "fraud": "Report suspected card fraud at once; the card is blocked while checked.",
    }
    with opened_index(backend, tmp_path) as (db, index):
        with db.write() as conn:
            for name, body in texts.items():
                index.add_version(
                    conn, "mini", name, "v1", "policies", READER, Validity(),
                    [chunk(f"{name}-0", body)], at=0.0,
                )  # fmt: skip
        query = "credit limit history"
        weights = Weights(keyword=0.5, vector=0.5, method=method)
        hits = index.search("mini", ["policies"], query, embed(query), READER, 3, NOW, weights)
    assert hits[0].document_id == "limits"
    assert [h.fused for h in hits] == sorted((h.fused for h in hits), reverse=True)
    keyword = [(i, h.keyword_score) for i, h in enumerate(hits) if h.keyword_score is not None]
    vector = [(i, h.vector_score) for i, h in enumerate(hits) if h.vector_score is not None]
    keyword.sort(key=lambda p: hits[p[0]].keyword_rank or 0)
    vector.sort(key=lambda p: hits[p[0]].vector_rank or 0)
    expected = fuse_lists(keyword, vector, weights, 3)  # type: ignore[arg-type]
    assert {f.key: f.fused for f in expected} == pytest.approx(
        {i: h.fused for i, h in enumerate(hits)}
    )
