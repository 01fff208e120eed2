"""The ASGI entry point `keel serve` runs: one engine per worker process."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from keel.api.app import create_app
from keel.api.serving import watch_for_stop
from keel.engine import Engine, open_engine
from keel.rollout.canary import CHECK_S
from keel.security.audit import AuditLog
from keel.telemetry import log

ENV_PROJECT = "KEEL_PROJECT"
ENV_AUDIT_SINK = "KEEL_AUDIT_SINK"
ENV_WORKERS = "KEEL_SERVE_WORKERS"  # how many worker processes `keel serve` started


async def every(
    every_s: float, job: Callable[[], object], failed: Callable[[], None], what: str
) -> None:
    """Run ``job`` (blocking, on a worker thread) every ``every_s`` seconds while the server
    runs. A failure is logged and counted by ``failed``, and the next round tries again."""
    while True:
        await asyncio.sleep(every_s)
        try:
            await asyncio.to_thread(job)
        except Exception:  # noqa: BLE001 - one failed round must not stop the next
            failed()
            log.exception("%s failed; retrying in %s s", what, every_s)


def scheduled(engine: Engine) -> list[Coroutine[Any, Any, None]]:
    """The server's timed work. Every worker does it; each piece is claimed or recorded in
    the store once (a breach once per review, a monitor period once, a canary stopped once).

    - review deadline breaches, every ``reviews.sweep_s``;
    - canaries past their bounds, every ``CHECK_S`` (a bound check is scheduled work, never
      a side effect of reading a flow);
    - integrity alarms, every ``CHECK_S``: raised for a flow held because its stored rows
      disagree with the ledger, resolved once they verify again;
    - freshness alarms, every ``monitors.check_s``: raised for a knowledge collection whose source
      folder was not synced within its ``sync_limit_s``, resolved after a sync;
    - monitor runs whose period is due, every ``monitors.check_s`` (only if a flow has a
      ``monitoring.every``);
    - outbox deliveries (alarm notices, retraining requests) whose try is due, every
      ``deliveries.check_s`` (each claimed by one worker at a time).
    """
    metrics = engine.metrics
    jobs = [
        every(engine.settings.review_sweep_s, engine.reviews.sweep,
              metrics.sweep_failures.inc, "review deadline sweep"),
        every(CHECK_S, engine.rollouts.check_running,
              metrics.rollout_check_failures.inc, "canary bound check"),
        every(CHECK_S, engine.monitoring.check_integrity,
              metrics.integrity_check_failures.inc, "integrity check"),
        every(engine.settings.monitor_check_s, engine.monitoring.check_freshness,
              metrics.monitor_runs.labels("knowledge", "failed").inc, "freshness check"),
        every(engine.settings.deliveries.check_s, engine.deliveries.dispatch_due,
              metrics.delivery_dispatch_failures.inc, "delivery dispatch"),
    ]  # fmt: skip
    if any(rt.flow.monitoring.every_s for rt in engine.flows.values()):
        jobs.append(
            every(engine.settings.monitor_check_s, engine.monitoring.run_due,
                  metrics.monitor_runs.labels("*", "failed").inc, "scheduled monitor check")
        )  # fmt: skip
    return jobs


def app_from_env() -> FastAPI:
    """Open the project named by KEEL_PROJECT (default: the current directory) and serve it."""
    engine = open_engine(os.environ.get(ENV_PROJECT, "."))
    try:
        engine.load_models()  # every model now, in each worker: no request pays the load
    except Exception:
        engine.close()
        raise
    sink = os.environ.get(ENV_AUDIT_SINK)
    audit = AuditLog(engine.db, Path(sink) if sink else None, clock=engine.clock)
    app = create_app(engine, audit, int(os.environ.get(ENV_WORKERS, "1")))
    watch_for_stop()  # a worker told to stop before it listens never does (WorkerServer)

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks = [asyncio.create_task(job) for job in scheduled(engine)]
        yield
        for task in tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        audit.close()
        engine.close()

    app.router.lifespan_context = lifespan
    return app
