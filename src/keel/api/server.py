"""The ASGI entry point `keel serve` runs: one engine per worker process."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI

from keel.api.app import create_app
from keel.engine import Engine, open_engine
from keel.security.audit import AuditLog
from keel.telemetry import log

ENV_PROJECT = "KEEL_PROJECT"
ENV_AUDIT_SINK = "KEEL_AUDIT_SINK"


async def sweep_reviews(engine: Engine, every_s: float) -> None:
    """Record review deadline breaches every ``every_s`` seconds while the server runs.

    Every worker sweeps; each breach is recorded once. A failed sweep is logged and counted
    and the next one tries again.
    """
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(engine.reviews.sweep)
        except Exception:  # noqa: BLE001 - one failed sweep must not stop the next
            engine.metrics.sweep_failures.inc()
            log.exception("review deadline sweep failed; retrying in %s s", every_s)


def app_from_env() -> FastAPI:
    """Open the project named by KEEL_PROJECT (default: the current directory) and serve it."""
    engine = open_engine(os.environ.get(ENV_PROJECT, "."))
    sink = os.environ.get(ENV_AUDIT_SINK)
    audit = AuditLog(engine.db, Path(sink) if sink else None, clock=engine.clock)
    app = create_app(engine, audit)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        sweeper = asyncio.create_task(sweep_reviews(engine, engine.settings.review_sweep_s))
        yield
        sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweeper
        audit.close()
        engine.close()

    app.router.lifespan_context = lifespan
    return app
