"""Writing the ``credit-categorical`` example: a loan flow on German-credit-shaped data.

``keel init --example credit-categorical`` writes it. Its model is a scikit-learn
``Pipeline`` fitted on a DataFrame with 11 categorical columns (codes such as ``A11``); its
flow declares those codes with their labels, records three protected attributes the model
never reads, writes money in euros the German way, and gives notices, fairness and
performance figures. The flow file is written from ``german_credit.CATEGORIES``, so the
codes, their labels and the generator cannot disagree.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from keel.config import SETTINGS_FILE
from keel.scaffold.german_credit import (
    CATEGORICAL_FEATURES,
    CATEGORIES,
    FEATURES,
    PROTECTED,
    applicant_frame,
    generate_applicants,
    train_credit_model,
)

TRAINING_ROWS = 1_000  # as many applicants as the Statlog German credit data has
TRAINING_SEED = 1994
BATCH_ROWS = 400
BATCH_SEED = 2024
EXAMPLE_SEED = 11
FLOW_NAME = "loan_application"

# Each field's label and, for a model feature, how a notice states it to the applicant.
_FIELDS: dict[str, tuple[str, str | None]] = {
    "duration": ("Loan term in months", "Term of the loan requested"),
    "credit_amount": ("Amount requested", "Amount of credit requested"),
    "installment_rate": (
        "Installment as a share of income (1-4)",
        "Installment too high for income",
    ),
    "residence_since": ("Years at present address (1-4)", "Length of residence"),
    "existing_credits": ("Credits at this bank", "Number of existing credits"),
    "dependents": ("People the applicant supports", "Number of dependents"),
    "checking_status": ("Current account", "Status of your current account"),
    "credit_history": ("Credit history", "Your past repayment of credit"),
    "purpose": ("Purpose", "Purpose of the loan"),
    "savings": ("Savings", "Insufficient savings"),
    "employment": ("Employment", "Length of employment"),
    "other_debtors": ("Co-applicant or guarantor", "No guarantor or co-applicant"),
    "property": ("Property", "Insufficient collateral"),
    "other_installment_plans": ("Other installment plans", "Other installment obligations"),
    "housing": ("Housing", "Housing situation"),
    "job": ("Job", "Type of occupation"),
    "telephone": ("Telephone", None),
    "personal_status_sex": ("Personal status and sex", None),
    "foreign_worker": ("Foreign worker", None),
}
_NUMBERS = """\
  duration:
    type: integer
    min: 1
    max: 120
    label: {duration[0]}
    notice_reason: {duration[1]}
    format: integer
  credit_amount:
    type: number
    min: 100
    max: 50000
    classification: personal
    label: {credit_amount[0]}
    notice_reason: {credit_amount[1]}
    format: currency
  installment_rate:
    type: integer
    min: 1
    max: 4
    label: {installment_rate[0]}
    notice_reason: {installment_rate[1]}
  residence_since:
    type: integer
    min: 1
    max: 4
    label: {residence_since[0]}
    notice_reason: {residence_since[1]}
  existing_credits:
    type: integer
    min: 1
    max: 4
    label: {existing_credits[0]}
    notice_reason: {existing_credits[1]}
  dependents:
    type: integer
    min: 0
    max: 10
    label: {dependents[0]}
    notice_reason: {dependents[1]}
"""

SETTINGS = """\
# Keel project settings. KEEL_DATABASE_URL overrides database_url.
name: {name}
# development: each edit of a policy or model file is activated (and recorded) at the next
# keel command. Switch to production before real use: changes then need a second person's
# approval, and the project cannot return to development mode.
mode: {mode}
database_url: sqlite:///keel.db
"""

FLOW_HEAD = """\
flow: loan_application
description: Approve, refer or decline an application for an instalment loan.
owner:
  name: Jonas Weber, Head of Retail Credit Risk
  email: jonas.weber@example.com
policy: loan_application
autonomy: supervised
reviewers: [loan-underwriters]
# Money in euros, written the German way: 4.105 €.
locale: de_DE
currency: EUR
outcome:
  description: whether the loan defaulted
  labels:                 # each label, with the action that would have been right
    repaid: approve
    defaulted: decline
  positive: [defaulted]   # the bad event default_risk predicts: model performance figures
inputs:
"""

CODES_HEAD = """\
  # Categorical fields: the codes of the German credit data, each with what it means. The
  # model takes the codes as text; explanations, notices and reports show the labels.
"""

PROTECTED_HEAD = """\
  # Protected characteristics: recorded with every case for the fairness figures, never
  # read by the model and never stated as a reason.
"""

FLOW_TAIL = """\
  age:
    type: integer
    min: 18
    max: 99
    classification: personal
    protected: true
    groups: [25, 40, 60]  # under 25, 25 to under 40, 40 to under 60, 60 or over
signals:
  default_risk:
    model: models/default_risk.skops   # a Pipeline: one-hot codes, scaled numbers, logit
    output: probability
    positive_class: 1
    label: default risk
    timeout_ms: 250
    features:             # in the order of the model's feature_names_in_
{features}
fairness:
  favourable: [approve]   # the selection rate is the share approved
notice:
  adverse_actions: [decline]
  reasons: 4
  contact: "Privatkredit, kredit@example.com, +49 30 1234 5678"
monitoring:
  window: 7d
  min_decisions: 50
  drift: false
  limits:
    auc: {{min: 0.7, severity: critical}}   # alarms when outcomes show the model slipping
  fairness: {{min_impact_ratio: 0.8, max_parity_difference: 0.2, min_group_size: 30}}
  governor:
    - {{when: {{alarm: [auc, fairness]}}, do: lower_autonomy, to: advisory}}
"""

POLICY = """\
policy: loan_application
description: >
  Decline what the model or the account history says will not be repaid, refer the grey
  zone to an underwriter, approve the rest. Rules read the codes as recorded.
actions: [approve, refer, decline]
params:
  decline_risk: 0.6
  review_risk: 0.35
  long_term_months: 36
rules:
  - name: high_risk
    when: signals.default_risk.score >= params.decline_risk
    action: decline
    reason: Estimated default risk {signals.default_risk.score:percent} is at or above {params.decline_risk:percent}.
    notice: Our assessment of the risk of lending to you is above what we accept.
  - name: overdrawn_long_loan
    # A11: the current account is overdrawn.
    when: input.checking_status == "A11" && input.duration > params.long_term_months
    action: decline
    reason: An overdrawn current account and a term of {input.duration} months, over {params.long_term_months}.
    notice: Your current account is overdrawn and the term requested is too long.
  - name: past_delays
    # A33: delays in paying off credit in the past.
    when: input.credit_history == "A33" && signals.default_risk.score >= params.review_risk * 0.75
    action: refer
    review: true
    reason: Past payment delays and a default risk of {signals.default_risk.score:percent}; an underwriter decides.
  - name: grey_zone
    when: signals.default_risk.score >= params.review_risk
    action: refer
    review: true
    reason: Default risk {signals.default_risk.score:percent} is in the grey zone; an underwriter decides.
  - name: low_risk
    when: signals.default_risk.score < params.review_risk
    action: approve
    reason: Low default risk ({signals.default_risk.score:percent}) for {input.credit_amount:currency}.
default:
  action: refer
  reason: No rule covered this case; an underwriter decides.
fallback:
  action: refer
  review: true
  reason: The risk model gave no answer, so the case goes to an underwriter.
"""


CARD = """\
# The model card: what the team that built the model says about it (keel models card).
owner: Retail Credit Risk Modelling (risk-models@example.com)
description: >
  Probability that an instalment loan defaults. A scikit-learn Pipeline: one-hot encoded
  account, history, purpose and other codes, standardised amounts and terms, then a
  logistic regression.
intended_use: Approving, referring or declining instalment loans to private customers.
out_of_scope: Business lending, mortgages, and any decision on age, sex or nationality.
training_data: >
  1,000 synthetic applicants shaped like the Statlog German credit data, generated by
  keel init --example credit-categorical (seed 1994).
limitations: Trained on synthetic data; retrain and recalibrate before any real use.
ethical_considerations: >
  Sex, age and foreign-worker status are recorded for fairness reports and are not model
  features; proxies for them (employment, housing) are.
"""


def _categorical_input(name: str) -> str:
    """One categorical input: its codes, each code's label, and whether it is protected."""
    label, reason = _FIELDS[name]
    codes = CATEGORIES[name]
    lines = [
        f"  {name}:",
        "    type: string",
        f"    allowed: [{', '.join(codes)}]",
        "    labels:",
        *(f"      {code}: {text}" for code, (_, text, _) in codes.items()),
        f"    label: {label}",
    ]
    if name in PROTECTED:
        lines += ["    classification: sensitive", "    protected: true"]
    if reason is not None:
        lines.append(f"    notice_reason: {reason}")
    return "\n".join(lines) + "\n"


def flow_text() -> str:
    """The flow file: numbers, then categorical codes with labels, then protected fields."""
    numbers = _NUMBERS.format(**_FIELDS)
    codes = "".join(_categorical_input(name) for name in CATEGORICAL_FEATURES)
    protected = "".join(_categorical_input(n) for n in PROTECTED if n in CATEGORIES)
    features = "\n".join(f"      - {name}" for name in FEATURES)
    return (
        FLOW_HEAD
        + numbers
        + CODES_HEAD
        + codes
        + PROTECTED_HEAD
        + protected
        + FLOW_TAIL.format(features=features)
    )


def _case(applicant: dict[str, Any]) -> dict[str, Any]:
    """What a decision request carries: everything but the outcome, unknown at the time."""
    return {k: v for k, v in applicant.items() if k != "defaulted"}


def _pick_examples(model: Any, applicants: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """One applicant the policy approves, one it refers, one it declines on the score."""
    risk = model.predict_proba(applicant_frame(applicants))[:, 1]
    bands = {"approved": (0.0, 0.15), "referred": (0.4, 0.5), "declined": (0.7, 1.0)}
    picks: dict[str, dict[str, Any]] = {}
    for applicant, score in zip(applicants, risk, strict=True):
        for name, (low, high) in bands.items():
            if name not in picks and low <= score < high and applicant["credit_history"] != "A33":
                picks[name] = applicant
    return picks


def _write_batch(path: Path, outcomes: Path, applicants: list[dict[str, Any]]) -> None:
    """A file of cases to decide, and beside it what later became of each applicant."""
    columns = ["subject_id", *_case(applicants[0])]
    with path.open("w", newline="") as cases, outcomes.open("w", newline="") as known:
        writer = csv.DictWriter(cases, columns)
        writer.writeheader()
        later = csv.writer(known)
        later.writerow(["subject_id", "label"])
        for i, applicant in enumerate(applicants, 1):
            subject = f"applicant-{i:04d}"
            writer.writerow({"subject_id": subject, **_case(applicant)})
            later.writerow([subject, "defaulted" if applicant["defaulted"] else "repaid"])


def write_credit_categorical(directory: Path, name: str, mode: str, sio: Any) -> None:
    """Write the example into ``directory`` (which exists and is empty), saving the trained
    pipeline with the ``skops.io`` module ``sio``."""
    for sub in ("flows", "policies", "models", "examples"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / SETTINGS_FILE).write_text(SETTINGS.format(name=name, mode=mode))
    (directory / "flows" / f"{FLOW_NAME}.yaml").write_text(flow_text())
    (directory / "policies" / f"{FLOW_NAME}.yaml").write_text(POLICY)
    (directory / ".gitignore").write_text("keel.db*\n.keel/\n")
    model = train_credit_model(generate_applicants(TRAINING_ROWS, TRAINING_SEED))
    sio.dump(model, directory / "models" / "default_risk.skops")
    (directory / "models" / "default_risk.card.yaml").write_text(CARD)
    for label, picked in _pick_examples(model, generate_applicants(300, EXAMPLE_SEED)).items():
        path = directory / "examples" / f"{label}.json"
        path.write_text(json.dumps(_case(picked), indent=2) + "\n")
    _write_batch(
        directory / "examples" / "applicants.csv",
        directory / "examples" / "outcomes_by_applicant.csv",
        generate_applicants(BATCH_ROWS, BATCH_SEED),
    )
