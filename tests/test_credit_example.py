"""The ``credit-categorical`` example, end to end: a Pipeline with one-hot categories scores
as trained, explanations name original features, notices never state a protected field,
and fairness and performance figures equal fairlearn's, scikit-learn's and SciPy's on the
decisions recorded."""

from __future__ import annotations

import csv
import json
import math
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)
from scipy.stats import ks_2samp
from sklearn.metrics import brier_score_loss, roc_auc_score

from keel import open_engine
from keel.engine import Engine
from keel.review.outcomes import OutcomeReport
from keel.scaffold import init_project
from keel.scaffold.credit_categorical import BATCH_ROWS, BATCH_SEED, FLOW_NAME
from keel.scaffold.german_credit import (
    CATEGORICAL_FEATURES,
    CATEGORIES,
    FEATURES,
    NUMERIC_FEATURES,
    PROTECTED,
    applicant_frame,
    generate_applicants,
)
from tests.test_cli import keel
from tests.test_replay import ALL_TIME

EXACT = 1e-12
FLOW_FILE = Path("flows") / f"{FLOW_NAME}.yaml"
AGE_GROUPS = ("under 25", "25 to under 40", "40 to under 60", "60 or over")
RULE_NOTICES = {
    "Our assessment of the risk of lending to you is above what we accept.",
    "Your current account is overdrawn and the term requested is too long.",
}


@pytest.fixture(scope="session")
def credit_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The example, with its trained pipeline, written once per session."""
    root = tmp_path_factory.mktemp("credit-categorical") / "loans"
    return init_project(root, mode="production", example="credit-categorical")


@pytest.fixture
def credit(credit_template: Path, tmp_path: Path) -> Path:
    target = tmp_path / "loans"
    shutil.copytree(credit_template, target)
    return target


def case_of(row: dict[str, str]) -> dict[str, Any]:
    """A case from a row of the scaffold's CSV, typed as the generator made it."""
    case: dict[str, Any] = {k: v for k, v in row.items() if k != "subject_id"}
    for name in (*NUMERIC_FEATURES, "age"):
        case[name] = float(case[name]) if name == "credit_amount" else int(case[name])
    return case


@pytest.fixture(scope="module")
def recorded(
    tmp_path_factory: pytest.TempPathFactory, credit_template: Path
) -> Iterator[tuple[Engine, list[Any], list[dict[str, Any]], list[str]]]:
    """The scaffold's batch decided and every outcome reported, in one engine."""
    project = tmp_path_factory.mktemp("recorded") / "loans"
    shutil.copytree(credit_template, project)
    with (project / "examples" / "applicants.csv").open() as f:
        cases = [case_of(row) for row in csv.DictReader(f)]
    with (project / "examples" / "outcomes_by_applicant.csv").open() as f:
        labels = [row["label"] for row in csv.DictReader(f)]
    with open_engine(project) as engine:
        decisions = engine.decide_many(FLOW_NAME, cases)
        reports = [OutcomeReport(d.id, label) for d, label in zip(decisions, labels, strict=True)]
        engine.outcomes.report_many(reports, engine.operator, "test")
        yield engine, decisions, cases, labels


def test_init_writes_the_example_and_it_validates_without_warnings(tmp_path: Path) -> None:
    code, out, _ = keel("init", "--example", "credit-categorical", str(tmp_path / "loans"))
    assert code == 0 and "keel decide loan_application" in out
    code, out, _ = keel("validate", "--strict", "--project", str(tmp_path / "loans"))
    assert code == 0 and "ok  flow loan_application" in out and "warning" not in out
    code, _, err = keel("init", "--example", "mortgages", str(tmp_path / "other"))
    assert code == 2 and "unknown example 'mortgages'" in err
    assert not (tmp_path / "other").exists()


def test_the_flow_declares_every_code_with_its_label_and_the_protected_fields(
    credit: Path,
) -> None:
    with open_engine(credit) as engine:
        flow = engine.runtime(FLOW_NAME).flow
    assert flow.protected_attributes == PROTECTED
    assert tuple(flow.signals["default_risk"].features) == FEATURES
    assert not set(PROTECTED) & set(FEATURES)  # recorded, never read by the model
    for name, codes in CATEGORIES.items():
        field = flow.fields[name]
        assert field.type == "string" and tuple(field.allowed or ()) == tuple(codes)
        for code, (_, label, _) in codes.items():
            assert field.value_label(code) == label
    assert flow.locale == "de_DE" and flow.currency == "EUR"


def test_the_generator_is_seeded_and_shaped_like_the_german_credit_data() -> None:
    first, again = generate_applicants(1000, 3), generate_applicants(1000, 3)
    assert first == again and first != generate_applicants(1000, 4)
    assert len(CATEGORICAL_FEATURES) + len(PROTECTED) - 1 == 13  # 13 coded fields, age a number
    assert 0.2 < np.mean([a["defaulted"] for a in first]) < 0.4  # 30% in the real data
    for name in CATEGORIES:
        assert {a[name] for a in first} <= set(CATEGORIES[name])


def test_scores_equal_the_pipelines_predict_proba(recorded: Any, credit_template: Path) -> None:
    _, decisions, cases, _ = recorded
    path = credit_template / "models" / "default_risk.skops"
    model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    assert [name for name, _ in model.steps] == ["prepare", "logit"]
    expected = model.predict_proba(applicant_frame(cases))[:, 1]
    scores = np.array([d.signals["default_risk"]["score"] for d in decisions])
    assert np.max(np.abs(scores - expected)) < EXACT
    # The batch is the generator's, so the scores are the model's on those applicants.
    assert cases == [
        {k: v for k, v in a.items() if k != "defaulted"}
        for a in generate_applicants(BATCH_ROWS, BATCH_SEED)
    ]


def test_attributions_are_per_original_feature_and_sum_to_the_log_odds(recorded: Any) -> None:
    engine, decisions, cases, _ = recorded
    fields = engine.runtime(FLOW_NAME).flow.fields
    labelled = 0
    for decision, case in list(zip(decisions, cases, strict=True))[:40]:
        explained = engine.explain(decision.id)
        attributions = explained["attributions"]["default_risk"]
        items = attributions["items"]
        assert [i["feature"] for i in items] == list(FEATURES)  # no one-hot column names
        for item in items:
            expected = case[item["feature"]]
            assert item["value"] == (expected if isinstance(expected, str) else float(expected))
        score = decision.signals["default_risk"]["score"]
        total = sum(i["contribution"] for i in items) + attributions["baseline"]
        assert attributions["unit"] == "log-odds"
        assert total == pytest.approx(math.log(score / (1 - score)), abs=1e-9)
        # The sentences name a category by its label, never by its code alone.
        for sentence in explained["why"]:
            for name in CATEGORICAL_FEATURES:
                if sentence.startswith(fields[name].display + " ("):
                    assert f"({CATEGORIES[name][case[name]][1]})" in sentence
                    labelled += 1
    assert labelled >= 20


def _forbidden_words(engine: Engine) -> set[str]:
    """Every way a notice could state a protected field: its name, label and value labels."""
    flow = engine.runtime(FLOW_NAME).flow
    words = {"age", "Age", "sex", "foreign", "Foreign"}
    for name in PROTECTED:
        words.add(flow.fields[name].display)
        words |= {label for _, label, _ in CATEGORIES.get(name, {}).values()}
    return words


def _states(text: str, words: set[str]) -> list[str]:
    """The words of ``words`` that ``text`` contains as whole words."""
    return [w for w in words if re.search(rf"\b{re.escape(w)}\b", text)]


def test_a_declined_cases_notice_names_only_features_that_are_not_protected(
    recorded: Any,
) -> None:
    engine, decisions, _, _ = recorded
    flow = engine.runtime(FLOW_NAME).flow
    allowed = RULE_NOTICES | {flow.fields[f].stated_reason for f in FEATURES}
    declined = [d for d in decisions if d.action == "decline" and d.status == "final"]
    assert len(declined) >= 20
    forbidden = _forbidden_words(engine)
    for decision in declined[:25]:
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        assert notice.reasons[0] in RULE_NOTICES and set(notice.reasons) <= allowed
        assert not set(PROTECTED) & set(notice.inputs)
        assert not _states(engine.notice(decision.id), forbidden)


def test_a_protected_field_forced_into_the_model_is_still_never_a_reason(credit: Path) -> None:
    """A model that reads age and nationality, and leans on them hardest: the notice skips
    them and states the next features instead."""
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    people = generate_applicants(1000, 5)
    frame = applicant_frame(people)
    frame["age"] = [float(p["age"]) for p in people]
    frame["foreign_worker"] = [p["foreign_worker"] for p in people]
    # The young and foreign workers default in this made-up history: the model learns it.
    bad = [int(p["age"] < 30 or (p["foreign_worker"] == "A201" and p["defaulted"])) for p in people]
    numbers, codes = [*NUMERIC_FEATURES, "age"], [*CATEGORICAL_FEATURES, "foreign_worker"]
    model = Pipeline([
        ("prepare", ColumnTransformer([
            ("numbers", StandardScaler(), numbers),
            ("categories", OneHotEncoder(handle_unknown="ignore"), codes),
        ])),
        ("logit", LogisticRegression(max_iter=1000)),
    ])  # fmt: skip
    model.fit(frame[numbers + codes], bad)
    sio.dump(model, credit / "models" / "default_risk.skops")
    features = "".join(f"      - {name}\n" for name in numbers + codes)
    text = (credit / FLOW_FILE).read_text()
    start = text.index("    features:")
    end = text.index("fairness:")
    (credit / FLOW_FILE).write_text(text[:start] + "    features:\n" + features + text[end:])
    code, out, _ = keel("validate", "--project", str(credit))
    assert code == 0 and "age" in out and "foreign_worker" in out and "warning" in out
    young = {
        **{k: v for k, v in people[0].items() if k != "defaulted"},
        "age": 19,
        "foreign_worker": "A201",
    }
    with open_engine(credit) as engine:
        decision = engine.decide(FLOW_NAME, young)
        assert decision.action == "decline"
        items = engine.explain(decision.id)["attributions"]["default_risk"]["items"]
        strongest = max(items, key=lambda i: i["contribution"])["feature"]
        notice, _ = engine.notices.notice(decision.id, engine.operator)
        text = engine.notice(decision.id)
        forbidden = _forbidden_words(engine)
    assert strongest == "age"  # the model leans on age hardest
    assert len(notice.reasons) == 4
    assert not _states(text, forbidden)


def _group(flow: Any, name: str, case: dict[str, Any]) -> str:
    if name == "age":
        return AGE_GROUPS[sum(case["age"] >= edge for edge in (25, 40, 60))]
    return str(flow.fields[name].value_label(case[name]))


def test_fairness_figures_equal_fairlearns_on_the_recorded_decisions(recorded: Any) -> None:
    engine, decisions, cases, labels = recorded
    flow = engine.runtime(FLOW_NAME).flow
    report = engine.fairness.report(engine.operator, FLOW_NAME, *ALL_TIME)
    kept = [i for i, d in enumerate(decisions) if d.status == "final"]  # no review resolved
    assert report["in_force"] == len(kept) and report["not_in_force"] == len(decisions) - len(kept)
    y_pred = np.array([decisions[i].action == "approve" for i in kept], dtype=int)
    y_true = np.array([labels[i] == "repaid" for i in kept], dtype=int)
    by_name = {a["attribute"]: a for a in report["attributes"]}
    assert set(by_name) == set(PROTECTED)
    for name in PROTECTED:
        groups = [_group(flow, name, cases[i]) for i in kept]
        figures = by_name[name]
        frame = MetricFrame(
            metrics=selection_rate, y_true=y_pred, y_pred=y_pred, sensitive_features=groups
        )
        rates = {g["group"]: g["selection_rate"] for g in figures["groups"]}
        assert rates == pytest.approx(frame.by_group.to_dict(), abs=EXACT)
        outcome_rates = MetricFrame(
            metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
            y_true=y_true, y_pred=y_pred, sensitive_features=groups,
        )  # fmt: skip
        for key, column in (("true_positive_rate", "tpr"), ("false_positive_rate", "fpr")):
            mine = {g["group"]: g[key] for g in figures["groups"]}
            assert mine == pytest.approx(outcome_rates.by_group[column].to_dict(), abs=EXACT)
        assert figures["equal_opportunity_difference"] == pytest.approx(
            equal_opportunity_difference(y_true, y_pred, sensitive_features=groups), abs=EXACT
        )
        assert figures["demographic_parity_ratio"] == pytest.approx(
            demographic_parity_ratio(y_pred, y_pred, sensitive_features=groups), abs=EXACT
        )
        assert figures["equalized_odds_difference"] == pytest.approx(
            equalized_odds_difference(y_true, y_pred, sensitive_features=groups), abs=EXACT
        )


def test_performance_figures_equal_scikit_learn_and_scipy(recorded: Any) -> None:
    engine, decisions, _, labels = recorded
    total = engine.trust.metrics(engine.operator, FLOW_NAME, *ALL_TIME)["performance"]["total"]
    scores = np.array([d.signals["default_risk"]["score"] for d in decisions])
    bad = np.array([label == "defaulted" for label in labels], dtype=int)
    assert total["scored"] == len(decisions) and total["reasons"] == {}
    assert abs(total["auc"] - roc_auc_score(bad, scores)) < EXACT
    assert abs(total["ks"] - ks_2samp(scores[bad == 1], scores[bad == 0]).statistic) < EXACT
    assert abs(total["brier"] - brier_score_loss(bad, scores)) < EXACT
    assert total["auc"] > 0.7  # the pipeline learned the generator's risk drivers


def test_the_example_files_are_what_the_tutorial_decides(credit: Path) -> None:
    """approved, referred and declined examples land where their names say."""
    expected = {"approved": "approve", "referred": "refer", "declined": "decline"}
    with open_engine(credit) as engine:
        for name, action in expected.items():
            case = json.loads((credit / "examples" / f"{name}.json").read_text())
            assert engine.decide(FLOW_NAME, case).action == action
