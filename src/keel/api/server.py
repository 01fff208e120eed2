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


async def run_monitors(engine: Engine, every_s: float) -> None:
    """Every ``every_s`` seconds, run the monitors of flows whose schedule has a period not
    yet run (``monitoring.every``). Workers claim each period, so it runs once; a failure
    is logged and counted, and the next check tries again."""
    while True:
        await asyncio.sleep(every_s)
        if not any(rt.flow.monitoring.every_s for rt in engine.flows.values()):
            continue
        try:
            await asyncio.to_thread(engine.monitoring.run_due)
        except Exception:  # noqa: BLE001 - one failed check must not stop the next
            engine.metrics.monitor_runs.labels("*", "failed").inc()
            log.exception("scheduled monitor check failed; retrying in %s s", every_s)


def app_from_env() -> FastAPI:
    """Open the project named by KEEL_PROJECT (default: the current directory) and serve it."""
    engine = open_engine(os.environ.get(ENV_PROJECT, "."))
    sink = os.environ.get(ENV_AUDIT_SINK)
    audit = AuditLog(engine.db, Path(sink) if sink else None, clock=engine.clock)
    app = create_app(engine, audit)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [
            asyncio.create_task(sweep_reviews(engine, engine.settings.review_sweep_s)),
            asyncio.create_task(run_monitors(engine, engine.settings.monitor_check_s)),
        ]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        audit.close()
        engine.close()

    app.router.lifespan_context = lifespan
    return app
