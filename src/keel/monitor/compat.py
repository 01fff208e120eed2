"""Evidently-compatible drift: the numbers and verdicts Evidently 0.7 gives, from Keel's
profiles.

Teams that already read Evidently's reports can ask for the same figures (``--compat
evidently``). This module follows Evidently 0.7's ``legacy.calculations.stattests`` step
by step, from the sorted samples a profile stores instead of pandas Series:

- Values: NaN and ±∞ are dropped from both sides first (an empty side is named, not
  tested).
- Method, when none is given (Evidently's ``_get_default_stattest``): with at most 1,000
  reference values, ``ks`` for numbers with more than 5 distinct values in both samples
  together, otherwise ``chisquare`` (more than 2 distinct) or ``z`` (2 or fewer); with more
  than 1,000, ``wasserstein`` for numbers with more than 5 distinct values, otherwise
  ``jensenshannon``. Categorical columns: ``chisquare``/``z`` up to 1,000 reference values,
  ``jensenshannon`` above.
- Binning for ``psi`` and ``jensenshannon``: a numeric column whose reference has more
  than 20 distinct values is cut into Sturges bins over both samples together
  (``numpy.histogram_bin_edges(ref ∪ cur, "sturges")``: ``⌈log2(n) + 1⌉`` equal bins from
  the smallest to the largest value); otherwise each distinct value (or category) of
  either sample is a bin. Shares are counts over each sample's size.
- Empty bins: for ``psi`` a zero share becomes ``1e-4``, or a millionth of the smallest
  non-zero share when that is at most ``1e-4`` (each side on its own); Jensen–Shannon
  keeps zeros.
- Formulas: ``psi = Σ (r − c) · ln(r / c)``; Jensen–Shannon **distance with natural
  logarithms** (``scipy.spatial.distance.jensenshannon`` without a base: at most
  ``√ln 2 ≈ 0.83``, unlike Keel's own base-2 figure); ``wasserstein`` normalised by
  ``max(std(ref), 0.001)``; ``chisquare`` with expected counts ``ref_count · n_cur /
  n_ref`` (a category the reference never had makes the statistic infinite, p = 0);
  ``ks`` as ``scipy.stats.ks_2samp``; ``z`` the two-proportion z-test on the first
  category against the rest.
- Thresholds and verdicts: ``ks`` p ≤ 0.05; ``chisquare`` and ``z`` p < 0.05; ``psi``,
  ``jensenshannon`` and ``wasserstein`` score ≥ 0.1 — a custom threshold keeps each
  method's comparison.

A result's ``value`` is the method's statistic and ``p_value`` its p-value where it has
one; Evidently's single "drift score" is the p-value for ``ks``, ``chisquare`` and ``z``
and the value otherwise (``Statistic.score``).
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats as sps
from scipy.spatial import distance

from keel.errors import InputError
from keel.monitor.stats import CategoricalSample, NumericSample, SortedPair, Statistic

METHODS = ("ks", "chisquare", "z", "psi", "jensenshannon", "wasserstein")
NUMERIC_ONLY = ("ks", "wasserstein")
CATEGORICAL_ONLY = ("chisquare", "z")
DEFAULT_THRESHOLDS = {
    "ks": 0.05,
    "chisquare": 0.05,
    "z": 0.05,
    "psi": 0.1,
    "jensenshannon": 0.1,
    "wasserstein": 0.1,
}
P_VALUE_METHODS = ("ks", "chisquare", "z")
SMALL_REFERENCE = 1000  # Evidently's switch between tests and distances
FEW_VALUES = 20  # up to this many distinct reference values, numbers are binned by value


def check_method(method: str | None) -> None:
    if method is not None and method not in METHODS:
        raise InputError(
            f"'{method}' is not an Evidently-compatible method ({', '.join(METHODS)})",
            {"method": method},
        )


def _verdict(method: str, score: float, threshold: float) -> bool:
    if method == "ks":
        return score <= threshold
    if method in P_VALUE_METHODS:
        return score < threshold
    return score >= threshold


def _statistic(
    column: str, method: str, value: float, p_value: float | None, threshold: float | None
) -> Statistic:
    limit = DEFAULT_THRESHOLDS[method] if threshold is None else threshold
    score = p_value if p_value is not None else value
    return Statistic(
        column, method, float(value), p_value, limit, _verdict(method, score, limit),
        mode="evidently",
    )  # fmt: skip


def _empty(column: str, method: str | None, where: str) -> Statistic:
    name = method or "auto"
    limit = DEFAULT_THRESHOLDS.get(name, math.nan)
    return Statistic(
        column, name, None, None, limit, None,
        f"no finite values in the {where}", mode="evidently",
    )  # fmt: skip


def _distinct(values: np.ndarray) -> np.ndarray:
    """The distinct values of a sorted array."""
    if len(values) == 0:
        return values
    keep = np.empty(len(values), dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    return values[keep]


def _distinct_together(first: np.ndarray, second: np.ndarray, at_most: int) -> int:
    """How many distinct values the two sorted arrays hold together — exactly up to
    ``at_most``; any larger answer only says "more"."""
    one, two = _distinct(first), _distinct(second)
    if len(one) > at_most or len(two) > at_most:
        return max(len(one), len(two))
    return len(np.union1d(one, two))


def _counts(values: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """How many of the sorted ``values`` equal each of the sorted ``keys``."""
    return np.searchsorted(values, keys, side="right") - np.searchsorted(values, keys, "left")


def _fill_zeroes(shares: np.ndarray) -> np.ndarray:
    smallest = shares[shares != 0].min()
    shares = shares.copy()
    shares[shares == 0] = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return shares


def _sturges_edges(ref: NumericSample, cur: NumericSample) -> np.ndarray:
    """``numpy.histogram_bin_edges(concat(ref, cur), bins="sturges")``, from the ends and
    the size of the sorted samples (NumPy's own steps, without building the union)."""
    first = min(ref.values[0], cur.values[0])
    last = max(ref.values[-1], cur.values[-1])
    width = (last - first) / (np.log2(len(ref.values) + len(cur.values)) + 1.0)
    if width:
        if ref.integer and cur.integer and width < 1:
            width = 1
        bins = int(np.ceil((last - first) / width))
    else:
        bins = 1
    return np.linspace(first, last, bins + 1, endpoint=True)


def _histogram(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """``numpy.histogram(values, edges)[0]`` for sorted values inside the edges: bins
    ``[e_i, e_i+1)``, the last one closed."""
    below = np.searchsorted(values, edges, side="left")
    below[-1] = len(values)
    return np.diff(below)


def _binned(
    ref: NumericSample, cur: NumericSample, fill_zeroes: bool
) -> tuple[np.ndarray, np.ndarray]:
    r_values, c_values = ref.values, cur.values
    if len(_distinct(r_values)) > FEW_VALUES:
        edges = _sturges_edges(ref, cur)
        r = _histogram(r_values, edges) / len(r_values)
        c = _histogram(c_values, edges) / len(c_values)
    else:
        keys = np.union1d(_distinct(r_values), _distinct(c_values))
        r = _counts(r_values, keys) / len(r_values)
        c = _counts(c_values, keys) / len(c_values)
    if fill_zeroes:
        r, c = _fill_zeroes(r), _fill_zeroes(c)
    return r, c


def _psi(r: np.ndarray, c: np.ndarray) -> float:
    return float(np.sum((r - c) * np.log(r / c)))


def _js(r: np.ndarray, c: np.ndarray) -> float:
    return float(distance.jensenshannon(r, c))


def _chisquare(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    expected = ref_counts * (cur_counts.sum() / ref_counts.sum())
    with warnings.catch_warnings():  # a category never expected: infinite statistic, p = 0
        warnings.simplefilter("ignore", RuntimeWarning)
        result = sps.chisquare(cur_counts, expected)
    return float(result.statistic), float(result.pvalue)


def _z(ref_counts: np.ndarray, cur_counts: np.ndarray) -> tuple[float, float]:
    """Evidently's two-proportion z-test: the share of values other than the first key."""
    n1, n2 = int(ref_counts.sum()), int(cur_counts.sum())
    if len(ref_counts) == 1 or (
        np.count_nonzero(ref_counts) == 1
        and np.count_nonzero(cur_counts) == 1
        and np.argmax(ref_counts) == np.argmax(cur_counts)
    ):
        return 0.0, 1.0
    p1 = float(n1 - ref_counts[0]) / n1
    p2 = float(n2 - cur_counts[0]) / n2
    pooled = float(p1 * n1 + p2 * n2) / (n1 + n2)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = (p1 - p2) / np.sqrt(pooled * (1 - pooled) * (1.0 / n1 + 1.0 / n2))
    return float(z), float(2 * (1 - sps.norm.cdf(np.abs(z))))


def numeric(
    column: str,
    ref: NumericSample,
    cur: NumericSample,
    method: str | None = None,
    threshold: float | None = None,
) -> Statistic:
    """One numeric column, as Evidently 0.7 would test it."""
    check_method(method)
    if method in CATEGORICAL_ONLY:
        raise InputError(
            f"column '{column}': '{method}' applies to categorical columns only",
            {"column": column, "method": method},
        )
    if len(ref.values) == 0 or len(cur.values) == 0:
        return _empty(column, method, "reference" if len(ref.values) == 0 else "current data")
    if method is None:
        distinct = _distinct_together(ref.values, cur.values, at_most=5)
        if len(ref.values) <= SMALL_REFERENCE:
            method = "ks" if distinct > 5 else "chisquare" if distinct > 2 else "z"
        else:
            method = "wasserstein" if distinct > 5 else "jensenshannon"
    if method == "ks":
        statistic, p_value = SortedPair(ref.values, cur.values).ks()
        return _statistic(column, method, statistic, p_value, threshold)
    if method == "wasserstein":
        norm = max(float(np.std(ref.values)), 0.001)
        value = SortedPair(ref.values, cur.values).wasserstein() / norm
        return _statistic(column, method, value, None, threshold)
    if method in CATEGORICAL_ONLY:
        keys = np.union1d(_distinct(ref.values), _distinct(cur.values))
        ref_counts = _counts(ref.values, keys).astype(np.float64)
        cur_counts = _counts(cur.values, keys).astype(np.float64)
        test = _chisquare if method == "chisquare" else _z
        statistic, p_value = test(ref_counts, cur_counts)
        return _statistic(column, method, statistic, p_value, threshold)
    r, c = _binned(ref, cur, fill_zeroes=method == "psi")
    value = _psi(r, c) if method == "psi" else _js(r, c)
    return _statistic(column, method, value, None, threshold)


def categorical(
    column: str,
    ref: CategoricalSample,
    cur: CategoricalSample,
    method: str | None = None,
    threshold: float | None = None,
) -> Statistic:
    """One categorical column, as Evidently 0.7 would test it."""
    check_method(method)
    if method in NUMERIC_ONLY:
        raise InputError(
            f"column '{column}': '{method}' applies to numeric columns only",
            {"column": column, "method": method},
        )
    ref_n, cur_n = sum(ref.counts.values()), sum(cur.counts.values())
    if ref_n == 0 or cur_n == 0:
        return _empty(column, method, "reference" if ref_n == 0 else "current data")
    keys = sorted(ref.counts.keys() | cur.counts.keys())
    ref_counts = np.array([ref.counts.get(k, 0) for k in keys], dtype=np.float64)
    cur_counts = np.array([cur.counts.get(k, 0) for k in keys], dtype=np.float64)
    if method is None:
        if ref_n <= SMALL_REFERENCE:
            method = "chisquare" if len(keys) > 2 else "z"
        else:
            method = "jensenshannon"
    if method in CATEGORICAL_ONLY:
        test = _chisquare if method == "chisquare" else _z
        statistic, p_value = test(ref_counts, cur_counts)
        return _statistic(column, method, statistic, p_value, threshold)
    r, c = ref_counts / ref_n, cur_counts / cur_n
    if method == "psi":
        r, c = _fill_zeroes(r), _fill_zeroes(c)
        return _statistic(column, method, _psi(r, c), None, threshold)
    return _statistic(column, method, _js(r, c), None, threshold)
