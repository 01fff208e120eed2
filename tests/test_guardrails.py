"""Guardrails win over rules; rate and exposure windows hold across restarts and engines."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from keel import open_engine
from tests.conftest import Clock, person, replace_in

POLICY = "policies/credit_limit.yaml"


def test_rate_limit_holds_across_restart_and_window_slides(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(
        project / POLICY, "      max: 200\n      window: 1h", "      max: 3\n      window: 1h"
    )
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        statuses = [engine.decide("credit_limit", low_risk).status for _ in range(2)]
    assert statuses == ["final", "final"]
    clock.now += 600
    with open_engine(project, environ=env, clock=clock) as engine:  # a restart
        third = engine.decide("credit_limit", low_risk)
        fourth = engine.decide("credit_limit", low_risk)
        assert third.status == "final"
        assert fourth.status == "pending_review"
        assert fourth.guardrail_hits[0]["name"] == "approvals_per_hour"
        assert "limit 3" in fourth.guardrail_hits[0]["detail"]
        clock.now += 3600 - 600 + 1  # the first two have left the window
        assert engine.decide("credit_limit", low_risk).status == "final"
        assert engine.decide("credit_limit", low_risk).status == "final"
        assert engine.decide("credit_limit", low_risk).status == "pending_review"


def test_rate_limit_holds_across_two_engines(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(
        project / POLICY, "      max: 200\n      window: 1h", "      max: 4\n      window: 1h"
    )
    with open_engine(project, environ=env) as a, open_engine(project, environ=env) as b:
        results = []
        for _ in range(4):
            results.append(a.decide("credit_limit", low_risk).status)
            results.append(b.decide("credit_limit", low_risk).status)
    assert results.count("final") == 4 and results.count("pending_review") == 4


def test_exposure_limit_is_per_segment(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(
        project / POLICY,
        "      max: 750000\n      window: 24h",
        "      max: 15000\n      window: 24h",
    )
    with open_engine(project, environ=env) as engine:
        north = [engine.decide("credit_limit", low_risk) for _ in range(3)]  # 6,000 each
        south = engine.decide("credit_limit", {**low_risk, "region": "south"})
    assert [d.status for d in north] == ["final", "final", "pending_review"]
    assert north[2].guardrail_hits[0]["name"] == "daily_exposure_by_region"
    assert "for region north" in north[2].guardrail_hits[0]["detail"]
    assert south.status == "final"


def test_fallback_on_hit_changes_the_action(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(
        project / POLICY,
        "      max: 200\n      window: 1h\n      on_hit: escalate",
        "      max: 1\n      window: 1h\n      on_hit: fallback",
    )
    with open_engine(project, environ=env) as engine:
        engine.decide("credit_limit", low_risk)
        second = engine.decide("credit_limit", low_risk)
    assert second.action == "refer" and second.rule == "fallback"
    assert second.status == "pending_review"  # the fallback asks for review


def test_kill_switch_wins_over_every_rule(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(project / POLICY, "engaged: false", "engaged: true")
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", low_risk)
        assert decision.action == "refer" and decision.rule == "kill_switch"
        assert decision.status == "pending_review"
        assert "switched off" in engine.explain(decision.id)["decision"]["reason"]


def test_autonomy_levels(project: Path, env: dict[str, str], low_risk: dict[str, Any]) -> None:

    grey = {
        **low_risk,
        "requested_limit": 20000.0,
        "debt_to_income": 0.35,
        "credit_utilization": 0.6,
    }
    with (project / "flows/credit_limit.yaml").open("a") as flow:
        flow.write("earned_autonomy:\n  autonomous: {over: 1d}\n")  # no evidence asked
    owner, approver = person("key:o", "O", "owner"), person("key:a", "A", "approver")
    with open_engine(project, environ=env) as engine:
        assert engine.decide("credit_limit", grey).status == "pending_review"  # supervised
        request = engine.autonomy.request("credit_limit", "autonomous", owner, "earned")
        engine.autonomy.approve(request.request.id, approver, "ok")
        for level, status in (
            ("autonomous", "final"),
            ("advisory", "advisory"),
            ("shadow", "shadow"),
        ):
            if level != "autonomous":
                engine.autonomy.request("credit_limit", level, owner, "lower")
            decision = engine.decide("credit_limit", grey)
            assert decision.rule == "grey_zone", decision.reason
            assert decision.status == status, level
            assert engine.entry(decision.id).body["autonomy"] == level


def test_shadow_decisions_do_not_consume_limits(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    replace_in(
        project / POLICY, "      max: 200\n      window: 1h", "      max: 1\n      window: 1h"
    )
    replace_in(project / "flows/credit_limit.yaml", "autonomy: supervised", "autonomy: shadow")
    with open_engine(project, environ=env) as engine:
        for _ in range(3):
            assert engine.decide("credit_limit", low_risk).guardrail_hits == []
