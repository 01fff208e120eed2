"""Malformed flows and policies are rejected with every problem named, file and place."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel.config import load_settings
from keel.errors import ConfigError, DefinitionError
from keel.project import load_project
from tests.conftest import replace_in, write

POLICY = "policies/credit_limit.yaml"
FLOW = "flows/credit_limit.yaml"


def problems(project: Path) -> list[str]:
    with pytest.raises(DefinitionError) as info:
        load_project(load_settings(project, {}), load_models=True)
    return [str(p) for p in info.value.problems]


def test_example_project_is_valid(project: Path) -> None:
    loaded = load_project(load_settings(project, {}))
    assert list(loaded.flows) == ["credit_limit"]


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("input.annual_income < params.min_income", "input.annual_income <", "CEL syntax error"),
        (
            "input.annual_income < params.min_income",
            "input.annual_income * 2 > 1.0",
            "CEL type error",
        ),
        (
            "input.annual_income < params.min_income",
            "input.salary < params.min_income",
            "unknown input 'salary'",
        ),
        (
            "input.annual_income < params.min_income",
            "input.annual_income < params.nope",
            "unknown parameter 'nope'",
        ),
        (
            "signals.default_risk.score >= params.decline_risk",
            "signals.fraud.score >= 0.5",
            "unknown signal 'fraud'",
        ),
        (
            "signals.default_risk.score >= params.decline_risk",
            "signals.default_risk.scor >= 0.5",
            "has no attribute 'scor'",
        ),
        (
            "input.annual_income < params.min_income",
            "input.annual_income + 1.0",
            "must be true or false",
        ),
        ("input.annual_income < params.min_income", "ratio < 3.0", "unknown variable 'ratio'"),
        (
            "    action: refer\n    reason: Existing",
            "    action: escalate_now\n    reason: Existing",
            "unknown action 'escalate_now'",
        ),
        ("- name: over_indebted", "- name: income_too_low", "duplicate rule name"),
        (
            "{params.min_income:currency}",
            "{params.minimum_income}",
            "unknown value '{params.minimum_income}'",
        ),
        ("    when: input.debt_to_income > params.max_dti", "    when: 'true'", "unreachable"),
        ("      per: region", "      per: country", "'per' names unknown input 'country'"),
        ("      window: 24h", "      window: a day", "'window' must look like"),
    ],
)
def test_policy_errors_name_file_rule_and_line(
    project: Path, old: str, new: str, expected: str
) -> None:
    replace_in(project / POLICY, old, new)
    found = problems(project)
    assert any(expected in p for p in found), found
    assert all(POLICY.split("/")[1] in p for p in found)


def test_errors_carry_rule_name_and_line(project: Path) -> None:
    replace_in(project / POLICY, "input.annual_income < params.min_income", "input.salary < 1.0")
    [problem] = problems(project)
    assert "rule 'income_too_low'" in problem
    lines = (project / POLICY).read_text().splitlines()
    when_line = next(i for i, line in enumerate(lines, 1) if "input.salary" in line)
    assert f"credit_limit.yaml:{when_line}: " in problem


def test_every_problem_is_reported_at_once(project: Path) -> None:
    replace_in(project / POLICY, "input.annual_income < params.min_income", "input.salary < 1.0")
    replace_in(project / POLICY, "input.delinquencies_2y >= params.max_delinquencies", "x >")
    assert len(problems(project)) == 2


def test_unreachable_rule_after_identical_condition(project: Path) -> None:
    replace_in(
        project / POLICY,
        "when: input.debt_to_income > params.max_dti",
        "when: input.delinquencies_2y >= params.max_delinquencies",
    )
    assert any("unreachable" in p and "same condition" in p for p in problems(project))


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        (
            "owner:\n  name: Dana Reyes, Head of Consumer Credit Risk\n  email: dana.reyes@example.com\n",
            "",
            "accountable owner",
        ),
        ("autonomy: supervised", "autonomy: yolo", "'autonomy' must be one of"),
        (
            "    type: integer\n    min: 0\n    max: 50",
            "    type: int\n    min: 0\n    max: 50",
            "'type' must be one of",
        ),
        (
            "    classification: internal",
            "    classification: secret",
            "'classification' must be one of",
        ),
        (
            "      - employment_years\n",
            "      - employment_years\n      - region\n",
            "was fitted on an array, which holds numbers only",
        ),
        (
            "      - employment_years\n",
            "      - employment_years\n      - age\n",
            "feature 'age' is not an input",
        ),
        ("    min: 100\n    max: 100000", "    min: 100000\n    max: 100", "greater than 'max'"),
        ("policy: credit_limit", "policy: pricing", "no policy named 'pricing'"),
        ("    timeout_ms: 250", "    timeout_ms: fast", "'timeout_ms' must be an integer"),
        ("inputs:", "inputz:", "unknown key 'inputz'"),
        (
            "    label: Region\n",
            "    label: Region\n    labels: {north: North, central: Central}\n",
            "'labels' names 'central', which is not an allowed value",
        ),
        (
            "    classification: internal\n    label: Region\n",
            "    classification: internal\n    label: Region\n    protected: maybe\n",
            "'protected' must be true or false",
        ),
        (
            "    allowed: [north, south, east, west]\n",
            "    labels: {north: North}\n",
            "'labels' needs 'allowed'",
        ),
    ],
)
def test_flow_errors(project: Path, old: str, new: str, expected: str) -> None:
    replace_in(project / FLOW, old, new)
    found = problems(project)
    assert any(expected in p for p in found), found


def test_labels_and_protected_fields_are_read(project: Path) -> None:
    replace_in(
        project / FLOW,
        "    label: Region\n",
        "    label: Region\n    labels: {north: Northern region}\n    protected: true\n",
    )
    flow = load_project(load_settings(project, {})).flows["credit_limit"].flow
    region = flow.fields["region"]
    assert region.value_label("north") == "Northern region"
    assert region.value_label("south") == "south"
    assert flow.protected_attributes == ("region",)


def test_invalid_yaml_names_line(project: Path) -> None:
    write(project / POLICY, "policy: x\nrules: [\n  - name: a\n")
    [problem] = problems(project)
    assert "not valid YAML" in problem and "credit_limit.yaml:3:3:" in problem


# One mistake, one problem. Before, each of these also reported what followed from it: the
# flow's "no policy named 'credit_limit'" (2 problems for a YAML error, 3 for a misspelt key),
# a missing 'actions' beside the misspelt 'acions', and every signal feature naming a field
# whose type was wrong (2 problems on the scaffold for `type: int`, more with more signals).
@pytest.mark.parametrize(
    ("path", "old", "new", "expected"),
    [
        (POLICY, "rules:\n", "rules: [\n", "not valid YAML"),
        (POLICY, "policy: credit_limit\n", "policy: credit_limit\nrules: [\n", "not valid YAML"),
        (POLICY, "actions:", "acions:", "unknown key 'acions': did you mean 'actions'?"),
        (POLICY, "  - name: high_risk\n", "  - nme: high_risk\n", "did you mean 'name'?"),
        (POLICY, "when: input.annual_income <", "when: input.annual_income <<", "CEL syntax"),
        (FLOW, "inputs:", "inputz:", "unknown key 'inputz': did you mean 'inputs'?"),
        (FLOW, "  delinquencies_2y:\n    type: integer", "  delinquencies_2y:\n    type: int",
         "inputs.delinquencies_2y: 'type' must be one of number, integer, string, boolean"),
        (FLOW, "  debt_to_income:\n    type: number", "  debt_to_income:\n    type: float",
         "'type' must be one of"),  # an actionable field, and a model feature
        (FLOW, "  employment_years:\n    type: number\n    min: 0\n    max: 60\n"
         "    label: Time in employment\n    format: years\n", "  employment_years: number\n",
         "inputs.employment_years: must be a mapping"),
    ],
)  # fmt: skip
def test_one_mistake_is_one_problem(
    project: Path, path: str, old: str, new: str, expected: str
) -> None:
    replace_in(project / path, old, new)
    [problem] = problems(project)
    assert expected in problem


def test_corrupt_model_file_is_named(project: Path) -> None:
    (project / "models" / "default_risk.skops").write_bytes(b"this is not a zip file")
    [problem] = problems(project)
    assert "default_risk.skops" in problem and "corrupt" in problem


def test_missing_model_file(project: Path) -> None:
    (project / "models" / "default_risk.skops").unlink()
    [problem] = problems(project)
    assert "does not exist" in problem


def test_missing_settings_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"keel\.yaml is missing"):
        load_settings(tmp_path, {})


def test_unknown_setting_is_named(project: Path) -> None:
    replace_in(project / "keel.yaml", "ledger:", "ledgr:")
    with pytest.raises(ConfigError, match="unknown setting 'ledgr'"):
        load_settings(project, {})


def test_environment_overrides_database_url(project: Path, tmp_path: Path) -> None:
    settings = load_settings(project, {"KEEL_DATABASE_URL": f"sqlite:///{tmp_path}/other.db"})
    assert settings.database_url == f"sqlite:///{tmp_path}/other.db"
    assert load_settings(project, {}).database_url == f"sqlite:///{project}/keel.db"
