"""The example policy's behaviour as table-driven cases (tests/cases/credit_limit.yaml)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
import yaml

from keel.config import load_settings
from keel.decide.draft import draft
from keel.ledger.windows import WindowState
from keel.ledger.writer import WindowGate
from keel.project import load_project
from keel.signals.runner import SignalResult, SignalRunner
from tests.conftest import LOW_RISK

CASES = yaml.safe_load((Path(__file__).parent / "cases" / "credit_limit.yaml").read_text())


@pytest.fixture(scope="module")
def runtime(template_project: Path) -> Any:
    return load_project(load_settings(template_project, {})).flows["credit_limit"]


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_case(case: dict[str, Any], runtime: Any) -> None:
    inputs = runtime.flow.validate_input({**LOW_RISK, **case.get("inputs", {})})
    risk = case["risk"]
    signals = SignalResult()
    if risk is None:
        signals.failed["default_risk"] = "timed out after 250 ms"
    else:
        signals.values["default_risk"] = {
            "score": float(risk),
            "confidence": max(risk, 1 - risk),
            "label": "1" if risk >= 0.5 else "0",
        }
    d = draft(runtime, SignalRunner(), "case", None, inputs, inputs, signals=signals)
    d.finalize(WindowGate(WindowState(), time.time()))
    expect = case["expect"]
    assert d.result["rule"] == expect["rule"]
    assert d.result["action"] == expect["action"]
    if "value" in expect:
        assert d.result["value"] == pytest.approx(expect["value"])
    if "status" in expect:
        assert d.result["status"] == expect["status"]
    hits = [h.name for h in d.result["hits"]]
    assert hits == expect.get("hits", [])
