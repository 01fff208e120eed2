"""Combining concurrent single decisions into batches.

Callers of ``Engine.decide`` on many threads (an API server's worker pool) each validate
their own case, then hand it here. One thread takes every case waiting, scores each flow's
cases with one model call, drafts them, and records them with one ledger append — what
``decide_many`` does for a batch a caller assembled itself. While that append commits,
new cases queue up and form the next batch, so batches grow with the load. A case that
fails while being drafted fails alone; a failed ledger write fails every case in the batch
(none of them was decided).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from keel.batching import BatchWorker
from keel.decide.draft import Draft
from keel.decide.record import Decision
from keel.errors import LedgerWriteError
from keel.runtime import FlowRuntime
from keel.security.roles import Principal
from keel.signals.runner import SignalResult, SignalRunner

MAX_COMBINED = 256


@dataclass
class _Case:
    runtime: FlowRuntime
    inputs: dict[str, Any]
    subject_id: str | None
    requester: Principal | None
    future: Future[Decision] = field(default_factory=Future)


class Combiner:
    def __init__(
        self,
        runner: SignalRunner,
        draft: Callable[
            [FlowRuntime, dict[str, Any], str | None, Principal | None, SignalResult], Draft
        ],
        record: Callable[[Sequence[Draft]], list[Decision]],
    ) -> None:
        self._runner = runner
        self._draft = draft
        self._record = record
        self.batches = 0
        self._worker: BatchWorker[_Case] = BatchWorker(
            "keel-combiner",
            self._decide,
            MAX_COMBINED,
            closed_error=lambda: LedgerWriteError("the engine is closed; open it again"),
        )

    def submit(
        self,
        runtime: FlowRuntime,
        inputs: dict[str, Any],
        subject_id: str | None,
        requester: Principal | None = None,
    ) -> Future[Decision]:
        """Queue a validated case; the future resolves once it is in the ledger."""
        case = _Case(runtime, inputs, subject_id, requester)
        self._worker.put(case)
        return case.future

    def close(self) -> None:
        self._worker.close()

    def _decide(self, cases: list[_Case]) -> None:
        by_flow: dict[str, list[_Case]] = {}
        for case in cases:
            by_flow.setdefault(case.runtime.flow.name, []).append(case)
        drafts: list[Draft] = []
        waiting: list[_Case] = []
        for group in by_flow.values():
            runtime = group[0].runtime
            try:
                signals = runtime.signals_many(self._runner, [c.inputs for c in group])
            except Exception as exc:  # noqa: BLE001 - reaches each caller, never lost
                for case in group:
                    case.future.set_exception(exc)
                continue
            for case, result in zip(group, signals, strict=True):
                try:
                    drafts.append(
                        self._draft(runtime, case.inputs, case.subject_id, case.requester, result)
                    )
                    waiting.append(case)
                except Exception as exc:  # noqa: BLE001 - this case fails alone
                    case.future.set_exception(exc)
        if not drafts:
            return
        try:
            decisions = self._record(drafts)
        except Exception as exc:  # noqa: BLE001 - every case in the batch learns why
            for case in waiting:
                case.future.set_exception(exc)
            return
        self.batches += 1
        for case, decision in zip(waiting, decisions, strict=True):
            case.future.set_result(decision)
