"""The review queue over HTTP: list, claim, resolve, and override final decisions.

Every route needs the ``review`` permission on the decision's flow (reviewer, owner,
admin). A review the caller may not see answers 404, like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS
from keel.api.models import ResolveRequest, ReviewList, ReviewOut
from keel.security.roles import Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


@router.get("/reviews", response_model=ReviewList, name="list_reviews")
def list_reviews(
    principal: Caller,
    request: Request,
    flow: str | None = None,
    state: Annotated[str | None, Query(pattern="^(open|claimed|resolved)$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    after: Annotated[
        str | None, Query(description="The `next` of the previous page: list what follows it.")
    ] = None,
) -> Any:
    """The queue of the flows the caller reviews, oldest first; overdue ones are marked.

    One page at a time: `total` counts every review that matches, and `next`, while more
    follow, is the `after` that asks for the next page.
    """
    flows = [flow] if flow is not None else None
    return engine_of(request).reviews.page(principal, flows, state, limit, after).to_dict()


@router.get("/reviews/{decision_id}", response_model=ReviewOut, name="get_review")
def get_review(decision_id: str, principal: Caller, request: Request) -> Any:
    """One decision's review: its state, and the resolution once there is one."""
    return engine_of(request).reviews.get(decision_id, principal).to_dict()


@router.post("/reviews/{decision_id}/claim", response_model=ReviewOut, name="claim_review")
def claim_review(decision_id: str, principal: Caller, request: Request) -> Any:
    """Take a review so that nobody else resolves it meanwhile."""
    return engine_of(request).reviews.claim(decision_id, principal).to_dict()


@router.post("/reviews/{decision_id}/resolution", name="resolve_review")
def resolve_review(
    decision_id: str, body: ResolveRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Approve, reject or change a decision that waits for review; recorded in the ledger."""
    review = engine_of(request).reviews.resolve(
        decision_id, principal, body.resolution, body.reason, body.action, body.value
    )
    return review.to_dict()


@router.post("/decisions/{decision_id}/override", name="override_decision")
def override_decision(
    decision_id: str, body: ResolveRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Override a final decision (reject or change) as a review; recorded in the ledger."""
    review = engine_of(request).reviews.override(
        decision_id, principal, body.resolution, body.reason, body.action, body.value
    )
    return review.to_dict()
