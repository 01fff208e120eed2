"""Categorical features: text inputs reach models as teams train them.

A credit team's model is a scikit-learn ``Pipeline`` fitted on a DataFrame: a
``ColumnTransformer`` scales the numbers and one-hot encodes the categories. Keel hands it a
DataFrame under its training column names, so it scores exactly as it does in the
notebook; an estimator fitted on an array keeps getting a float matrix and cannot take
text; a Python function gets a mapping. Attributions go through the pipeline and come back
one per original feature.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.scaffold.applicants import FEATURES, generate_applicants
from tests.conftest import line_of, problems, replace_in, write

FLOW = "flows/credit_limit.yaml"
CATEGORICAL = (*FEATURES, "region")
REGION_LABELS = {
    "north": "the northern region",
    "south": "the southern region",
    "east": "the eastern region",
    "west": "the western region",
}


def training_frame(count: int = 2000, seed: int = 3) -> tuple[Any, np.ndarray]:
    """Applicants as a DataFrame with one text column, and whether each defaulted. The
    region shifts the risk, so its one-hot coefficients are far from zero."""
    import pandas as pd

    rows = generate_applicants(count, seed=seed)
    frame = pd.DataFrame(
        [{**{f: float(r[f]) for f in FEATURES}, "region": str(r["region"])} for r in rows]
    )
    rng = np.random.default_rng(seed)
    shift = frame["region"].map({"north": -1.0, "south": 0.0, "east": 0.8, "west": 1.5})
    y = np.array([int(r["defaulted"]) for r in rows])
    y = np.where(rng.random(count) < 0.2 * (shift.to_numpy() + 1.0), 1, y)
    return frame, y


def pipeline(final: Any) -> Any:
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    prep = ColumnTransformer(
        [("num", StandardScaler(), list(FEATURES)), ("cat", OneHotEncoder(), ["region"])]
    )
    return Pipeline([("prep", prep), ("model", final)])


def use_model(project: Path, model: Any, name: str, *, labels: bool = True) -> None:
    """Save ``model`` into the project (skops or joblib by ``name``'s suffix) and make it
    the signal's model, with the region as a feature."""
    if name.endswith(".skops"):
        import skops.io as sio

        sio.dump(model, project / "models" / name)
    else:
        import joblib

        joblib.dump(model, project / "models" / name)
    replace_in(project / FLOW, "models/default_risk.skops", f"models/{name}")
    replace_in(
        project / FLOW, "      - employment_years\n", "      - employment_years\n      - region\n"
    )
    if labels:
        shown = "".join(f"      {k}: {v}\n" for k, v in REGION_LABELS.items())
        replace_in(
            project / FLOW,
            "    allowed: [north, south, east, west]\n",
            f"    allowed: [north, south, east, west]\n    labels:\n{shown}",
        )


def logistic(project: Path, *, labels: bool = True) -> Any:
    from sklearn.linear_model import LogisticRegression

    frame, y = training_frame()
    model = pipeline(LogisticRegression(max_iter=2000)).fit(frame, y)
    use_model(project, model, "pipeline.skops", labels=labels)
    return model


def cases(count: int = 12) -> list[dict[str, Any]]:
    frame, _ = training_frame(count, seed=11)
    out = []
    for row in frame.to_dict("records"):
        out.append(
            {**row, "delinquencies_2y": int(row["delinquencies_2y"]), "requested_limit": 6000.0}
        )
    return out


def frame_of(items: list[dict[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame([{f: c[f] for f in CATEGORICAL} for c in items])


# ---- what the model receives -------------------------------------------------------------


def test_pipeline_scores_exactly_as_trained(project: Path) -> None:
    model = logistic(project)
    batch = cases()
    expected = model.predict_proba(frame_of(batch))[:, 1]
    with open_engine(project, environ={}) as engine:
        one = [engine.decide("credit_limit", c).signals["default_risk"]["score"] for c in batch]
        many = [
            d.signals["default_risk"]["score"] for d in engine.decide_many("credit_limit", batch)
        ]
    assert one == pytest.approx(expected.tolist(), abs=1e-12)
    assert many == pytest.approx(expected.tolist(), abs=1e-12)
    # The region matters to this model: a case scored with another region scores otherwise.
    assert len({round(s, 6) for s in one}) == len(batch)


@pytest.mark.parametrize("kind", ["GradientBoostingClassifier", "RandomForestClassifier"])
def test_tree_pipelines_score_exactly_as_trained(project: Path, kind: str) -> None:
    from sklearn import ensemble

    frame, y = training_frame()
    model = pipeline(getattr(ensemble, kind)(n_estimators=20, random_state=0)).fit(frame, y)
    use_model(project, model, "trees.joblib")
    batch = cases()
    expected = model.predict_proba(frame_of(batch))[:, 1]
    with open_engine(project, environ={}) as engine:
        many = [
            d.signals["default_risk"]["score"] for d in engine.decide_many("credit_limit", batch)
        ]
    assert many == pytest.approx(expected.tolist(), abs=1e-12)


def test_ordinal_encoded_pipeline_scores_as_trained(project: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.ensemble import GradientBoostingClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OrdinalEncoder

    frame, y = training_frame()
    prep = ColumnTransformer([("cat", OrdinalEncoder(), ["region"])], remainder="passthrough")
    model = Pipeline([("prep", prep), ("model", GradientBoostingClassifier(n_estimators=20))])
    model.fit(frame, y)
    use_model(project, model, "ordinal.joblib")
    batch = cases(5)
    with open_engine(project, environ={}) as engine:
        scores = [engine.decide("credit_limit", c).signals["default_risk"]["score"] for c in batch]
        explained = engine.explain(engine.decide("credit_limit", batch[0]).id)
    assert scores == pytest.approx(model.predict_proba(frame_of(batch))[:, 1].tolist(), abs=1e-12)
    # The remainder columns come after the encoded one, and are traced back all the same.
    items = explained["attributions"]["default_risk"]["items"]
    assert [i["feature"] for i in items] == list(CATEGORICAL)


def test_a_string_feature_needs_allowed_values(project: Path) -> None:
    logistic(project, labels=False)
    replace_in(project / FLOW, "    allowed: [north, south, east, west]\n", "")
    [problem] = problems(project)
    assert "feature 'region' is a string field without 'allowed'" in problem
    assert f"credit_limit.yaml:{line_of(project, FLOW, 'features:')}: signals.default_risk" in (
        problem
    )


def test_a_model_fitted_on_an_array_cannot_take_text(project: Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    frame, y = training_frame(300)
    codes = frame.assign(region=frame["region"].map({"north": 0, "south": 1, "east": 2, "west": 3}))
    model = LogisticRegression(max_iter=1000).fit(codes.to_numpy(dtype=float), y)
    joblib.dump(model, project / "models" / "plain.joblib")
    replace_in(project / FLOW, "models/default_risk.skops", "models/plain.joblib")
    replace_in(
        project / FLOW, "      - employment_years\n", "      - employment_years\n      - region\n"
    )
    [problem] = problems(project)
    assert "text features ['region']" in problem and "fitted on an array" in problem
    assert f"credit_limit.yaml:{line_of(project, FLOW, 'features:')}: signals.default_risk" in (
        problem
    )


def test_python_function_gets_a_mapping_with_text(project: Path, low_risk: dict[str, Any]) -> None:
    write(
        project / "risk.py",
        "SEEN = []\n"
        "def score(features):\n"
        "    SEEN.append(dict(features))\n"
        "    return 0.9 if features['region'] == 'west' else 0.1\n",
    )
    replace_in(project / FLOW, "models/default_risk.skops", "python:risk.py:score")
    replace_in(
        project / FLOW, "      - employment_years\n", "      - employment_years\n      - region\n"
    )
    with open_engine(project, environ={}) as engine:
        west = engine.decide("credit_limit", {**low_risk, "region": "west"})
        north = engine.decide("credit_limit", {**low_risk, "region": "north"})
        model = engine.runtime("credit_limit").models["default_risk"]
    assert west.signals["default_risk"]["score"] == 0.9
    assert north.signals["default_risk"]["score"] == 0.1
    seen = model.function.__globals__["SEEN"]  # type: ignore[attr-defined]
    assert seen[-1] == {
        "annual_income": 85000.0,
        "debt_to_income": 0.08,
        "credit_utilization": 0.1,
        "delinquencies_2y": 0.0,
        "credit_history_years": 12.0,
        "employment_years": 9.0,
        "region": "north",
    }


# ---- attributions through the pipeline ---------------------------------------------------


def test_linear_pipeline_attributions_are_per_original_feature(project: Path) -> None:
    model = logistic(project)
    case = cases(1)[0]
    with open_engine(project, environ={}) as engine:
        explained = engine.explain(engine.decide("credit_limit", case).id)
    result = explained["attributions"]["default_risk"]
    assert result["method"] == "linear-exact" and result["unit"] == "log-odds"
    items = {i["feature"]: i for i in result["items"]}
    assert list(items) == list(CATEGORICAL)  # the one-hot group is one attribution
    assert items["region"]["value"] == case["region"]
    margin = model.decision_function(frame_of([case]))[0]
    total = sum(i["contribution"] for i in result["items"])
    # Exact in log-odds: the contributions sum to the margin minus the baseline's margin,
    # which without a reference case is the intercept (zero after preprocessing).
    assert result["baseline"] == pytest.approx(model[-1].intercept_[0])
    assert total == pytest.approx(margin - result["baseline"], abs=1e-9)
    # The region's share is its one-hot coefficient (the other columns of the group are 0).
    names = list(model[:-1].get_feature_names_out())
    coef = model[-1].coef_[0][names.index(f"cat__region_{case['region']}")]
    assert items["region"]["contribution"] == pytest.approx(coef)
    assert explained["notes"] == []


def test_reference_case_with_a_category_is_the_baseline(project: Path) -> None:
    model = logistic(project)
    reference = {f: 1.0 for f in FEATURES} | {"region": "north"}
    block = "".join(f"      {k}: {v}\n" for k, v in reference.items())
    replace_in(
        project / FLOW, "    timeout_ms: 250\n", f"    timeout_ms: 250\n    reference:\n{block}"
    )
    case = {**cases(1)[0], "region": "west"}
    with open_engine(project, environ={}) as engine:
        result = engine.explain(engine.decide("credit_limit", case).id)["attributions"]
    linear = result["default_risk"]
    base = model.decision_function(frame_of([reference]))[0]
    assert linear["baseline"] == pytest.approx(base)
    total = sum(i["contribution"] for i in linear["items"])
    assert total == pytest.approx(model.decision_function(frame_of([case]))[0] - base, abs=1e-9)
    names = list(model[:-1].get_feature_names_out())
    coef = model[-1].coef_[0]
    region = next(i for i in linear["items"] if i["feature"] == "region")
    west, north = names.index("cat__region_west"), names.index("cat__region_north")
    assert region["contribution"] == pytest.approx(coef[west] - coef[north])


def test_a_reference_category_must_be_allowed(project: Path) -> None:
    logistic(project)
    block = "".join(f"      {f}: 1\n" for f in FEATURES) + "      region: mars\n"
    replace_in(
        project / FLOW, "    timeout_ms: 250\n", f"    timeout_ms: 250\n    reference:\n{block}"
    )
    [problem] = problems(project)
    assert "'reference' must give every feature a value" in problem


@pytest.mark.parametrize(
    ("kind", "unit"),
    [("GradientBoostingClassifier", "log-odds"), ("RandomForestClassifier", "probability")],
)
def test_tree_pipeline_attributions_are_tree_shap_per_feature(
    project: Path, kind: str, unit: str
) -> None:
    from sklearn import ensemble

    frame, y = training_frame()
    final = getattr(ensemble, kind)(n_estimators=30, max_depth=4, random_state=0)
    model = pipeline(final).fit(frame, y)
    use_model(project, model, "trees.joblib")
    batch = cases(2)
    with open_engine(project, environ={}) as engine:
        results = [
            engine.explain(engine.decide("credit_limit", c).id)["attributions"]["default_risk"]
            for c in batch
        ]
    for case, result in zip(batch, results, strict=True):
        assert result["method"] == "tree-shap" and result["unit"] == unit
        assert [i["feature"] for i in result["items"]] == list(CATEGORICAL)
        total = sum(i["contribution"] for i in result["items"])
        rows = frame_of([case])
        output = (
            model.decision_function(rows)[0]
            if unit == "log-odds"
            else model.predict_proba(rows)[0, 1]
        )
        # TreeSHAP is exact: the values sum to the output minus one expected output.
        assert total == pytest.approx(output - result["baseline"], abs=1e-6)
    assert results[0]["baseline"] == results[1]["baseline"]


def test_narrative_names_a_category_by_its_label(project: Path) -> None:
    logistic(project)
    case = {**cases(1)[0], "region": "west"}
    with open_engine(project, environ={}) as engine:
        why = engine.explain(engine.decide("credit_limit", case).id)["why"]
    region = [s for s in why if s.startswith("Region")]
    assert region and region[0].startswith("Region (the western region) raised the default risk")
    assert not any("Region of" in s for s in why)


def test_missing_attributions_say_why_in_json_and_plain_output(project: Path) -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame, y = training_frame(500)
    numbers = frame[list(FEATURES)]
    model = Pipeline([("pca", PCA(3)), ("model", LogisticRegression())]).fit(numbers, y)
    import joblib

    joblib.dump(model, project / "models" / "pca.joblib")
    replace_in(project / FLOW, "models/default_risk.skops", "models/pca.joblib")
    with open_engine(project, environ={}) as engine:
        decision = engine.decide("credit_limit", cases(1)[0])
        explained = engine.explain(decision.id)
    note = (
        "attributions for default_risk: not available — the pipeline step PCA may combine "
        "features, so its output cannot be attributed back to them"
    )
    assert explained["notes"] == [note]
    assert explained["attributions"]["default_risk"]["method"] == "none"
    out = CliRunner().invoke(app, ["explain", decision.id, "--project", str(project)])
    assert out.exit_code == 0, out.output
    assert f"note: {note}" in out.output


# ---- ONNX graphs with text inputs --------------------------------------------------------


def onnx_of(model: Any, path: Path, *, per_column: bool = True) -> None:
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType, StringTensorType

    inputs = [(f, FloatTensorType([None, 1])) for f in FEATURES]
    inputs.append(
        ("region", StringTensorType([None, 1]) if per_column else FloatTensorType([None, 1]))
    )
    onx = to_onnx(model, initial_types=inputs, options={"zipmap": False}, target_opset=17)
    path.write_bytes(onx.SerializeToString())


def test_onnx_pipeline_with_string_inputs_scores_as_sklearn(project: Path) -> None:
    model = logistic(project)
    onnx_of(model, project / "models" / "pipeline.onnx")
    replace_in(project / FLOW, "models/pipeline.skops", "models/pipeline.onnx")
    batch = cases()
    with open_engine(project, environ={}) as engine:
        ours = [
            d.signals["default_risk"]["score"] for d in engine.decide_many("credit_limit", batch)
        ]
        kind = engine.runtime("credit_limit").models["default_risk"].kind
    assert kind == "onnx"
    expected = model.predict_proba(frame_of(batch))[:, 1]
    assert ours == pytest.approx(expected.tolist(), abs=1e-5)


def test_onnx_input_type_must_fit_the_feature(project: Path) -> None:
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    frame, y = training_frame(300)
    codes = frame.assign(
        region=frame["region"].map({"north": 0.0, "south": 1.0, "east": 2.0, "west": 3.0})
    )
    prep = ColumnTransformer([("num", StandardScaler(), list(CATEGORICAL))])
    model = Pipeline([("prep", prep), ("model", LogisticRegression())]).fit(codes, y)
    onnx_of(model, project / "models" / "codes.onnx", per_column=False)
    use_model(project, model, "unused.joblib")
    replace_in(project / FLOW, "models/unused.joblib", "models/codes.onnx")
    [problem] = problems(project)
    assert "a string feature 'region' meets the input of type tensor(float)" in problem
    assert f"credit_limit.yaml:{line_of(project, FLOW, 'features:')}: signals.default_risk" in (
        problem
    )


# ---- drift treats declared categories as categories -------------------------------------


def test_drift_treats_coded_categories_as_categories(project: Path, tmp_path: Path) -> None:
    """An integer-coded field with `allowed` values is a category in drift (it was compared
    as a number before), and the report shows its categories by their labels."""
    import json
    import os

    from keel.ledger.records import iso_time
    from keel.monitor.windows import Window, read_window
    from tests.conftest import LOW_RISK, Clock
    from tests.test_cli import keel

    replace_in(
        project / FLOW,
        "  region:\n",
        "  housing:\n    type: integer\n    allowed: [1, 2, 3]\n"
        "    labels: {1: owns a home, 2: rents, 3: lives for free}\n  region:\n",
    )
    start, day = 1_800_000_000.0, 86_400.0
    clock = Clock(start)
    with open_engine(project, environ=dict(os.environ), clock=clock) as engine:
        for day_index, codes in enumerate(([1, 1, 2] * 10, [3, 3, 2] * 10)):
            clock.now = start + day_index * day
            for code in codes:
                engine.decide("credit_limit", {**LOW_RISK, "housing": code})
                clock.now += 60
        window = Window(iso_time(start + day - 3600), iso_time(start + 2 * day))
        table = read_window(engine.ctx, "credit_limit", window).table()
    assert table["input.housing"].dtype == object
    assert sorted(set(table["input.housing"])) == ["2", "3"]
    out = tmp_path / "drift"
    code, stdout, err = keel(
        "drift", "report", "--flow", "credit_limit", "--window", "1d", "--baseline", "1d",
        "--until", iso_time(start + 2 * day), "--out", str(out), "-p", str(project),
    )  # fmt: skip
    assert code == 1, err
    assert "input.housing" in stdout
    column = json.loads((out / "report.json").read_text())["columns"]["input.housing"]
    assert column["type"] == "categorical" and column["method"] == "jensenshannon"
    histogram = column["histogram"]
    assert sorted(histogram["categories"]) == ["1", "2", "3"]
    shown = dict(zip(histogram["categories"], histogram["labels"], strict=True))
    assert shown == {"1": "owns a home", "2": "rents", "3": "lives for free"}
    assert "lives for free" in (out / "report.html").read_text()


def test_coded_category_is_named_by_its_label_in_sentences(project: Path) -> None:
    """A model fed integer codes still gets sentences in words: the code 11 of checking is
    shown as its label (YAML gives label keys as text; they name the allowed numbers)."""
    from keel.config import load_settings
    from keel.explain.attributions import Attribution, Attributions
    from keel.explain.narrative import attribution_sentences
    from keel.project import load_project

    replace_in(
        project / FLOW,
        "  region:\n",
        "  checking:\n    type: integer\n    allowed: [11, 12, 14]\n    label: Checking account\n"
        "    labels: {11: overdrawn, 14: no checking account}\n  region:\n",
    )
    flow = load_project(load_settings(project, {})).flows["credit_limit"].flow
    found = Attributions("linear-exact", "log-odds", (Attribution("checking", 14.0, 0.7),))
    [sentence] = attribution_sentences(flow, "default_risk", found)
    assert sentence == (
        "Checking account (no checking account) raised the default risk the most (+0.70 log-odds)."
    )
    assert flow.fields["checking"].value_label(11) == "overdrawn"


def test_onnx_graph_with_one_string_tensor(project: Path) -> None:
    """A graph whose one input is a string matrix gets the text features in it, in order."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import StringTensorType
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import OneHotEncoder

    frame, y = training_frame()
    model = Pipeline([("encode", OneHotEncoder()), ("model", LogisticRegression())])
    model.fit(frame[["region"]].to_numpy(dtype=object), y)
    onx = to_onnx(
        model,
        initial_types=[("input", StringTensorType([None, 1]))],
        options={"zipmap": False},
        target_opset=17,
    )
    (project / "models" / "regions.onnx").write_bytes(onx.SerializeToString())
    replace_in(project / FLOW, "models/default_risk.skops", "models/regions.onnx")
    replace_in(project / FLOW, "      - annual_income\n", "      - region\n")
    for feature in FEATURES[1:]:
        replace_in(project / FLOW, f"      - {feature}\n", "")
    batch = [{**c, "region": r} for c, r in zip(cases(4), REGION_LABELS, strict=True)]
    with open_engine(project, environ={}) as engine:
        ours = [
            d.signals["default_risk"]["score"] for d in engine.decide_many("credit_limit", batch)
        ]
    expected = model.predict_proba(np.array([[r] for r in REGION_LABELS], dtype=object))[:, 1]
    assert ours == pytest.approx(expected.tolist(), abs=1e-5)


class Doubler:
    """A home-made transformer: not a type Keel trusts in a skops file."""

    def fit(self, x: Any, y: Any = None) -> Doubler:
        return self

    def transform(self, x: Any) -> Any:
        return x * 2


def test_skops_file_with_a_home_made_type_is_refused_by_name(project: Path) -> None:
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline

    frame, y = training_frame(300)
    model = Pipeline([("double", Doubler()), ("model", LogisticRegression(max_iter=1000))])
    model.fit(frame[list(FEATURES)], y)
    sio.dump(model, project / "models" / "homemade.skops")
    replace_in(project / FLOW, "models/default_risk.skops", "models/homemade.skops")
    [problem] = problems(project)
    assert "homemade.skops contains types Keel does not trust: " in problem
    assert "tests.test_categorical.Doubler" in problem
