"""Monitoring over HTTP: monitor runs, alarms, the holds the governor puts on flows, and
the outbox that delivers alarm notices and retraining requests.

Reading needs ``read_flows`` on the flow (a delivery is the flow's alarm notice); running
monitors, resolving alarms and sending a dead delivery again need ``change_autonomy``
(owner, approver), since a run may raise alarms the governor acts on; lifting a hold needs
``approve_policy``. An alarm or delivery on a flow the caller may not read answers 404,
like an unknown one.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS
from keel.api.models import MonitorRunRequest, ReasonRequest, StopRequest
from keel.ledger.records import parse_instant
from keel.security.roles import Principal

router = APIRouter(prefix="/v1", responses={**ERRORS, 409: ERRORS[404]})
Caller = Annotated[Principal, Depends(current_principal)]


@router.post("/flows/{flow}/monitor-runs", name="run_monitor")
def run_monitor(
    flow: str, body: MonitorRunRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Run the flow's monitors now, by its ``monitoring`` section: the run, the alarms it
    raised or resolved, and what the governor did. A window with too few decisions gives a
    ``skipped`` run with the reason."""
    until = parse_instant("until", body.until)
    end = None
    if until is not None:
        from keel.monitor.windows import moment  # noqa: PLC0415 - NumPy on first use

        end = moment(until).timestamp()
    return engine_of(request).monitoring.run(flow, principal, end).to_dict()


@router.get("/flows/{flow}/monitor-runs", name="list_monitor_runs")
def list_monitor_runs(
    flow: str,
    principal: Caller,
    request: Request,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> dict[str, Any]:
    """The flow's recent monitor runs, newest first, with every figure they computed."""
    runs = engine_of(request).monitoring.runs(flow, principal, limit)
    return {"runs": [run.to_dict() for run in runs]}


@router.get("/flows/{flow}/alarms", name="list_alarms")
def list_alarms(
    flow: str,
    principal: Caller,
    request: Request,
    state: Annotated[str | None, Query(description="firing or resolved")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """The flow's alarms, newest first: severity, summary, evidence, governor actions."""
    alarms = engine_of(request).monitoring.alarms(principal, flow, state, limit)
    return {"alarms": [alarm.to_dict() for alarm in alarms]}


@router.get("/alarms/{alarm_id}", name="get_alarm")
def get_alarm(alarm_id: str, principal: Caller, request: Request) -> dict[str, Any]:
    """One alarm with its evidence and what the governor did about it."""
    return engine_of(request).monitoring.alarm(alarm_id, principal).to_dict()


@router.post("/alarms/{alarm_id}/resolution", name="resolve_alarm")
def resolve_alarm(
    alarm_id: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Resolve a firing alarm by hand, with a reason; holds and autonomy stay as they are."""
    return engine_of(request).monitoring.resolve(alarm_id, principal, body.reason).to_dict()


@router.get("/flows/{flow}/hold", name="get_hold")
def get_hold(flow: str, principal: Caller, request: Request) -> dict[str, Any]:
    """The hold in force on the flow (none, escalate_all, pause) and its history."""
    return engine_of(request).holds.show(flow, principal).to_dict()


@router.post("/flows/{flow}/hold/lift", name="lift_hold")
def lift_hold(
    flow: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Lift the flow's hold; 409 while an alarm that set it still fires, and for a
    stopped flow, when the caller is who stopped it (a second person releases it)."""
    return engine_of(request).holds.lift(flow, principal, body.reason).to_dict()


@router.post("/flows/{flow}/stop", name="stop_flow")
def stop_flow(flow: str, body: StopRequest, principal: Caller, request: Request) -> dict[str, Any]:
    """Engage the flow's kill switch at once (owner, approver, admin): every case is
    deferred with the fallback action until a second person lifts it (``…/hold/lift``).
    Naming the firing ``alarm`` that prompted it leaves that alarm to another person."""
    return engine_of(request).holds.stop(flow, principal, body.reason, body.alarm).to_dict()


@router.get("/deliveries", name="list_deliveries")
def list_deliveries(
    principal: Caller,
    request: Request,
    state: Annotated[str | None, Query(description="pending, delivered or dead")] = None,
    flow: Annotated[str | None, Query(description="only this flow's")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Outbox deliveries, newest first, of the flows the caller reads: state, tries, the
    last error, the next try."""
    found = engine_of(request).deliveries.find(principal, state, flow, limit)
    return {"deliveries": [d.to_dict(payload=False) for d in found]}


@router.get("/deliveries/{delivery_id}", name="get_delivery")
def get_delivery(delivery_id: str, principal: Caller, request: Request) -> dict[str, Any]:
    """One delivery with what it sends."""
    return engine_of(request).deliveries.show(delivery_id, principal).to_dict()


@router.post("/deliveries/{delivery_id}/retry", name="retry_delivery")
def retry_delivery(
    delivery_id: str, body: ReasonRequest, principal: Caller, request: Request
) -> dict[str, Any]:
    """Send a dead delivery again, with a reason (recorded); 409 unless it is dead. It is
    tried once at once; the answer is the delivery as that try left it."""
    found = engine_of(request).deliveries.retry(delivery_id, principal, body.reason)
    return found.to_dict(payload=False)
