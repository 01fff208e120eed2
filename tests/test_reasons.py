"""A decision's reason tells the truth about the action, value and status in force.

Guardrails act after the rules: a bound clamps the value, a floor, bound, window or kill
switch escalates the case, a guardrail or full review queue diverts it to the fallback. The
reason the caller is told, the one the ledger records and the one ``keel explain`` gives
must all name what is in force and say which guardrail changed it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.engine import Engine
from tests.conftest import replace_in

POLICY = "policies/credit_limit.yaml"
FLOW = "flows/credit_limit.yaml"
BOUND = "      max: 25000\n      on_hit: clamp"
RATE = "      max: 200\n      window: 1h\n      on_hit: escalate"
EXPOSURE = "      max: 750000\n      window: 24h"


def _large(low_risk: dict[str, Any]) -> dict[str, Any]:
    """A low-risk case whose rule proposes a limit of 27,000, above the 25,000 bound."""
    return {**low_risk, "annual_income": 120000.0, "requested_limit": 27000.0}


def _consistent(engine: Engine, decision: Any) -> str:
    """The reason as told, checked against the ledger and the explanation."""
    recorded = engine.entry(decision.id).body["reason"]
    explained = engine.explain(decision.id)
    assert recorded == decision.reason
    assert explained["decision"]["reason"] == decision.reason
    assert f"Reason: {decision.reason}" in explained["why"]
    return str(decision.reason)


def test_a_clamped_value_is_the_value_in_the_reason(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", _large(low_risk))
        reason = _consistent(engine, decision)
    assert (decision.action, decision.value, decision.status) == ("approve", 25000.0, "final")
    assert "limit of $25,000" in reason
    assert "capped at the maximum by bound bounds.approve" in reason
    assert "27,000" not in reason


def test_a_clamped_reason_keeps_personal_values_out_of_the_ledger(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(
        project / POLICY,
        "reason: Low default risk (",
        "reason: Income {input.annual_income}; low default risk (",
    )
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", _large(low_risk))
        recorded = engine.entry(decision.id).body["reason"]
        explained = engine.explain(decision.id)["decision"]["reason"]
    assert decision.reason.startswith("Income $120,000; low default risk")
    assert explained == decision.reason  # a reader allowed personal data sees it whole
    assert recorded == decision.reason.replace("$120,000", "‹protected›")
    assert "limit of $25,000" in recorded and "capped at the maximum" in recorded
    assert "27,000" not in recorded + decision.reason


def test_a_value_raised_to_the_minimum_is_the_value_in_the_reason(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, "      min: 500\n", "      min: 8000\n")
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", low_risk)  # proposes 6,000
        reason = _consistent(engine, decision)
    assert decision.value == 8000.0
    assert "limit of $8,000" in reason and "raised to the minimum by bound" in reason
    assert "6,000" not in reason


def test_a_bound_escalation_waits_for_review_and_names_the_proposal(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, BOUND, "      max: 25000\n      on_hit: escalate")
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", _large(low_risk))
        reason = _consistent(engine, decision)
    assert (decision.status, decision.value) == ("pending_review", 27000.0)
    assert reason.startswith("Waiting for review: bound bounds.approve: value 27,000.00 is above")
    assert "proposed: approve — Low default risk" in reason
    assert "limit of $27,000" in reason


def test_a_confidence_floor_escalation_waits_for_review(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, "      min: 0.55\n", "      min: 0.999\n")
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", low_risk)
        reason = _consistent(engine, decision)
    assert decision.status == "pending_review"
    assert reason.startswith("Waiting for review: confidence floor min_confidence.default_risk:")
    assert "is below the floor 1.00" in reason
    assert "proposed: approve — " in reason and "limit of $6,000" in reason


def test_a_rate_limit_escalation_is_not_told_as_approved(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, RATE, RATE.replace("200", "1"))
    with open_engine(project, environ=env) as engine:
        first = engine.decide("credit_limit", low_risk)
        second = engine.decide("credit_limit", low_risk)
        reason = _consistent(engine, second)
    assert first.status == "final" and not first.reason.startswith("Waiting")
    assert second.status == "pending_review"
    assert reason.startswith(
        "Waiting for review: the rate limit approvals_per_hour is reached "
        "(1 actions already in the last 3,600 s; limit 1); proposed: approve — "
    )
    assert "limit of $6,000" in reason


def test_an_exposure_limit_escalation_waits_for_review(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, EXPOSURE, "      max: 10000\n      window: 24h")
    with open_engine(project, environ=env) as engine:
        engine.decide("credit_limit", low_risk)
        second = engine.decide("credit_limit", low_risk)  # 6,000 + 6,000 > 10,000
        reason = _consistent(engine, second)
    assert second.status == "pending_review"
    assert reason.startswith(
        "Waiting for review: the exposure limit daily_exposure_by_region is reached"
    )
    assert "for region north; limit 10,000" in reason
    assert "proposed: approve — " in reason


def test_the_kill_switch_in_the_policy_says_it_is_engaged(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, "engaged: false", "engaged: true")
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", _large(low_risk))
        reason = _consistent(engine, decision)
    assert (decision.action, decision.status) == ("refer", "pending_review")
    assert reason == (
        "Waiting for review: the policy's kill switch is engaged; proposed: refer — "
        "Automatic credit decisions are switched off; an underwriter decides."
    )


def test_a_guardrail_fallback_says_which_guardrail_and_not_the_model_failure(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, BOUND, "      max: 25000\n      on_hit: fallback")
    replace_in(project / POLICY, RATE, RATE.replace("200", "1").replace("escalate", "fallback"))
    with open_engine(project, environ=env) as engine:
        bound = engine.decide("credit_limit", _large(low_risk))
        bound_reason = _consistent(engine, bound)
        engine.decide("credit_limit", low_risk)
        rate = engine.decide("credit_limit", low_risk)
        rate_reason = _consistent(engine, rate)
    assert (bound.action, bound.rule, bound.value) == ("refer", "fallback", None)
    assert bound_reason == (
        "The policy's fallback (refer) applies: bound bounds.approve: value 27,000.00 is above "
        "the bound 25,000.00; waiting for review."
    )
    assert rate.rule == "fallback"
    assert rate_reason.startswith(
        "The policy's fallback (refer) applies: the rate limit approvals_per_hour is reached"
    )
    assert "model gave no answer" not in bound_reason + rate_reason


def test_a_full_review_queue_says_so(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    grey = {**low_risk, "debt_to_income": 0.35, "credit_utilization": 0.6}
    with (project / FLOW).open("a") as flow:
        flow.write("review:\n  capacity: {max_reviews: 1, per: 1h, when_saturated: pause}\n")
    with open_engine(project, environ=env) as engine:
        first = engine.decide("credit_limit", grey)
        second = engine.decide("credit_limit", grey)
        reason = _consistent(engine, second)
    assert first.status == "pending_review", first.reason
    assert second.status == "deferred"
    assert reason == (
        "Nothing was acted on: reviewers are at capacity (1 reviews opened in the last "
        "3,600 s; capacity 1)."
    )


def test_the_demo_prints_the_value_in_force(tmp_path: Path) -> None:
    """`make demo` (300 applicants) shows a case the bound caps: 25,000, not the 26,800 asked."""
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo")])
    assert result.exit_code == 0, result.stdout + result.stderr
    shown = re.findall(r"^#\d+ (\w+)( [\d,]+)? \[(\w+)\] — (.*)$", result.stdout, re.M)
    assert any("capped at the maximum" in reason for *_, reason in shown), result.stdout
    for _action, value, status, reason in shown:
        amounts = set(re.findall(r"\$([\d,]+)", reason))
        if value:
            assert value.strip() in amounts, (value, reason)
        if status != "final":
            assert "approved" not in reason.lower(), reason
