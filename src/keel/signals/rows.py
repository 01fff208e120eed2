"""Feature rows as a model receives them: one column per signal feature, in the signal's order.

Numbers and booleans become floats; categorical features (``type: string`` fields with
``allowed`` values) stay text. Each adapter takes the rows in the form its model was
trained on: a float matrix for an estimator fitted on an array, a pandas DataFrame with the
training column names for one fitted on a DataFrame, per-input tensors for ONNX, and a
``{feature: value}`` mapping per case for a Python function.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class RowError(ValueError):
    """A case lacks a feature or gives it in the wrong kind (names the feature, never the
    value: the message may be recorded)."""

    def __init__(self, feature: str, wanted: str) -> None:
        super().__init__(f"feature missing or not {wanted}: '{feature}'")
        self.feature = feature


@dataclass(frozen=True)
class Rows:
    """``count`` cases, as one array per feature (float64, or object holding ``str``)."""

    features: tuple[str, ...]
    columns: Mapping[str, np.ndarray]
    count: int

    @classmethod
    def of(
        cls,
        features: Sequence[str],
        categorical: Mapping[str, Any],
        cases: Sequence[Mapping[str, Any]],
    ) -> Rows:
        """The rows of ``cases``; a feature named in ``categorical`` is text, any other a
        number. Raise ``RowError`` naming the first feature a case lacks or gives wrongly."""
        columns: dict[str, np.ndarray] = {}
        for feature in features:
            if feature in categorical:
                values = [case.get(feature) for case in cases]
                if not all(isinstance(v, str) for v in values):
                    raise RowError(feature, "text")
                columns[feature] = np.array(values, dtype=object)
                continue
            try:
                numbers = [float(case[feature]) for case in cases]
            except (KeyError, TypeError, ValueError) as exc:
                raise RowError(feature, "numeric") from exc
            columns[feature] = np.array(numbers, dtype=np.float64)
        return cls(tuple(features), columns, len(cases))

    @classmethod
    def numeric(cls, features: Sequence[str], matrix: np.ndarray) -> Rows:
        """Rows of an all-numeric cases × features matrix."""
        data = np.asarray(matrix, dtype=np.float64)
        return cls(tuple(features), {f: data[:, i] for i, f in enumerate(features)}, len(data))

    @property
    def categorical(self) -> tuple[str, ...]:
        return tuple(f for f in self.features if self.columns[f].dtype == object)

    def __len__(self) -> int:
        return self.count

    def matrix(self) -> np.ndarray:
        """The cases × features float matrix (numeric features only)."""
        if self.categorical:
            raise ValueError(f"text features {list(self.categorical)} cannot form a matrix")
        if not self.features:
            return np.zeros((self.count, 0), dtype=np.float64)
        return np.column_stack([self.columns[f] for f in self.features])

    def frame(self, names: Sequence[str] | None = None) -> Any:
        """A DataFrame: one column per feature, under ``names`` (the model's training
        names) when given; numbers float64, text as object columns of ``str``."""
        import pandas as pd  # noqa: PLC0415 - only models trained on a DataFrame need it

        names = list(names) if names is not None else list(self.features)
        return pd.DataFrame(
            {
                n: pd.Series(self.columns[f], dtype=self.columns[f].dtype)
                for n, f in zip(names, self.features, strict=True)
            }
        )

    def mappings(self) -> list[dict[str, Any]]:
        """One ``{feature: value}`` per case: floats, and ``str`` for text features."""
        out: list[dict[str, Any]] = [{} for _ in range(self.count)]
        for feature in self.features:
            for case, value in zip(out, self.columns[feature].tolist(), strict=True):
                case[feature] = value
        return out
