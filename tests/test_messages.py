"""Input refusals read as plain English: the right article before a type, and a null told
apart from a missing field."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel import open_engine
from keel.errors import InputError
from keel.text import article
from tests.conftest import LOW_RISK, replace_in

FLOW = "credit_limit"


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("integer", "an integer"),
        ("number", "a number"),
        ("outcome", "an outcome"),
        ("alarm_raised", "an alarm_raised"),
        ("float", "a float"),
        ("int", "an int"),
        ("unit", "a unit"),
        ("OneHotEncoder", "a OneHotEncoder"),
        ("LogisticRegression", "a LogisticRegression"),
    ],
)
def test_article(word: str, expected: str) -> None:
    assert article(word) == expected


def test_integer_and_null_messages(project: Path) -> None:
    replace_in(
        project / "flows/credit_limit.yaml",
        "    label: Time in employment\n",
        "    label: Time in employment\n    required: false\n",
    )
    with open_engine(project, environ={}) as engine:
        case = {**LOW_RISK, "delinquencies_2y": "two", "credit_history_years": None}
        with pytest.raises(InputError) as info:
            engine.decide(FLOW, case)
        errors = {e["field"]: e["error"] for e in info.value.detail["errors"]}
        assert errors == {
            "delinquencies_2y": "expected an integer, got str 'two'",
            "credit_history_years": "is null; a value is required",
        }
        missing = {k: v for k, v in LOW_RISK.items() if k != "credit_history_years"}
        with pytest.raises(InputError, match="credit_history_years: required field is missing"):
            engine.decide(FLOW, missing)
        # An optional field sent as null is the same as one left out.
        decided = engine.decide(FLOW, {**LOW_RISK, "employment_years": None})
        assert "employment_years" not in engine.explain(decided.id)["inputs"]
