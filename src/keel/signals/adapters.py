"""Model adapters: scikit-learn (skops or joblib files), ONNX (onnxruntime), Python callables.

Each adapter turns feature rows (``Rows``) into one ``ModelOutput`` (score, confidence,
label) per case and names its version: the SHA-256 of the artifact file, so a retrained
model is a new version. What each kind of model receives:

- a scikit-learn estimator fitted on a DataFrame (it has ``feature_names_in_``): a
  DataFrame, one row per case, with the training column names; numbers as float64 and
  categorical features as ``str`` in object columns, so a ``Pipeline`` with a
  ``ColumnTransformer`` and encoders runs exactly as it was trained;
- one fitted on an array: a float matrix (numeric features only);
- an ONNX graph: one tensor per input when it has one input per feature (text for string
  inputs), otherwise one float matrix;
- a Python function: a ``{feature: value}`` mapping (floats, and ``str`` for text).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import io
import logging
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from keel.errors import MissingExtraError, ModelError
from keel.flows import SignalSpec
from keel.signals.rows import Rows
from keel.text import article

# Types a skops file may contain without being listed by the flow: scikit-learn's own
# estimators and the NumPy types they hold. Anything else must be trusted explicitly.
_SKOPS_TRUSTED_PREFIXES = ("sklearn.", "numpy.", "builtins.", "collections.", "scipy.sparse.")


log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ModelOutput:
    score: float
    confidence: float
    label: str


class Model(Protocol):
    name: str
    version: str
    kind: str
    inline: bool
    features: tuple[str, ...]
    spec: SignalSpec

    def predict_many(self, rows: Rows) -> list[ModelOutput]:
        """One output per case of ``rows``."""
        ...


def probe_rows(spec: SignalSpec) -> Rows:
    """One made-up case for warm-up calls: zero for numbers, the first allowed value for
    text (a category the model knows)."""
    case = {f: spec.categories[f][0] if f in spec.categories else 0.0 for f in spec.features}
    return Rows.of(spec.features, spec.categories, [case])


def file_version(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return "sha256:" + digest.hexdigest()


def _same_class(cls: Any, wanted: Any) -> bool:
    """Whether a model's class is the one a flow names. YAML gives ``1`` or ``"1"`` where the
    model holds ``1``, ``1.0`` or ``np.int64(1)``: compare the text, then the number."""
    if str(cls) == str(wanted):
        return True
    numeric = (int, float, np.integer, np.floating)
    return (
        isinstance(cls, numeric)
        and isinstance(wanted, int | float)
        and not isinstance(wanted, bool)
        and float(cls) == float(wanted)
    )


def _plain(classes: list[Any]) -> list[Any]:
    """Classes as Python values, so a message shows [0, 1] and not [np.int64(0), ...]."""
    return [c.item() if isinstance(c, np.generic) else c for c in classes]


def _positive_index(classes: list[Any], positive: Any) -> int | None:
    """The index of ``positive`` among ``classes``: the last class when the flow names none,
    ``None`` when the model has no such class."""
    if positive is None:
        return len(classes) - 1
    return next((i for i, c in enumerate(classes) if _same_class(c, positive)), None)


def _unknown_class(spec: SignalSpec, path: Path, classes: list[Any]) -> ModelError:
    return ModelError(
        f"positive_class {spec.positive_class!r} of signal '{spec.name}' is not one of the "
        f"classes of model {path}: {_plain(classes)}",
        {"signal": spec.name, "path": str(path), "key": "positive_class"},
    )


def _classifier_outputs(proba: np.ndarray, classes: list[Any], positive: Any) -> list[ModelOutput]:
    index = _positive_index(classes, positive)
    if index is None:
        raise ModelError(f"positive_class {positive!r} is not one of the classes {_plain(classes)}")
    best = np.argmax(proba, axis=1)
    scores = proba[:, index].tolist()
    confidence = proba[np.arange(len(proba)), best].tolist()
    labels = [str(classes[b]) for b in best]
    return [ModelOutput(s, c, lb) for s, c, lb in zip(scores, confidence, labels, strict=True)]


def _score_outputs(values: np.ndarray) -> list[ModelOutput]:
    return [ModelOutput(float(v), 1.0, f"{float(v):g}") for v in np.asarray(values).ravel()]


def _check_feature_names(spec: SignalSpec, path: Path, trained: list[str]) -> None:
    """Refuse a signal whose features are not the ones the model was trained on, in the
    same order: the model reads columns by position, so a swapped pair scores every case
    on the wrong values without any error."""
    listed = list(spec.features)
    if listed == trained:
        return
    detail = {"signal": spec.name, "path": str(path), "key": "features"}
    if sorted(listed) == sorted(trained):
        raise ModelError(
            f"signal '{spec.name}' lists its features in the order {listed}, but model {path} "
            f"was trained on them in the order {trained}",
            detail,
        )
    missing = [f for f in trained if f not in listed]
    extra = [f for f in listed if f not in trained]
    raise ModelError(
        f"signal '{spec.name}' lists the features {listed}, but model {path} was trained on "
        f"{trained} (not listed: {missing or 'none'}; unknown to the model: {extra or 'none'})",
        detail,
    )


class SklearnModel:
    kind = "sklearn"
    inline = True  # pure computation in this process: no thread hand-off (see runner.py)

    def __init__(self, spec: SignalSpec, estimator: Any, version: str, path: Path) -> None:
        self.name = spec.name
        self.spec = spec
        self.estimator = estimator
        self.version = version
        self.path = path
        self.features = spec.features
        self._classes = [c for c in getattr(estimator, "classes_", [])]
        from sklearn import config_context  # noqa: PLC0415 - present with any sklearn model

        self._config = config_context
        if spec.output in ("probability", "label") and not hasattr(estimator, "predict_proba"):
            raise ModelError(
                f"model {path} for signal '{spec.name}' has no predict_proba; "
                f"set output: score for a regressor (output {spec.output} needs probabilities)",
                {"signal": spec.name, "path": str(path), "key": "output"},
            )
        names = getattr(estimator, "feature_names_in_", None)
        # Fitted on a DataFrame: it gets one, under its training names. Fitted on an
        # array: it gets a float matrix, so it can take no text.
        self.names: list[str] | None = None
        if names is not None:
            self.names = [str(n) for n in names]
            _check_feature_names(spec, path, self.names)
        elif spec.categories:
            raise ModelError(
                f"signal '{spec.name}' has the text features {list(spec.categories)}, but "
                f"model {path} was fitted on an array, which holds numbers only: fit it on a "
                "pandas DataFrame (a Pipeline that encodes the text columns) so it knows its "
                "columns by name",
                {"signal": spec.name, "path": str(path), "key": "features"},
            )
        n = getattr(estimator, "n_features_in_", None)
        if n is not None and n != len(spec.features):
            raise ModelError(
                f"model {path} expects {n} features but signal '{spec.name}' lists "
                f"{len(spec.features)}",
                {"signal": spec.name, "path": str(path), "key": "features"},
            )
        if spec.output != "score" and _positive_index(self._classes, spec.positive_class) is None:
            raise _unknown_class(spec, path, self._classes)

    def model_input(self, rows: Rows) -> Any:
        """The rows in the form the estimator was fitted on: a DataFrame or a matrix."""
        return rows.frame(self.names) if self.names is not None else rows.matrix()

    def predict_many(self, rows: Rows) -> list[ModelOutput]:
        x = self.model_input(rows)
        # Inputs were checked finite by the flow's schema; skip scikit-learn's re-checks.
        with self._config(assume_finite=True, skip_parameter_validation=True):
            if self.spec.output == "score":
                return _score_outputs(self.estimator.predict(x))
            proba = np.asarray(self.estimator.predict_proba(x), dtype=float)
        return _classifier_outputs(proba, self._classes, self.spec.positive_class)


class OnnxModel:
    kind = "onnx"
    inline = True

    def __init__(self, spec: SignalSpec, path: Path, version: str, data: bytes) -> None:
        try:
            import onnxruntime as ort  # noqa: PLC0415 - optional extra
        except ImportError as exc:
            raise MissingExtraError("onnx", f"signal '{spec.name}' (ONNX model)") from exc
        self.name = spec.name
        self.spec = spec
        self.version = version
        self.path = path
        self.features = spec.features
        try:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            self.session = ort.InferenceSession(
                data, sess_options=options, providers=["CPUExecutionProvider"]
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load ONNX model {path} for signal '{spec.name}': {exc}",
                {"signal": spec.name, "path": str(path)},
            ) from exc
        inputs = self.session.get_inputs()
        self.input_name = inputs[0].name
        # Input name → its ONNX element type ("tensor(string)", "tensor(float)"…).
        self.input_types = {i.name: str(i.type) for i in inputs}
        self.per_feature = len(inputs) > 1 or (
            len(self.features) == 1 and inputs[0].name == self.features[0]
        )
        self.outputs = [o.name for o in self.session.get_outputs()]
        self._check_inputs(inputs)
        self._check_classes()

    def _check_inputs(self, inputs: list[Any]) -> None:
        """A graph with one input per feature names them: check the names, and that a text
        feature meets a string input and a number a numeric one. A graph with one matrix
        input may fix its width: check the count, and that its type fits every feature."""
        detail = {"signal": self.name, "path": str(self.path), "key": "features"}
        if self.per_feature:
            names = [i.name for i in inputs]
            if sorted(names) != sorted(self.features):
                raise ModelError(
                    f"signal '{self.name}' lists the features {list(self.features)}, but "
                    f"ONNX model {self.path} takes the inputs {names}",
                    detail,
                )
            for feature in self.features:
                self._check_type(feature, self.input_types[feature], detail)
            return
        shape = inputs[0].shape
        width = shape[1] if len(shape) == 2 else None
        if isinstance(width, int) and width != len(self.features):
            raise ModelError(
                f"ONNX model {self.path} expects {width} features but signal '{self.name}' "
                f"lists {len(self.features)}",
                detail,
            )
        for feature in self.features:
            self._check_type(feature, self.input_types[self.input_name], detail)

    def _check_type(self, feature: str, onnx_type: str, detail: dict[str, Any]) -> None:
        text = feature in self.spec.categories
        if text == (onnx_type == _ONNX_STRING) and (text or onnx_type in _ONNX_NUMERIC):
            return
        kind = "a string feature" if text else "a numeric feature"
        raise ModelError(
            f"signal '{self.name}': {kind} '{feature}' meets the input of type {onnx_type} "
            f"of ONNX model {self.path} (text needs tensor(string); numbers need "
            "tensor(float), tensor(double) or an integer tensor)",
            detail,
        )

    def _feed(self, rows: Rows) -> dict[str, np.ndarray]:
        """The graph's inputs: one (cases × 1) tensor per feature, or one matrix."""
        if self.per_feature:
            return {
                f: _tensor(rows.columns[f].reshape(-1, 1), self.input_types[f])
                for f in self.features
            }
        if self.input_types[self.input_name] == _ONNX_STRING:
            matrix = np.column_stack([rows.columns[f] for f in self.features]).astype(object)
            return {self.input_name: matrix}
        return {self.input_name: _tensor(rows.matrix(), self.input_types[self.input_name])}

    def _check_classes(self) -> None:
        """ONNX keeps a classifier's classes in its graph; one call on a row of zeros shows
        them, so an unknown ``positive_class`` is refused now rather than on every case."""
        if self.spec.output == "score" or self.spec.positive_class is None:
            return
        try:
            self.predict_many(probe_rows(self.spec))
        except ModelError as exc:
            if "positive_class" in exc.message:
                raise ModelError(
                    f"signal '{self.name}': {exc.message} (ONNX model {self.path})",
                    {"signal": self.name, "path": str(self.path), "key": "positive_class"},
                ) from exc
        except Exception:  # noqa: BLE001, S110 - the warm-up call reports other failures
            pass

    def predict_many(self, rows: Rows) -> list[ModelOutput]:
        results = self.session.run(None, self._feed(rows))
        if self.spec.output == "score":
            return _score_outputs(results[0])
        if len(results) < 2:
            raise ModelError(f"ONNX model {self.path} gives no probabilities")
        probs = results[1]
        if isinstance(probs, list) and probs and isinstance(probs[0], Mapping):
            classes = list(probs[0].keys())
            proba = np.array([[p[c] for c in classes] for p in probs], dtype=float)
        else:
            proba = np.asarray(probs, dtype=float)
            classes = list(range(proba.shape[1]))
        return _classifier_outputs(proba, classes, self.spec.positive_class)


_ONNX_STRING = "tensor(string)"
_ONNX_NUMERIC = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def _tensor(values: np.ndarray, onnx_type: str) -> np.ndarray:
    if onnx_type == _ONNX_STRING:
        return values.astype(object)
    return values.astype(_ONNX_NUMERIC[onnx_type])


class CallableModel:
    """A plain Python function of the feature mapping, returning a score or a mapping."""

    kind = "python"
    inline = False  # user code may wait on I/O: run it where the timeout can stop waiting

    def __init__(self, spec: SignalSpec, function: Callable[..., Any], version: str) -> None:
        self.name = spec.name
        self.spec = spec
        self.function = function
        self.version = version
        self.features = spec.features

    def predict_many(self, rows: Rows) -> list[ModelOutput]:
        return [self._one(values) for values in rows.mappings()]

    def _one(self, values: dict[str, Any]) -> ModelOutput:
        result = self.function(values)
        if isinstance(result, Mapping):
            score = float(result["score"])
            confidence = float(result.get("confidence", 1.0))
            label = str(result.get("label", f"{score:g}"))
            return ModelOutput(score, confidence, label)
        if isinstance(result, bool) or not isinstance(result, int | float):
            raise ModelError(f"model function for '{self.name}' returned {result!r}, not a number")
        score = float(result)
        confidence = max(score, 1 - score) if self.spec.output == "probability" else 1.0
        return ModelOutput(score, confidence, f"{score:g}")


def _load_callable(spec: SignalSpec, target: str, project_dir: Path) -> CallableModel:
    module_ref, _, func_name = target.rpartition(":")
    if not module_ref or not func_name:
        raise ModelError(
            f"signal '{spec.name}': python models are 'python:module:function' or "
            f"'python:path/to/file.py:function', got {target!r}"
        )
    try:
        if module_ref.endswith(".py"):
            path = (project_dir / module_ref).resolve()
            name = f"keel_model_{spec.name}_{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
            module_spec = importlib.util.spec_from_file_location(name, path)
            if module_spec is None or module_spec.loader is None or not path.is_file():
                raise ModelError(f"signal '{spec.name}': no Python file at {path}")
            module = importlib.util.module_from_spec(module_spec)
            sys.modules[name] = module
            module_spec.loader.exec_module(module)
            version = file_version(path)
        else:
            module = importlib.import_module(module_ref)
            source = inspect.getsourcefile(module)
            version = file_version(Path(source)) if source else f"module:{module_ref}"
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"signal '{spec.name}': cannot import {module_ref}: {exc}", {"signal": spec.name}
        ) from exc
    function = getattr(module, func_name, None)
    if not callable(function):
        raise ModelError(f"signal '{spec.name}': {module_ref} has no function {func_name!r}")
    return CallableModel(spec, function, version)


def _load_sklearn(spec: SignalSpec, path: Path, version: str, data: bytes) -> SklearnModel:
    suffix = path.suffix.lower()
    try:
        if suffix == ".skops":
            import skops.io as sio  # noqa: PLC0415 - optional extra

            untrusted = sio.get_untrusted_types(data=data)
            refused = [t for t in untrusted if not t.startswith(_SKOPS_TRUSTED_PREFIXES)]
            if refused:
                raise ModelError(
                    f"model {path} contains types Keel does not trust: {', '.join(refused)}",
                    {"signal": spec.name, "path": str(path), "types": refused},
                )
            estimator = sio.loads(data, trusted=untrusted)
        else:
            import joblib  # noqa: PLC0415 - optional extra

            # joblib files are pickles: load only artifacts from your own training pipeline.
            estimator = joblib.load(io.BytesIO(data))
    except ImportError as exc:
        raise MissingExtraError("sklearn", f"signal '{spec.name}' (scikit-learn model)") from exc
    except ModelError:
        raise
    except Exception as exc:
        raise ModelError(
            f"cannot load model {path} for signal '{spec.name}': the file is corrupt or not a "
            f"{suffix[1:]} model ({type(exc).__name__}: {exc})",
            {"signal": spec.name, "path": str(path)},
        ) from exc
    if not hasattr(estimator, "predict"):
        raise ModelError(
            f"model {path} for signal '{spec.name}' is {article(type(estimator).__name__)}, "
            "not an estimator"
        )
    return _warmed(SklearnModel(spec, estimator, version, path))


_Loaded = TypeVar("_Loaded", "SklearnModel", "OnnxModel")


def _warmed(model: _Loaded) -> _Loaded:
    """Call a freshly loaded model once, untimed, on a row of zeros: its first call pays
    one-off costs (lazy imports, caches, thread pools) that would otherwise count against
    the first real case's timeout. A model that fails here is kept — a real row may still
    work — and the failure is logged."""
    try:
        model.predict_many(probe_rows(model.spec))
    except Exception as exc:  # noqa: BLE001 - any failure of a probe call is only reported
        log.warning("signal %s: the warm-up call of %s failed: %s", model.name, model.path, exc)
    return model


MODEL_KINDS = {".skops": "sklearn", ".joblib": "sklearn", ".pkl": "sklearn", ".onnx": "onnx"}


def model_file(spec: SignalSpec, project_dir: Path) -> Path:
    """The file a signal's model is in; raise ``ModelError`` when there is none or Keel
    cannot read its format (both are known without deserialising anything)."""
    path = (project_dir / spec.model).resolve()
    if not path.is_file():
        raise ModelError(
            f"signal '{spec.name}': model file {path} does not exist",
            {"signal": spec.name, "path": str(path)},
        )
    if path.suffix.lower() not in MODEL_KINDS:
        raise ModelError(
            f"signal '{spec.name}': unknown model format {path.suffix.lower()!r} for {path} "
            "(use .skops, .joblib, .onnx or python:module:function)",
            {"signal": spec.name, "path": str(path)},
        )
    return path


def load_file(spec: SignalSpec, path: Path, version: str, data: bytes) -> Model:
    """Deserialise a model file's ``data`` (already checked to hash to ``version``) and
    warm it up; raise ``ModelError`` naming the file on any failure."""
    if MODEL_KINDS[path.suffix.lower()] == "sklearn":
        return _load_sklearn(spec, path, version, data)
    return _warmed(OnnxModel(spec, path, version, data))


def load_callable(spec: SignalSpec, project_dir: Path) -> Model:
    """Import the Python function a ``python:`` signal names (code, loaded at open)."""
    return _load_callable(spec, spec.model[len("python:") :], project_dir)
