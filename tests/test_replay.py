"""Replay: a candidate policy on recorded decisions — what changes, sums, outcome gains."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.engine import Engine
from keel.errors import InputError, NotFoundError
from keel.review.outcomes import OutcomeReport
from tests.conftest import LOW_RISK, Clock, person, problems, replace_in, run_sql
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
    keys = ("decisions", "changed", "transitions", "sums", "review", "outcomes", "tradeoff")
    for key in (*keys, "not_modelled", "compared"):
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


def test_each_decision_is_judged_at_the_autonomy_level_recorded_with_it(
    engine: Engine,
) -> None:
    """After the flow's level changed, replaying the version that decided changes nothing:
    its supervised decisions still wait for review, its advisory ones still advise."""
    recorded(engine)  # supervised: four thin files wait for review
    engine.autonomy.request(FLOW, "advisory", engine.operator, "underwriters decide for now")
    engine.decide_many(FLOW, [SHORT_HISTORY, LOW_RISK])  # advisory now
    same = engine.replay(FLOW, engine.runtime(FLOW).policy.version, *ALL_TIME)
    assert same["decisions"] == same["compared"] == 14 and same["not_modelled"] == {}
    assert same["changed"] == 0
    assert same["review"] == {"recorded": 4, "candidate": 4}


def test_rate_limit_escalations_are_not_modelled(project: Path) -> None:
    """A case a rate limit escalated is counted apart, not as grey-zone review load."""
    replace_in(project / "policies/credit_limit.yaml", "max: 200\n", "max: 3\n")
    with open_engine(project, environ={}, clock=Clock()) as engine:
        decided = engine.decide_many(FLOW, [LOW_RISK] * 5 + [SHORT_HISTORY])
        assert [d.status for d in decided].count("pending_review") == 3  # 2 limits, 1 thin
        same = engine.replay(FLOW, engine.runtime(FLOW).policy.version, *ALL_TIME)
        assert same["not_modelled"] == {"rate": 2} and same["compared"] == 4
        assert same["changed"] == 0 and same["review"] == {"recorded": 1, "candidate": 1}
        version = engine.changes.register(FLOW, policy_text(project, *SHORTER), engine.operator)
        lenient = engine.replay(FLOW, version, *ALL_TIME)
        assert lenient["not_modelled"] == {"rate": 2}
        assert lenient["review"] == {"recorded": 1, "candidate": 0}
    runner = CliRunner()
    args = ["replay", FLOW, version, "--since", "2000-01-01", "--until", "2100-01-01"]
    result = runner.invoke(app, [*args, "-p", str(project)])
    assert result.exit_code == 0, result.stderr
    assert "not modelled: 2 decisions shaped by live traffic (rate 2)" in result.stdout
    assert "waiting for review: 1 → 0" in result.stdout


THIN_DECLINED = (
    "    action: approve\n    value: params.starter_limit\n    review: true\n"
    "    reason: Credit history",
    "    action: decline\n    reason: Credit history",
)


def test_the_approval_rate_against_the_bad_rate(
    engine: Engine, project: Path, env: dict[str, str]
) -> None:
    ids = recorded(engine)  # 5 low-risk and 4 thin files approved, 3 declined
    short = ids[5:9]
    for decision_id, label in (
        (ids[0], "defaulted"),
        (short[0], "repaid"),
        (short[1], "repaid"),
        (short[2], "defaulted"),
    ):
        engine.outcomes.report(OutcomeReport(decision_id, label), engine.operator)
    version = engine.changes.register(FLOW, policy_text(project, *THIN_DECLINED), engine.operator)
    tradeoff = engine.replay(FLOW, version, *ALL_TIME)["tradeoff"]
    assert tradeoff["favourable"] == "approve" and tradeoff["bad"] == ["defaulted"]
    assert tradeoff["recorded"] == {
        "approved": 9,
        "approval_rate": pytest.approx(9 / 12),
        "with_outcome": 4,
        "no_outcome": 5,
        "bad": 2,
        "bad_rate": pytest.approx(2 / 4),
    }
    assert tradeoff["candidate"] == {  # the thin files declined: one outcome left, bad
        "approved": 5,
        "approval_rate": pytest.approx(5 / 12),
        "with_outcome": 1,
        "no_outcome": 4,
        "bad": 1,
        "bad_rate": pytest.approx(1.0),
    }
    runner = CliRunner()
    args = ["replay", FLOW, version, "--since", "2000-01-01", "--until", "2100-01-01"]
    result = runner.invoke(app, [*args, "-p", str(project)], env=env)  # the same store
    assert result.exit_code == 0, result.stderr
    assert "approve rate, bad rate among them (defaulted; recorded → candidate):" in result.stdout
    assert "75.0% (9), bad 50.0% of 4 with an outcome, 5 without" in result.stdout
    assert "→ 41.7% (5), bad 100.0% of 1 with an outcome, 4 without" in result.stdout


def test_without_named_bad_outcomes_the_tradeoff_says_what_to_set(project: Path) -> None:
    replace_in(project / "flows/credit_limit.yaml", "  positive: [defaulted]", "")
    with open_engine(project, environ={}) as engine:
        recorded(engine)
        same = engine.replay(FLOW, engine.runtime(FLOW).policy.version, *ALL_TIME)
    assert same["tradeoff"]["favourable"] is None and "outcome.positive" in same["tradeoff"]["note"]


def test_the_bad_outcomes_are_labels_of_the_flow(project: Path) -> None:
    flow = project / "flows/credit_limit.yaml"
    replace_in(flow, "  positive: [defaulted]", "  positive: [default]")
    found = problems(project)
    assert any(
        "outcome.positive: default is not a label of outcome.labels (repaid, defaulted)" in p
        for p in found
    ), found
    replace_in(flow, "  positive: [default]", "  positive: [3]")
    assert any("'positive' must list outcome labels" in p for p in problems(project))


def test_replay_writes_values_in_the_flow_s_locale_and_currency(project: Path) -> None:
    """A de_DE/EUR flow's replay printed its sums as ``2,535,698.68``; now in its locale,
    and in its currency where the decision's value is money (``notice.request``)."""
    replace_in(project / "flows/credit_limit.yaml", "policy: credit_limit\n",
               "policy: credit_limit\nlocale: de_DE\ncurrency: EUR\n")  # fmt: skip
    with open_engine(project, environ={}) as engine:
        recorded(engine)
        version = engine.changes.register(
            FLOW, policy_text(project, *THIN_DECLINED), engine.operator
        )
    args = ["replay", FLOW, version, "--since", "2000-01-01", "--until", "2100-01-01"]
    plain = CliRunner().invoke(app, [*args, "-p", str(project)])
    assert plain.exit_code == 0, plain.stderr
    sums = plain.stdout.split("sums of values (recorded → candidate):\n")[1].splitlines()[0]
    assert re.fullmatch(r"  approve +\d{1,3}(\.\d{3})*,\d\d → +\d{1,3}(\.\d{3})*,\d\d", sums)
    with (project / "flows/credit_limit.yaml").open("a") as f:
        f.write("notice:\n  adverse_actions: [decline]\n  request: requested_limit\n")
    money = CliRunner().invoke(app, [*args, "-p", str(project)])
    assert money.exit_code == 0, money.stderr
    sums = money.stdout.split("sums of values (recorded → candidate):\n")[1].splitlines()[0]
    assert sums.count("€") == 2 and "," not in sums, sums
