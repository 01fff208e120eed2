"""Drift statistics between a reference sample and a current one, column by column.

Each function takes the reference and current values of one column (NumPy arrays) and
returns a ``Statistic``: the value, the p-value where the method has one, the threshold and
the verdict. Missing values (None, NaN) are counted apart and left out of every method but
``missing_share``; infinities in a numeric column are left out too and counted.

Numeric columns (``r`` reference, ``c`` current):

- ``ks`` — two-sample Kolmogorov–Smirnov, ``scipy.stats.ks_2samp(r, c)`` (statistic
  ``D = sup |F_r − F_c|``; SciPy's exact p-value for small samples, asymptotic otherwise).
  Drift when ``p < 0.05``.
- ``psi`` — population stability index over 10 bins cut at the reference's deciles,
  ``(−∞, q1], (q1, q2], …, (q9, ∞)`` (equal deciles merge):
  ``Σ (c_i − r_i) · ln(c_i / r_i)`` with each share floored at 1e-4. Drift when ``PSI ≥ 0.1``.
- ``wasserstein`` — ``scipy.stats.wasserstein_distance(r, c) / std(r)`` (population std; the
  distance in reference standard deviations). Drift when ``≥ 0.1``.
- ``jensenshannon`` — Jensen–Shannon **distance**, base 2 (so in [0, 1]), of the shares in
  the PSI bins: ``scipy.spatial.distance.jensenshannon(r, c, base=2)``. Drift when ``≥ 0.1``.

Categorical columns (values compared as text):

- ``chisquare`` — Pearson's goodness of fit of the current counts to the reference shares
  over the categories of both (shares floored at 1e-4 and renormalised):
  ``scipy.stats.chisquare(counts, expected)``. Drift when ``p < 0.05``.
- ``psi`` and ``jensenshannon`` — as above, over the categories' shares.
- ``new_categories`` — the share of current values whose category the reference never had.
  Drift when ``> 0``.

Every column: ``missing_share`` — current share of missing values minus the reference's.
Drift when the absolute change is ``≥ 0.05``.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import stats as sps
from scipy.spatial import distance

from keel.errors import InputError

EPSILON = 1e-4
BINS = 10
NUMERIC_METHODS = ("ks", "psi", "wasserstein", "jensenshannon")
CATEGORICAL_METHODS = ("chisquare", "psi", "jensenshannon", "new_categories")
THRESHOLDS = {
    "ks": 0.05,
    "chisquare": 0.05,
    "psi": 0.1,
    "wasserstein": 0.1,
    "jensenshannon": 0.1,
    "new_categories": 0.0,
    "missing_share": 0.05,
}


@dataclass(frozen=True)
class Statistic:
    column: str
    method: str
    value: float | None  # None: the method cannot be computed here (see ``note``)
    p_value: float | None
    threshold: float
    drift: bool | None
    note: str = ""
    mode: str = "keel"  # "keel", or "evidently" for Evidently 0.7's recipe (keel.monitor.compat)

    @property
    def score(self) -> float | None:
        """The one figure a verdict rests on: the p-value where there is one, else the value."""
        return self.p_value if self.p_value is not None else self.value

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _verdict(method: str, value: float, p_value: float | None) -> bool:
    threshold = THRESHOLDS[method]
    if p_value is not None:
        return p_value < threshold
    if method == "new_categories":
        return value > threshold
    return value >= threshold


def _result(column: str, method: str, value: float, p_value: float | None = None) -> Statistic:
    return Statistic(
        column, method, float(value), p_value, THRESHOLDS[method], _verdict(method, value, p_value)
    )


def _none(column: str, method: str, note: str) -> Statistic:
    return Statistic(column, method, None, None, THRESHOLDS[method], None, note)


@dataclass(frozen=True)
class NumericSample:
    """A numeric column as the statistics need it: its finite values sorted, and counts of
    missing and infinite ones (a reference profile stores exactly this). ``integer`` says
    the column held integers (Evidently's binning treats them apart)."""

    values: np.ndarray
    missing: int
    infinite: int
    rows: int
    integer: bool = False

    @classmethod
    def of(cls, column: str, values: Sequence[Any] | np.ndarray) -> NumericSample:
        array = as_array(values)
        finite, missing, infinite = numeric_values(column, array)
        return cls(np.sort(finite), missing, infinite, len(array), bool(array.dtype.kind in "iu"))


@dataclass(frozen=True)
class CategoricalSample:
    """A categorical column as the statistics need it: counts per category (as text), and
    the count of missing values."""

    counts: dict[str, int]
    missing: int
    rows: int

    @classmethod
    def of(cls, values: Sequence[Any] | np.ndarray) -> CategoricalSample:
        if hasattr(values, "value_counts") and hasattr(values, "null_count"):  # Arrow array
            counts: Counter[str] = Counter()
            for entry in values.value_counts().to_pylist():
                category = _category(entry["values"])
                if category is not None:
                    counts[category] += entry["counts"]
            return cls(dict(counts), len(values) - sum(counts.values()), len(values))
        counts = Counter(c for c in map(_category, values) if c is not None)
        present = sum(counts.values())
        return cls(dict(counts), len(values) - present, len(values))


def as_array(values: Any) -> np.ndarray:
    """NumPy values of a column given as a NumPy array, a sequence or an Arrow array (whose
    nulls become NaN in numeric columns, None otherwise)."""
    if isinstance(values, np.ndarray):
        return values
    if hasattr(values, "to_numpy") and hasattr(values, "null_count"):  # Arrow array
        array = values.to_numpy(zero_copy_only=False)
        return np.asarray(array)
    return np.asarray([np.nan if v is None else v for v in values])


def numeric_values(column: str, values: Sequence[Any] | np.ndarray) -> tuple[np.ndarray, int, int]:
    """The finite values of a numeric column, and how many were missing and infinite.

    Raises ``InputError`` naming the column if a value is not a number."""
    try:
        array = np.asarray(as_array(values), dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(
            f"column '{column}' is numeric in the reference but holds non-numbers here",
            {"column": column},
        ) from None
    missing = np.isnan(array)
    infinite = np.isinf(array)
    return array[~missing & ~infinite], int(missing.sum()), int(infinite.sum())


def _edges(reference: np.ndarray) -> np.ndarray:
    """Inner bin edges at the reference's deciles (duplicates merged)."""
    quantiles = np.quantile(reference, np.linspace(0, 1, BINS + 1)[1:-1])
    return np.unique(quantiles)


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    # Bins (−∞, e1], (e1, e2], …, (ek, ∞): a constant reference still splits "equal" from "more".
    counts = np.bincount(np.searchsorted(edges, values, side="left"), minlength=len(edges) + 1)
    return counts / max(1, len(values))


def _psi(reference: np.ndarray, current: np.ndarray) -> float:
    r = np.maximum(reference, EPSILON)
    c = np.maximum(current, EPSILON)
    return float(np.sum((c - r) * np.log(c / r)))


def numeric_drift(
    column: str,
    reference: NumericSample | Sequence[Any] | np.ndarray,
    current: NumericSample | Sequence[Any] | np.ndarray,
    methods: Sequence[str] = NUMERIC_METHODS,
) -> list[Statistic]:
    """Every requested method for one numeric column, plus ``missing_share``."""
    r_sample = (
        reference if isinstance(reference, NumericSample) else NumericSample.of(column, reference)
    )
    c_sample = current if isinstance(current, NumericSample) else NumericSample.of(column, current)
    ref, cur = r_sample.values, c_sample.values
    pair = SortedPair(ref, cur)
    out = [missing_share(column, r_sample.missing, r_sample.rows, c_sample.missing, c_sample.rows)]
    for method in methods:
        if method not in NUMERIC_METHODS:
            raise InputError(
                f"'{method}' is not a method for numeric columns ({', '.join(NUMERIC_METHODS)})",
                {"column": column, "method": method},
            )
        if len(ref) == 0 or len(cur) == 0:
            where = "reference" if len(ref) == 0 else "current data"
            out.append(_none(column, method, f"no finite values in the {where}"))
            continue
        if method == "ks":
            statistic, p_value = pair.ks()
            out.append(_result(column, method, statistic, p_value))
        elif method == "wasserstein":
            spread = float(np.std(ref))
            if spread == 0.0:
                out.append(_none(column, method, "the reference is constant: no scale"))
                continue
            out.append(_result(column, method, pair.wasserstein() / spread))
        else:
            edges = _edges(ref)
            r, c = _shares(ref, edges), _shares(cur, edges)
            if method == "psi":
                out.append(_result(column, method, _psi(r, c)))
            else:
                out.append(_result(column, method, _js(r, c)))
    return out


class SortedPair:
    """Two sorted samples and the difference of their empirical CDFs at every value of
    either, computed once and shared by KS and Wasserstein.

    These are SciPy's own figures (``ks_2samp``; ``wasserstein_distance``'s
    ``_cdf_distance``) without SciPy's sorting and binary searches: the samples come
    sorted, one stable merge orders both, and a running count of reference values gives
    both CDFs. At the last of equal values the counts are exactly the ``searchsorted(...,
    side="right")`` counts SciPy divides; inside a run of equal values they fall short, but
    there the distance between neighbours is 0 and KS reads only the run's last position.
    Same integers, same divisions, same order of summation: the same result to the bit."""

    EXACT_UP_TO = 10_000  # ks_2samp's 'auto' mode: exact p-values up to this many values

    def __init__(self, reference: np.ndarray, current: np.ndarray) -> None:
        self.reference, self.current = reference, current
        self._diffs: tuple[np.ndarray, np.ndarray] | None = None

    def diffs(self) -> tuple[np.ndarray, np.ndarray]:
        """Every value of both samples in order, and F_ref − F_cur at each."""
        if self._diffs is None:
            both = np.concatenate([self.reference, self.current])
            order = np.argsort(both, kind="stable")  # two sorted runs: one linear merge
            merged = both[order]
            n1, n2 = len(self.reference), len(self.current)
            below_ref = np.cumsum(order < n1)
            below_cur = np.arange(1, n1 + n2 + 1) - below_ref
            self._diffs = merged, below_ref / n1 - below_cur / n2
        return self._diffs

    def ks(self) -> tuple[float, float]:
        n1, n2 = len(self.reference), len(self.current)
        if max(n1, n2) <= self.EXACT_UP_TO:
            result = sps.ks_2samp(self.reference, self.current)
            return float(result.statistic), float(result.pvalue)
        merged, diffs = self.diffs()
        last_of_run = np.empty(len(merged), dtype=bool)
        np.not_equal(merged[:-1], merged[1:], out=last_of_run[:-1])
        last_of_run[-1] = True
        at_values = diffs[last_of_run]
        low, high = float(np.clip(-np.min(at_values), 0, 1)), float(np.max(at_values))
        statistic = low if low > high else high
        m, n = sorted([float(n1), float(n2)], reverse=True)
        p_value = np.clip(sps.kstwo.sf(statistic, np.round(m * n / (m + n))), 0, 1)
        return statistic, float(p_value)

    def wasserstein(self) -> float:
        merged, diffs = self.diffs()
        return float(np.vecdot(np.abs(diffs[:-1]), np.diff(merged)))


def _js(r: np.ndarray, c: np.ndarray) -> float:
    value = distance.jensenshannon(r, c, base=2)
    return 0.0 if math.isnan(value) else float(value)


def _category(value: Any) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


def categorical_drift(
    column: str,
    reference: CategoricalSample | Sequence[Any] | np.ndarray,
    current: CategoricalSample | Sequence[Any] | np.ndarray,
    methods: Sequence[str] = CATEGORICAL_METHODS,
) -> list[Statistic]:
    """Every requested method for one categorical column, plus ``missing_share``."""
    r_sample = (
        reference if isinstance(reference, CategoricalSample) else CategoricalSample.of(reference)
    )
    c_sample = current if isinstance(current, CategoricalSample) else CategoricalSample.of(current)
    ref, cur = Counter(r_sample.counts), Counter(c_sample.counts)
    ref_n, cur_n = sum(ref.values()), sum(cur.values())
    out = [missing_share(column, r_sample.missing, r_sample.rows, c_sample.missing, c_sample.rows)]
    categories = sorted(ref.keys() | cur.keys())
    for method in methods:
        if method not in CATEGORICAL_METHODS:
            raise InputError(
                f"'{method}' is not a method for categorical columns "
                f"({', '.join(CATEGORICAL_METHODS)})",
                {"column": column, "method": method},
            )
        if ref_n == 0 or cur_n == 0:
            where = "reference" if ref_n == 0 else "current data"
            out.append(_none(column, method, f"every value is missing in the {where}"))
            continue
        r = np.array([ref[k] for k in categories], dtype=np.float64) / ref_n
        c = np.array([cur[k] for k in categories], dtype=np.float64) / cur_n
        if method == "chisquare":
            if len(categories) < 2:
                out.append(_none(column, method, "a single category: nothing to compare"))
                continue
            expected = np.maximum(r, EPSILON)
            expected = expected / expected.sum() * cur_n
            counts = np.array([cur[k] for k in categories], dtype=np.float64)
            result = sps.chisquare(counts, expected)
            out.append(_result(column, method, result.statistic, float(result.pvalue)))
        elif method == "psi":
            out.append(_result(column, method, _psi(r, c)))
        elif method == "jensenshannon":
            out.append(_result(column, method, _js(r, c)))
        else:
            unseen = sum(n for k, n in cur.items() if k not in ref)
            stat = _result(column, method, unseen / cur_n)
            names = sorted(k for k in cur if k not in ref)
            note = f"new: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}" if names else ""
            out.append(Statistic(**{**stat.to_dict(), "note": note}))
    return out


def missing_share(
    column: str, ref_missing: int, ref_n: int, cur_missing: int, cur_n: int
) -> Statistic:
    if cur_n == 0 or ref_n == 0:
        where = "reference" if ref_n == 0 else "current data"
        raise InputError(f"column '{column}': the {where} has no rows", {"column": column})
    change = cur_missing / cur_n - ref_missing / ref_n
    return Statistic(
        column,
        "missing_share",
        change,
        None,
        THRESHOLDS["missing_share"],
        abs(change) >= THRESHOLDS["missing_share"],
    )
