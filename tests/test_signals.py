"""Model adapters and failures: a failed or slow model yields no signal, and the fallback is recorded."""

from __future__ import annotations

import logging
import sqlite3
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from keel import Engine, open_engine
from keel.errors import DefinitionError, ModelError
from keel.explain.attributions import attribute
from keel.flows import SignalSpec
from keel.scaffold.applicants import FEATURES, generate_applicants
from keel.signals.loading import load_model, loaded
from keel.signals.rows import Rows
from tests.conftest import replace_in, write

MODELS = """
import time

def raises(features):
    raise RuntimeError("feature store unavailable")

def echoes(features):
    raise ValueError(f"cannot score applicant with income={features['annual_income']}")

def slow(features):
    time.sleep(2)
    return 0.1

def not_a_number(features):
    return float("nan")

def scorecard(features):
    return {"score": min(0.99, features["debt_to_income"]), "confidence": 0.9, "label": "ok"}
"""


def use_model(project: Path, target: str, timeout_ms: int = 250) -> None:
    write(project / "models" / "flaky.py", MODELS)
    replace_in(
        project / "flows/credit_limit.yaml", "model: models/default_risk.skops", f"model: {target}"
    )
    replace_in(project / "flows/credit_limit.yaml", "timeout_ms: 250", f"timeout_ms: {timeout_ms}")


@pytest.mark.parametrize(
    ("target", "cause"),
    [
        ("python:models/flaky.py:raises", "model raised RuntimeError"),
        ("python:models/flaky.py:slow", "timed out after 50 ms"),
        ("python:models/flaky.py:not_a_number", "non-finite score"),
    ],
)
def test_failed_model_takes_recorded_fallback(
    project: Path, low_risk: dict[str, Any], target: str, cause: str
) -> None:
    use_model(project, target, timeout_ms=50)
    with open_engine(project, environ={}) as engine:
        decision = engine.decide("credit_limit", low_risk)
        assert decision.action == "refer" and decision.rule == "fallback"
        assert cause in decision.failed_signals["default_risk"]
        assert cause in (decision.fallback or "")
        body = engine.entry(decision.id).body
        assert "score" not in body["signals"]["default_risk"]  # never a made-up score
        assert body["failed_signals"]["default_risk"] == decision.failed_signals["default_risk"]
        fallbacks = engine.metrics.registry.get_sample_value(
            "keel_fallbacks_total",
            {"flow": "credit_limit", "cause": "signal 'default_risk' unavailable"},
        )
        assert fallbacks == 1.0
        assert any(cause.split(maxsplit=1)[0] in s for s in engine.explain(decision.id)["why"])
        assert "feature store unavailable" not in str(body)  # the message is logged only


def test_model_error_text_stays_out_of_the_ledger(
    project: Path, low_risk: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    use_model(project, "python:models/flaky.py:echoes")
    case = {**low_risk, "annual_income": 73412.5}
    with caplog.at_level(logging.WARNING, logger="keel"), open_engine(project, {}) as engine:
        decision = engine.decide("credit_limit", case)
        assert decision.failed_signals == {"default_risk": "model raised ValueError"}
        failures = engine.metrics.registry.get_sample_value(
            "keel_signal_failures_total",
            {"flow": "credit_limit", "signal": "default_risk", "cause": "model"},
        )
        assert failures == 1.0
    with sqlite3.connect(project / "keel.db") as conn:
        (record,) = conn.execute(
            "select record from ledger where record_id = ?", (decision.id,)
        ).fetchone()
    assert "model raised ValueError" in record and "73412" not in record
    # The full text is for the operator's log, with the flow and signal that failed.
    assert "flow=credit_limit signal=default_risk" in caplog.text
    assert "ValueError: " in caplog.text and "73412" not in caplog.text  # scrubbed there too


def test_python_callable_model(project: Path, low_risk: dict[str, Any]) -> None:
    use_model(project, "python:models/flaky.py:scorecard")
    with open_engine(project, environ={}) as engine:
        decision = engine.decide("credit_limit", low_risk)
        assert decision.signals["default_risk"]["score"] == pytest.approx(0.08)
        assert decision.signals["default_risk"]["kind"] == "python"
        notes = engine.explain(decision.id)["attributions"]["default_risk"]
        assert notes["method"] == "none"


def test_bad_python_model_reference(project: Path) -> None:
    use_model(project, "python:models/flaky.py:missing")
    with pytest.raises(DefinitionError, match="has no function 'missing'"):
        open_engine(project, environ={})


def test_unknown_model_format(project: Path) -> None:
    write(project / "models" / "m.h5", "x")
    replace_in(project / "flows/credit_limit.yaml", "models/default_risk.skops", "models/m.h5")
    with pytest.raises(DefinitionError, match="unknown model format"):
        open_engine(project, environ={})


def _training() -> tuple[np.ndarray, np.ndarray]:
    rows = generate_applicants(3000, seed=3)
    x = np.array([[r[f] for f in FEATURES] for r in rows], dtype=float)
    y = np.array([r["defaulted"] for r in rows])
    return x, y


def test_onnx_model_agrees_with_sklearn(
    project: Path, engine: Engine, low_risk: dict[str, Any]
) -> None:
    from skl2onnx import to_onnx

    sk = loaded(engine.runtime("credit_limit").models["default_risk"])
    onx = to_onnx(
        sk.estimator, np.zeros((1, len(FEATURES)), dtype=np.float32), options={"zipmap": False}
    )
    (project / "models" / "default_risk.onnx").write_bytes(onx.SerializeToString())
    spec = SignalSpec(
        "default_risk", "models/default_risk.onnx", features=FEATURES, positive_class=1
    )
    model = load_model(spec, project)
    row = np.array([[low_risk[f] for f in FEATURES]], dtype=float)
    rows = np.vstack([row, row * 1.1])
    named = Rows.numeric(FEATURES, rows)
    ours = [o.score for o in model.predict_many(named)]
    assert ours == pytest.approx([o.score for o in sk.predict_many(named)], abs=1e-4)


def test_corrupt_onnx_file_is_named(project: Path) -> None:
    write(project / "models" / "bad.onnx", "garbage")
    spec = SignalSpec("risk", "models/bad.onnx", features=FEATURES)
    with pytest.raises(ModelError, match=r"bad\.onnx"):
        load_model(spec, project)


def test_tree_attributions_are_exact_shap_values(project: Path) -> None:
    import joblib
    from sklearn.ensemble import GradientBoostingClassifier

    x, y = _training()
    model = GradientBoostingClassifier(n_estimators=30, max_depth=3, random_state=0).fit(x, y)
    joblib.dump(model, project / "models" / "gbm.joblib")
    spec = SignalSpec("default_risk", "models/gbm.joblib", features=FEATURES, positive_class=1)
    loaded = load_model(spec, project)
    row = x[:1]
    result = attribute(loaded, Rows.numeric(FEATURES, row))
    assert result.method == "tree-shap" and result.unit == "log-odds"
    margin = model.decision_function(row)[0]
    base = margin - sum(a.contribution for a in result.items)
    other = x[1:2]
    margin2 = model.decision_function(other)[0]
    # SHAP values sum to the margin minus one fixed base value, for every case.
    assert margin2 - sum(
        a.contribution for a in attribute(loaded, Rows.numeric(FEATURES, other)).items
    ) == pytest.approx(base, abs=1e-6)


def test_linear_attributions_sum_to_margin_difference(
    engine: Engine, low_risk: dict[str, Any]
) -> None:
    model = loaded(engine.runtime("credit_limit").models["default_risk"])
    row = np.array([[low_risk[f] for f in FEATURES]], dtype=float)
    result = attribute(model, Rows.numeric(FEATURES, row))
    pipeline = model.estimator  # type: ignore[attr-defined]
    mean = pipeline.named_steps["scale"].mean_.reshape(1, -1)
    expected = pipeline.decision_function(row)[0] - pipeline.decision_function(mean)[0]
    assert sum(a.contribution for a in result.items) == pytest.approx(expected)


class CountsCalls(LogisticRegression):
    """A model that counts its predict_proba calls (class-wide: pickling keeps the class)."""

    calls = 0

    def predict_proba(self, x: Any) -> Any:
        type(self).calls += 1
        if not np.any(x):
            raise ValueError("a row of zeros is not a case")
        return super().predict_proba(x)


def test_a_loaded_model_is_called_once_before_its_first_case(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Its one-off first-call costs are paid at load, not against a case's timeout; a
    model the probe row upsets is kept (a real row may work) and the failure logged."""
    import joblib

    x, y = _training()
    joblib.dump(CountsCalls(max_iter=500).fit(x, y), project / "models" / "counted.joblib")
    spec = SignalSpec("default_risk", "models/counted.joblib", features=FEATURES, positive_class=1)
    CountsCalls.calls = 0
    with caplog.at_level(logging.WARNING, logger="keel.signals.adapters"):
        model = load_model(spec, project)
    assert CountsCalls.calls == 1
    assert "warm-up call" in caplog.text and "a row of zeros is not a case" in caplog.text
    assert 0 < model.predict_many(Rows.numeric(FEATURES, x[:1]))[0].score < 1
    assert CountsCalls.calls == 2
