"""`keel validate` checks each model against its signal.

A swapped feature order or a positive class the model does not have validated "ok" before,
then scored every case on the wrong columns or sent every decision to the fallback. Each is
now a problem with the flow file, the line of the key it contradicts, and the signal.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.config import load_settings
from keel.project import load_project
from keel.scaffold.applicants import FEATURES, generate_applicants
from keel.signals.loading import loaded
from keel.signals.rows import Rows
from tests.conftest import line_of, problems, replace_in

FLOW = "flows/credit_limit.yaml"


def save_named_model(project: Path, classes: tuple[object, object] = (0, 1)) -> None:
    """A model trained on a DataFrame, so it knows its feature names and their order."""
    import joblib
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    rows = generate_applicants(500, seed=5)
    frame = pd.DataFrame([{f: float(r[f]) for f in FEATURES} for r in rows])
    y = np.array([classes[int(r["defaulted"])] for r in rows])
    joblib.dump(LogisticRegression(max_iter=1000).fit(frame, y), project / "models/named.joblib")
    replace_in(project / FLOW, "models/default_risk.skops", "models/named.joblib")


def test_model_trained_on_the_listed_features_validates(project: Path) -> None:
    save_named_model(project)
    loaded = load_project(load_settings(project, {}), load_models=True)
    assert loaded.flows["credit_limit"].models["default_risk"].features == FEATURES


def test_swapped_feature_order_names_both_orders(project: Path) -> None:
    save_named_model(project)
    replace_in(
        project / FLOW,
        "      - annual_income\n      - debt_to_income\n",
        "      - debt_to_income\n      - annual_income\n",
    )
    [problem] = problems(project)
    swapped = ["debt_to_income", "annual_income", *FEATURES[2:]]
    assert f"lists its features in the order {swapped}" in problem
    assert f"trained on them in the order {list(FEATURES)}" in problem
    assert f"credit_limit.yaml:{line_of(project, FLOW, 'features:')}: signals.default_risk" in (
        problem
    )


def test_features_the_model_was_not_trained_on(project: Path) -> None:
    save_named_model(project)
    replace_in(project / FLOW, "      - employment_years\n", "      - requested_limit\n")
    [problem] = problems(project)
    assert "not listed: ['employment_years']" in problem
    assert "unknown to the model: ['requested_limit']" in problem


def test_positive_class_the_model_lacks_names_the_classes(project: Path) -> None:
    replace_in(project / FLOW, "positive_class: 1", 'positive_class: "bad"')
    [problem] = problems(project)
    assert "positive_class 'bad'" in problem and "classes of model" in problem
    assert "[0, 1]" in problem
    line = line_of(project, FLOW, "positive_class:")
    assert f"credit_limit.yaml:{line}: signals.default_risk" in problem


@pytest.mark.parametrize("written", ["1", '"1"', "1.0"])
def test_positive_class_matches_int_classes_however_yaml_writes_it(
    project: Path, written: str
) -> None:
    replace_in(project / FLOW, "positive_class: 1", f"positive_class: {written}")
    load_project(load_settings(project, {}), load_models=True)


def test_string_classes_accept_their_name(project: Path) -> None:
    save_named_model(project, classes=("good", "bad"))
    replace_in(project / FLOW, "positive_class: 1", "positive_class: bad")
    runtime = load_project(load_settings(project, {}), load_models=True).flows["credit_limit"]
    model = loaded(runtime.models["default_risk"])
    row = np.zeros((1, len(FEATURES)))
    estimator = model.estimator  # type: ignore[attr-defined]
    bad = list(estimator.classes_).index("bad")
    import pandas as pd

    expected = estimator.predict_proba(pd.DataFrame(row, columns=list(FEATURES)))[0][bad]
    assert model.predict_many(Rows.numeric(FEATURES, row))[0].score == pytest.approx(expected)
    replace_in(project / FLOW, "positive_class: bad", "positive_class: 1")
    [problem] = problems(project)
    assert "['bad', 'good']" in problem


def test_probability_from_a_regressor_is_a_located_problem(project: Path) -> None:
    import joblib
    from sklearn.linear_model import LinearRegression

    x = np.random.default_rng(0).random((20, len(FEATURES)))
    joblib.dump(LinearRegression().fit(x, x[:, 0]), project / "models/reg.joblib")
    replace_in(project / FLOW, "models/default_risk.skops", "models/reg.joblib")
    [problem] = problems(project)
    assert "has no predict_proba" in problem
    line = line_of(project, FLOW, "output: probability")
    assert f"credit_limit.yaml:{line}: signals.default_risk" in problem


def test_onnx_positive_class_and_width_are_checked(project: Path) -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x = np.random.default_rng(0).random((40, len(FEATURES)))
    y = (x[:, 0] > 0.5).astype(int)
    model = LogisticRegression().fit(x, y)
    onx = to_onnx(model, x[:1].astype(np.float32), options={"zipmap": False})
    (project / "models/risk.onnx").write_bytes(onx.SerializeToString())
    replace_in(project / FLOW, "models/default_risk.skops", "models/risk.onnx")
    load_project(load_settings(project, {}), load_models=True)  # as written: valid
    replace_in(project / FLOW, "positive_class: 1", "positive_class: bad")
    [problem] = problems(project)
    assert "positive_class 'bad'" in problem and "[0, 1]" in problem
    replace_in(project / FLOW, "positive_class: bad", "positive_class: 1")
    replace_in(project / FLOW, "      - employment_years\n", "")
    [problem] = problems(project)
    assert "expects 6 features but signal 'default_risk' lists 5" in problem


def test_validate_command_reports_the_swap(project: Path) -> None:
    save_named_model(project)
    replace_in(
        project / FLOW,
        "      - annual_income\n      - debt_to_income\n",
        "      - debt_to_income\n      - annual_income\n",
    )
    result = CliRunner().invoke(app, ["validate", "--project", str(project)])
    assert result.exit_code != 0
    assert "trained on them in the order" in result.output


def test_onnx_inputs_per_feature_must_be_the_signals_features(project: Path) -> None:
    from onnx import TensorProto, helper

    names = [*FEATURES[:-1], "years_employed"]  # one input named differently
    graph = helper.make_graph(
        [helper.make_node("Concat", names, ["row"], axis=1)],
        "per_feature",
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, [None, 1]) for n in names],
        [helper.make_tensor_value_info("row", TensorProto.FLOAT, [None, len(names)])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    (project / "models/per_feature.onnx").write_bytes(model.SerializeToString())
    replace_in(project / FLOW, "models/default_risk.skops", "models/per_feature.onnx")
    [problem] = problems(project)
    assert f"takes the inputs {names}" in problem
    assert f"lists the features {list(FEATURES)}" in problem
