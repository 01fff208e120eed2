"""Defects a credit team met going through Keel end to end, each pinned by a test.

The team's model is a scikit-learn ``Pipeline`` with one-hot encoded categories (as in
``tests/test_categorical.py``), its flow has labelled categorical inputs, and its policy
reads a category in CEL. Each test below is one thing that read wrongly to that team.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.errors import ConflictError
from keel.review.outcomes import OutcomeReport
from keel.scaffold.applicants import case_inputs, generate_applicants
from tests.conftest import LOW_RISK
from tests.test_categorical import cases, logistic
from tests.test_notices import with_notices

POLICY = "policies/credit_limit.yaml"
runner = CliRunner()


def keel(project: Path, *args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "-p", str(project)])
    return result.exit_code, result.stdout, result.stderr


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


def test_model_figures_without_a_card_use_the_flows_outcome_positive(project: Path) -> None:
    """``keel report trust`` gave an AUC from the flow's ``outcome.positive`` while
    ``keel models show`` said "AUC and Brier need the card's positive_outcomes": with no
    card, the model's figures judge outcomes as the flow names them, and agree."""
    from sklearn.metrics import brier_score_loss, roc_auc_score

    applicants = generate_applicants(40, seed=3)
    with open_engine(project, environ={}) as engine:
        version = engine.runtime("credit_limit").models["default_risk"].version
        decided = [engine.decide("credit_limit", case_inputs(a)) for a in applicants]
        for applicant, decision in zip(applicants, decided, strict=True):
            label = "defaulted" if applicant["defaulted"] else "repaid"
            engine.outcomes.report(OutcomeReport(decision.id, label), engine.operator)
        detail = engine.models.show(version[7:15], engine.operator)
    assert detail.card is None
    scores = [d.signals["default_risk"]["score"] for d in decided]
    bad = [bool(a["defaulted"]) for a in applicants]
    assert len(set(bad)) == 2, "the sample holds both outcomes"
    (figures,) = detail.figures
    assert figures.scored == 40 and figures.bad == sum(bad)
    assert figures.auc == pytest.approx(roc_auc_score(bad, scores), abs=1e-12)
    assert figures.brier == pytest.approx(brier_score_loss(bad, scores), abs=1e-12)
    assert not any("positive_outcomes" in note for note in figures.notes)


def test_a_policy_file_already_proposed_points_to_its_change_not_to_a_new_proposal(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """In production mode every command said "keel policy propose …" for an edited policy
    file even after it was proposed, and ``keel policy history`` ended with "propose it
    with: …": a user following it opened a second change for the same version."""
    path = project / POLICY
    with open_engine(project, environ={}):
        pass  # the first version is recorded from the file
    path.write_text(path.read_text().replace("review_risk: 0.22", "review_risk: 0.3"))

    code, _, err = keel(project, "policy", "history", "credit_limit")
    assert code == 0, err
    assert "next: keel policy propose credit_limit -r REASON" in err

    code, out, err = keel(project, "policy", "propose", "credit_limit", "-r", "Looser grey zone")
    assert code == 0, err
    change = json.loads(out)["id"]
    caplog.clear()
    code, _, err = keel(project, "policy", "history", "credit_limit")
    assert code == 0, err
    waiting = f"change {change} holds it, waiting for approval by someone other than its author"
    assert f"next: {waiting}: keel policy approve {change} -r REASON" in err
    assert f"approved and activated (production mode): {waiting}" in caplog.text
    assert "keel policy propose" not in err + caplog.text

    # Proposing it again opened a second change for the same version; now it is refused.
    code, _, err = keel(project, "policy", "propose", "credit_limit", "-r", "Again")
    assert code != 0 and f"change {change} (proposed) already proposes policy version" in err
    assert f"keel policy approve {change} -r REASON" in err
    code, out, _ = keel(project, "policy", "history", "credit_limit")
    assert code == 0 and out.count("proposed") == 1


def test_a_bound_hit_writes_its_values_in_the_flows_locale(
    project: Path, low_risk: dict[str, object]
) -> None:
    """A German flow's explanation read "Approved 25.000 € …" beside "Guardrail
    bounds.approve was hit: value 27,000.00 is above the bound 25,000.00"."""
    settings = project / "keel.yaml"
    settings.write_text(settings.read_text() + "locale: de_DE\ncurrency: EUR\n")
    case = {**low_risk, "annual_income": 120000.0, "requested_limit": 27000.0}
    with open_engine(project, environ={}) as engine:
        decision = engine.decide("credit_limit", case)
        why = engine.explain(decision.id)["why"]
    assert decision.value == 25000.0
    [hit] = decision.guardrail_hits
    assert hit["detail"] == "value 27.000,00 is above the bound 25.000,00"
    assert f"Guardrail bounds.approve was hit: {hit['detail']} (so: clamp)." in why
    assert not any("27,000" in s or "25,000" in s for s in why)


def test_a_notice_refusal_writes_amounts_as_money_in_the_flows_locale(project: Path) -> None:
    """A refusal read "is not adverse (refer, requested 8061.58)": a euro amount as a bare
    float."""
    settings = project / "keel.yaml"
    settings.write_text(settings.read_text() + "locale: de_DE\ncurrency: EUR\n")
    with open_engine(with_notices(project), environ={}) as engine:
        approved = engine.decide("credit_limit", LOW_RISK)
        with pytest.raises(ConflictError) as refused:
            engine.notice(approved.id)
    assert "is not adverse (approve 6.000\xa0€, requested 6.000\xa0€)" in str(refused.value)


def test_the_explanation_writes_the_value_as_the_request_it_answers(project: Path) -> None:
    """A German flow's explanation began "Decision: approve 12.000" while its notice said
    "12.000 €": with a ``notice.request``, the value is written in that input's format."""
    settings = project / "keel.yaml"
    settings.write_text(settings.read_text() + "locale: de_DE\ncurrency: EUR\n")
    with open_engine(project, environ={}) as engine:
        plain = engine.explain(engine.decide("credit_limit", LOW_RISK).id)["why"]
    assert plain[0] == "Decision: approve 6.000 (acted on automatically)."
    with open_engine(with_notices(project), environ={}) as engine:
        why = engine.explain(engine.decide("credit_limit", LOW_RISK).id)["why"]
    assert why[0] == "Decision: approve 6.000\xa0€ (acted on automatically)."
