"""The review queue over HTTP: list, claim, resolve, and override final decisions.

Every route needs the ``review`` permission on the decision's flow (reviewer, owner,
admin). A review the caller may not see answers 404, like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from keel.api.auth import current_principal, engine_of, hide_unless
from keel.api.decisions import ERRORS, flows_for
from keel.api.models import ResolveRequest, ReviewList, ReviewOut
from keel.engine import Engine
from keel.review.queue import Reviewer
from keel.security.roles import Permission, Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


def _reviewer(engine: Engine, principal: Principal, decision_id: str) -> Reviewer:
    """The caller as a reviewer of this decision's flow, or 404 if they may not review it."""
    flow = engine.flow_of(decision_id)
    hide_unless(principal, Permission.REVIEW, flow, "decision", decision_id)
    return principal.actor(Permission.REVIEW, flow)


@router.get("/reviews", response_model=ReviewList, name="list_reviews")
def list_reviews(
    principal: Caller,
    request: Request,
    flow: str | None = None,
    state: Annotated[str | None, Query(pattern="^(open|claimed|resolved)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The queue of the flows the caller reviews, oldest first; overdue ones are marked."""
    engine = engine_of(request)
    flows = flows_for(engine, principal, Permission.REVIEW, flow)
    return {"reviews": engine.reviews.queue(flows, state, limit)}


@router.get("/reviews/{decision_id}", response_model=ReviewOut, name="get_review")
def get_review(decision_id: str, principal: Caller, request: Request) -> Any:
    """One decision's review: its state, and the resolution once there is one."""
    engine = engine_of(request)
    _reviewer(engine, principal, decision_id)
    return engine.reviews.get(decision_id)


@router.post("/reviews/{decision_id}/claim", response_model=ReviewOut, name="claim_review")
def claim_review(decision_id: str, principal: Caller, request: Request) -> Any:
    """Take a review so that nobody else resolves it meanwhile."""
    engine = engine_of(request)
    return engine.reviews.claim(decision_id, _reviewer(engine, principal, decision_id))


@router.post("/reviews/{decision_id}/resolution", name="resolve_review")
def resolve_review(
    decision_id: str, body: ResolveRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Approve, reject or change a decision that waits for review; recorded in the ledger."""
    engine = engine_of(request)
    reviewer = _reviewer(engine, principal, decision_id)
    return engine.reviews.resolve(
        decision_id, reviewer, body.resolution, body.reason, body.action, body.value
    )


@router.post("/decisions/{decision_id}/override", name="override_decision")
def override_decision(
    decision_id: str, body: ResolveRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Override a final decision (reject or change) as a review; recorded in the ledger."""
    engine = engine_of(request)
    reviewer = _reviewer(engine, principal, decision_id)
    return engine.reviews.override(
        decision_id, reviewer, body.resolution, body.reason, body.action, body.value
    )
