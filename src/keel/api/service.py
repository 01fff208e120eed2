"""Flows, the ledger, metrics and health."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy import exc, text

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS, Caller
from keel.api.models import FlowOut, Health, VerifyOut
from keel.errors import StoreError
from keel.runtime import FlowRuntime
from keel.security.roles import Principal

router = APIRouter(responses=ERRORS)


def _flow(runtime: FlowRuntime) -> dict[str, Any]:
    flow, policy = runtime.flow, runtime.policy.policy
    return {
        "name": flow.name,
        "description": flow.description,
        "owner": {"name": flow.owner.name, "email": flow.owner.email},
        "autonomy": flow.autonomy.value,
        "policy": {
            "name": policy.name,
            "version": policy.version,
            "rules": [r.name for r in policy.rules],
            "actions": list(policy.actions),
        },
        "inputs": {
            f.name: {
                "type": f.type,
                "required": f.required,
                "min": f.minimum,
                "max": f.maximum,
                "allowed": list(f.allowed) if f.allowed else None,
                "classification": f.classification.value,
                "label": f.display,
            }
            for f in flow.fields.values()
        },
        "signals": {
            s.name: {"model": s.model, "output": s.output, "features": list(s.features)}
            for s in flow.signals.values()
        },
    }


@router.get("/v1/flows", response_model=list[FlowOut], name="list_flows")
def list_flows(principal: Caller, request: Request) -> Any:
    """The flows the caller may see, with their active policy versions."""
    return [_flow(runtime) for runtime in engine_of(request).readable_flows(principal)]


@router.get("/v1/flows/{flow}", response_model=FlowOut, name="get_flow")
def get_flow(flow: str, principal: Caller, request: Request) -> Any:
    return _flow(engine_of(request).flow(flow, principal))


@router.get("/v1/ledger/verification", response_model=VerifyOut, name="verify_ledger")
def verify_ledger(principal: Caller, request: Request, deep: bool = False) -> Any:
    """Walk the whole chain; ok is false and bad_seq names the first entry that fails. With
    ``deep``, every governed table is compared with the chain too, and ``deep.mismatch``
    names the first row that disagrees (table, key, column, stored and recorded values)."""
    return engine_of(request).verify(by=principal, deep=deep).to_dict()


@router.post("/v1/ledger/checkpoints", name="checkpoint_ledger")
def checkpoint_ledger(principal: Caller, request: Request) -> dict[str, Any]:
    """Sign the chain head (Ed25519); keep the result outside Keel."""
    return engine_of(request).checkpoint(by=principal).to_dict()


@router.get("/metrics", name="metrics", response_class=Response)
def metrics(request: Request, principal: Principal = Depends(current_principal)) -> Response:  # noqa: B008
    """Prometheus metrics (a scraper authenticates like any other caller)."""
    return Response(engine_of(request).metrics_text(principal), media_type=CONTENT_TYPE_LATEST)


@router.get("/healthz", response_model=Health, name="health", responses={})
def health() -> Any:
    """The process is up. No authentication."""
    return {"status": "ok"}


@router.get("/readyz", response_model=Health, name="ready", responses={})
def ready(request: Request) -> Any:
    """The database answers. No authentication."""
    try:
        with engine_of(request).db.read() as conn:
            conn.execute(text("SELECT 1"))
    except exc.SQLAlchemyError as error:
        cause = str(getattr(error, "orig", error)).splitlines()[0]
        raise StoreError(f"the database does not answer: {cause}") from error
    return {"status": "ready"}
