"""Evidently-compatible drift: Keel's figures against Evidently 0.7's recipe, written out
here as Evidently's source states it (concatenate, ``np.histogram_bin_edges(...,
"sturges")``, ``np.histogram``, its zero filling, ``scipy`` on raw arrays). The bench
(`make bench-drift`) checks the same against Evidently itself on 2,000,000 rows."""

from __future__ import annotations

import math
import warnings
import zlib

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from keel.errors import InputError
from keel.monitor import compat
from keel.monitor.compat import _sturges_edges
from keel.monitor.stats import CategoricalSample, NumericSample


def clean(values: np.ndarray) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    return values[np.isfinite(values)]


def evidently_binned(ref: np.ndarray, cur: np.ndarray, fill: bool) -> tuple:
    """``evidently.legacy.calculations.stattests.utils.get_binned_data`` for numbers."""
    if len(np.unique(ref)) > 20:
        bins = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
        r = np.histogram(ref, bins)[0] / len(ref)
        c = np.histogram(cur, bins)[0] / len(cur)
    else:
        keys = sorted(set(ref) | set(cur))
        r = np.array([np.sum(ref == k) / len(ref) for k in keys])
        c = np.array([np.sum(cur == k) / len(cur) for k in keys])
    if fill:
        for shares in (r, c):
            smallest = min(shares[shares != 0])
            np.place(shares, shares == 0, smallest / 10**6 if smallest <= 0.0001 else 0.0001)
    return r, c


def evidently_numeric(ref: np.ndarray, cur: np.ndarray, method: str) -> float:
    ref, cur = clean(ref), clean(cur)
    if method == "ks":
        return float(sps.ks_2samp(ref, cur)[1])
    if method == "wasserstein":
        return float(sps.wasserstein_distance(ref, cur) / max(float(np.std(ref)), 0.001))
    r, c = evidently_binned(ref, cur, fill=method == "psi")
    if method == "psi":
        return float(np.sum((r - c) * np.log(r / c)))
    return float(distance.jensenshannon(r, c))


def keel_numeric(ref: np.ndarray, cur: np.ndarray, method: str | None = None) -> compat.Statistic:
    return compat.numeric("x", NumericSample.of("x", ref), NumericSample.of("x", cur), method)


@pytest.mark.parametrize("method", ["ks", "wasserstein", "psi", "jensenshannon"])
@pytest.mark.parametrize(
    "shape",
    ["continuous", "few values", "narrow integers", "with gaps", "large exact boundary"],
)
def test_numeric_scores_match_evidentlys_recipe(method: str, shape: str) -> None:
    rng = np.random.default_rng(zlib.crc32(f"{method}{shape}".encode()))
    if shape == "continuous":
        ref, cur = rng.normal(0, 1, 20_000), rng.normal(0.05, 1.1, 15_000)
    elif shape == "few values":
        ref, cur = rng.integers(0, 7, 5000).astype(float), rng.integers(0, 9, 3000).astype(float)
    elif shape == "narrow integers":  # > 20 distinct, Sturges width below 1: NumPy widens it
        ref, cur = rng.integers(0, 25, 30_000), rng.integers(2, 27, 30_000)
    elif shape == "with gaps":
        ref, cur = rng.lognormal(0, 1, 12_000), rng.lognormal(0.1, 1, 12_000)
        ref[:100], cur[:50], cur[50:53] = np.nan, np.nan, [np.inf, -np.inf, np.inf]
    else:  # above KS's exact limit (10,000 values), with ties
        ref, cur = np.round(rng.normal(0, 1, 12_001), 2), np.round(rng.normal(0, 1, 11_000), 2)
    got = keel_numeric(ref, cur, method)
    expected = evidently_numeric(ref, cur, method)
    assert got.score == pytest.approx(expected, rel=1e-12, abs=0), (method, shape)
    assert got.mode == "evidently" and got.method == method


def test_sturges_edges_are_numpys() -> None:
    rng = np.random.default_rng(5)
    for size in (2, 3, 7, 100, 1023, 1024, 1025, 40_000):
        for scale in (1e-9, 1.0, 3e7):
            ref = np.sort(rng.normal(0, scale, size))
            cur = np.sort(rng.normal(scale, scale, size // 2 + 1))
            expected = np.histogram_bin_edges(np.concatenate([ref, cur]), bins="sturges")
            got = _sturges_edges(NumericSample(ref, 0, 0, size), NumericSample(cur, 0, 0, 0))
            assert np.array_equal(got, expected), (size, scale)


def test_default_methods_and_verdicts_follow_evidently() -> None:
    rng = np.random.default_rng(8)
    big = keel_numeric(rng.normal(0, 1, 2000), rng.normal(0, 1, 2000))
    assert big.method == "wasserstein" and big.threshold == 0.1
    small = keel_numeric(rng.normal(0, 1, 1000), rng.normal(0, 1, 2000))
    assert small.method == "ks" and small.score == small.p_value
    few = keel_numeric(rng.integers(0, 4, 2000), rng.integers(0, 4, 2000))
    assert few.method == "jensenshannon"
    assert keel_numeric(rng.integers(0, 4, 500), rng.integers(0, 4, 500)).method == "chisquare"
    assert keel_numeric(rng.integers(0, 2, 500), rng.integers(0, 2, 500)).method == "z"
    categories = list("abc")
    ref = CategoricalSample.of(rng.choice(categories, 2000))
    assert compat.categorical("c", ref, ref).method == "jensenshannon"
    small_ref = CategoricalSample.of(rng.choice(categories, 1000))
    assert compat.categorical("c", small_ref, ref).method == "chisquare"
    binary = CategoricalSample.of(rng.choice(["y", "n"], 800))
    assert compat.categorical("c", binary, binary).method == "z"


def test_thresholds_compare_as_evidently_does() -> None:
    # KS drifts at p <= threshold, chi-square and z at p < threshold, distances at >=.
    stat = keel_numeric(np.arange(50.0), np.arange(50.0) + 7, "ks")
    at = compat._statistic("x", "ks", 0.0, stat.p_value, stat.p_value)
    assert at.drift is True
    same = compat._statistic("x", "chisquare", 1.0, 0.04, 0.04)
    assert same.drift is False
    assert compat._statistic("x", "psi", 0.1, None, None).drift is True
    assert compat._statistic("x", "z", 1.0, 0.05, None).drift is False


def test_categorical_scores_match_evidentlys_recipe() -> None:
    rng = np.random.default_rng(9)
    ref_values = rng.choice(["a", "b", "c", "d"], 4000, p=[0.4, 0.3, 0.2, 0.1])
    cur_values = rng.choice(["a", "b", "c", "new"], 3000, p=[0.3, 0.3, 0.3, 0.1])
    ref, cur = CategoricalSample.of(ref_values), CategoricalSample.of(cur_values)
    keys = sorted(set(ref_values) | set(cur_values))
    r = np.array([np.sum(ref_values == k) for k in keys], dtype=float)
    c = np.array([np.sum(cur_values == k) for k in keys], dtype=float)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        chi = sps.chisquare(c, r * (3000 / 4000))
    got = compat.categorical("c", ref, cur, "chisquare")
    assert got.p_value == chi.pvalue == 0.0 and got.drift is True  # 'new' was never expected
    rs, cs = r / 4000, c / 3000
    assert compat.categorical("c", ref, cur, "jensenshannon").value == pytest.approx(
        distance.jensenshannon(rs, cs), rel=1e-12
    )
    filled_r, filled_c = np.where(rs == 0, 0.0001, rs), np.where(cs == 0, 0.0001, cs)
    psi = float(np.sum((filled_r - filled_c) * np.log(filled_r / filled_c)))
    assert compat.categorical("c", ref, cur, "psi").value == pytest.approx(psi, rel=1e-12)
    # z: the share of everything but the first category, two-sided.
    ref2 = CategoricalSample.of(["n"] * 300 + ["y"] * 200)
    cur2 = CategoricalSample.of(["n"] * 200 + ["y"] * 300)
    p1, p2 = 200 / 500, 300 / 500
    pooled = (p1 * 500 + p2 * 500) / 1000
    z = (p1 - p2) / math.sqrt(pooled * (1 - pooled) * (2 / 500))
    got_z = compat.categorical("c", ref2, cur2)
    assert got_z.method == "z"
    assert got_z.p_value == pytest.approx(2 * (1 - sps.norm.cdf(abs(z))), rel=1e-12)
    same = compat.categorical("c", CategoricalSample.of(["y"] * 9), CategoricalSample.of(["y"]))
    assert same.p_value == 1.0 and same.drift is False


def test_bad_requests_are_named() -> None:
    ref = NumericSample.of("x", [1.0, 2.0, 3.0])
    with pytest.raises(InputError, match="'kl' is not an Evidently-compatible method"):
        compat.numeric("x", ref, ref, "kl")
    with pytest.raises(InputError, match="'chisquare' applies to categorical columns only"):
        compat.numeric("x", ref, ref, "chisquare")
    cats = CategoricalSample.of(["a", "b"])
    with pytest.raises(InputError, match="'ks' applies to numeric columns only"):
        compat.categorical("c", cats, cats, "ks")
    empty = compat.numeric("x", ref, NumericSample.of("x", [np.nan, np.inf]), "psi")
    assert empty.value is None and empty.drift is None
    assert "no finite values in the current data" in empty.note
