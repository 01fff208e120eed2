"""Counterfactual search says why it found nothing, and its cost is the share of each
changed field's range."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.explain.counterfactual import (
    ALREADY_TARGET,
    AT_LIMITS,
    FALLBACK_DECIDED,
    GUARDRAIL_DECIDED,
    NO_ACTIONABLE_FIELDS,
    SEARCH_EXHAUSTED,
)
from tests.conftest import LOW_RISK, replace_in

FLOW = "credit_limit"
POLICY = "policies/credit_limit.yaml"
FLOW_FILE = "flows/credit_limit.yaml"
RISKY = {**LOW_RISK, "debt_to_income": 0.5, "credit_utilization": 0.95, "delinquencies_2y": 2}
LOW_INCOME = {**LOW_RISK, "annual_income": 5000.0}  # declined whatever else changes


def no_actionable(project: Path) -> None:
    text = (project / FLOW_FILE).read_text()
    (project / FLOW_FILE).write_text(text.replace("actionable: true", "actionable: false"))


def kill_switch(project: Path) -> None:
    replace_in(project / POLICY, "engaged: false", "engaged: true")


def optional_limit(project: Path) -> None:
    replace_in(
        project / FLOW_FILE,
        "    label: Requested limit\n",
        "    label: Requested limit\n    required: false\n",
    )


@pytest.mark.parametrize(
    ("edit", "case", "target", "code", "words"),
    [
        (no_actionable, RISKY, None, NO_ACTIONABLE_FIELDS, "marks no input actionable"),
        (None, RISKY, "decline", ALREADY_TARGET, "already 'decline'"),
        (kill_switch, LOW_RISK, None, GUARDRAIL_DECIDED, "kill switch decided"),
        (
            optional_limit,
            {k: v for k, v in LOW_RISK.items() if k != "requested_limit"},
            None,
            FALLBACK_DECIDED,
            "fallback decided",
        ),
        (
            None,
            {**LOW_INCOME, "debt_to_income": 0.0, "credit_utilization": 0.0,
             "requested_limit": 100.0},
            None,
            AT_LIMITS,
            "already at the limit",
        ),
        (None, LOW_INCOME, None, SEARCH_EXHAUSTED, "gives another action than 'decline'"),
    ],
)  # fmt: skip
def test_an_empty_search_says_why(
    project: Path,
    edit: Any,
    case: dict[str, Any],
    target: str | None,
    code: str,
    words: str,
) -> None:
    if edit is not None:
        edit(project)
    with open_engine(project, environ={}) as engine:
        decision = engine.decide(FLOW, case)
        search = engine.counterfactuals(decision.id, target=target)
    assert search.found == [] and search.why_none is not None
    assert search.why_none.code == code and words in search.why_none.message
    assert search.to_dict()["no_counterfactual"] == {
        "code": code,
        "message": search.why_none.message,
    }


def test_cost_is_the_share_of_the_field_range(project: Path) -> None:
    with open_engine(project, environ={}) as engine:
        decision = engine.decide(FLOW, RISKY)
        search = engine.counterfactuals(decision.id)
        fields = engine.runtime(FLOW).flow.fields
    assert search.found and search.why_none is None
    assert "no_counterfactual" not in search.to_dict()
    costs = [c.cost for c in search.found]
    assert costs == sorted(costs)
    for cf in search.found:
        expected = sum(
            abs(new - old) / (fields[name].maximum - fields[name].minimum)  # type: ignore[operator]
            for name, (old, new) in cf.changes.items()
        )
        assert cf.cost == pytest.approx(expected)


def test_cli_what_if_prints_why_none(project: Path) -> None:
    with open_engine(project, environ={}) as engine:
        decision = engine.decide(FLOW, LOW_INCOME)
    result = CliRunner().invoke(
        app, ["what-if", decision.id, "--counterfactual", "-p", str(project)]
    )
    assert result.exit_code == 0, result.output
    shown = json.loads(result.stdout)
    assert shown["counterfactuals"] == []
    assert shown["no_counterfactual"]["code"] == SEARCH_EXHAUSTED
    assert result.stderr.startswith("no counterfactual: no change to debt_to_income")
