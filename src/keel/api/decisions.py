"""Deciding, and reading, explaining and re-evaluating decisions."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import JSONResponse

from keel.api.auth import current_principal, engine_of, hide_unless
from keel.api.models import (
    BatchOut,
    BatchRequest,
    DecideRequest,
    DecisionList,
    DecisionOut,
    ErrorOut,
    WhatIfRequest,
)
from keel.engine import Engine
from keel.ledger.records import parse_instant
from keel.security.roles import Permission, Principal

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422, 503)
}
router = APIRouter(prefix="/v1", responses=ERRORS)
MAX_SEQ = 2**63 - 1  # sequence numbers are 64-bit integers in both databases
Caller = Annotated[Principal, Depends(current_principal)]


def flows_for(
    engine: Engine, principal: Principal, permission: Permission, flow: str | None
) -> list[str]:
    """The flows a list covers: the one asked for (403 without the permission on it), or
    every flow on which the caller has the permission."""
    if flow is None:
        return principal.flows_with(permission, engine.flows)
    engine.runtime(flow)
    principal.require(permission, flow)
    return [flow]


def _readable(engine: Engine, principal: Principal, decision_id: str) -> str:
    """The decision's flow, if the caller may read it; otherwise it does not exist for them."""
    flow = engine.flow_of(decision_id)
    hide_unless(principal, Permission.READ_DECISIONS, flow, "decision", decision_id)
    return flow


@router.post("/flows/{flow}/decisions", response_model=DecisionOut, name="decide")
async def decide(flow: str, body: DecideRequest, principal: Caller, request: Request) -> Any:
    """Decide one case. The decision is in the ledger before the response is sent."""
    engine = engine_of(request)
    engine.runtime(flow)
    principal.require(Permission.DECIDE, flow)
    # Validation happens here, on the event loop; the decision is made in the engine's next
    # combined batch and awaited without holding a worker thread.
    pending = engine.submit(
        flow, body.inputs, subject_id=body.subject_id, requested_by=principal.id
    )
    decision = await asyncio.wrap_future(pending)
    return JSONResponse(decision.to_dict())


@router.post("/flows/{flow}/decisions/batch", response_model=BatchOut, name="decide_batch")
def decide_batch(flow: str, body: BatchRequest, principal: Caller, request: Request) -> Any:
    """Decide up to 1,000 cases atomically: all are valid and recorded, or none is."""
    engine = engine_of(request)
    engine.runtime(flow)
    principal.require(Permission.DECIDE, flow)
    decided = engine.decide_many(
        flow,
        [c.inputs for c in body.cases],
        [c.subject_id for c in body.cases],
        requested_by=principal.id,
    )
    return {"decisions": [d.to_dict() for d in decided]}


@router.get("/decisions", response_model=DecisionList, name="list_decisions")
def list_decisions(
    principal: Caller,
    request: Request,
    flow: str | None = None,
    action: str | None = None,
    status: str | None = None,
    subject_id: str | None = None,
    since: Annotated[str | None, Query(description="ISO time, inclusive")] = None,
    until: Annotated[str | None, Query(description="ISO time, exclusive")] = None,
    before_seq: Annotated[int | None, Query(ge=1, le=MAX_SEQ)] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """Decisions the caller may read, newest first, filtered; page with before_seq."""
    engine = engine_of(request)
    rows = engine.list_decisions(
        flows_for(engine, principal, Permission.READ_DECISIONS, flow),
        since=parse_instant("since", since),
        until=parse_instant("until", until),
        action=action,
        status=status,
        subject_id=subject_id,
        before_seq=before_seq,
        limit=limit,
    )
    next_page = rows[-1]["seq"] if len(rows) == limit else None
    return {"decisions": rows, "next_before_seq": next_page}


@router.get("/decisions/{decision_id}", response_model=DecisionOut, name="get_decision")
def get_decision(decision_id: str, principal: Caller, request: Request) -> Any:
    """One decision as recorded (personal inputs stay masked; see the explanation)."""
    engine = engine_of(request)
    _readable(engine, principal, decision_id)
    return engine.decision(decision_id).to_dict()


@router.get("/decisions/{decision_id}/explanation", name="explain")
def explain(decision_id: str, principal: Caller, request: Request) -> dict[str, Any]:
    """Why: rule trace with the values compared, guardrails, model attributions, sentences."""
    engine = engine_of(request)
    flow = _readable(engine, principal, decision_id)
    return engine.explain(decision_id, principal.can(Permission.READ_PERSONAL, flow))


@router.post("/decisions/{decision_id}/what-if", name="what_if")
def what_if(
    decision_id: str, body: WhatIfRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Re-evaluate a decision with changed inputs or parameters; nothing is recorded."""
    engine = engine_of(request)
    flow = _readable(engine, principal, decision_id)
    # Re-evaluating means reading the recorded personal inputs back.
    principal.require(Permission.READ_PERSONAL, flow)
    result = engine.what_if(decision_id, body.set, body.params)
    if body.counterfactual:
        result["counterfactuals"] = [c.to_dict() for c in engine.counterfactuals(decision_id)]
    return result


@router.get("/flows/{flow}/trust", name="trust_metrics")
def trust(
    flow: str,
    principal: Caller,
    request: Request,
    since: str,
    until: str,
    bucket: Annotated[str, Query(pattern="^(hour|day|week)$")] = "day",
) -> dict[str, Any]:
    """The flow's trust metrics per bucket over ``[since, until)`` (ISO 8601)."""
    from keel.review.trust import trust_metrics  # noqa: PLC0415

    principal.require(Permission.READ_DECISIONS, flow)
    start, end = parse_instant("since", since), parse_instant("until", until)
    return trust_metrics(engine_of(request).ctx, flow, start or "", end or "", bucket)
