"""Outcomes over HTTP: report what came of a decision, one or many at a time, and read it.

Reporting needs ``report_outcome`` on the decision's flow (decider, owner, admin); reading
needs ``read_decisions``. A decision the caller may not see answers 404, like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS
from keel.api.models import OutcomeBatch, OutcomeImportOut, OutcomeIn, OutcomeOut
from keel.review.outcomes import OutcomeReport
from keel.security.roles import Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


@router.put(
    "/decisions/{decision_id}/outcome",
    response_model=OutcomeOut,
    status_code=201,
    name="report_outcome",
    responses={200: {"model": OutcomeOut, "description": "The same outcome was recorded before."}},
)
def report_outcome(
    decision_id: str, body: OutcomeIn, principal: Caller, request: Request, response: Response
) -> Any:
    """Report what came of a decision: 201 when recorded, 200 when it was already (a resend),
    409 when a different outcome was reported before (the first stands)."""
    report = OutcomeReport(decision_id, body.label, body.value, body.observed_at)
    result = engine_of(request).outcomes.report(report, principal, "api")
    if not result.created:
        response.status_code = 200
    return result.to_dict()


@router.get("/decisions/{decision_id}/outcome", response_model=OutcomeOut, name="get_outcome")
def get_outcome(decision_id: str, principal: Caller, request: Request) -> Any:
    """The outcome reported for a decision (404 until there is one)."""
    return engine_of(request).outcomes.get(decision_id, principal).to_dict()


@router.post("/outcomes", response_model=OutcomeImportOut, name="report_outcomes")
def report_outcomes(body: OutcomeBatch, principal: Caller, request: Request) -> Any:
    """Report up to 10,000 outcomes at once: all are recorded, or (on any problem, each
    named by its position) none is. Resends of recorded outcomes count as unchanged."""
    reports = [OutcomeReport(o.decision_id, o.label, o.value, o.observed_at) for o in body.outcomes]
    return engine_of(request).outcomes.report_many(reports, principal, "api").to_dict()
