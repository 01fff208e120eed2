"""Writing the example project: settings, the credit-limit flow and policy, a trained model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from keel.config import DEVELOPMENT, SETTINGS_FILE
from keel.errors import ConfigError, MissingExtraError
from keel.scaffold.applicants import (
    FEATURES,
    case_inputs,
    generate_applicants,
    train_risk_model,
)
from keel.scaffold.credit_categorical import write_credit_categorical

CREDIT_LIMIT = "credit-limit"
CREDIT_CATEGORICAL = "credit-categorical"
EXAMPLES = (CREDIT_LIMIT, CREDIT_CATEGORICAL)
TRAINING_ROWS = 20_000
TRAINING_SEED = 7
EXAMPLE_SEED = 11

SETTINGS = """\
# Keel project settings. KEEL_DATABASE_URL overrides database_url.
name: {name}
# development: each edit of a policy or model file is activated (and recorded) at the next
# keel command. Switch to production before real use: changes then need a second person's
# approval, and the project cannot return to development mode.
mode: {mode}
database_url: sqlite:///keel.db
ledger:
  max_batch: 512
models:
  default_timeout_ms: 1000
"""

FLOW = """\
flow: credit_limit
description: Approve, refer or decline a request for a revolving credit limit, and size it.
owner:
  name: Dana Reyes, Head of Consumer Credit Risk
  email: dana.reyes@example.com
policy: credit_limit
autonomy: supervised
reviewers: [credit-underwriters]
outcome:
  description: whether the account defaulted within 24 months
  labels:                 # each label, with the action that would have been right
    repaid: approve
    defaulted: decline
  positive: [defaulted]   # the bad event default_risk predicts: model performance figures
  value: amount written off, in EUR
inputs:
  annual_income:
    type: number
    min: 0
    max: 5000000
    classification: personal
    label: Annual income
    format: currency
  debt_to_income:
    type: number
    min: 0
    max: 1.5
    classification: personal
    label: Debt-to-income
    format: percent
    actionable: true
    direction: decrease
  credit_utilization:
    type: number
    min: 0
    max: 1
    classification: personal
    label: Credit utilisation
    format: percent
    actionable: true
    direction: decrease
  delinquencies_2y:
    type: integer
    min: 0
    max: 50
    classification: personal
    label: Delinquencies in the last two years
    format: integer
  credit_history_years:
    type: number
    min: 0
    max: 80
    label: Credit history
    format: years
  employment_years:
    type: number
    min: 0
    max: 60
    label: Time in employment
    format: years
  requested_limit:
    type: number
    min: 100
    max: 100000
    label: Requested limit
    format: currency
    actionable: true
    direction: decrease
  region:
    type: string
    allowed: [north, south, east, west]
    classification: internal
    label: Region
    format: text
signals:
  default_risk:
    model: models/default_risk.skops
    output: probability
    positive_class: 1
    label: default risk
    timeout_ms: 250
    features:
      - annual_income
      - debt_to_income
      - credit_utilization
      - delinquencies_2y
      - credit_history_years
      - employment_years
"""

POLICY = """\
policy: credit_limit
description: >
  Hard credit criteria first, then the default-risk model. Low risk is approved at a limit
  sized to income; the grey zone is approved only after an underwriter looks.
actions: [approve, refer, decline]
params:
  min_income: 12000.0
  max_delinquencies: 3
  max_dti: 0.55
  decline_risk: 0.45
  review_risk: 0.22
  max_utilization: 0.9
  min_history_years: 1.0
  large_request: 30000.0
  limit_share: 0.25
  starter_limit: 1000.0
rules:
  - name: income_too_low
    when: input.annual_income < params.min_income
    action: decline
    reason: Annual income of {input.annual_income} is below the minimum of {params.min_income:currency}.
  - name: recent_delinquencies
    when: input.delinquencies_2y >= params.max_delinquencies
    action: decline
    reason: "{input.delinquencies_2y} delinquencies in two years; the limit is {params.max_delinquencies}."
  - name: over_indebted
    when: input.debt_to_income > params.max_dti
    action: decline
    reason: Debt-to-income of {input.debt_to_income} is above the maximum of {params.max_dti:percent}.
  - name: high_risk
    when: signals.default_risk.score >= params.decline_risk
    action: decline
    reason: Estimated default risk {signals.default_risk.score:percent} is at or above {params.decline_risk:percent}.
  - name: maxed_out
    when: input.credit_utilization > params.max_utilization && signals.default_risk.score >= params.review_risk
    action: refer
    reason: Existing credit is {input.credit_utilization} used and risk is elevated; refer to an underwriter.
  - name: thin_file
    when: input.credit_history_years < params.min_history_years
    action: approve
    value: params.starter_limit
    review: true
    reason: Credit history of {input.credit_history_years} is too short to size a limit; starter limit of {value:currency}, to be confirmed.
  - name: grey_zone
    when: signals.default_risk.score >= params.review_risk
    action: approve
    value: "input.requested_limit < input.annual_income * params.limit_share * 0.5 ? input.requested_limit : input.annual_income * params.limit_share * 0.5"
    review: true
    reason: Default risk {signals.default_risk.score:percent} is in the grey zone; a reduced limit of {value:currency} needs an underwriter.
  - name: large_request
    when: input.requested_limit > params.large_request
    action: approve
    value: "input.requested_limit < input.annual_income * params.limit_share ? input.requested_limit : input.annual_income * params.limit_share"
    review: true
    reason: A request of {input.requested_limit} is large; {value:currency} proposed, to be confirmed.
  - name: low_risk
    when: signals.default_risk.score < params.review_risk
    action: approve
    value: "input.requested_limit < input.annual_income * params.limit_share ? input.requested_limit : input.annual_income * params.limit_share"
    reason: Low default risk ({signals.default_risk.score:percent}); limit of {value:currency} within {params.limit_share:percent} of income.
default:
  action: refer
  reason: No rule covered this case; an underwriter decides.
fallback:
  action: refer
  review: true
  reason: The risk model gave no answer, so the case goes to an underwriter.
guardrails:
  kill_switch:
    engaged: false
    action: refer
    reason: Automatic credit decisions are switched off; an underwriter decides.
  bounds:
    - action: approve
      min: 500
      max: 25000
      on_hit: clamp
  min_confidence:
    - signal: default_risk
      min: 0.55
      on_hit: escalate
  rate_limits:
    - name: approvals_per_hour
      action: approve
      max: 200
      window: 1h
      on_hit: escalate
  exposure_limits:
    - name: daily_exposure_by_region
      action: approve
      max: 750000
      window: 24h
      per: region
      on_hit: escalate
"""


def _pick_examples(
    model: Any, applicants: list[dict[str, Any]]
) -> dict[str, dict[str, Any] | None]:
    """One applicant the example policy approves, one in its grey zone, one it declines."""
    rows = np.array([[a[f] for f in FEATURES] for a in applicants], dtype=float)
    risk = model.predict_proba(rows)[:, 1]
    picks: dict[str, dict[str, Any] | None] = {
        "low_risk": None,
        "grey_zone": None,
        "declined": None,
    }
    for applicant, score in zip(applicants, risk, strict=True):
        clean = (
            applicant["annual_income"] >= 12000
            and applicant["delinquencies_2y"] < 3
            and applicant["debt_to_income"] <= 0.55
            and applicant["credit_utilization"] <= 0.9
            and applicant["credit_history_years"] >= 1
            and applicant["requested_limit"] <= 30000
        )
        if clean and score < 0.1 and picks["low_risk"] is None:
            picks["low_risk"] = applicant
        elif clean and 0.28 < score < 0.38 and picks["grey_zone"] is None:
            picks["grey_zone"] = applicant
        elif clean and score > 0.56 and picks["declined"] is None:
            picks["declined"] = applicant
    return picks


def init_project(
    directory: Path,
    name: str | None = None,
    mode: str = DEVELOPMENT,
    example: str = CREDIT_LIMIT,
) -> Path:
    """Write an example project into ``directory`` (new or empty), in development ``mode``
    by default: a new project is one person's to iterate on. ``example`` is one of
    ``EXAMPLES``: the credit-limit flow (numbers only), or a loan flow whose model takes
    categorical codes (``credit-categorical``)."""
    if example not in EXAMPLES:
        raise ConfigError(
            f"unknown example {example!r}; choose one of {', '.join(EXAMPLES)}",
            {"example": example},
        )
    directory = directory.resolve()
    if directory.exists() and any(directory.iterdir()):
        raise ConfigError(
            f"{directory} is not empty; choose a new folder for the project",
            {"path": str(directory)},
        )
    try:
        import skops.io as sio  # noqa: PLC0415 - the example trains a scikit-learn model
    except ImportError as exc:
        raise MissingExtraError("sklearn", "the example project's risk model") from exc
    if example == CREDIT_CATEGORICAL:
        directory.mkdir(parents=True, exist_ok=True)
        write_credit_categorical(directory, name or directory.name, mode, sio)
        return directory
    for sub in ("flows", "policies", "models", "examples"):
        (directory / sub).mkdir(parents=True, exist_ok=True)
    (directory / SETTINGS_FILE).write_text(SETTINGS.format(name=name or directory.name, mode=mode))
    (directory / "flows" / "credit_limit.yaml").write_text(FLOW)
    (directory / "policies" / "credit_limit.yaml").write_text(POLICY)
    (directory / ".gitignore").write_text("keel.db*\n.keel/\n")
    model = train_risk_model(generate_applicants(TRAINING_ROWS, TRAINING_SEED))
    sio.dump(model, directory / "models" / "default_risk.skops")
    picks = _pick_examples(model, generate_applicants(1000, EXAMPLE_SEED))
    for label, picked in picks.items():
        if picked is not None:
            path = directory / "examples" / f"{label}.json"
            path.write_text(json.dumps(case_inputs(picked), indent=2) + "\n")
    return directory
