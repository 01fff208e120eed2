"""Fairness per protected attribute: Keel's figures on decisions it recorded equal
fairlearn's on the same data; the report, the monitor, replay and shadow reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from keel import open_engine
from keel.engine import Engine
from keel.errors import DefinitionError, InputError
from keel.ledger.records import iso_time
from keel.review.fairness import attribute_figures, fairness_report
from keel.review.fairness_html import fairness_html
from keel.review.outcomes import OutcomeReport
from keel.scaffold.applicants import case_inputs, generate_applicants
from keel.security.roles import PermissionDeniedError
from tests.conftest import Clock, person, replace_in, run_sql
from tests.test_cli import keel
from tests.test_replay import ALL_TIME
from tests.test_review import ANNA

FLOW = "credit_limit"
FLOW_FILE = Path("flows") / "credit_limit.yaml"
POLICY_FILE = Path("policies") / "credit_limit.yaml"
OWNER = person("key:owner001", "Olga", "owner")
STRANGER = person("key:decid001", "Dora", "decider")
TOL = 1e-12
SEXES = {"f": "female", "m": "male"}
AGE_GROUPS = ("under 25", "25 to under 40", "40 to under 60", "60 or over")

PROTECTED = """  sex:
    type: string
    allowed: [f, m]
    labels: {f: female, m: male}
    classification: sensitive
    protected: true
  age:
    type: integer
    min: 18
    max: 99
    classification: personal
    protected: true
    groups: [25, 40, 60]
signals:
"""
FAIRNESS = """fairness:
  favourable: [approve]
"""
# A rule that declines women the model would otherwise pass: the bias a monitor must see.
BIASED = """rules:
  - name: biased
    when: input.sex == "f" && signals.default_risk.score >= 0.08
    action: decline
    reason: Declined.
"""


def protect(project: Path, positive: bool = True) -> None:
    """The example flow with two protected attributes, favourable actions and bad outcomes."""
    replace_in(project / FLOW_FILE, "signals:\n", PROTECTED)
    if positive:
        replace_in(project / FLOW_FILE, "    defaulted: decline\n",
                   "    defaulted: decline\n  positive: [defaulted]\n")  # fmt: skip
    with (project / FLOW_FILE).open("a") as f:
        f.write(FAIRNESS)


def age_group(age: int) -> str:
    return AGE_GROUPS[sum(age >= edge for edge in (25, 40, 60))]


def applicants(n: int, seed: int) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    out = []
    for a in generate_applicants(n, seed):
        case = case_inputs(a)
        case["sex"] = str(rng.choice(["f", "m"]))
        case["age"] = int(rng.integers(18, 80))
        out.append({"case": case, "defaulted": bool(a["defaulted"])})
    return out


def record(engine: Engine, people: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Decide every case, resolve half of the escalations (approving or rejecting), report
    most outcomes; return what the test knows independently of Keel's reading of it."""
    decisions = engine.decide_many(FLOW, [p["case"] for p in people])
    truth = []
    reports = []
    for i, (p, d) in enumerate(zip(people, decisions, strict=True)):
        action: str | None = d.action if d.status == "final" else None
        if d.status == "pending_review" and i % 2 == 0:
            verdict = "approve" if i % 4 == 0 else "reject"
            engine.reviews.resolve(d.id, ANNA, verdict, "checked")
            action = d.action if verdict == "approve" else "refer"  # the policy's fallback
        label = "defaulted" if p["defaulted"] else "repaid"
        if i % 5:  # four in five outcomes known
            reports.append(OutcomeReport(d.id, label))
        truth.append({
            **p, "id": d.id, "in_force": action, "label": label if i % 5 else None,
            "score": d.signals.get("default_risk", {}).get("score"),
        })  # fmt: skip
    engine.outcomes.report_many(reports, engine.operator, "test")
    return truth


def fairlearn_figures(
    groups: list[str], y_pred: np.ndarray, y_true: np.ndarray, known: np.ndarray
) -> dict[str, Any]:
    """fairlearn's figures: selection over every decision in force, rates over those with an
    outcome."""
    sel = MetricFrame(metrics=selection_rate, y_true=y_pred, y_pred=y_pred,
                      sensitive_features=groups)  # fmt: skip
    g = np.array(groups, dtype=object)[known]
    rates = MetricFrame(
        metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=y_true[known], y_pred=y_pred[known], sensitive_features=g,
    )  # fmt: skip
    return {
        "selection": sel.by_group.to_dict(),
        "tpr": rates.by_group["tpr"].to_dict(),
        "fpr": rates.by_group["fpr"].to_dict(),
        "dpd": demographic_parity_difference(y_pred, y_pred, sensitive_features=groups),
        "dpr": demographic_parity_ratio(y_pred, y_pred, sensitive_features=groups),
        "eod": equalized_odds_difference(y_true[known], y_pred[known], sensitive_features=g),
        "eopp": equal_opportunity_difference(y_true[known], y_pred[known], sensitive_features=g),
    }


def assert_equal(keel_figures: dict[str, Any], ref: dict[str, Any]) -> None:
    by = {g["group"]: g for g in keel_figures["groups"]}
    assert set(by) == set(ref["selection"])
    for name, g in by.items():
        assert g["selection_rate"] == pytest.approx(ref["selection"][name], abs=TOL)
        assert g["true_positive_rate"] == pytest.approx(ref["tpr"][name], abs=TOL)
        assert g["false_positive_rate"] == pytest.approx(ref["fpr"][name], abs=TOL)
    assert keel_figures["demographic_parity_difference"] == pytest.approx(ref["dpd"], abs=TOL)
    assert keel_figures["demographic_parity_ratio"] == pytest.approx(ref["dpr"], abs=TOL)
    assert keel_figures["equalized_odds_difference"] == pytest.approx(ref["eod"], abs=TOL)
    assert keel_figures["equal_opportunity_difference"] == pytest.approx(ref["eopp"], abs=TOL)


def test_figures_on_recorded_decisions_equal_fairlearns(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    protect(project)
    with open_engine(project, environ=env) as engine:
        truth = record(engine, applicants(400, 3))
        # One decision's personal inputs erased on request: counted, and left out.
        gone = next(t for t in truth if t["in_force"] is not None)
        run_sql(db_url, f"delete from protected_values where record_id = '{gone['id']}'")
        report = engine.fairness.report(OWNER, FLOW, *ALL_TIME)
    assert report["erased"] == 1
    kept = [t for t in truth if t["in_force"] is not None and t is not gone]
    assert report["decisions"] == 400 and report["in_force"] == len(kept)
    assert report["not_in_force"] == 400 - len(kept) - 1 > 0  # unresolved escalations are left out
    y_pred = np.array([t["in_force"] == "approve" for t in kept], dtype=int)
    known = np.array([t["label"] is not None for t in kept])
    y_true = np.array([t["label"] == "repaid" for t in kept], dtype=int)
    assert report["outcomes_known"] == int(known.sum())
    sex, age = report["attributes"]
    assert sex["attribute"] == "sex" and [g["group"] for g in sex["groups"]] == ["female", "male"]
    assert [g["group"] for g in age["groups"]] == list(AGE_GROUPS)
    for figures, groups in (
        (sex, [SEXES[t["case"]["sex"]] for t in kept]),
        (age, [age_group(t["case"]["age"]) for t in kept]),
    ):
        assert_equal(figures, fairlearn_figures(groups, y_pred, y_true, known))
        for g in figures["groups"]:  # impact ratio: against the highest group
            best = max(h["selection_rate"] for h in figures["groups"])
            assert g["impact_ratio"] == pytest.approx(g["selection_rate"] / best, abs=TOL)
            assert g["four_fifths"] == (g["impact_ratio"] < 0.8)
    # Calibration within groups: the mean score against the observed bad rate.
    for name in ("female", "male"):
        rows = [t for t in kept if SEXES[t["case"]["sex"]] == name and t["label"] is not None]
        group = next(g for g in sex["groups"] if g["group"] == name)
        assert group["scored"] == len(rows)
        assert group["mean_score"] == pytest.approx(np.mean([t["score"] for t in rows]), abs=TOL)
        assert group["bad_rate"] == pytest.approx(
            np.mean([t["label"] == "defaulted" for t in rows]), abs=TOL
        )


def test_synthetic_arrays_equal_fairlearn_and_the_edge_cases() -> None:
    rng = np.random.default_rng(5)
    n = 5000
    groups = rng.choice(["a", "b", "c"], n)
    y_pred = (rng.random(n) < np.where(groups == "a", 0.6, 0.4)).astype(int)
    y_true = (rng.random(n) < 0.7).astype(int)
    figures = attribute_figures(groups.astype(object), y_pred, y_true.astype(float))
    assert_equal(figures, fairlearn_figures(list(groups), y_pred, y_true, np.ones(n, bool)))
    # A group with no good outcome has no true positive rate: Keel says None where
    # fairlearn says 0, and leaves it out of the differences (documented).
    y_true[groups == "c"] = 0
    figures = attribute_figures(groups.astype(object), y_pred, y_true.astype(float))
    c = next(g for g in figures["groups"] if g["group"] == "c")
    ref = MetricFrame(metrics=true_positive_rate, y_true=y_true, y_pred=y_pred,
                      sensitive_features=groups).by_group  # fmt: skip
    assert c["true_positive_rate"] is None and ref["c"] == 0.0
    ab = groups != "c"
    assert figures["equal_opportunity_difference"] == pytest.approx(
        equal_opportunity_difference(y_true[ab], y_pred[ab], sensitive_features=groups[ab]),
        abs=TOL,
    )
    # Nobody selected: the parity ratio is undefined (fairlearn: NaN), the difference 0.
    none = np.zeros(n, dtype=int)
    figures = attribute_figures(groups.astype(object), none, y_true.astype(float))
    assert np.isnan(demographic_parity_ratio(none, none, sensitive_features=groups))
    assert figures["demographic_parity_ratio"] is None
    assert figures["demographic_parity_difference"] == 0.0
    assert all(g["impact_ratio"] is None and not g["four_fifths"] for g in figures["groups"])
    # No outcomes at all: every outcome figure is unknown, not 0.
    unknown = np.full(n, np.nan)
    figures = attribute_figures(groups.astype(object), y_pred, unknown)
    assert figures["equalized_odds_difference"] is None
    assert all(g["true_positive_rate"] is None for g in figures["groups"])


def test_the_report_from_the_command_line_and_over_http(project: Path) -> None:
    protect(project)
    clock = Clock()
    with open_engine(project, clock=clock) as engine:
        record(engine, applicants(120, 4))
        report = fairness_report(engine.ctx, FLOW, *ALL_TIME)
    since, until = ALL_TIME
    code, out, err = keel("report", "fairness", FLOW, "--since", since, "--until", until,
                          "--project", str(project))  # fmt: skip
    assert code == 0, err
    assert "Sex (sex)" in out and "female" in out
    assert "60 or over" in out and "parity difference" in out
    page = project / "fairness.html"
    code, out, err = keel("report", "fairness", FLOW, "--since", since, "--until", until,
                          "--json", "--html", str(page), "--project", str(project))  # fmt: skip
    assert code == 0, err
    printed = json.loads(out)
    assert printed["attributes"] == json.loads(json.dumps(report["attributes"]))
    html = page.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.count("<svg") == 2
    assert "<script" not in html and "http" not in html  # self-contained
    assert "four fifths" in html
    assert fairness_html(report, iso_time(clock.now)).count("<table") == 2


def test_permissions_and_what_the_report_says_a_flow_lacks(project: Path) -> None:
    with open_engine(project) as engine:
        plain = [{k: v for k, v in p["case"].items() if k not in ("sex", "age")}
                 for p in applicants(5, 1)]  # fmt: skip
        engine.decide_many(FLOW, plain)
        bare = engine.fairness.report(OWNER, FLOW, *ALL_TIME)
    assert bare["attributes"] == [] and bare["decisions"] == 5
    assert "has no protected attributes: mark the input fields" in bare["notes"][0]
    assert "does not say which actions are favourable" in bare["notes"][1]
    replace_in(project / FLOW_FILE, "signals:\n", PROTECTED)
    with (project / FLOW_FILE).open("a") as f:
        f.write(FAIRNESS)
    with open_engine(project) as engine:
        with pytest.raises(PermissionDeniedError):
            engine.fairness.report(STRANGER, FLOW, *ALL_TIME)
        with pytest.raises(InputError, match="the range is empty"):
            engine.fairness.report(OWNER, FLOW, ALL_TIME[1], ALL_TIME[0])
        report = engine.fairness.report(OWNER, FLOW, *ALL_TIME)
    # Decisions recorded before the flow had the field fall in the group "not given".
    assert report["in_force"] == bare["in_force"] > 0
    assert [g["group"] for g in report["attributes"][0]["groups"]] == ["not given"]
    assert report["notes"] == [
        "outcome.positive names no bad outcome label: true and false positive rates, "
        "equal opportunity, equalized odds and calibration are not computed"
    ]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("    groups: [25, 40, 60]\n", "", "a protected number field needs 'groups'"),
        ("    groups: [25, 40, 60]\n", "    groups: [40, 25]\n", "'groups' must be ascending"),
        ("    protected: true\n    groups", "    groups", "'groups' belongs to protected"),
        ("  favourable: [approve]\n", "  favourable: []\n", "'favourable' must list"),
        ("  favourable: [approve]\n", "  favourable: [aprove]\n",
         "'aprove' is not an action of policy credit_limit"),
        ("  favourable: [approve]\n", "  favourable: [approve]\n  score: nope\n",
         "'score' must name a signal"),
        ("  positive: [defaulted]\n", "  positive: [late]\n", "'positive' must list outcome"),
    ],
)  # fmt: skip
def test_bad_fairness_keys_are_refused(project: Path, old: str, new: str, expected: str) -> None:
    protect(project)
    replace_in(project / FLOW_FILE, old, new)
    with pytest.raises(DefinitionError) as refused:
        open_engine(project).close()
    assert expected in str(refused.value)


def monitored(project: Path) -> None:
    with (project / FLOW_FILE).open("a") as f:
        f.write(
            "monitoring:\n  window: 1d\n  baseline: 1d\n  min_decisions: 20\n"
            "  drift: false\n  limits: {latency_p99_ms: false}\n"
            "  fairness: {min_impact_ratio: 0.8, max_parity_difference: 0.3, "
            "min_group_size: 20, severity: critical}\n"
            "  governor:\n    - {when: {alarm: fairness}, do: lower_autonomy, to: advisory}\n"
        )


def test_a_biased_policy_raises_a_fairness_alarm_the_governor_acts_on(
    project: Path, env: dict[str, str]
) -> None:
    protect(project)
    monitored(project)
    replace_in(project / POLICY_FILE, "rules:\n", BIASED)
    clock = Clock()
    people = applicants(240, 8)
    with open_engine(project, environ=env, clock=clock) as engine:
        engine.decide_many(FLOW, [p["case"] for p in people[:120]])
        clock.advance(86_400)
        engine.decide_many(FLOW, [p["case"] for p in people[120:]])
        clock.advance(3600)
        run = engine.monitoring.run(FLOW, OWNER)
        assert run.state == "judged" and "fairness" in run.breaches
        [alarm] = [a for a in run.alarms if a.monitor == "fairness"]
        assert alarm.severity == "critical" and alarm.summary.startswith("Sex: impact ratio")
        assert "female against male" in alarm.summary
        assert [a["action"] for a in alarm.actions] == ["lower_autonomy"]
        assert engine.runtime(FLOW).flow.autonomy == "advisory"
        judged = run.result["fairness"]
        sex = next(a for a in judged["attributes"] if a["attribute"] == "sex")
        assert sex["breached"] and sex["impact_ratio"] < 0.8
        assert engine.verify().ok


def test_a_look_from_the_command_line_shows_the_fairness_verdict(project: Path) -> None:
    protect(project)
    monitored(project)
    replace_in(project / POLICY_FILE, "rules:\n", BIASED)
    clock = Clock()
    people = applicants(240, 8)
    with open_engine(project, clock=clock) as engine:
        engine.decide_many(FLOW, [p["case"] for p in people[:120]])
        clock.advance(86_400)
        engine.decide_many(FLOW, [p["case"] for p in people[120:]])
    until = iso_time(clock.now + 3600)
    code, out, err = keel("monitor", "run", FLOW, "--until", until, "--project", str(project))
    assert code == 1, err  # a breach: the look exits 1, and records nothing
    assert "  fairness: breach" in out
    assert "Sex: impact ratio" in out and "(female against male)" in out and "BREACH" in out


def test_a_fair_policy_raises_no_fairness_alarm(project: Path) -> None:
    protect(project)
    monitored(project)
    clock = Clock()
    people = applicants(240, 8)
    with open_engine(project, clock=clock) as engine:
        engine.decide_many(FLOW, [p["case"] for p in people[:120]])
        clock.advance(86_400)
        engine.decide_many(FLOW, [p["case"] for p in people[120:]])
        clock.advance(3600)
        run = engine.monitoring.run(FLOW, OWNER)
        assert run.result["fairness"]["verdict"] in ("clean", "band")
        assert "fairness" not in run.breaches


def biased_policy(project: Path) -> str:
    return (project / POLICY_FILE).read_text().replace("rules:\n", BIASED)


def test_replay_and_shadow_show_each_groups_selection_under_the_candidate(
    project: Path,
) -> None:
    protect(project)
    people = applicants(200, 9)
    with open_engine(project) as engine:
        engine.decide_many(FLOW, [p["case"] for p in people])
        candidate = engine.changes.register(FLOW, biased_policy(project), engine.operator, "t")
        report = engine.replay(FLOW, candidate, *ALL_TIME)
    sex = next(a for a in report["fairness"] if a["attribute"] == "sex")
    by = {g["group"]: g for g in sex["groups"]}
    women = [p for p in people if p["case"]["sex"] == "f"]
    assert by["female"]["n"] == len(women)
    assert by["female"]["candidate_selection_rate"] < by["female"]["recorded_selection_rate"]
    assert by["male"]["candidate_selection_rate"] == by["male"]["recorded_selection_rate"]
    assert by["female"]["candidate_four_fifths"] and not by["female"]["recorded_four_fifths"]
    assert by["male"]["candidate_impact_ratio"] == 1.0
    code, out, err = keel("replay", FLOW, candidate, "--since", ALL_TIME[0], "--until",
                          ALL_TIME[1], "--project", str(project))  # fmt: skip
    assert code == 0, err
    assert "selection rate by Sex (recorded → candidate)" in out
    # The same candidate as a shadow: the active policy's selection beside the candidate's.
    with open_engine(project) as engine:
        rollout = engine.rollouts.start(FLOW, "shadow", candidate, OWNER, "bias check")
        engine.decide_many(FLOW, [p["case"] for p in people[:80]])
        shadow = engine.rollouts.report(rollout.id, OWNER).to_dict()
    sex = next(a for a in shadow["fairness"] if a["attribute"] == "sex")
    by = {g["group"]: g for g in sex["groups"]}
    assert by["female"]["candidate_selection_rate"] < by["female"]["active_selection_rate"]
    assert by["male"]["candidate_selection_rate"] == by["male"]["active_selection_rate"]
