"""Model performance from outcomes: figures equal to scikit-learn's and SciPy's, per model
version and bucket; outcome accuracy and the confusion matrix count only actions in force;
performance limits raise alarms the governor acts on; the report in the terminal, JSON and
HTML."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from scipy.stats import ks_2samp
from sklearn.metrics import brier_score_loss, roc_auc_score, roc_curve
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.cli import app
from keel.engine import Engine
from keel.errors import DefinitionError, InputError
from keel.flows import parse_flow
from keel.ledger.records import iso_time
from keel.monitor.report import trust_html
from keel.review.outcomes import OutcomeReport
from keel.review.performance import OutcomeGroup, auc, brier, figures, ks, roc
from keel.scaffold.applicants import case_inputs, generate_applicants
from keel.security.roles import Grant, Role
from keel.yamlfile import load_yaml_text
from tests.conftest import LOW_RISK, Clock, person, replace_in
from tests.test_api import key
from tests.test_changes import ANNA as AUTHOR
from tests.test_changes import CARL, other_model
from tests.test_replay import ALL_TIME
from tests.test_review import ANNA, SHORT_HISTORY

FLOW = "credit_limit"
DAY = 86_400.0
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
OWNER = person("key:owner001", "Olga", "owner")
EXACT = 1e-12


def _reference(scores: np.ndarray, bad: np.ndarray) -> tuple[float, float, float]:
    """AUC, KS and Brier score as scikit-learn and SciPy compute them."""
    ks_stat = ks_2samp(scores[bad == 1], scores[bad == 0]).statistic
    return roc_auc_score(bad, scores), float(ks_stat), brier_score_loss(bad, scores)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_figures_equal_scikit_learn_and_scipy(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = 500
    bad = (rng.random(n) < 0.3).astype(float)
    scores = np.clip(rng.normal(0.3 + 0.2 * bad, 0.15), 0, 1)
    scores[:100] = np.round(scores[:100], 1)  # ties, within and across classes
    expected_auc, expected_ks, expected_brier = _reference(scores, bad)
    assert abs(auc(scores, bad) - expected_auc) < EXACT
    assert abs(ks(scores, bad) - expected_ks) < EXACT
    assert abs(brier(scores, bad) - expected_brier) < EXACT
    assert 0.6 < auc(scores, bad) < 0.95  # a real signal, not a degenerate case


def _decide(engine: Engine, applicants: list[dict[str, Any]]) -> list[Any]:
    return engine.decide_many(FLOW, [case_inputs(a) for a in applicants])


def _report(engine: Engine, decisions: list[Any], labels: list[str]) -> None:
    reports = [OutcomeReport(d.id, label) for d, label in zip(decisions, labels, strict=True)]
    engine.outcomes.report_many(reports, engine.operator, "test")


def _truth(applicants: list[dict[str, Any]]) -> list[str]:
    return ["defaulted" if a["defaulted"] else "repaid" for a in applicants]


def test_performance_from_recorded_decisions_equals_scikit_learn(
    project: Path, env: dict[str, str]
) -> None:
    clock = Clock(START)
    first, second = generate_applicants(200, seed=21), generate_applicants(200, seed=22)
    with open_engine(project, environ=env, clock=clock) as engine:
        day_one = _decide(engine, first)
        clock.now += DAY
        day_two = _decide(engine, second)
        _report(engine, day_one + day_two, _truth(first + second))
        perf = engine.trust.metrics(engine.operator, FLOW, *ALL_TIME)["performance"]
        decisions = day_one + day_two
        scores = np.array([d.signals["default_risk"]["score"] for d in decisions])
        bad = np.array([a["defaulted"] for a in first + second], dtype=float)
        version = decisions[0].signals["default_risk"]["version"]
        in_force = [d for d in decisions if d.status == "final"]  # no review was resolved
    assert perf["configured"] and perf["signal"] == "default_risk"
    assert perf["positive"] == ["defaulted"] and perf["negative"] == ["repaid"]
    total = perf["total"]
    expected_auc, expected_ks, expected_brier = _reference(scores, bad)
    assert abs(total["auc"] - expected_auc) < EXACT
    assert abs(total["gini"] - (2 * expected_auc - 1)) < EXACT
    assert abs(total["ks"] - expected_ks) < EXACT
    assert abs(total["brier"] - expected_brier) < EXACT
    assert total["reasons"] == {} and total["scored"] == 400 and total["bad"] == bad.sum()
    assert total["auc"] > 0.7  # the scaffold's model predicts defaults
    # Per model version and per day: the same figures over each day's decisions.
    [per_version] = perf["versions"]
    assert per_version["version"] == version and per_version["model"] == "default_risk"
    days = per_version["buckets"]
    assert [b["start"] for b in days] == ["2027-01-15", "2027-01-16"]
    for day, span in zip(days, (slice(0, 200), slice(200, 400)), strict=True):
        day_auc, day_ks, day_brier = _reference(scores[span], bad[span])
        assert abs(day["auc"] - day_auc) < EXACT and abs(day["ks"] - day_ks) < EXACT
        assert abs(day["brier"] - day_brier) < EXACT
    # Calibration: fixed tenths of predicted probability.
    for row in total["calibration"]:
        inside = (scores >= row["low"]) & (scores < row["high"])
        assert row["n"] == inside.sum()
        assert row["mean_predicted"] == pytest.approx(scores[inside].mean(), abs=EXACT)
        assert row["bad_rate"] == pytest.approx(bad[inside].mean(), abs=EXACT)
    assert sum(r["n"] for r in total["calibration"]) == 400
    # Score bands of 40 cases each; the cut-off of band k approves every case up to it.
    assert [b["n"] for b in total["bands"]] == [40] * 10
    for band, cut in zip(total["bands"], total["cutoffs"], strict=True):
        approved = scores <= band["high"]
        assert cut["approved"] == approved.sum()
        assert cut["approval_rate"] == pytest.approx(approved.mean(), abs=EXACT)
        assert cut["bad_rate"] == pytest.approx(bad[approved].mean(), abs=EXACT)
    assert total["cutoffs"][-1]["approval_rate"] == 1.0
    # Outcomes per action in force: only final decisions here; escalations wait.
    rows = {r["action"]: r for r in total["confusion"]["actions"]}
    truth = dict(zip((d.id for d in decisions), bad, strict=True))
    for action, row in rows.items():
        mine = [truth[d.id] for d in in_force if d.action == action]
        assert (row["good"], row["bad"]) == (mine.count(0.0), mine.count(1.0))
    assert total["confusion"]["not_in_force"] == 400 - len(in_force) > 0


def test_too_few_outcomes_or_one_class_give_no_figure_and_say_why() -> None:
    group = OutcomeGroup()
    for score in (0.1, 0.2, 0.3):
        group.add(False, score, "approve")
    one_class = figures(group, probability=True, min_outcomes=3)
    assert one_class["auc"] is None and one_class["ks"] is None and one_class["gini"] is None
    assert one_class["reasons"]["auc"] == "no bad outcome: it needs both"
    assert one_class["brier"] == pytest.approx((0.01 + 0.04 + 0.09) / 3)
    few = figures(group, probability=True, min_outcomes=30)
    assert few["auc"] is None and few["brier"] is None
    assert few["reasons"]["brier"].startswith("3 scored outcomes, fewer than the 30")
    group.add(True, None, None)  # the model failed: an outcome without a score
    scored = figures(group, probability=False, min_outcomes=1)
    assert scored["outcomes"] == 4 and scored["scored"] == 3
    assert scored["brier"] is None and "not a probability" in scored["reasons"]["brier"]
    assert scored["confusion"]["not_in_force"] == 1
    for least in (0, 1):
        empty = figures(OutcomeGroup(), probability=True, min_outcomes=least)
        assert empty["auc"] is None and empty["brier"] is None and empty["bad_rate"] is None
        assert empty["bands"] == [] and empty["reasons"]["auc"].startswith("0 scored outcomes")


def test_outcome_accuracy_counts_only_actions_in_force(project: Path, env: dict[str, str]) -> None:
    """The issue's shape: 105 escalations never resolved had outcomes, and counted."""
    with open_engine(project, environ=env) as engine:
        finals = engine.decide_many(FLOW, [LOW_RISK] * 20)
        waiting = engine.decide_many(FLOW, [SHORT_HISTORY] * 110)
        assert {d.status for d in finals} == {"final"}
        assert {d.status for d in waiting} == {"pending_review"}
        for decision in waiting[:2]:
            engine.reviews.resolve(decision.id, ANNA, "approve", "ok")
        for decision in waiting[2:5]:  # rejected: the fallback, refer, is in force
            engine.reviews.resolve(decision.id, ANNA, "reject", "not sure")
        _report(engine, finals + waiting, ["repaid"] * 130)
        report = engine.trust.metrics(engine.operator, FLOW, *ALL_TIME)
    total = report["total"]
    assert total["outcomes_known"] == 25 and total["outcomes_not_in_force"] == 105
    assert total["outcome_accuracy"] == pytest.approx(22 / 25)  # 3 refer where approve was right
    confusion = report["performance"]["total"]["confusion"]
    assert confusion["not_in_force"] == 105
    assert [(r["action"], r["good"], r["bad"]) for r in confusion["actions"]] == [
        ("approve", 22, 0), ("refer", 3, 0),
    ]  # fmt: skip
    # The score figures judge the model: every decision with an outcome and a score.
    assert report["performance"]["total"]["scored"] == 130


def test_advisory_and_shadow_cases_act_on_nothing(project: Path) -> None:
    replace_in(
        project / "flows" / "credit_limit.yaml", "autonomy: supervised", "autonomy: advisory"
    )
    with open_engine(project) as engine:
        cases = engine.decide_many(FLOW, [LOW_RISK] * 3)
        assert {c.status for c in cases} == {"advisory"}
        engine.reviews.resolve(cases[0].id, ANNA, "approve", "agree")
        _report(engine, cases, ["repaid"] * 3)
        total = engine.trust.metrics(engine.operator, FLOW, *ALL_TIME)["total"]
        with pytest.raises(InputError, match="min_outcomes must be a whole number"):
            engine.trust.metrics(engine.operator, FLOW, *ALL_TIME, min_outcomes=0)
    assert total["outcomes_known"] == 1 and total["outcomes_not_in_force"] == 2
    assert total["outcome_accuracy"] == 1.0
    shadow = project.parent / "shadow"
    shadow.mkdir()
    shutil.copytree(project, shadow / "p", ignore=shutil.ignore_patterns("keel.db*"))
    replace_in(shadow / "p" / "flows" / "credit_limit.yaml", "autonomy: advisory",
               "autonomy: shadow")  # fmt: skip
    with open_engine(shadow / "p") as engine:
        cases = engine.decide_many(FLOW, [LOW_RISK] * 2)
        assert {c.status for c in cases} == {"shadow"}
        _report(engine, cases, ["repaid"] * 2)
        total = engine.trust.metrics(engine.operator, FLOW, *ALL_TIME)["total"]
    assert total["outcomes_known"] == 0 and total["outcome_accuracy"] is None
    assert total["outcomes_not_in_force"] == 2


BAD_FLOWS = [
    ("  positive: [defaulted]", "  positive: [lost]", "lost is not a label"),
    ("  positive: [defaulted]", "  positive: [defaulted]\n  negative: [defaulted]",
     "cannot be both positive and negative"),
    ("  positive: [defaulted]", "  positive: [defaulted]\n  signal: fraud",
     "no signal 'fraud'"),
    ("  positive: [defaulted]", "  signal: default_risk", "'signal' needs 'positive'"),
    ("  positive: [defaulted]", "  positive: 3", "'positive' must list outcome labels"),
]  # fmt: skip


@pytest.mark.parametrize(("old", "new", "message"), BAD_FLOWS)
def test_a_bad_outcome_section_is_refused_with_its_place(
    project: Path, old: str, new: str, message: str
) -> None:
    path = project / "flows" / "credit_limit.yaml"
    raw = load_yaml_text(path.read_text().replace(old, new), str(path))
    with pytest.raises(DefinitionError) as refused:
        parse_flow(raw, path)
    problems = [f"{p.where}: {p.message}" for p in refused.value.problems]
    assert any(message in p and p.startswith("outcome") for p in problems), problems
    assert all(p.line is not None for p in refused.value.problems)


BAD_LIMITS = [
    ("monitoring: {limits: {auc: 1.5}}", "the min of 'auc' must be a number above 0, at most 1"),
    ("monitoring: {limits: {brier: {min: 0.2}}}", "unknown key 'min'"),
    ("monitoring: {limits: {ks: {severity: critical}}}", "'ks' needs 'min'"),
    ("monitoring: {limits: {roc: 0.7}}", "unknown behaviour figure 'roc'"),
    ("monitoring: {performance: {over: soon}}", "'over' must look like"),
    ("monitoring: {performance: {min_outcomes: 0}}", "'min_outcomes' must be a whole number"),
    ("monitoring: {governor: [{when: {alarm: gini}, do: pause}]}", "gini is not watched"),
]


@pytest.mark.parametrize(("text", "message"), BAD_LIMITS)
def test_bad_performance_limits_are_refused(project: Path, text: str, message: str) -> None:
    path = project / "flows" / "credit_limit.yaml"
    raw = load_yaml_text(path.read_text() + text + "\n", str(path))
    with pytest.raises(DefinitionError) as refused:
        parse_flow(raw, path)
    problems = [f"{p.where}: {p.message}" for p in refused.value.problems]
    assert any(message in p and p.startswith("monitoring") for p in problems), problems


def test_performance_limits_need_the_bad_labels(project: Path) -> None:
    path = project / "flows" / "credit_limit.yaml"
    text = path.read_text().replace("  positive: [defaulted]", "")
    raw = load_yaml_text(text + "monitoring: {limits: {auc: 0.7}}\n", str(path))
    with pytest.raises(DefinitionError, match=r"'auc' needs outcome\.positive"):
        parse_flow(raw, path)
    raw = load_yaml_text(path.read_text() + "monitoring: {limits: {auc: 0.7, brier: 0.2}}\n", "f")
    spec = parse_flow(raw, path).monitoring
    assert spec.checks["auc"].limit == 0.7 and spec.checks["brier"].limit == 0.2
    assert "ks" not in spec.checks  # not watched unless given a limit
    # A flow whose only signal gives a score: that signal, with no Brier score.
    scored = path.read_text().replace("output: probability", "output: score")
    assert parse_flow(load_yaml_text(scored, "f"), path).outcome.signal == "default_risk"
    raw = load_yaml_text(scored + "monitoring: {limits: {brier: 0.2}}\n", "f")
    with pytest.raises(DefinitionError, match="'brier' needs a probability signal"):
        parse_flow(raw, path)


MONITORED = """monitoring:
  window: 1d
  baseline: 1d
  min_decisions: 20
  drift: false
  limits:
    latency_p99_ms: false
    auc: {min: 0.7, severity: critical}
    brier: {max: 0.3}
  performance: {over: 30d, min_outcomes: 50}
  alarms: {clear_after: 1}
  governor:
    - when: {alarm: auc, severity: critical}
      do: lower_autonomy
      to: advisory
"""


def test_a_degraded_model_raises_an_auc_alarm_and_the_governor_lowers_autonomy(
    project: Path, env: dict[str, str]
) -> None:
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(MONITORED)
    clock = Clock(START)
    first, second = generate_applicants(150, seed=31), generate_applicants(150, seed=32)
    with open_engine(project, environ=env, clock=clock) as engine:
        day_one = _decide(engine, first)
        clock.now += DAY
        day_two = _decide(engine, second)
        clock.now += 60
        # No outcome yet: the figures are unknown, and unknown is not judged.
        run = engine.monitoring.run(FLOW, OWNER)
        checks = {c["figure"]: c for c in run.result["performance"]["checks"]}
        assert checks["auc"]["verdict"] == "unjudged" and "auc" not in run.breaches
        assert checks["auc"]["reason"].startswith("0 scored outcomes")
        # The first day's outcomes come in as the model foretold: it ranks well.
        _report(engine, day_one, _truth(first))
        clock.now += 60
        run = engine.monitoring.run(FLOW, OWNER)
        checks = {c["figure"]: c for c in run.result["performance"]["checks"]}
        assert checks["auc"]["verdict"] == "clean" and checks["auc"]["current"] > 0.7
        assert not [a for a in run.alarms or [] if a.monitor == "auc"]
        # Then the world changes: on the second day the cases the model calls safe default.
        _report(engine, day_two, ["repaid" if a["defaulted"] else "defaulted" for a in second])
        clock.now += 60
        run = engine.monitoring.run(FLOW, OWNER)
        checks = {c["figure"]: c for c in run.result["performance"]["checks"]}
        assert checks["auc"]["verdict"] == "breach" and checks["auc"]["current"] < 0.7
        assert "auc" in run.breaches
        [alarm] = [a for a in run.alarms or [] if a.monitor == "auc"]
        assert alarm.kind == "alarm_raised" and alarm.severity == "critical"
        assert alarm.summary.startswith("AUC 0.") and "below the minimum 0.7" in alarm.summary
        assert [a["action"] for a in alarm.actions] == ["lower_autonomy"]
        assert engine.runtime(FLOW).flow.autonomy == "advisory"
        lowered = engine.autonomy.show(FLOW, engine.operator).history[-1]
        assert lowered.requested_by == "keel-governor" and lowered.evidence["monitor"] == "auc"
        figures_kept = lowered.evidence["figures"]
        assert figures_kept["scored"] == 300 and figures_kept["limit"] == 0.7
        assert figures_kept["current"] == pytest.approx(checks["auc"]["current"])
        stored = engine.monitoring.alarm(alarm.id, engine.operator)
        assert stored.evidence["bound"] == "min" and stored.evidence["signal"] == "default_risk"
        assert engine.decide(FLOW, LOW_RISK).status == "advisory"
        assert engine.verify().ok


def test_with_drift_off_a_run_needs_no_baseline_and_says_drift_was_not_checked(
    project: Path, env: dict[str, str]
) -> None:
    """A flow's first day: no baseline yet. With drift not watched, performance is still
    judged from outcomes; the rates are unjudged and the run says drift was not checked."""
    flow_file = project / "flows" / "credit_limit.yaml"
    with flow_file.open("a") as flow:
        flow.write(MONITORED)
    clock = Clock(START)
    applicants = generate_applicants(150, seed=33)
    with open_engine(project, environ=env, clock=clock) as engine:
        decided = _decide(engine, applicants)
        _report(engine, decided, ["repaid" if a["defaulted"] else "defaulted" for a in applicants])
        clock.now += 60
        run = engine.monitoring.run(FLOW, OWNER)
        assert run.state == "judged", run.note
        assert run.result["baseline"]["decisions"] == 0
        assert "drift" in run.result["not_checked"] and run.result["drift"] is None
        assert "holds 0 decisions, fewer than 20" in run.result["not_checked"]["drift"]
        assert {c["verdict"] for c in run.result["behaviour"]} == {"unjudged"}
        assert "auc" in run.breaches  # judged on the current window's outcomes alone
        stored = engine.monitoring.runs(FLOW, OWNER, 1)[0]
        assert stored.result["not_checked"] == run.result["not_checked"]
    until = iso_time(clock.now)
    shown = CliRunner().invoke(
        app, ["monitor", "run", FLOW, "--until", until, "-p", str(project)], env=env
    )
    assert shown.exit_code == 1, shown.stderr  # the AUC breach
    assert "drift: not checked — drift is not watched (monitoring.drift: false)" in shown.stdout
    # With drift watched, the same empty baseline is still refused: drift needs it.
    replace_in(flow_file, "  drift: false\n", "")
    with open_engine(project, environ=env, clock=clock) as engine:
        skipped = engine.monitoring.run(FLOW, OWNER)
    assert skipped.state == "skipped" and "the baseline window" in (skipped.note or "")


def test_the_trust_report_shows_performance_in_the_terminal_json_and_html(
    project: Path, tmp_path: Path
) -> None:
    applicants = generate_applicants(120, seed=41)
    with open_engine(project) as engine:
        _report(engine, _decide(engine, applicants), _truth(applicants))
    runner = CliRunner()
    page = tmp_path / "trust.html"
    args = ["report", "trust", FLOW, "-p", str(project), "--since", ALL_TIME[0]]
    result = runner.invoke(app, [*args, "--html", str(page)])
    assert result.exit_code == 0, result.stderr
    out = result.stdout
    assert "Model performance of signal default_risk (probability): bad = defaulted" in out
    assert "Calibration (all versions)" in out and "Score bands and cut-offs" in out
    assert "Outcomes per action in force" in out
    html = page.read_text()
    assert "<h2>Model performance</h2>" in html and 'aria-label="Calibration plot"' in html
    assert html.count("<svg") == 5 and "<script" not in html and "http" not in html
    data = json.loads(runner.invoke(app, [*args, "--json"]).stdout)["performance"]
    assert data["total"]["scored"] == 120 and data["total"]["auc"] is not None
    # A minimum above the outcomes there are: no figure, and the reason is printed.
    result = runner.invoke(app, [*args, "--min-outcomes", "500"])
    assert "AUC not given: 120 scored outcomes, fewer than the 500" in result.stdout
    result = runner.invoke(app, [*args, "--min-outcomes", "0"])
    assert result.exit_code == 2
    # A flow that names no bad labels says what to add.
    replace_in(project / "flows" / "credit_limit.yaml", "  positive: [defaulted]", "")
    result = runner.invoke(app, args)
    assert "Model performance: none (the flow names no bad outcome labels" in result.stdout
    report = json.loads(runner.invoke(app, [*args, "--json"]).stdout)
    assert report["performance"]["configured"] is False
    assert "None: the flow names no bad" in trust_html(report, "now")


def test_trust_over_http_takes_min_outcomes_like_the_cli(project: Path) -> None:
    applicants = generate_applicants(40, seed=43)
    with open_engine(project) as engine:
        _report(engine, _decide(engine, applicants), _truth(applicants))
        viewer = key(engine, Grant(Role.VIEWER, FLOW))
        with TestClient(create_app(engine)) as client:
            url = f"/v1/flows/{FLOW}/trust"
            params = {"since": ALL_TIME[0], "until": ALL_TIME[1]}

            def get(**extra: Any) -> Any:
                return client.get(url, params={**params, **extra}, headers=viewer)

            default = get().json()["performance"]
            assert default["min_outcomes"] == 30 and default["total"]["auc"] is not None
            found = get(min_outcomes=41)
            assert found.status_code == 200
            total = found.json()["performance"]["total"]
            assert found.json()["performance"]["min_outcomes"] == 41 and total["auc"] is None
            assert "40 scored outcomes, fewer than the 41" in total["reasons"]["auc"]
            cli = CliRunner().invoke(app, ["report", "trust", FLOW, "-p", str(project),
                                           "--since", ALL_TIME[0], "--until", ALL_TIME[1],
                                           "--min-outcomes", "41", "--json"])  # fmt: skip
            assert json.loads(cli.stdout)["performance"] == found.json()["performance"]
            for bad in ("0", "-3", "1.5", "many"):
                refused = get(min_outcomes=bad)
                assert refused.status_code == 422, bad
                assert refused.json()["code"] == "invalid_request"
                assert refused.json()["detail"]["errors"][0]["field"] == "min_outcomes"


def test_the_roc_curve_equals_scikit_learn_s() -> None:
    """Every distinct score a cut-off, ties together, as ``roc_curve`` without dropping
    points; a long curve keeps evenly spaced points of it, both ends included."""
    rng = np.random.default_rng(7)
    bad = rng.integers(0, 2, 60).astype(float)
    scores = np.round(rng.random(60) * 0.5 + bad * 0.3, 2)  # ties across classes
    points = roc(scores, bad)
    fpr, tpr, cuts = roc_curve(bad, scores, drop_intermediate=False)
    assert [p["fpr"] for p in points] == pytest.approx(fpr.tolist(), abs=EXACT)
    assert [p["tpr"] for p in points] == pytest.approx(tpr.tolist(), abs=EXACT)
    assert [p["score"] for p in points[1:]] == pytest.approx(list(cuts[1:]))
    assert points[0]["score"] is None
    assert np.trapezoid([p["tpr"] for p in points], [p["fpr"] for p in points]) == (
        pytest.approx(auc(scores, bad), abs=EXACT)
    )
    many_bad = rng.integers(0, 2, 5000).astype(float)
    many = rng.random(5000) + many_bad * 0.2
    thinned = roc(many, many_bad, most=50)
    fpr, tpr, _ = roc_curve(many_bad, many, drop_intermediate=False)
    every = set(zip(fpr.tolist(), tpr.tolist(), strict=True))
    assert len(thinned) == 50 and all((p["fpr"], p["tpr"]) in every for p in thinned)
    assert (thinned[0]["fpr"], thinned[-1]["fpr"]) == (0.0, 1.0)


def test_the_trust_page_draws_a_roc_curve_for_each_version_with_figures(
    project: Path, tmp_path: Path
) -> None:
    retrained = other_model(project / "retrained.skops")
    first, second = generate_applicants(60, seed=51), generate_applicants(5, seed=52)
    with open_engine(project) as engine:
        _report(engine, _decide(engine, first), _truth(first))
        change = engine.changes.propose(
            FLOW, None, AUTHOR, "Retrained", models={"default_risk": retrained}
        )
        engine.changes.approve(change.id, CARL, "backtested")
        engine.changes.activate(change.id, CARL)
        _report(engine, _decide(engine, second), _truth(second))
        report = engine.trust.metrics(engine.operator, FLOW, *ALL_TIME)
    versions = report["performance"]["versions"]
    with_figures = [v for v in versions if v["total"]["auc"] is not None]
    assert len(versions) == 2 and len(with_figures) == 1  # 5 outcomes are too few
    (drawn,) = with_figures
    assert [v["roc"] for v in versions if v is not drawn] == [[]]
    html = trust_html(report, "now")
    short = drawn["version"].removeprefix("sha256:")[:12]
    assert html.count('aria-label="ROC curve of version ') == 1
    assert f'aria-label="ROC curve of version {short}"' in html
    assert f"AUC {drawn['total']['auc']:.3f}, 60 scored outcomes" in html
    assert len(drawn["roc"]) > 2 and (drawn["roc"][-1]["fpr"], drawn["roc"][-1]["tpr"]) == (1, 1)


def test_reports_over_http_default_to_the_last_thirty_days_as_the_cli_does(
    project: Path,
) -> None:
    """``GET …/trust`` and ``…/fairness`` without ``since``/``until`` answered 422 where the
    CLI covers the 30 days before now; both now default alike, from the engine's clock."""
    clock = Clock(START)
    with open_engine(project, clock=clock) as engine:
        engine.decide(FLOW, LOW_RISK)
        viewer = key(engine, Grant(Role.VIEWER, FLOW))
        with TestClient(create_app(engine)) as client:
            for report in ("trust", "fairness"):
                found = client.get(f"/v1/flows/{FLOW}/{report}", headers=viewer)
                assert found.status_code == 200, found.text
                body = found.json()
                assert body["until"] == iso_time(START)
                assert body["since"] == iso_time(START - 30 * 86_400)
                half = client.get(f"/v1/flows/{FLOW}/{report}", headers=viewer,
                                  params={"until": iso_time(START - 86_400)})  # fmt: skip
                assert half.json()["since"] == iso_time(START - 31 * 86_400)
                bad = client.get(f"/v1/flows/{FLOW}/{report}", headers=viewer,
                                 params={"since": "yesterday"})  # fmt: skip
                assert bad.status_code == 422 and "since must be an ISO 8601" in bad.text
