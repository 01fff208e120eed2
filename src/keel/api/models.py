"""Request and response bodies: the OpenAPI contract. Unknown fields are rejected."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from keel.decide.record import Decision

MAX_BATCH = 1000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DecideRequest(Strict):
    inputs: dict[str, Any] = Field(description="The case, as the flow's input schema describes it.")
    subject_id: str | None = Field(
        default=None, min_length=1, max_length=128, description="Who or what the case is about."
    )


class BatchRequest(Strict):
    cases: list[DecideRequest] = Field(min_length=1, max_length=MAX_BATCH)


class WhatIfRequest(Strict):
    set: dict[str, Any] = Field(default_factory=dict, description="Changed inputs.")
    params: dict[str, Any] = Field(default_factory=dict, description="Changed policy parameters.")
    counterfactual: bool = Field(
        default=False, description="Also search for the smallest change that flips the action."
    )


class ResolveRequest(Strict):
    resolution: Literal["approve", "reject", "change"] = Field(
        description="approve: the proposed action stands; reject: the policy's fallback "
        "(safe) action is taken instead; change: the action and value given here."
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why, in words (required).")
    action: str | None = Field(default=None, description="With change: one of the actions.")
    value: float | None = Field(default=None, description="With change: the action's value.")


class OutcomeIn(Strict):
    label: str = Field(min_length=1, max_length=64, description="One of the flow's outcome labels.")
    value: float | None = Field(
        default=None, description="A number that goes with it (the flow says what it means)."
    )
    observed_at: str | None = Field(
        default=None,
        description="When it happened (ISO 8601; default: now). Never before the decision.",
    )


class OutcomeBatchItem(OutcomeIn):
    decision_id: str = Field(min_length=1, max_length=64)


class OutcomeBatch(Strict):
    outcomes: list[OutcomeBatchItem] = Field(min_length=1, max_length=10_000)


class OutcomeOut(Strict):
    decision_id: str
    flow: str
    decision_seq: int
    label: str
    value: float | None
    observed_at: str
    reported_at: str
    reported_by: str
    source: str
    record_id: str = Field(description="The outcome's ledger entry.")
    created: bool = Field(default=False, description="False when this report was a resend.")


class OutcomeImportOut(Strict):
    recorded: int = Field(description="New outcomes, each now in the ledger.")
    unchanged: int = Field(description="Reports identical to outcomes already recorded.")


class ProposeRequest(Strict):
    document: str = Field(
        min_length=1, max_length=262_144, description="The whole policy, as YAML text."
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why the change, in words.")


class ReasonRequest(Strict):
    reason: str = Field(min_length=1, max_length=2000, description="Why, in words.")


class StopRequest(ReasonRequest):
    alarm: str | None = Field(
        default=None,
        max_length=64,
        description="The flow's firing alarm that prompted the stop, if any: another person "
        "resolves it.",
    )


class MonitorRunRequest(Strict):
    until: str | None = Field(
        default=None, description="End of the current window (ISO 8601); default now."
    )


class ActivateRequest(Strict):
    reason: str | None = Field(
        default=None, max_length=2000, description="Why now (default: the change's reason)."
    )


class RollbackRequest(Strict):
    version: str = Field(
        min_length=4, max_length=64, description="A version the flow used before (or a prefix)."
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why, in words.")


class ApprovalOut(Strict):
    id: int
    change_id: str
    version: str
    approver: str
    role: str
    reason: str
    approved_at: str
    record_id: str
    approver_person: str | None = Field(
        default=None, description="The person behind the approver (four eyes)."
    )


class ChangeOut(Strict):
    id: str
    flow: str
    state: str = Field(
        description="proposed, approved or active; rolled_back or superseded once the "
        "activation it made is no longer in force."
    )
    version: str
    base_version: str = Field(description="The active version it was proposed (or edited) on.")
    author: str
    editors: list[str]
    reason: str
    created_at: str
    updated_at: str
    models: dict[str, str] | None = Field(
        default=None, description="Model versions per signal the change pins."
    )
    approvals: list[ApprovalOut] = Field(
        default_factory=list, description="Approvals of the current version."
    )


class ActivationOut(Strict):
    id: int | None = None
    flow: str
    version: str
    activated_at: str
    activated_by: str
    kind: str = Field(description="initial, inferred, activate or rollback.")
    change_id: str | None
    reason: str
    record_id: str | None
    models: dict[str, str] | None = Field(
        default=None, description="Model versions pinned per signal; null: the project's files."
    )
    status: str | None = Field(
        default=None,
        description="In the history only: in_force (the version in force now), rolled_back "
        "(a rollback ended it) or superseded (a later activation replaced it).",
    )


class DifferenceOut(Strict):
    section: str
    name: str
    field: str
    change: str
    before: Any
    after: Any


class DiffOut(Strict):
    before: str
    after: str
    differences: list[DifferenceOut]


class ReplayRequest(Strict):
    since: str = Field(description="From this instant (ISO 8601), inclusive.")
    until: str = Field(description="To this instant (ISO 8601), exclusive.")
    candidate: str | None = Field(
        default=None, description="A change id (chg_…) or a stored version (or its prefix)."
    )
    document: str | None = Field(
        default=None, max_length=262_144, description="Or: a policy as YAML text."
    )


class AutonomyRequest(Strict):
    level: Literal["shadow", "advisory", "supervised", "autonomous"]
    reason: str = Field(min_length=1, max_length=2000, description="Why, in words.")
    restore: str | None = Field(
        default=None,
        min_length=1,
        max_length=64,
        description="An alarm id: restore the level the governor took away over this alarm, "
        "now resolved; its resolution is the evidence.",
    )


class RolloutRequest(Strict):
    mode: Literal["shadow", "canary"]
    candidate: str = Field(
        description="Shadow: a stored version (or prefix) or change; canary: an approved change."
    )
    reason: str = Field(min_length=1, max_length=2000, description="Why, in words.")
    share: float = Field(default=0.0, description="Canary: the share of subjects served.")
    bounds: dict[str, float] | None = Field(
        default=None,
        description="max_guardrail_hit_rate, max_override_rate, min_decisions (defaults: "
        "0.05, 0.10, 50).",
    )


class ReviewOut(Strict):
    decision_id: str
    flow: str
    decision_seq: int
    kind: str
    state: str
    opened_at: str
    due_at: str | None
    overdue: bool = False
    requested_by: str | None
    proposed_action: str
    proposed_value: float | None
    claimed_by: str | None
    claimed_at: str | None
    resolved_at: str | None
    resolution: str | None
    final_action: str | None
    final_value: float | None
    reviewer: str | None
    review_id: str | None
    breached_at: str | None = Field(
        default=None, description="When the deadline breach was recorded, if it was."
    )
    requested_person: str | None = Field(
        default=None, description="The person who requested the decision (four eyes)."
    )


class ReviewList(Strict):
    reviews: list[ReviewOut]
    total: int = Field(description="Every review that matches the filters, on all pages.")
    next: str | None = Field(
        description="While more reviews follow: the `after` that lists them; null on the last page."
    )


# A decision's response schema is the Decision dataclass itself (one definition).
DecisionOut = Decision


class BatchOut(BaseModel):
    decisions: list[Decision]


class DecisionSummary(BaseModel):
    id: str
    seq: int
    flow: str
    subject_id: str | None
    action: str
    status: str
    recorded_at: str
    policy_version: str


class DecisionList(BaseModel):
    decisions: list[DecisionSummary]
    next_before_seq: int | None = Field(
        description="Pass as before_seq for the next page; null on the last page."
    )


class FlowOut(BaseModel):
    name: str
    description: str
    owner: dict[str, str]
    autonomy: str
    policy: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    signals: dict[str, dict[str, Any]]


class MismatchOut(BaseModel):
    table: str
    key: str
    column: str | None = Field(description="None: the whole row is missing or unbacked.")
    stored: Any = Field(description="The value in the table.")
    ledger: Any = Field(description="The value the ledger records.")
    problem: str


class DeepOut(BaseModel):
    ok: bool
    rows: dict[str, int] = Field(description="Rows compared with the ledger, per table.")
    mismatch: MismatchOut | None = Field(description="The first row that disagrees.")
    protected_checked: bool = Field(description="Personal inputs opened with the data key.")
    unchecked: dict[str, str] = Field(description="What is not compared, and why.")


class VerifyOut(BaseModel):
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    bad_seq: int | None
    problem: str | None
    deep: DeepOut | None = Field(None, description="With ?deep=true: the tables checked.")


class ErrorOut(BaseModel):
    code: str = Field(description="Stable, machine-readable error code.")
    message: str = Field(description="What was wrong, where, and what to do.")
    detail: dict[str, Any] = Field(default_factory=dict)


class Health(BaseModel):
    status: str
