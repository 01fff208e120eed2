"""Policy change management over HTTP: propose, edit, approve, activate, roll back, read.

Each step needs its permission on the flow — ``propose_policy`` (policy author, owner),
``approve_policy`` (approver), ``activate_policy`` (approver, owner) — and reading needs
``read_flows``. A change on a flow the caller may not read answers 404, like an unknown one.
The acting principal and the role it acts in are recorded in each step's ledger event.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS
from keel.api.models import (
    ActivateRequest,
    ActivationOut,
    AutonomyRequest,
    ChangeOut,
    DiffOut,
    ProposeRequest,
    ReasonRequest,
    ReplayRequest,
    RollbackRequest,
    RolloutRequest,
)
from keel.ledger.records import parse_instant
from keel.rollout.options import replay_window
from keel.security.roles import Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


@router.post(
    "/flows/{flow}/policy/changes",
    response_model=ChangeOut,
    status_code=201,
    name="propose_policy",
)
def propose(flow: str, body: ProposeRequest, principal: Caller, request: Request) -> Any:
    """Propose a new version of the flow's policy (checked like a policy file)."""
    changes = engine_of(request).changes
    return changes.propose(flow, body.document, principal, body.reason, "<proposal>").to_dict()


@router.get(
    "/flows/{flow}/policy/changes", response_model=list[ChangeOut], name="list_policy_changes"
)
def list_changes(flow: str, principal: Caller, request: Request) -> Any:
    """The flow's policy changes, newest first."""
    return [c.to_dict() for c in engine_of(request).changes.changes(flow, principal)]


@router.get(
    "/flows/{flow}/policy/history", response_model=list[ActivationOut], name="policy_history"
)
def history(flow: str, principal: Caller, request: Request) -> Any:
    """Every activation of the flow, oldest first: which version ran from when, and why."""
    return [a.to_dict() for a in engine_of(request).changes.history(flow, principal)]


@router.get("/flows/{flow}/policy/active", response_model=ActivationOut, name="active_policy")
def active(flow: str, principal: Caller, request: Request, at: str | None = None) -> Any:
    """The version active now, or at the instant ``at`` (ISO 8601)."""
    return engine_of(request).changes.active_at(flow, principal, parse_instant("at", at)).to_dict()


@router.post("/flows/{flow}/policy/rollback", response_model=ActivationOut, name="rollback_policy")
def rollback(flow: str, body: RollbackRequest, principal: Caller, request: Request) -> Any:
    """Put back a version the flow used before, at once."""
    return engine_of(request).changes.rollback(flow, body.version, principal, body.reason).to_dict()


@router.get("/policy-changes/{change_id}", response_model=ChangeOut, name="get_policy_change")
def get_change(change_id: str, principal: Caller, request: Request) -> Any:
    """One change, with the approvals of its current version."""
    return engine_of(request).changes.get(change_id, principal).to_dict()


@router.get("/policy-changes/{change_id}/diff", response_model=DiffOut, name="diff_policy_change")
def diff(change_id: str, principal: Caller, request: Request) -> Any:
    """What the change would change: parameters, rules, guardrails and model versions,
    before and after."""
    change, differences = engine_of(request).changes.change_diff(change_id, principal)
    return {
        "before": change.base_version,
        "after": change.version,
        "differences": [d.to_dict() for d in differences],
    }


@router.put("/policy-changes/{change_id}", response_model=ChangeOut, name="edit_policy_change")
def edit(change_id: str, body: ProposeRequest, principal: Caller, request: Request) -> Any:
    """Replace the proposed version; approvals it had are void."""
    changes = engine_of(request).changes
    return changes.edit(change_id, body.document, principal, body.reason).to_dict()


@router.post(
    "/policy-changes/{change_id}/approvals",
    response_model=ChangeOut,
    name="approve_policy_change",
)
def approve(change_id: str, body: ReasonRequest, principal: Caller, request: Request) -> Any:
    """Approve the change's current version (not by anyone who wrote it)."""
    return engine_of(request).changes.approve(change_id, principal, body.reason).to_dict()


@router.post(
    "/policy-changes/{change_id}/activation",
    response_model=ActivationOut,
    name="activate_policy_change",
)
def activate(change_id: str, body: ActivateRequest, principal: Caller, request: Request) -> Any:
    """Put an approved change into force."""
    return engine_of(request).changes.activate(change_id, principal, body.reason or "").to_dict()


@router.post("/flows/{flow}/replays", name="replay_policy")
def replay(flow: str, body: ReplayRequest, principal: Caller, request: Request) -> dict[str, Any]:
    """Replay a candidate policy on the decisions recorded in ``[since, until)``: how many
    change and which, the transition matrix, sums, and gains where outcomes are known.
    Those who write, approve or put policies into force may replay them."""
    engine = engine_of(request)
    since, until = replay_window(
        body.candidate, body.document is not None, body.since, body.until, "document (YAML)"
    )
    candidate = body.candidate or engine.changes.register(flow, body.document or "", principal)
    return engine.replay(flow, candidate, since, until, by=principal)


@router.get("/flows/{flow}/autonomy", name="get_autonomy")
def get_autonomy(flow: str, principal: Caller, request: Request) -> dict[str, Any]:
    """The flow's autonomy level, its history and open raise requests."""
    return engine_of(request).autonomy.show(flow, principal).to_dict()


@router.post("/flows/{flow}/autonomy", name="change_autonomy")
def change_autonomy(
    flow: str, body: AutonomyRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Lower the level at once (``applied``), or ask to raise it (``request``, for an
    approver); a raise whose evidence falls short is refused (409) with ``detail.unmet``."""
    autonomy = engine_of(request).autonomy
    return autonomy.request(flow, body.level, principal, body.reason, body.restore).to_dict()


@router.post("/autonomy-requests/{request_id}/approval", name="approve_autonomy")
def approve_autonomy(
    request_id: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Approve a raise someone else requested; the evidence is checked again."""
    return engine_of(request).autonomy.approve(request_id, principal, body.reason).to_dict()


@router.post("/flows/{flow}/rollouts", name="start_rollout")
def start_rollout(
    flow: str, body: RolloutRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Run a candidate beside the active version: in shadow, or as a sticky canary."""
    rollouts = engine_of(request).rollouts
    started = rollouts.start(
        flow, body.mode, body.candidate, principal, body.reason, body.share, body.bounds
    )
    return started.to_dict()


@router.post("/flows/{flow}/rollouts/stop", name="stop_rollout")
def stop_rollout(
    flow: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Stop the flow's running rollout."""
    return engine_of(request).rollouts.stop(flow, principal, body.reason).to_dict()


@router.get("/flows/{flow}/rollouts", name="list_rollouts")
def list_rollouts(flow: str, principal: Caller, request: Request) -> dict[str, Any]:
    """The flow's recent rollouts with their reports (agreement; per-arm rates), newest
    first."""
    return {"rollouts": [r.to_dict() for r in engine_of(request).rollouts.recent(flow, principal)]}
