"""Feature attributions for a model's score on one case, one per original feature.

A scikit-learn ``Pipeline`` is explained in the space its final estimator sees (after the
``ColumnTransformer``, encoders and scalers), and each transformed column's contribution is
summed back to the input feature it came from, so a one-hot encoded feature is one
attribution.

- Linear final estimators (``LogisticRegression``, ``Ridge``…): exact, ``coef_k ×
  (z_k − reference_k)`` in the model's margin (log-odds for a logistic model). The
  reference is the flow's ``reference`` case run through the same preprocessing; without
  one it is zero in the transformed space (the training mean of a standardised feature; no
  category of a one-hot encoded one). The contributions sum to margin(case) − ``baseline``,
  the margin of the reference.
- Tree ensembles (random forests, gradient boosting, decision trees): exact TreeSHAP values
  from the ``shap`` package (``keel[shap]``) on the transformed row. They sum to the model's
  output (log-odds for gradient boosting, probability for forests) minus ``baseline``, the
  average output over the training data.

Where no attribution can be computed (ONNX, Python functions, a step that mixes features,
another kind of estimator), the result says why in ``note``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.errors import MissingExtraError
from keel.policy.text import PROTECTED_TEXT
from keel.signals.adapters import Model, SklearnModel
from keel.signals.loading import loaded
from keel.signals.rows import Rows

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
# Steps whose every output column comes from one input column: their contributions can be
# summed back per input feature. Scalers keep one column per input; encoders make several,
# each named after its input.
_PER_COLUMN = (
    "StandardScaler",
    "MinMaxScaler",
    "MaxAbsScaler",
    "RobustScaler",
    "OneHotEncoder",
    "OrdinalEncoder",
    "SimpleImputer",
    "KBinsDiscretizer",
    "PowerTransformer",
    "QuantileTransformer",
    "Binarizer",
)


@dataclass(frozen=True)
class Attribution:
    feature: str
    value: float | str
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
    # The output the contributions are measured from: they sum to output − baseline.
    baseline: float | None = None

    def to_dict(self, hidden: frozenset[str] = frozenset()) -> dict[str, Any]:
        return {
            "method": self.method,
            "unit": self.unit,
            "baseline": self.baseline,
            "note": self.note,
            "items": [a.to_dict(hidden) for a in self.items],
        }


class _Unavailable(Exception):
    """Why this model's attributions cannot be computed (shown to the reader)."""


def _none(reason: str) -> Attributions:
    return Attributions("none", "", (), f"not available — {reason}")


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


def _indices(columns: Any, names: list[str]) -> list[int]:
    """The positions a ColumnTransformer's column selection picks among ``names``."""
    if isinstance(columns, str | int):
        columns = [columns]
    if isinstance(columns, slice):
        return list(range(len(names)))[columns]
    if np.asarray(columns).dtype == bool:
        return [int(i) for i in np.flatnonzero(np.asarray(columns))]
    return [names.index(c) if isinstance(c, str) else int(c) for c in columns]


def _prefix_owner(output: str, names: list[str], owners: list[int]) -> int:
    """The input an encoder's output column is named after (``checking_A11`` → checking)."""
    matches = [i for i, n in enumerate(names) if output.startswith(f"{n}_")]
    if not matches:
        raise _Unavailable(f"cannot tell which input feature the column '{output}' comes from")
    return owners[max(matches, key=lambda i: len(names[i]))]


def _through(step: Any, names: list[str], owners: list[int]) -> tuple[list[str], list[int]]:
    """Column names and owning input feature after ``step``, given them before it."""
    if step is None or (isinstance(step, str) and step == "passthrough"):
        return names, owners
    kind = type(step).__name__
    if kind == "FunctionTransformer" and step.func is None:  # how remainder= passes through
        return names, owners
    if kind == "Pipeline":
        for _, inner in step.steps:
            names, owners = _through(inner, names, owners)
        return names, owners
    if kind == "ColumnTransformer":
        return _through_columns(step, names, owners)
    if kind not in _PER_COLUMN:
        raise _Unavailable(
            f"the pipeline step {kind} may combine features, so its output cannot be "
            "attributed back to them"
        )
    out = [str(n) for n in step.get_feature_names_out(names)]
    if len(out) == len(names):
        return out, owners
    return out, [_prefix_owner(o, names, owners) for o in out]


def _through_columns(step: Any, names: list[str], owners: list[int]) -> tuple[list[str], list[int]]:
    slices: dict[str, slice] = step.output_indices_
    width = max((s.stop for s in slices.values()), default=0)
    out_names = [""] * width
    out_owners = [-1] * width
    for name, transformer, columns in step.transformers_:
        if isinstance(transformer, str) and transformer == "drop":
            continue
        picked = _indices(columns, names)
        sub_names, sub_owners = _through(
            transformer, [names[i] for i in picked], [owners[i] for i in picked]
        )
        where = slices[name]
        if where.stop - where.start != len(sub_names):
            raise _Unavailable(f"the columns of transformer '{name}' could not be traced")
        out_names[where] = sub_names
        out_owners[where] = sub_owners
    if -1 in out_owners:
        raise _Unavailable("some transformed columns could not be traced to an input feature")
    return out_names, out_owners


def _transformed(model: SklearnModel, pre: list[Any], rows: Rows) -> np.ndarray:
    z = model.model_input(rows)
    for step in pre:
        z = step.transform(z)
    if hasattr(z, "toarray"):  # a sparse one-hot matrix
        z = z.toarray()
    return np.asarray(z, dtype=float)


def _summed(
    model: SklearnModel, rows: Rows, owners: list[int], per_column: np.ndarray
) -> tuple[Attribution, ...]:
    totals = np.zeros(len(model.features))
    np.add.at(totals, np.asarray(owners, dtype=int), per_column)
    values = rows.mappings()[0]
    return tuple(Attribution(f, values[f], float(totals[i])) for i, f in enumerate(model.features))


def _linear(
    model: SklearnModel, pre: list[Any], final: Any, rows: Rows, owners: list[int]
) -> Attributions:
    z = _transformed(model, pre, rows)[0]
    if model.spec.reference is not None:
        case = dict(model.spec.reference)
        reference = Rows.of(model.features, model.spec.categories, [case])
        ref = _transformed(model, pre, reference)[0]
        note = "relative to the flow's reference case"
    elif pre and type(pre[0]).__name__ == "StandardScaler":
        ref = np.zeros_like(z)  # the scaled training mean
        note = "relative to the average training case"
    elif pre:
        ref = np.zeros_like(z)
        note = (
            "relative to zero after preprocessing: the training mean of standardised "
            "features, no category of one-hot encoded ones (set 'reference' on the signal "
            "for a baseline case)"
        )
    else:
        ref = np.zeros_like(z)
        note = "relative to all features at zero (set 'reference' on the signal for a baseline)"
    coef = np.asarray(final.coef_, dtype=float)
    intercept = np.atleast_1d(np.asarray(getattr(final, "intercept_", 0.0), dtype=float))
    unit = "score"
    if coef.ndim == 2:
        classes = list(getattr(final, "classes_", []))
        if coef.shape[0] == 1:
            sign = 1.0 if _positive_index(model, classes) == len(classes) - 1 else -1.0
            coef, intercept = sign * coef[0], sign * intercept
        else:
            index = _positive_index(model, classes)
            coef, intercept = coef[index], intercept[index : index + 1]
        unit = "log-odds"
    contributions = coef * (z - ref)
    baseline = float(intercept[0] + coef @ ref)
    items = _summed(model, rows, owners, contributions)
    return Attributions("linear-exact", unit, items, note, baseline)


def _tree(
    final: Any, model: SklearnModel, z: np.ndarray, rows: Rows, owners: list[int]
) -> Attributions:
    try:
        import shap  # noqa: PLC0415 - optional extra, slow to import
    except ImportError as exc:
        raise MissingExtraError("shap", "attributions for tree models") from exc
    explainer = shap.TreeExplainer(final)
    values = np.asarray(explainer.shap_values(z))
    expected = np.atleast_1d(np.asarray(explainer.expected_value, dtype=float))
    classes = list(getattr(final, "classes_", []))
    if values.ndim == 3:  # (rows, features, classes)
        index = _positive_index(model, classes)
        values, base = values[0, :, index], float(expected[index])
    else:
        values, base = values[0], float(expected[0])
        if classes and _positive_index(model, classes) != len(classes) - 1:
            values, base = -values, -base  # binary margin models explain the last class
    unit = (
        "log-odds"
        if type(final).__name__.startswith(("GradientBoosting", "HistGradient"))
        else ("probability" if classes else "score")
    )
    items = _summed(model, rows, owners, values)
    note = "exact TreeSHAP, relative to the average output over the training data"
    return Attributions("tree-shap", unit, items, note, base)


def attribute(model: Model, rows: Rows) -> Attributions:
    """The attributions of the one case in ``rows`` to ``model``'s score (loading it first
    if it is not loaded yet: attributions read the estimator itself)."""
    model = loaded(model)
    if not isinstance(model, SklearnModel):
        return _none(f"Keel computes attributions for scikit-learn models, not {model.kind} models")
    pre, final = _split(model.estimator)
    name = type(final).__name__
    if name not in _LINEAR and name not in _TREES:
        return _none(f"Keel computes attributions for linear and tree models, not {name}")
    features = list(model.names or model.features)
    try:
        _, owners = _through_steps(pre, features)
        if name in _LINEAR:
            return _linear(model, pre, final, rows, owners)
        return _tree(final, model, _transformed(model, pre, rows), rows, owners)
    except _Unavailable as exc:
        return _none(str(exc))


def _through_steps(pre: list[Any], names: list[str]) -> tuple[list[str], list[int]]:
    owners = list(range(len(names)))
    for step in pre:
        names, owners = _through(step, names, owners)
    return names, owners
