"""Deciding through the engine: inputs checked, ledger written first, personal data protected."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest

from keel import Engine, InputError, NotFoundError, open_engine
from keel.errors import ErasedDataError, LedgerWriteError
from tests.conftest import run_sql


def ledger_count(db_url: str, table: str = "ledger") -> int:
    return int(run_sql(db_url, f"select count(*) from {table} where kind='decision'")[0][0])


def test_decision_is_recorded_and_explained(engine: Engine, low_risk: dict[str, Any]) -> None:
    decision = engine.decide("credit_limit", low_risk, subject_id="cust-1")
    assert decision.action == "approve" and decision.status == "final"
    assert decision.value == pytest.approx(6000.0)
    assert decision.signals["default_risk"]["version"].startswith("sha256:")
    assert decision.signals["default_risk"]["latency_ms"] >= 0
    entry = engine.entry(decision.id)
    assert entry.seq == decision.seq and entry.hash == decision.hash
    why = engine.explain(decision.id)
    assert why["decision"]["reason"] == decision.reason
    assert any(
        "raised the default risk the most" in s or "lowered the default risk the most" in s
        for s in why["why"]
    )
    trace = why["trace"]
    assert [s["rule"] for s in trace][-1] == "low_risk" and trace[-1]["matched"]
    assert not any(s["matched"] for s in trace[:-1])
    first = trace[0]  # income_too_low: the values it compared, rebuilt from the record
    assert first["values"] == {"input.annual_income": 85000.0, "params.min_income": 12000.0}
    assert engine.entry(decision.id).body["trace"] == [s["rule"] for s in trace]
    attributions = why["attributions"]["default_risk"]
    assert attributions["method"] == "linear-exact" and attributions["unit"] == "log-odds"


def test_personal_inputs_never_stored_in_clear(
    engine: Engine, project: Path, db_url: str, low_risk: dict[str, Any]
) -> None:
    low_risk["annual_income"] = 87654.32
    decision = engine.decide("credit_limit", low_risk)
    if db_url.startswith("sqlite"):
        raw = (project / "keel.db").read_bytes() + (project / "keel.db-wal").read_bytes()
        assert b"87654.32" not in raw and b"87,654" not in raw
    for table, column in (("ledger", "record"), ("decisions", "id"), ("audit_events", "detail")):
        found = run_sql(db_url, f"select count(*) from {table} where {column} like '%87654%'")
        assert found == [(0,)], table
    body = engine.entry(decision.id).body
    assert set(body["inputs"]["annual_income"]) == {"$protected"}
    assert body["inputs"]["region"] == "north"  # internal fields are kept as they are
    assert engine.explain(decision.id)["inputs"]["annual_income"] == 87654.32


def test_erased_personal_data_keeps_the_ledger_verifiable(
    engine: Engine, db_url: str, low_risk: dict[str, Any]
) -> None:
    decision = engine.decide("credit_limit", low_risk)
    run_sql(
        db_url, "delete from protected_values where record_id = :id", params={"id": decision.id}
    )
    assert engine.verify().ok
    with pytest.raises(ErasedDataError, match="erased"):
        engine.explain(decision.id)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"annual_income": "lots"}, "annual_income: expected a number"),
        ({"annual_income": -5.0}, "below the minimum"),
        ({"delinquencies_2y": 1.5}, "expected an integer"),
        ({"region": "mars"}, "is not one of"),
        ({"favourite_colour": "blue"}, "favourite_colour: unknown field"),
        ({"debt_to_income": float("nan")}, "finite"),
        ({"debt_to_income": True}, "expected a number"),
    ],
)
def test_bad_inputs_are_rejected_and_nothing_is_written(
    engine: Engine, db_url: str, low_risk: dict[str, Any], change: dict[str, Any], message: str
) -> None:
    with pytest.raises(InputError, match=message):
        engine.decide("credit_limit", {**low_risk, **change})
    assert ledger_count(db_url) == 0


def test_missing_field_and_unknown_flow(
    engine: Engine, db_url: str, low_risk: dict[str, Any]
) -> None:
    del low_risk["region"]
    with pytest.raises(InputError, match="region: required field is missing"):
        engine.decide("credit_limit", low_risk)
    with pytest.raises(NotFoundError, match="unknown flow 'pricing'"):
        engine.decide("pricing", low_risk)
    with pytest.raises(InputError, match="must be a JSON object"):
        engine.decide("credit_limit", ["not", "a", "mapping"])  # type: ignore[arg-type]
    assert ledger_count(db_url) == 0


def test_batch_is_all_or_nothing(engine: Engine, db_url: str, low_risk: dict[str, Any]) -> None:
    with pytest.raises(InputError, match="case 2"):
        engine.decide_many("credit_limit", [low_risk, low_risk, {**low_risk, "region": "mars"}])
    assert ledger_count(db_url) == 0
    decisions = engine.decide_many("credit_limit", [low_risk] * 5, [f"s{i}" for i in range(5)])
    assert [d.seq for d in decisions] == list(range(decisions[0].seq, decisions[0].seq + 5))
    assert ledger_count(db_url) == 5


def test_failed_ledger_write_fails_the_decision(
    engine: Engine, db_url: str, low_risk: dict[str, Any]
) -> None:
    engine.decide("credit_limit", low_risk)
    run_sql(db_url, "alter table ledger rename to ledger_gone")
    with pytest.raises(LedgerWriteError, match="could not be written"):
        engine.decide("credit_limit", low_risk)
    assert engine.metrics.ledger_failures._value.get() == 1
    assert ledger_count(db_url, table="ledger_gone") == 1
    # Once the store is healthy again, the writer carries on with a fresh connection.
    run_sql(db_url, "alter table ledger_gone rename to ledger")
    decision = engine.decide("credit_limit", low_risk)
    assert decision.seq == 5 and engine.verify().ok  # 1-3: policy, autonomy; 4: a decision


def test_concurrent_deciders_build_one_chain(engine: Engine, low_risk: dict[str, Any]) -> None:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(50):
                engine.decide("credit_limit", low_risk)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    report = engine.verify()
    assert (
        report.ok and report.entries == 403
    )  # 400 decisions + the policy registration and activation
    assert engine.writer.batches < 400  # appends were grouped into fewer transactions


def test_two_engines_on_one_database_share_one_chain(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    with open_engine(project, environ=env) as a, open_engine(project, environ=env) as b:
        for _ in range(20):
            a.decide("credit_limit", low_risk)
            b.decide("credit_limit", low_risk)
        assert a.verify().ok and a.verify().entries == 43


def test_what_if_and_counterfactual(engine: Engine, low_risk: dict[str, Any]) -> None:
    risky = {**low_risk, "debt_to_income": 0.45, "credit_utilization": 0.7, "delinquencies_2y": 2}
    decision = engine.decide("credit_limit", risky)
    assert decision.action == "decline" and decision.rule == "high_risk"
    result = engine.what_if(decision.id, {"debt_to_income": 0.05, "credit_utilization": 0.05})
    assert result["before"]["action"] == "decline"
    assert result["after"]["action"] == "approve"
    assert "action" in result["changed"]
    loosened = engine.what_if(decision.id, params={"decline_risk": 0.99})
    assert loosened["after"]["rule"] != "high_risk"
    with pytest.raises(InputError, match="unknown parameter"):
        engine.what_if(decision.id, params={"nope": 1})
    with pytest.raises(InputError, match="parameter 'decline_risk' is a float, got 'high'"):
        engine.what_if(decision.id, params={"decline_risk": "high"})
    assert engine.what_if(decision.id, params={"decline_risk": 1})["after"]["rule"] != "high_risk"
    with pytest.raises(InputError, match="debt_to_income"):
        engine.what_if(decision.id, {"debt_to_income": "low"})
    found = engine.counterfactuals(decision.id).found
    assert found, "a decrease in debt or utilisation should flip this decline"
    for cf in found:
        assert cf.action != "decline"
        for field, (old, new) in cf.changes.items():
            assert field in ("debt_to_income", "credit_utilization", "requested_limit")
            assert new < old  # only in the direction the flow allows
        flipped = engine.what_if(decision.id, {f: new for f, (_, new) in cf.changes.items()})
        assert flipped["after"]["action"] == cf.action


def test_unknown_decision(engine: Engine) -> None:
    with pytest.raises(NotFoundError, match="no decision with id"):
        engine.explain("dec_missing")


def test_rule_that_cannot_be_evaluated_takes_recorded_fallback(
    project: Path, low_risk: dict[str, Any]
) -> None:
    from tests.conftest import replace_in

    replace_in(
        project / "flows/credit_limit.yaml",
        "    label: Requested limit\n",
        "    label: Requested limit\n    required: false\n",
    )
    del low_risk["requested_limit"]
    with open_engine(project, environ={}) as engine:
        decision = engine.decide("credit_limit", low_risk)
        assert decision.rule == "fallback" and decision.action == "refer"
        assert (
            decision.fallback
            == "rule 'large_request' could not be evaluated: no value for 'requested_limit'"
        )
        assert engine.verify().ok


def test_non_finite_value_takes_recorded_fallback(project: Path, low_risk: dict[str, Any]) -> None:

    policy = project / "policies/credit_limit.yaml"
    text = policy.read_text()
    low_rule = text.index("- name: low_risk")
    value_at = text.index("    value:", low_rule)
    end = text.index("\n", value_at)
    policy.write_text(
        text[:value_at]
        + "    value: input.annual_income / (input.debt_to_income - input.debt_to_income)"
        + text[end:]
    )
    with open_engine(project, environ={}) as engine:
        decision = engine.decide("credit_limit", low_risk)
        assert decision.rule == "fallback"
        assert "not a finite number" in (decision.fallback or "")
        assert engine.verify().ok


def test_non_finite_parameter_is_rejected(project: Path) -> None:
    from keel.errors import DefinitionError
    from tests.conftest import replace_in

    replace_in(project / "policies/credit_limit.yaml", "limit_share: 0.25", "limit_share: .nan")
    with pytest.raises(DefinitionError, match="must be a finite number"):
        open_engine(project, environ={})


@pytest.mark.parametrize(
    ("example", "rule", "status"),
    [
        ("low_risk", "low_risk", "final"),
        ("grey_zone", "grey_zone", "pending_review"),
        ("declined", "high_risk", "final"),
    ],
)
def test_scaffolded_examples_show_what_they_are_named_for(
    engine: Engine, project: Path, example: str, rule: str, status: str
) -> None:
    import json

    inputs = json.loads((project / "examples" / f"{example}.json").read_text())
    decision = engine.decide("credit_limit", inputs)
    assert (decision.rule, decision.status) == (rule, status)


def test_concurrent_single_decisions_are_combined(engine: Engine, low_risk: dict[str, Any]) -> None:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        decisions = list(
            pool.map(
                lambda i: engine.decide(
                    "credit_limit", {**low_risk, "requested_limit": 1000.0 + i}, subject_id=f"s{i}"
                ),
                range(200),
            )
        )
    assert sorted(d.subject_id or "" for d in decisions) == sorted(f"s{i}" for i in range(200))
    assert all(
        d.value == 1000.0 + int((d.subject_id or "s0")[1:]) for d in decisions
    )  # each caller gets its own
    assert engine.decider.batches < 200  # concurrent callers shared model calls and appends
    assert engine.verify().ok


def test_a_case_that_fails_in_a_combined_batch_fails_alone(
    project: Path, env: dict[str, str], low_risk: dict[str, Any]
) -> None:
    import concurrent.futures

    from tests.conftest import replace_in

    replace_in(
        project / "flows/credit_limit.yaml",
        "    label: Requested limit\n",
        "    label: Requested limit\n    required: false\n",
    )
    partial = {k: v for k, v in low_risk.items() if k != "requested_limit"}
    with (
        open_engine(project, environ=env) as engine,
        concurrent.futures.ThreadPoolExecutor(8) as pool,
    ):
        results = list(
            pool.map(
                lambda i: engine.decide("credit_limit", partial if i % 2 else low_risk), range(40)
            )
        )
    assert {d.rule for d in results[1::2]} == {"fallback"}  # recorded fallback, not an error
    assert {d.rule for d in results[0::2]} == {"low_risk"}
