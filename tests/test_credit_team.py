"""Defects a credit team met going through Keel end to end, each pinned by a test.

The team's model is a scikit-learn ``Pipeline`` with one-hot encoded categories (as in
``tests/test_categorical.py``), its flow has labelled categorical inputs, and its policy
reads a category in CEL. Each test below is one thing that read wrongly to that team.
"""

from __future__ import annotations

from pathlib import Path

from keel import open_engine
from tests.test_categorical import cases, logistic

POLICY = "policies/credit_limit.yaml"

REGION_RULES = """rules:
  - name: western_region
    when: input.region == "west"
    action: refer
    reason: Western applications go to an underwriter.
  - name: everyone_else
    when: "true"
    action: refer
    reason: Every other application goes to an underwriter too.
"""


def test_rule_facts_name_a_category_by_its_label_and_a_bare_condition_reads_well(
    project: Path,
) -> None:
    """The rule line said "Region = west", a code that means nothing to a reader; and a rule
    whose condition reads nothing ended in "held with ."."""
    logistic(project)
    text = (project / POLICY).read_text()
    start, end = text.index("rules:\n"), text.index("default:\n")
    (project / POLICY).write_text(text[:start] + REGION_RULES + text[end:])
    west, other = {**cases(1)[0], "region": "west"}, {**cases(1)[0], "region": "north"}
    with open_engine(project, environ={}) as engine:
        west_why = engine.explain(engine.decide("credit_limit", west).id)["why"]
        other_why = engine.explain(engine.decide("credit_limit", other).id)["why"]
    assert (
        "Rule 'western_region' decided: input.region == \"west\" held with "
        "Region = west (the western region)." in west_why
    )
    assert "Rule 'everyone_else' decided: true held." in other_why
    assert not any(s.endswith("held with .") for s in other_why)
