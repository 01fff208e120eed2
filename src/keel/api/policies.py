"""Policy change management over HTTP: propose, edit, approve, activate, roll back, read.

Each step needs its permission on the flow — ``propose_policy`` (policy author, owner),
``approve_policy`` (approver), ``activate_policy`` (approver, owner) — and reading needs
``read_flows``. A change on a flow the caller may not read answers 404, like an unknown one.
The acting principal and the role it acts in are recorded in each step's ledger event.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request

from keel.api.auth import current_principal, engine_of, hide_unless
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
from keel.engine import Engine
from keel.errors import InputError
from keel.ledger.records import parse_instant
from keel.security.roles import Actor, Permission, Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


def _actor(principal: Principal, permission: Permission, flow: str) -> Actor:
    principal.require(permission, flow)  # 403 naming the permission
    return principal.actor(permission, flow)


def _change_flow(engine: Engine, principal: Principal, change_id: str) -> str:
    """The flow of a change the caller may read (404 otherwise, as for an unknown id)."""
    flow = str(engine.changes.get(change_id)["flow"])
    hide_unless(principal, Permission.READ_FLOWS, flow, "policy change", change_id)
    return flow


@router.post(
    "/flows/{flow}/policy/changes",
    response_model=ChangeOut,
    status_code=201,
    name="propose_policy",
)
def propose(flow: str, body: ProposeRequest, principal: Caller, request: Request) -> Any:
    """Propose a new version of the flow's policy (checked like a policy file)."""
    engine = engine_of(request)
    actor = _actor(principal, Permission.PROPOSE_POLICY, flow)
    return engine.changes.propose(flow, body.document, actor, body.reason, "<proposal>")


@router.get(
    "/flows/{flow}/policy/changes", response_model=list[ChangeOut], name="list_policy_changes"
)
def list_changes(flow: str, principal: Caller, request: Request) -> Any:
    """The flow's policy changes, newest first."""
    principal.require(Permission.READ_FLOWS, flow)
    return engine_of(request).changes.changes(flow)


@router.get(
    "/flows/{flow}/policy/history", response_model=list[ActivationOut], name="policy_history"
)
def history(flow: str, principal: Caller, request: Request) -> Any:
    """Every activation of the flow, oldest first: which version ran from when, and why."""
    principal.require(Permission.READ_FLOWS, flow)
    return engine_of(request).changes.history(flow)


@router.get("/flows/{flow}/policy/active", response_model=ActivationOut, name="active_policy")
def active(flow: str, principal: Caller, request: Request, at: str | None = None) -> Any:
    """The version active now, or at the instant ``at`` (ISO 8601)."""
    principal.require(Permission.READ_FLOWS, flow)
    return engine_of(request).changes.active_at(flow, parse_instant("at", at))


@router.post("/flows/{flow}/policy/rollback", response_model=ActivationOut, name="rollback_policy")
def rollback(flow: str, body: RollbackRequest, principal: Caller, request: Request) -> Any:
    """Put back a version the flow used before, at once."""
    actor = _actor(principal, Permission.ACTIVATE_POLICY, flow)
    return engine_of(request).changes.rollback(flow, body.version, actor, body.reason)


@router.get("/policy-changes/{change_id}", response_model=ChangeOut, name="get_policy_change")
def get_change(change_id: str, principal: Caller, request: Request) -> Any:
    """One change, with the approvals of its current version."""
    engine = engine_of(request)
    _change_flow(engine, principal, change_id)
    return engine.changes.get(change_id)


@router.get("/policy-changes/{change_id}/diff", response_model=DiffOut, name="diff_policy_change")
def diff(change_id: str, principal: Caller, request: Request) -> Any:
    """What the change would change: parameters, rules, guardrails and model versions,
    before and after."""
    engine = engine_of(request)
    _change_flow(engine, principal, change_id)
    change, differences = engine.changes.change_diff(change_id)
    return {
        "before": change["base_version"],
        "after": change["version"],
        "differences": [d.to_dict() for d in differences],
    }


@router.put("/policy-changes/{change_id}", response_model=ChangeOut, name="edit_policy_change")
def edit(change_id: str, body: ProposeRequest, principal: Caller, request: Request) -> Any:
    """Replace the proposed version; approvals it had are void."""
    engine = engine_of(request)
    actor = _actor(principal, Permission.PROPOSE_POLICY, _change_flow(engine, principal, change_id))
    return engine.changes.edit(change_id, body.document, actor, body.reason)


@router.post(
    "/policy-changes/{change_id}/approvals",
    response_model=ChangeOut,
    name="approve_policy_change",
)
def approve(change_id: str, body: ReasonRequest, principal: Caller, request: Request) -> Any:
    """Approve the change's current version (not by anyone who wrote it)."""
    engine = engine_of(request)
    actor = _actor(principal, Permission.APPROVE_POLICY, _change_flow(engine, principal, change_id))
    return engine.changes.approve(change_id, actor, body.reason)


@router.post(
    "/policy-changes/{change_id}/activation",
    response_model=ActivationOut,
    name="activate_policy_change",
)
def activate(change_id: str, body: ActivateRequest, principal: Caller, request: Request) -> Any:
    """Put an approved change into force."""
    engine = engine_of(request)
    flow = _change_flow(engine, principal, change_id)
    actor = _actor(principal, Permission.ACTIVATE_POLICY, flow)
    return engine.changes.activate(change_id, actor, body.reason or "")


@router.post("/flows/{flow}/replays", name="replay_policy")
def replay(flow: str, body: ReplayRequest, principal: Caller, request: Request) -> dict[str, Any]:
    """Replay a candidate policy on the decisions recorded in ``[since, until)``: how many
    change and which, the transition matrix, sums, and gains where outcomes are known.
    Those who write, approve or put policies into force may replay them."""
    if not (
        principal.can(Permission.PROPOSE_POLICY, flow)
        or principal.can(Permission.APPROVE_POLICY, flow)
    ):
        principal.require(Permission.PROPOSE_POLICY, flow)  # raises, naming the permission
    engine = engine_of(request)
    if (body.candidate is None) == (body.document is None):
        raise InputError(
            "give either candidate (a change or version) or document (YAML), not both",
            {"field": "candidate"},
        )
    candidate = body.candidate or engine.changes.register(flow, body.document or "")
    since, until = parse_instant("since", body.since), parse_instant("until", body.until)
    return engine.replay(flow, candidate, since or "", until or "")


@router.get("/flows/{flow}/autonomy", name="get_autonomy")
def get_autonomy(flow: str, principal: Caller, request: Request) -> dict[str, Any]:
    """The flow's autonomy level, its history and open raise requests."""
    principal.require(Permission.READ_FLOWS, flow)
    return engine_of(request).autonomy.show(flow)


@router.post("/flows/{flow}/autonomy", name="change_autonomy")
def change_autonomy(
    flow: str, body: AutonomyRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Lower the level at once (``applied``), or ask to raise it (``request``, for an
    approver); a raise whose evidence falls short is refused (409) with ``detail.unmet``."""
    actor = _actor(principal, Permission.CHANGE_AUTONOMY, flow)
    return engine_of(request).autonomy.request(flow, body.level, actor, body.reason)


@router.post("/autonomy-requests/{request_id}/approval", name="approve_autonomy")
def approve_autonomy(
    request_id: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Approve a raise someone else requested; the evidence is checked again."""
    engine = engine_of(request)
    flow = engine.autonomy.flow_of(request_id)
    hide_unless(principal, Permission.READ_FLOWS, flow, "autonomy request", request_id)
    actor = _actor(principal, Permission.APPROVE_POLICY, flow)
    return engine.autonomy.approve(request_id, actor, body.reason)


@router.post("/flows/{flow}/rollouts", name="start_rollout")
def start_rollout(
    flow: str, body: RolloutRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Run a candidate beside the active version: in shadow, or as a sticky canary."""
    actor = _actor(principal, Permission.ACTIVATE_POLICY, flow)
    return engine_of(request).rollouts.start(
        flow, body.mode, body.candidate, actor, body.reason, body.share, body.bounds
    )


@router.post("/flows/{flow}/rollouts/stop", name="stop_rollout")
def stop_rollout(
    flow: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Stop the flow's running rollout."""
    actor = _actor(principal, Permission.ACTIVATE_POLICY, flow)
    return engine_of(request).rollouts.stop(flow, actor, body.reason)


@router.get("/flows/{flow}/rollouts", name="list_rollouts")
def list_rollouts(flow: str, principal: Caller, request: Request) -> dict[str, Any]:
    """The flow's recent rollouts with their reports (agreement; per-arm rates), newest
    first."""
    principal.require(Permission.READ_FLOWS, flow)
    return {"rollouts": engine_of(request).rollouts.recent(flow)}
