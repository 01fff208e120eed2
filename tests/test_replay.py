"""Replay: a candidate policy on recorded decisions — what changes, sums, outcome gains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.engine import Engine
from keel.errors import InputError, NotFoundError
from keel.review.outcomes import OutcomeReport
from tests.conftest import LOW_RISK, person, run_sql
from tests.test_changes import SHORTER, policy_text
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
ALL_TIME = ("2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z")
RISKY = {**LOW_RISK, "debt_to_income": 0.7}  # declined: too much debt


def recorded(engine: Engine) -> list[str]:
    cases = [LOW_RISK] * 5 + [SHORT_HISTORY] * 4 + [RISKY] * 3
    return [d.id for d in engine.decide_many(FLOW, cases)]


def test_a_replay_counts_what_changes_and_what_it_would_have_gained(
    engine: Engine, project: Path
) -> None:
    ids = recorded(engine)
    short = ids[5:9]
    # Two thin-file cases repaid, one defaulted; a low-risk one defaulted.
    for decision_id, label, value in (
        (short[0], "repaid", None),
        (short[1], "repaid", None),
        (short[2], "defaulted", 1000.0),
        (ids[0], "defaulted", 6000.0),
    ):
        engine.outcomes.report(OutcomeReport(decision_id, label, value), engine.operator)
    change = engine.changes.propose(
        FLOW, policy_text(project, *SHORTER), person("a", "A", "owner"), "x"
    )
    report = engine.replay(FLOW, change.id, *ALL_TIME)
    assert report["decisions"] == 12 and report["candidate"] == change.version
    # Thin files now get a sized limit at once instead of the starter limit, to be confirmed.
    assert report["changed"] == 4 and {s["decision"] for s in report["changed_sample"]} == set(
        short
    )
    assert report["transitions"] == {"approve": {"approve": 9}, "decline": {"decline": 3}}
    assert report["review"] == {"recorded": 4, "candidate": 0}
    sums = report["sums"]["approve"]
    assert sums["recorded"] == pytest.approx(5 * 6000.0 + 4 * 1000.0)
    assert sums["candidate"] == pytest.approx(9 * 6000.0)
    outcomes = report["outcomes"]
    assert outcomes["known"] == 4 and outcomes["fixed"] == 0 and outcomes["broken"] == 0
    assert outcomes["recorded_right"] == outcomes["candidate_right"] == 2  # repaid approvals
    # The active version replays to no change at all.
    same = engine.replay(FLOW, engine.runtime(FLOW).policy.version[:8], *ALL_TIME)
    assert same["changed"] == 0 and same["decisions"] == 12


def test_a_stricter_candidate_fixes_and_breaks_decisions(engine: Engine, project: Path) -> None:
    ids = recorded(engine)
    engine.outcomes.report(OutcomeReport(ids[0], "defaulted", 6000.0), engine.operator)
    engine.outcomes.report(OutcomeReport(ids[1], "repaid"), engine.operator)
    strict = policy_text(project, "  min_income: 12000.0\n", "  min_income: 100000.0\n")
    version = engine.changes.register(FLOW, strict, engine.operator)
    report = engine.replay(FLOW, version, *ALL_TIME)
    assert report["transitions"]["approve"] == {"decline": 9}
    outcomes = report["outcomes"]
    assert (outcomes["fixed"], outcomes["broken"]) == (1, 1)
    assert outcomes["fixed_value"] == 6000.0 and outcomes["broken_value"] == 0.0
    assert report["sums"]["approve"]["candidate"] == 0.0


def test_worker_processes_give_the_same_report(engine: Engine, project: Path) -> None:
    recorded(engine)
    version = engine.changes.register(FLOW, policy_text(project, *SHORTER), engine.operator)
    alone = engine.replay(FLOW, version, *ALL_TIME, workers=1)
    split = engine.replay(FLOW, version, *ALL_TIME, workers=3, parallel_from=1)
    assert split["workers"] == 3 and alone["workers"] == 1
    for key in ("decisions", "changed", "transitions", "sums", "review", "outcomes"):
        assert split[key] == alone[key], key


def test_bad_replays_are_refused(engine: Engine, db_url: str, project: Path) -> None:
    ids = recorded(engine)
    version = engine.runtime(FLOW).policy.version
    with pytest.raises(InputError, match="recorded no decisions between"):
        engine.replay(FLOW, version, "2001-01-01T00:00:00.000000Z", "2001-02-01T00:00:00.000000Z")
    with pytest.raises(InputError, match="the range is empty"):
        engine.replay(FLOW, version, ALL_TIME[1], ALL_TIME[0])
    with pytest.raises(NotFoundError, match="is not a stored version"):
        engine.replay(FLOW, "ffffffff", *ALL_TIME)
    with pytest.raises(NotFoundError, match="unknown flow"):
        engine.replay("pricing", version, *ALL_TIME)
    # Decisions whose personal inputs were erased are counted, not replayed.
    run_sql(db_url, f"delete from protected_values where record_id = '{ids[0]}'")
    report = engine.replay(FLOW, version, *ALL_TIME)
    assert report["erased"] == 1 and report["decisions"] == 11


def test_replay_from_the_command_line(project: Path) -> None:
    with open_engine(project) as engine:
        recorded(engine)
    candidate = project / "candidate.yaml"
    candidate.write_text(policy_text(project, *SHORTER))
    runner = CliRunner()
    args = ["replay", FLOW, "--since", "2000-01-01", "--until", "2100-01-01", "-p", str(project)]
    result = runner.invoke(app, [*args, "-f", str(candidate)])
    assert result.exit_code == 0, result.stderr
    assert "changed: 4 (33.3%)" in result.stdout and "approve      → approve 9" in result.stdout
    result = runner.invoke(app, [*args, "-f", str(candidate), "--json"])
    assert json.loads(result.stdout)["changed"] == 4
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "give a candidate" in result.stderr
    result = runner.invoke(
        app, [*args[:4], "--until", "soon", "-p", str(project), "-f", str(candidate)]
    )
    assert result.exit_code == 2 and "must be an ISO 8601 time" in result.stderr


def test_a_candidate_model_is_rerun_on_the_recorded_inputs(engine: Engine, project: Path) -> None:
    from tests.test_changes import other_model

    recorded(engine)
    retrained = other_model(project / "retrained.skops", inverted=True)
    author = person("a", "A", "owner")
    change = engine.changes.propose(
        FLOW, None, author, "retrained", models={"default_risk": retrained}
    )
    alone = engine.replay(FLOW, change.id, *ALL_TIME)
    assert alone["candidate_models"] == change.models and alone["decisions"] == 12
    # The inverted model calls the low-risk cases risky: they would have been declined.
    assert alone["transitions"]["approve"].get("decline", 0) >= 5
    assert "models the candidate does not change" not in alone["not_replayed"]
    split = engine.replay(FLOW, change.id, *ALL_TIME, workers=2, parallel_from=1)
    for key in ("decisions", "changed", "transitions", "sums"):
        assert split[key] == alone[key], key
    same_policy = engine.replay(FLOW, change.version, *ALL_TIME)  # the models as recorded
    assert same_policy["changed"] == 0 and same_policy["candidate_models"] == {}
