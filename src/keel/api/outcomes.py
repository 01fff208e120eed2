"""Outcomes over HTTP: report what came of a decision, one or many at a time, and read it.

Reporting needs ``report_outcome`` on the decision's flow (decider, owner, admin); reading
needs ``read_decisions``. A decision the caller may not see answers 404, like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from keel.api.auth import current_principal, engine_of, hide_unless
from keel.api.decisions import ERRORS
from keel.api.models import OutcomeBatch, OutcomeImportOut, OutcomeIn, OutcomeOut
from keel.engine import Engine
from keel.review.outcomes import OutcomeReport
from keel.security.roles import Permission, PermissionDeniedError, Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


def _visible(
    engine: Engine, principal: Principal, permission: Permission, decision_id: str
) -> None:
    hide_unless(principal, permission, engine.flow_of(decision_id), "decision", decision_id)


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
    engine = engine_of(request)
    _visible(engine, principal, Permission.REPORT_OUTCOME, decision_id)
    report = OutcomeReport(decision_id, body.label, body.value, body.observed_at)
    row, created = engine.outcomes.report(report, principal.id, "api")
    if not created:
        response.status_code = 200
    return {**row, "created": created}


@router.get("/decisions/{decision_id}/outcome", response_model=OutcomeOut, name="get_outcome")
def get_outcome(decision_id: str, principal: Caller, request: Request) -> Any:
    """The outcome reported for a decision (404 until there is one)."""
    engine = engine_of(request)
    _visible(engine, principal, Permission.READ_DECISIONS, decision_id)
    return engine.outcomes.get(decision_id)


@router.post("/outcomes", response_model=OutcomeImportOut, name="report_outcomes")
def report_outcomes(body: OutcomeBatch, principal: Caller, request: Request) -> Any:
    """Report up to 10,000 outcomes at once: all are recorded, or (on any problem, each
    named by its position) none is. Resends of recorded outcomes count as unchanged."""
    engine = engine_of(request)
    if not principal.flows_with(Permission.REPORT_OUTCOME, engine.flows):
        raise PermissionDeniedError(
            f"{principal.name} ({principal.id}) may not report outcomes on any flow",
            {"permission": Permission.REPORT_OUTCOME.value},
        )
    reports = [OutcomeReport(o.decision_id, o.label, o.value, o.observed_at) for o in body.outcomes]
    result = engine.outcomes.report_many(
        reports,
        principal.id,
        "api",
        allowed=lambda flow: principal.can(Permission.REPORT_OUTCOME, flow),
    )
    return result.to_dict()
