"""Drift of embeddings: one vector per row, compared as a whole.

An embedding column is a Parquet list (or fixed-size list) of numbers, the same length in
every row, or a 2-D NumPy array; a null row counts as missing. Three statistics, with the
defaults of Evidently 0.7's embedding methods:

- ``mean_distance`` — the Euclidean distance between the reference's and the current
  data's mean vectors; drift at ≥ 0.2;
- ``domain_classifier`` — the ROC AUC with which a logistic regression tells current rows
  from reference rows, out of fold (two stratified folds, seeded), on at most 5,000 rows a
  side drawn with a fixed seed; 0.5 is no better than chance; drift at ≥ 0.55. Needs
  scikit-learn (``keel[sklearn]``);
- ``drifted_components`` — the share of components whose normalised Wasserstein distance
  (``keel.monitor.stats``) is ≥ 0.1; drift when the share is ≥ 0.2.

A profile keeps the reference's mean over every row and a seeded sample of at most 5,000
rows (float32), so a comparison never rereads the reference.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.errors import InputError, MissingExtraError
from keel.monitor.stats import NumericSample, SortedPair, Statistic

EMBEDDING_METHODS = ("mean_distance", "domain_classifier", "drifted_components")
THRESHOLDS = {"mean_distance": 0.2, "domain_classifier": 0.55, "drifted_components": 0.2}
COMPONENT_THRESHOLD = 0.1
SAMPLE_ROWS = 5_000
SEED = 20_261_124


@dataclass(frozen=True)
class EmbeddingSample:
    """What the statistics need of an embedding column."""

    mean: np.ndarray  # float64, one value per component, over every present row
    sample: np.ndarray  # float32, at most SAMPLE_ROWS present rows, drawn with SEED
    missing: int
    rows: int

    @property
    def dimensions(self) -> int:
        return int(self.mean.shape[0])

    @classmethod
    def of(cls, column: str, values: Any) -> EmbeddingSample:
        matrix = as_matrix(column, values)
        present = ~np.isnan(matrix).any(axis=1)
        kept = matrix[present]
        if len(kept) == 0:
            mean = np.full(matrix.shape[1], np.nan)
        else:
            mean = kept.mean(axis=0, dtype=np.float64)
        return cls(mean, _draw(kept), int((~present).sum()), int(matrix.shape[0]))


def _draw(rows: np.ndarray) -> np.ndarray:
    if len(rows) > SAMPLE_ROWS:
        picked = np.sort(np.random.default_rng(SEED).choice(len(rows), SAMPLE_ROWS, replace=False))
        rows = rows[picked]
    return np.ascontiguousarray(rows, dtype=np.float32)


def is_embedding(values: Any) -> bool:
    """A list-typed Arrow column, a 2-D array, or a sequence of vectors."""
    arrow_type = getattr(values, "type", None)
    if arrow_type is not None and not isinstance(values, np.ndarray):
        import pyarrow.types as pat  # noqa: PLC0415 - Arrow input means the extra is there

        return bool(
            pat.is_list(arrow_type) or pat.is_large_list(arrow_type)
            or pat.is_fixed_size_list(arrow_type)
        )  # fmt: skip
    if isinstance(values, np.ndarray):
        return values.ndim == 2
    first = next((v for v in values if v is not None), None) if len(values) else None
    return isinstance(first, list | tuple | np.ndarray)


def as_matrix(column: str, values: Any) -> np.ndarray:
    """Rows × components, float64; a missing row is all NaN."""
    if isinstance(values, np.ndarray) and values.ndim == 2:
        return values.astype(np.float64, copy=False)
    if hasattr(values, "to_pylist") or hasattr(values, "combine_chunks"):
        rows = values.to_pylist()
    else:
        rows = list(values)
    lengths = {len(r) for r in rows if r is not None}
    if len(lengths) > 1:
        raise InputError(
            f"embedding column '{column}' has vectors of {len(lengths)} different lengths "
            f"({', '.join(str(n) for n in sorted(lengths)[:5])})",
            {"column": column},
        )
    if not lengths or 0 in lengths:
        raise InputError(f"embedding column '{column}' holds no vectors", {"column": column})
    width = lengths.pop()
    matrix = np.full((len(rows), width), np.nan)
    for i, row in enumerate(rows):
        if row is not None:
            matrix[i] = [np.nan if x is None else x for x in row]
    return matrix


def embedding_drift(
    column: str,
    reference: EmbeddingSample,
    current: EmbeddingSample,
    methods: Sequence[str] = EMBEDDING_METHODS,
) -> list[Statistic]:
    """Every requested method for one embedding column (no ``missing_share``: the caller
    adds it)."""
    if reference.dimensions != current.dimensions:
        raise InputError(
            f"embedding column '{column}' has {reference.dimensions} components in the "
            f"reference and {current.dimensions} in the current data",
            {"column": column},
        )
    out = []
    for method in methods:
        if method not in EMBEDDING_METHODS:
            raise InputError(
                f"'{method}' is not a method for embeddings ({', '.join(EMBEDDING_METHODS)})",
                {"column": column, "method": method},
            )
        threshold = THRESHOLDS[method]
        if len(reference.sample) < 2 or len(current.sample) < 2:
            where = "reference" if len(reference.sample) < 2 else "current data"
            note = f"fewer than 2 vectors in the {where}"
            out.append(Statistic(column, method, None, None, threshold, None, note))
            continue
        note = ""
        if method == "mean_distance":
            value = float(np.linalg.norm(reference.mean - current.mean))
        elif method == "domain_classifier":
            value = domain_auc(reference.sample, current.sample)
        else:
            value, note = _drifted_components(reference.sample, current.sample)
        out.append(Statistic(column, method, value, None, threshold, value >= threshold, note))
    return out


def domain_auc(reference: np.ndarray, current: np.ndarray) -> float:
    """Out-of-fold ROC AUC of a classifier telling ``current`` rows from ``reference`` rows."""
    try:
        from sklearn.linear_model import LogisticRegression  # noqa: PLC0415 - optional extra
        from sklearn.metrics import roc_auc_score  # noqa: PLC0415
        from sklearn.model_selection import StratifiedKFold, cross_val_predict  # noqa: PLC0415
        from sklearn.pipeline import make_pipeline  # noqa: PLC0415
        from sklearn.preprocessing import StandardScaler  # noqa: PLC0415
    except ImportError:
        raise MissingExtraError("sklearn", "the domain-classifier drift of embeddings") from None
    features = np.vstack([reference, current]).astype(np.float64)
    labels = np.concatenate([np.zeros(len(reference)), np.ones(len(current))])
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=SEED)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    scores = cross_val_predict(model, features, labels, cv=folds, method="predict_proba")
    return float(roc_auc_score(labels, scores[:, 1]))


def _drifted_components(reference: np.ndarray, current: np.ndarray) -> tuple[float, str]:
    drifted = 0
    for j in range(reference.shape[1]):
        ref, cur = np.sort(reference[:, j]), np.sort(current[:, j])
        distance = SortedPair(ref, cur).wasserstein() / _spread(ref)
        drifted += distance >= COMPONENT_THRESHOLD
    total = reference.shape[1]
    return drifted / total, f"{drifted} of {total} components drifted"


def _spread(values: np.ndarray) -> float:
    std = float(np.std(values))
    return std if std > 0 else 1.0


def projections(reference: EmbeddingSample, current: EmbeddingSample) -> tuple[Any, Any]:
    """Both samples projected on the line between the two means (the direction the data
    moved along), as numeric samples: what a report's chart shows of an embedding."""
    direction = current.mean - reference.mean
    norm = float(np.linalg.norm(direction))
    if not np.isfinite(norm) or norm == 0:
        direction = np.zeros_like(reference.mean)
        direction[0] = 1.0
    else:
        direction = direction / norm
    return (
        NumericSample.of("projection", reference.sample.astype(np.float64) @ direction),
        NumericSample.of("projection", current.sample.astype(np.float64) @ direction),
    )
