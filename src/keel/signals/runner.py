"""Running a flow's models for one case or a batch, each call under a timeout.

A model that raises or runs past its timeout yields no signal — never a made-up score —
and the cause is returned so the policy takes its fallback and the ledger records why.
A batch is scored with one call per model (rows × features), which is how models are
fastest; if that call fails, every case in the batch gets no signal from that model.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
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


def _timed(model: Model, rows: np.ndarray) -> tuple[list[ModelOutput], float]:
    start = time.perf_counter()
    out = model.predict_many(rows)
    if len(out) != len(rows):
        raise ValueError(f"model gave {len(out)} outputs for {len(rows)} cases")
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
        return self.run_many(models, timeouts_ms, [inputs])[0]

    def run_many(
        self,
        models: Mapping[str, Model],
        timeouts_ms: Mapping[str, int],
        cases: Sequence[Mapping[str, Any]],
    ) -> list[SignalResult]:
        results = [SignalResult() for _ in cases]
        futures: dict[str, tuple[Future[tuple[list[ModelOutput], float]], float]] = {}
        for name, model in models.items():
            try:
                rows = np.array(
                    [[float(c[f]) for f in model.features] for c in cases], dtype=np.float64
                )
            except (KeyError, TypeError, ValueError) as exc:
                for result in results:
                    result.failed[name] = f"feature missing or not numeric: {exc}"
                continue
            futures[name] = (self._pool.submit(_timed, model, rows), time.perf_counter())
        for name, (future, started) in futures.items():
            model = models[name]
            remaining = max(0.0, timeouts_ms[name] / 1000 - (time.perf_counter() - started))
            meta: dict[str, Any] = {
                "model": model.name,
                "version": model.version,
                "kind": model.kind,
            }
            cause = None
            try:
                outputs, ms = future.result(timeout=remaining)
            except FutureTimeout:
                future.cancel()
                cause = f"timed out after {timeouts_ms[name]} ms"
            except Exception as exc:  # noqa: BLE001 - a model's failure is data, not a crash
                cause = f"model raised {type(exc).__name__}: {exc}"
            if cause is not None:
                meta["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
                for result in results:
                    result.failed[name] = cause
                    result.meta[name] = dict(meta)
                continue
            meta["latency_ms"] = round(ms, 3)
            if len(cases) > 1:
                meta["batch"] = len(cases)
            for result, out in zip(results, outputs, strict=True):
                if not np.isfinite(out.score) or not np.isfinite(out.confidence):
                    result.failed[name] = f"model returned a non-finite score {out.score!r}"
                else:
                    result.values[name] = {
                        "score": out.score,
                        "confidence": out.confidence,
                        "label": out.label,
                    }
                result.meta[name] = dict(meta)
                result.model_ms += ms / len(cases)
        return results
