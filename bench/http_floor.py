"""The reference for the load test: the same HTTP stack with no decision behind it.

FastAPI on uvicorn, the same workers and the same request: a bearer token is required, the
body is parsed into a model like Keel's, and a JSON answer of a decision's size comes back.
What this costs on a machine is the floor under any decision service built on this stack;
bench/load.py runs it in the same run as `keel serve` and prints Keel's latency beside it.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Header, HTTPException
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict

ANSWER_REASONS = ["a reason of about the length Keel writes, with a figure: 0.42"] * 4


class Case(BaseModel):
    model_config = ConfigDict(extra="forbid")
    inputs: dict[str, Any]
    subject_id: str | None = None


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/readyz")
    def ready() -> dict[str, str]:
        return {"status": "ready"}

    @app.post("/v1/flows/{flow}/decisions")
    async def decide(flow: str, case: Case, authorization: str = Header("")) -> Any:
        if not authorization.startswith("Bearer "):
            raise HTTPException(401)
        return JSONResponse(
            {
                "id": "dec_reference",
                "flow": flow,
                "subject_id": case.subject_id,
                "inputs": case.inputs,
                "action": "approve",
                "value": 5000.0,
                "status": "final",
                "reasons": ANSWER_REASONS,
            }
        )

    return app
