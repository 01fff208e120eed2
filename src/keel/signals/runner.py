"""Running a flow's models for one case, each under a timeout.

A model that raises or runs past its timeout yields no signal — never a made-up score —
and the cause is returned so the policy takes its fallback and the ledger records why.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.signals.adapters import Model, ModelOutput

MAX_MODEL_THREADS = 8


@dataclass
class SignalResult:
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    model_ms: float = 0.0


def feature_row(model: Model, inputs: Mapping[str, Any]) -> np.ndarray:
    return np.array([[float(inputs[f]) for f in model.features]], dtype=np.float64)


def _timed(model: Model, row: np.ndarray) -> tuple[ModelOutput, float]:
    start = time.perf_counter()
    out = model.predict(row)
    return out, (time.perf_counter() - start) * 1000


class SignalRunner:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=MAX_MODEL_THREADS, thread_name_prefix="keel-model"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(
        self, models: Mapping[str, Model], timeouts_ms: Mapping[str, int], inputs: Mapping[str, Any]
    ) -> SignalResult:
        result = SignalResult()
        futures: dict[str, tuple[Future[tuple[ModelOutput, float]], float]] = {}
        for name, model in models.items():
            try:
                row = feature_row(model, inputs)
            except (KeyError, TypeError, ValueError) as exc:
                result.failed[name] = f"feature missing or not numeric: {exc}"
                continue
            futures[name] = (self._pool.submit(_timed, model, row), time.perf_counter())
        for name, (future, started) in futures.items():
            model = models[name]
            timeout_s = timeouts_ms[name] / 1000
            remaining = max(0.0, timeout_s - (time.perf_counter() - started))
            meta: dict[str, Any] = {
                "model": model.name,
                "version": model.version,
                "kind": model.kind,
            }
            try:
                out, ms = future.result(timeout=remaining)
            except FutureTimeout:
                future.cancel()
                meta["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
                result.failed[name] = f"timed out after {timeouts_ms[name]} ms"
            except Exception as exc:  # noqa: BLE001 - a model's failure is data, not a crash
                meta["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
                result.failed[name] = f"model raised {type(exc).__name__}: {exc}"
            else:
                if not np.isfinite(out.score) or not np.isfinite(out.confidence):
                    result.failed[name] = f"model returned a non-finite score {out.score!r}"
                else:
                    result.values[name] = {
                        "score": out.score,
                        "confidence": out.confidence,
                        "label": out.label,
                    }
                meta["latency_ms"] = round(ms, 3)
                result.model_ms += ms
            result.meta[name] = meta
        return result
