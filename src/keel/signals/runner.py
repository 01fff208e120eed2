"""Running a flow's models for one case or a batch, each call under a timeout.

A model that raises or runs past its timeout yields no signal — never a made-up score —
and the cause is returned so the policy takes its fallback and the ledger records why.
The cause is a fixed phrase per kind of failure with the exception's type, never its
message: a model that echoes its inputs in an error would write personal data into the
ledger. The full text goes to the ``keel`` log (WARNING) with the flow and signal.
A batch is scored with one call per model (rows × features), which is how models are
fastest; if that call fails, every case in the batch gets no signal from that model.

Two ways to hold a model to its timeout, chosen by the adapter:

- in-process computation (scikit-learn, ONNX: ``inline = True``) runs on the caller's
  thread, and a result that arrives after the timeout is discarded as timed out. It cannot
  hang on I/O, and a thread hand-off would cost more than the model itself.
- anything that may wait on the outside world (Python callables: ``inline = False``) runs
  in a worker thread, and the caller stops waiting at the timeout.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from keel.signals.adapters import Model, ModelOutput
from keel.signals.loading import loaded
from keel.signals.rows import RowError, Rows
from keel.telemetry import log

MAX_MODEL_THREADS = 8


@dataclass
class SignalResult:
    values: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    model_ms: float = 0.0


def feature_rows(model: Model, cases: Sequence[Mapping[str, Any]]) -> Rows:
    """The model's features of ``cases``; raises ``RowError`` naming a missing feature."""
    return Rows.of(model.features, model.spec.categories, cases)


def feature_row(model: Model, inputs: Mapping[str, Any]) -> Rows:
    """The model's features of one case (what ``attribute`` explains)."""
    return feature_rows(model, [inputs])


class _OutputCountError(ValueError):
    """The model answered, but not once per case (Keel's own message: safe to record)."""


def _timed(model: Model, rows: Rows) -> tuple[list[ModelOutput], float]:
    start = time.perf_counter()
    out = model.predict_many(rows)
    if len(out) != len(rows):
        raise _OutputCountError(f"model gave {len(out)} outputs for {len(rows)} cases")
    return out, (time.perf_counter() - start) * 1000


@dataclass
class _Call:
    outputs: list[ModelOutput] | None = None
    ms: float = 0.0
    cause: str | None = None  # recorded in the ledger: no text from outside Keel
    error: BaseException | None = None  # logged only


class SignalRunner:
    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(
            max_workers=MAX_MODEL_THREADS, thread_name_prefix="keel-model"
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def run(
        self,
        models: Mapping[str, Model],
        timeouts_ms: Mapping[str, int],
        inputs: Mapping[str, Any],
        *,
        flow: str,
    ) -> SignalResult:
        return self.run_many(models, timeouts_ms, [inputs], flow=flow)[0]

    def run_many(
        self,
        models: Mapping[str, Model],
        timeouts_ms: Mapping[str, int],
        cases: Sequence[Mapping[str, Any]],
        *,
        flow: str,
    ) -> list[SignalResult]:
        """Score ``cases`` of ``flow`` (named in the log when a model fails) with ``models``.
        Every model is loaded before any is timed: a model not loaded yet (see loading.py)
        is loaded here, outside its timeout, and a load that fails raises (``ModelError``,
        ``IntegrityError``) rather than passing for a model that failed on these cases."""
        models = {name: loaded(model) for name, model in models.items()}
        calls: dict[str, _Call] = {}
        waiting: dict[str, tuple[Future[tuple[list[ModelOutput], float]], float]] = {}
        for name, model in models.items():
            try:
                rows = feature_rows(model, cases)
            except RowError as exc:
                calls[name] = _Call(cause=str(exc), error=exc)
                continue
            if model.inline:
                calls[name] = self._inline(model, rows, timeouts_ms[name])
            else:
                waiting[name] = (self._pool.submit(_timed, model, rows), time.perf_counter())
        for name, (future, started) in waiting.items():
            calls[name] = self._wait(future, started, timeouts_ms[name])
        for name, call in calls.items():
            if call.cause is not None:
                log.warning(
                    "signal failed: flow=%s signal=%s model=%s cases=%d cause=%s detail=%s",
                    flow,
                    name,
                    models[name].name,
                    len(cases),
                    call.cause,
                    _scrubbed(call.error) if call.error else "-",
                )
        return self._distribute(models, calls, len(cases))

    @staticmethod
    def _inline(model: Model, rows: Rows, timeout_ms: int) -> _Call:
        started = time.perf_counter()
        try:
            outputs, ms = _timed(model, rows)
        except Exception as exc:  # noqa: BLE001 - a model's failure is data, not a crash
            return _Call(ms=(time.perf_counter() - started) * 1000, cause=_raised(exc), error=exc)
        if ms > timeout_ms:
            return _Call(ms=ms, cause=f"timed out after {timeout_ms} ms (took {ms:.0f} ms)")
        return _Call(outputs, ms)

    @staticmethod
    def _wait(
        future: Future[tuple[list[ModelOutput], float]], started: float, timeout_ms: int
    ) -> _Call:
        remaining = max(0.0, timeout_ms / 1000 - (time.perf_counter() - started))
        try:
            outputs, ms = future.result(timeout=remaining)
        except FutureTimeout:
            future.cancel()
            cause, error = f"timed out after {timeout_ms} ms", None
        except Exception as exc:  # noqa: BLE001 - a model's failure is data, not a crash
            cause, error = _raised(exc), exc
        else:
            return _Call(outputs, ms)
        return _Call(ms=(time.perf_counter() - started) * 1000, cause=cause, error=error)

    @staticmethod
    def _distribute(
        models: Mapping[str, Model], calls: Mapping[str, _Call], count: int
    ) -> list[SignalResult]:
        results = [SignalResult() for _ in range(count)]
        for name, call in calls.items():
            model = models[name]
            meta: dict[str, Any] = {
                "model": model.name,
                "version": model.version,
                "kind": model.kind,
                "latency_ms": round(call.ms, 3),
            }
            if count > 1:
                meta["batch"] = count
            if call.outputs is None:
                for result in results:
                    result.failed[name] = call.cause or "no output"
                    result.meta[name] = meta
                continue
            share = call.ms / count
            for result, out in zip(results, call.outputs, strict=True):
                if not np.isfinite(out.score) or not np.isfinite(out.confidence):
                    result.failed[name] = f"model returned a non-finite score {out.score!r}"
                else:
                    result.values[name] = {
                        "score": out.score,
                        "confidence": out.confidence,
                        "label": out.label,
                    }
                result.meta[name] = meta
                result.model_ms += share
        return results


def _raised(exc: BaseException) -> str:
    """The recorded cause: the exception's type only (its message may echo the inputs)."""
    if isinstance(exc, _OutputCountError):
        return str(exc)
    return f"model raised {type(exc).__name__}"


_DIGITS = re.compile(r"\d+")
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
MAX_DETAIL = 200


def _scrubbed(error: BaseException) -> str:
    """The exception for the log: its type and the first line of its message, bounded, with
    quoted text and digits masked — a model that echoes its inputs in an error must not
    put personal values into the logs either."""
    first = str(error).splitlines()[0] if str(error) else ""
    masked = _DIGITS.sub("#", _QUOTED.sub("'…'", first))[:MAX_DETAIL]
    return f"{type(error).__name__}: {masked}"
