"""The ASGI entry point `keel serve` runs: one engine per worker process."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from keel.api.app import create_app
from keel.engine import open_engine
from keel.security.audit import AuditLog

ENV_PROJECT = "KEEL_PROJECT"
ENV_AUDIT_SINK = "KEEL_AUDIT_SINK"


def app_from_env() -> FastAPI:
    """Open the project named by KEEL_PROJECT (default: the current directory) and serve it."""
    engine = open_engine(os.environ.get(ENV_PROJECT, "."))
    sink = os.environ.get(ENV_AUDIT_SINK)
    audit = AuditLog(engine.db, Path(sink) if sink else None, clock=engine.clock)
    app = create_app(engine, audit)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        audit.close()
        engine.close()

    app.router.lifespan_context = lifespan
    return app
