"""`keel validate` refuses CEL comparisons between values of different types.

CEL's equality is heterogeneous: `input.checking == "A11"` on an integer field validated
"ok" and then was false for every case. Each such comparison is now a type error with the
policy file, the line and the rule.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import load_settings
from keel.project import load_project
from tests.conftest import line_of, problems, replace_in

POLICY = "policies/credit_limit.yaml"
CONDITION = "input.delinquencies_2y >= params.max_delinquencies"


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        (
            'input.delinquencies_2y == "none"',
            "compares an integer with a string: it is always false",
        ),
        ('input.delinquencies_2y != "2"', "compares an integer with a string: it is always true"),
        ('input.annual_income < "50000"', "compares a number with a string"),
        ("input.delinquencies_2y >= true", "compares an integer with a boolean"),
        ('input.delinquencies_2y in ["1", "2"]', "holds strings: 'in' is never true"),
        ("signals.default_risk.label == 1", "compares a string with an integer"),
        ('params.max_delinquencies == "3"', "compares an integer with a string"),
        (
            'input.annual_income > 0.0 && ["a"].exists(c, c == input.delinquencies_2y)',
            "'c == input.delinquencies_2y' compares a string with an integer",
        ),
    ],
)
def test_incompatible_comparison_is_a_type_error(
    project: Path, condition: str, expected: str
) -> None:
    replace_in(project / POLICY, CONDITION, condition)
    [problem] = problems(project)
    assert "CEL type error" in problem and expected in problem, problem
    line = line_of(project, POLICY, condition)
    assert f"credit_limit.yaml:{line}: rule 'recent_delinquencies'" in problem


@pytest.mark.parametrize(
    "condition",
    [
        "input.delinquencies_2y >= 2",
        "input.delinquencies_2y >= 2.5",  # integer against number: both numbers
        "input.delinquencies_2y in [1, 2, 3]",
        "input.delinquencies_2y >= params.max_delinquencies",
        'signals.default_risk.label == "1"',
        "input.annual_income > input.requested_limit * 2.0",
        'has(input.region) && input.region != "north"',
        'string(input.delinquencies_2y) == "3"',
        'input.region in ["north", "west"]',
        'input.annual_income > 0.0 && "west" == input.region',
    ],
)
def test_compatible_comparison_validates(project: Path, condition: str) -> None:
    replace_in(project / POLICY, CONDITION, condition)
    load_project(load_settings(project, {}))


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ('input.region == "West"', "'West' is not among the allowed values of region"),
        (
            'input.annual_income > 0.0 && "nord" != input.region',
            "'nord' is not among the allowed values of region",
        ),
        ('input.region in ["north", "wets"]', "'wets' is not among the allowed values"),
        ('input.region in ["n", "s"]', "'n', 's' are not among the allowed values of region"),
    ],
)
def test_a_value_outside_a_fields_allowed_values_is_refused(
    project: Path, condition: str, expected: str
) -> None:
    """A credit team's typo in a category code (`input.checking == "a11"` when the codes
    are `A11`…`A14`) validated "ok" and then never matched: every valid case carries one of
    the allowed values, so the comparison is decided before any case arrives."""
    replace_in(project / POLICY, CONDITION, condition)
    [problem] = problems(project)
    assert expected in problem and "(north, south, east, west)" in problem, problem
    effect = "always true" if "!=" in condition else "always false"
    if " in " in condition:
        effect = "never matches"
    assert effect in problem
    line = line_of(project, POLICY, condition)
    assert f"credit_limit.yaml:{line}: rule 'recent_delinquencies'" in problem
