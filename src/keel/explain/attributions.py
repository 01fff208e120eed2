"""Feature attributions for a model's score on one case.

- Linear models (``LinearRegression``, ``LogisticRegression``, ``Ridge``…, alone or after
  linear preprocessing such as ``StandardScaler`` in a ``Pipeline``): exact, ``coef_j ×
  (z_j − reference_j)`` in the model's margin (log-odds for a logistic model), where the
  reference is the flow's ``reference`` values or the scaler's training means.
- Tree ensembles (random forests, gradient boosting, decision trees): exact TreeSHAP
  values from the ``shap`` package (``keel[shap]``).

Other models (ONNX, Python callables) get none; the explanation says so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.errors import MissingExtraError
from keel.policy.text import PROTECTED_TEXT
from keel.signals.adapters import Model, SklearnModel

_LINEAR = (
    "LinearRegression",
    "LogisticRegression",
    "Ridge",
    "Lasso",
    "ElasticNet",
    "RidgeClassifier",
    "SGDClassifier",
    "SGDRegressor",
    "LinearSVC",
    "LinearSVR",
)
_PRE = ("StandardScaler", "MinMaxScaler", "MaxAbsScaler", "RobustScaler")
_TREES = (
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
)


@dataclass(frozen=True)
class Attribution:
    feature: str
    value: float
    contribution: float

    def to_dict(self, hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
        value: Any = PROTECTED_TEXT if self.feature in hidden else self.value
        return {"feature": self.feature, "value": value, "contribution": self.contribution}


@dataclass(frozen=True)
class Attributions:
    method: str  # "linear-exact" | "tree-shap" | "none"
    unit: str
    items: tuple[Attribution, ...]
    note: str = ""

    def to_dict(self, hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
        return {
            "method": self.method,
            "unit": self.unit,
            "note": self.note,
            "items": [a.to_dict(hidden) for a in self.items],
        }


def _split(estimator: Any) -> tuple[list[Any], Any]:
    steps = getattr(estimator, "steps", None)
    if steps:
        return [s[1] for s in steps[:-1]], steps[-1][1]
    return [], estimator


def _positive_index(model: SklearnModel, classes: list[Any]) -> int:
    positive = model.spec.positive_class
    if positive is None:
        return len(classes) - 1
    return next((i for i, c in enumerate(classes) if str(c) == str(positive)), len(classes) - 1)


def _linear(model: SklearnModel, pre: list[Any], final: Any, row: np.ndarray) -> Attributions:
    z = row
    for step in pre:
        z = step.transform(z)
    if model.spec.reference is not None:
        ref = np.array([[model.spec.reference[f] for f in model.features]], dtype=float)
        for step in pre:
            ref = step.transform(ref)
        note = "relative to the flow's reference case"
    elif pre and type(pre[0]).__name__ == "StandardScaler":
        ref = np.zeros_like(z)  # the scaled training mean
        note = "relative to the average training case"
    else:
        ref = np.zeros_like(z)
        note = "relative to all features at zero (set 'reference' on the signal for a baseline)"
    coef = np.asarray(final.coef_, dtype=float)
    unit = "score"
    if coef.ndim == 2:
        classes = list(getattr(final, "classes_", []))
        if coef.shape[0] == 1:
            coef = coef[0] if _positive_index(model, classes) == len(classes) - 1 else -coef[0]
        else:
            coef = coef[_positive_index(model, classes)]
        unit = "log-odds"
    contributions = coef * (z[0] - ref[0])
    items = tuple(
        Attribution(f, float(row[0][i]), float(contributions[i]))
        for i, f in enumerate(model.features)
    )
    return Attributions("linear-exact", unit, items, note)


def _tree(model: SklearnModel, final: Any, row: np.ndarray) -> Attributions:
    try:
        import shap  # noqa: PLC0415 - optional extra, slow to import
    except ImportError as exc:
        raise MissingExtraError("shap", "attributions for tree models") from exc
    explainer = shap.TreeExplainer(final)
    values = np.asarray(explainer.shap_values(row))
    classes = list(getattr(final, "classes_", []))
    if values.ndim == 3:  # (rows, features, classes)
        values = values[0, :, _positive_index(model, classes)]
    elif values.ndim == 2:
        values = values[0]
        if classes and _positive_index(model, classes) != len(classes) - 1:
            values = -values  # binary margin models explain the last class
    unit = (
        "log-odds"
        if type(final).__name__.startswith(("GradientBoosting", "HistGradient"))
        else ("probability" if classes else "score")
    )
    items = tuple(
        Attribution(f, float(row[0][i]), float(values[i])) for i, f in enumerate(model.features)
    )
    return Attributions("tree-shap", unit, items, "exact TreeSHAP, relative to the training data")


def attribute(model: Model, row: np.ndarray) -> Attributions:
    if not isinstance(model, SklearnModel):
        return Attributions(
            "none", "", (), f"attributions are not available for {model.kind} models"
        )
    pre, final = _split(model.estimator)
    name = type(final).__name__
    if name in _LINEAR and all(type(p).__name__ in _PRE for p in pre):
        return _linear(model, pre, final, row)
    if name in _TREES and not pre:
        return _tree(model, final, row)
    return Attributions("none", "", (), f"attributions are not available for {name}")
