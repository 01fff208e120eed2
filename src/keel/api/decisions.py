"""Deciding, and reading, explaining and re-evaluating decisions."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse

from keel.api.auth import current_principal, engine_of
from keel.api.models import (
    BatchOut,
    BatchRequest,
    DecideRequest,
    DecisionList,
    DecisionOut,
    ErrorOut,
    WhatIfRequest,
)
from keel.ledger.records import parse_instant, report_range
from keel.security.roles import Principal

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorOut} for code in (401, 403, 404, 413, 422, 503)
}
router = APIRouter(prefix="/v1", responses=ERRORS)
MAX_SEQ = 2**31 - 1  # the ledger's seq columns are INTEGER: 32 bits on PostgreSQL
Caller = Annotated[Principal, Depends(current_principal)]


@router.post("/flows/{flow}/decisions", response_model=DecisionOut, name="decide")
async def decide(flow: str, body: DecideRequest, principal: Caller, request: Request) -> Any:
    """Decide one case. The decision is in the ledger before the response is sent."""
    # Checks and validation happen here, on the event loop; the decision is made in the
    # engine's next combined batch and awaited without holding a worker thread.
    pending = engine_of(request).decider.submit(principal, flow, body.inputs, body.subject_id)
    decision = await asyncio.wrap_future(pending)
    return JSONResponse(decision.to_dict())


@router.post("/flows/{flow}/decisions/batch", response_model=BatchOut, name="decide_batch")
def decide_batch(flow: str, body: BatchRequest, principal: Caller, request: Request) -> Any:
    """Decide up to 1,000 cases atomically: all are valid and recorded, or none is."""
    decided = engine_of(request).decider.decide_many(
        principal, flow, [c.inputs for c in body.cases], [c.subject_id for c in body.cases]
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
    rows = engine_of(request).explanations.list_decisions(
        principal,
        flow,
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
    return engine_of(request).explanations.decision(decision_id, principal).to_dict()


@router.get("/decisions/{decision_id}/explanation", name="explain")
def explain(decision_id: str, principal: Caller, request: Request) -> dict[str, Any]:
    """Why: rule trace with the values compared, guardrails, model attributions, sentences."""
    return engine_of(request).explanations.explain(decision_id, principal)


NOTICE_TYPES = {
    "text/plain": {"schema": {"type": "string"}},
    "text/html": {"schema": {"type": "string"}},
    "application/json": {"schema": {"type": "object"}},
}


@router.get(
    "/decisions/{decision_id}/notice",
    name="notice",
    response_class=PlainTextResponse,
    responses={200: {"content": NOTICE_TYPES}, 409: {"model": ErrorOut}},
)
def notice(
    decision_id: str,
    principal: Caller,
    request: Request,
    format: Annotated[
        str | None, Query(pattern="^(text|html|json)$", description="Overrides Accept.")
    ] = None,
) -> Any:
    """The adverse-action notice of a decline or reduced offer: text (the default), HTML
    (`Accept: text/html` or `?format=html`) or its content as JSON (`application/json`).
    409 when the decision is not adverse or not yet in force."""
    accept = request.headers.get("accept", "")
    fmt = format or next(
        (f for mime, f in (("text/html", "html"), ("application/json", "json")) if mime in accept),
        "text",
    )
    notices = engine_of(request).notices
    if fmt == "json":
        found, notes = notices.notice(decision_id, principal)
        return JSONResponse({**found.to_dict(), "notes": notes})
    text = notices.render(decision_id, principal, fmt)
    return HTMLResponse(text) if fmt == "html" else PlainTextResponse(text)


@router.post("/decisions/{decision_id}/what-if", name="what_if")
def what_if(
    decision_id: str, body: WhatIfRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Re-evaluate a decision with changed inputs or parameters; nothing is recorded.

    With `counterfactual: true`, `counterfactuals` lists up to three smallest changes to the
    flow's actionable fields that change the action, cheapest first; each one's `cost` is its
    change as a share of each field's range (`|to - from| / (max - min)`, summed; no unit).
    When there is none, `no_counterfactual` gives a `code` and a `message` saying why.
    """
    explanations = engine_of(request).explanations
    result = explanations.what_if(decision_id, principal, body.set, body.params)
    if body.counterfactual:
        result.update(explanations.counterfactuals(decision_id, principal).to_dict())
    return result


# A report's range: the CLI's defaults (``keel.ledger.records.report_range``).
ReportSince = Annotated[
    str | None, Query(description="ISO time, inclusive; default: 30 days before until")
]
ReportUntil = Annotated[str | None, Query(description="ISO time, exclusive; default: now")]


@router.get("/flows/{flow}/trust", name="trust_metrics")
def trust(
    flow: str,
    principal: Caller,
    request: Request,
    since: ReportSince = None,
    until: ReportUntil = None,
    bucket: Annotated[str, Query(pattern="^(hour|day|week)$")] = "day",
    min_outcomes: Annotated[
        int | None,
        Query(
            ge=1,
            description="Model performance figures need this many scored outcomes per group "
            "(default: the flow's monitoring.performance.min_outcomes).",
        ),
    ] = None,
) -> dict[str, Any]:
    """The flow's trust metrics per bucket over ``[since, until)`` (ISO 8601), and the
    model's performance figures (``performance``) as ``keel report trust`` gives them."""
    engine = engine_of(request)
    start, end = report_range(engine.clock(), since, until)
    return engine.trust.metrics(principal, flow, start, end, bucket, min_outcomes)


@router.get("/flows/{flow}/fairness", name="fairness_figures")
def fairness(
    flow: str,
    principal: Caller,
    request: Request,
    since: ReportSince = None,
    until: ReportUntil = None,
) -> dict[str, Any]:
    """The flow's fairness figures per protected attribute and group over ``[since, until)``
    (ISO 8601): selection rates, adverse impact ratios, parity, equal opportunity and
    equalized odds differences, calibration within groups."""
    engine = engine_of(request)
    start, end = report_range(engine.clock(), since, until)
    return engine.fairness.report(principal, flow, start, end)
