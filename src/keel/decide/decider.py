"""Deciding: validate a case, draft it, and record it in the ledger before it is returned.

Single cases from many threads are combined into batches (``keel.decide.combine``); a batch a
caller assembled is decided atomically. Every decision goes through the flow's runtime as
the registry holds it now, and through a running rollout (shadow or canary) when there is one.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from functools import partial
from typing import Any

from sqlalchemy import Table

from keel.context import Context
from keel.decide.combine import Combiner
from keel.decide.draft import WAITING, Draft, draft
from keel.decide.record import Decision, decision_from
from keel.errors import InputError, LedgerWriteError
from keel.events import deferred
from keel.ledger.records import Entry, decision_index_row, new_id
from keel.review.queue import open_review_row
from keel.runtime import FlowRuntime, Running
from keel.security.roles import Permission, Principal
from keel.signals.runner import SignalResult, SignalRunner
from keel.store.schema import decisions, protected_values, reviews
from keel.telemetry import log
from keel.text import identifier

MAX_SUBJECT_ID = 128
MAX_LISTED = 100  # invalid cases an error lists in full; its count gives the rest


class Decider:
    def __init__(self, ctx: Context, runner: SignalRunner) -> None:
        self._ctx = ctx
        self._runner = runner
        # The combiner's thread commits its own batches: a hand-off would only add latency.
        self._combiner = Combiner(runner, self._draft, partial(self._record, here=True))

    def close(self) -> None:
        self._combiner.close()

    @property
    def batches(self) -> int:
        """Combined batches decided so far (each one model call per flow and one append)."""
        return self._combiner.batches

    def decide(
        self,
        principal: Principal,
        flow: str,
        inputs: Mapping[str, Any],
        subject_id: str | None = None,
    ) -> Decision:
        """Decide one case for ``principal`` (``decide`` on the flow); it is in the ledger
        before this returns. The principal is recorded as who asked: a flow with four-eyes
        reviews keeps it from reviewing the decision."""
        return self.submit(principal, flow, inputs, subject_id).result()

    def submit(
        self,
        principal: Principal,
        flow: str,
        inputs: Mapping[str, Any],
        subject_id: str | None = None,
    ) -> Future[Decision]:
        """Check and validate one case now (raising at once) and decide it in the next
        combined batch; the future resolves once the decision is in the ledger."""
        runtime = self.allowed(principal, flow)
        clean = self._validate(runtime, inputs, subject_id)
        return self._combiner.submit(runtime, clean, subject_id, principal)

    def decide_many(
        self,
        principal: Principal,
        flow: str,
        cases: Sequence[Mapping[str, Any]],
        subject_ids: Sequence[str | None] | None = None,
    ) -> list[Decision]:
        """Decide a batch atomically: every case is valid and recorded, or none is."""
        runtime = self.allowed(principal, flow)
        if not cases:
            raise InputError("a batch needs at least one case", {"flow": flow})
        if subject_ids is not None and len(subject_ids) != len(cases):
            raise InputError("subject_ids must have one entry per case", {"flow": flow})
        subjects = list(subject_ids) if subject_ids is not None else [None] * len(cases)
        clean, invalid = self.screen(runtime, cases, subjects)
        if invalid:  # every bad case named at once, so the caller fixes them all in one go
            raise InputError(
                _batch_message(runtime.flow.name, invalid, len(cases)),
                {"flow": flow, "count": len(invalid), "cases": invalid[:MAX_LISTED]},
            )
        signals = runtime.signals_many(self._runner, clean)  # one model call for the batch
        drafts = [
            self._draft(runtime, c, s, principal, sig)
            for c, s, sig in zip(clean, subjects, signals, strict=True)
        ]
        return self._record(drafts)

    def screen(
        self,
        runtime: FlowRuntime,
        cases: Sequence[Mapping[str, Any]],
        subjects: Sequence[str | None],
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Validate every case of a batch: the clean cases, and every invalid one as
        ``{index, subject_id, errors: [{field, error}]}`` — never only the first."""
        clean: list[dict[str, Any]] = []
        invalid: list[dict[str, Any]] = []
        for i, (case, subject) in enumerate(zip(cases, subjects, strict=True)):
            try:
                clean.append(self._validate(runtime, case, subject))
            except InputError as exc:
                errors = exc.detail.get("errors") or [
                    {"field": exc.detail.get("field", ""), "error": exc.message}
                ]
                invalid.append({"index": i, "subject_id": subject, "errors": errors})
        return clean, invalid

    # ---- the steps -------------------------------------------------------------------------

    def allowed(self, principal: Principal, flow: str) -> FlowRuntime:
        """The flow's runtime now, once ``principal`` may decide on it."""
        return self._ctx.registry.permitted(flow, principal, Permission.DECIDE)

    def _validate(
        self, runtime: FlowRuntime, inputs: Any, subject_id: str | None
    ) -> dict[str, Any]:
        if subject_id is not None and (
            not isinstance(subject_id, str) or not 0 < len(subject_id) <= MAX_SUBJECT_ID
        ):
            raise InputError(
                f"subject_id must be a string of 1 to {MAX_SUBJECT_ID} characters",
                {"flow": runtime.flow.name, "field": "subject_id"},
            )
        if subject_id is not None:
            identifier(subject_id, "subject_id")
        try:
            return runtime.flow.validate_input(inputs)
        except InputError:
            self._ctx.metrics.rejected.labels(runtime.flow.name, "invalid_input").inc()
            raise

    def _draft(
        self,
        runtime: FlowRuntime,
        clean: dict[str, Any],
        subject_id: str | None,
        requester: Principal | None,
        signals: SignalResult,
    ) -> Draft:
        ctx = self._ctx
        decision_id = new_id("dec", ctx.clock())
        stored, sealed = ctx.protector.split(decision_id, clean, runtime.flow.protected_fields())
        rollout = ctx.registry.rollout(runtime.flow.name)
        serving = runtime
        if rollout is not None and rollout.serves(subject_id):
            serving = rollout.runtime  # the canary decides this subject
        d = draft(serving, self._runner, decision_id, subject_id, clean, stored, signals=signals)
        d.sealed = sealed
        if requester is not None:  # who asked, and the person behind it (four eyes)
            d.requested_by, d.requested_person = requester.id, requester.person
        if rollout is not None:
            d.beside = _beside(rollout, serving is rollout.runtime, self._runner, clean, signals)
        return d

    def _record(self, drafts: Sequence[Draft], here: bool = False) -> list[Decision]:
        pending = [
            deferred(
                d.decision_id,
                d.runtime.flow.name,
                d.finalize,
                ((protected_values, d.sealed.row()),) if d.sealed else (),
                self._derived_rows,
            )
            for d in drafts
        ]
        try:
            entries = self._ctx.writer.append(pending, here=here)
        except LedgerWriteError:
            self._ctx.metrics.ledger_failures.inc()
            log.error("ledger write failed; %d decisions were not returned", len(drafts))
            raise
        # d.body is what the ledger hashed: no need to parse the record back.
        out = [
            decision_from(entry, d.body, d.result["reason"])
            for d, entry in zip(drafts, entries, strict=True)
        ]
        self._count(out, drafts[0].started)
        return out

    def _derived_rows(
        self, entry: Entry, body: dict[str, Any]
    ) -> list[tuple[Table, dict[str, Any]]]:
        rows = [(decisions, decision_index_row(entry, body))]
        if body["status"] in WAITING:
            settings = self._ctx.registry.runtime_of(str(entry.flow)).flow.review
            rows.append((reviews, open_review_row(entry, body, settings, self._ctx.clock())))
        return rows

    def _count(self, decided: list[Decision], started: float) -> None:
        metrics = self._ctx.metrics
        seconds = time.perf_counter() - started
        by_flow: dict[str, list[Decision]] = {}
        for decision in decided:  # a combined batch may hold several flows
            by_flow.setdefault(decision.flow, []).append(decision)
        for flow, group in by_flow.items():
            metrics.decided(flow, [(d.action, d.status) for d in group], seconds)
            for d in group:
                for name, cause in d.failed_signals.items():
                    metrics.signal_failures.labels(flow, name, cause.split(" ")[0]).inc()
                if d.fallback:
                    metrics.fallbacks.labels(flow, d.fallback.split(":")[0]).inc()
                    log.warning(
                        "fallback taken: flow=%s decision=%s cause=%s", flow, d.id, d.fallback
                    )
                for hit in d.guardrail_hits:
                    metrics.guardrail_hits.labels(flow, hit["name"], hit["on_hit"]).inc()


def _beside(
    rollout: Running,
    served: bool,
    runner: SignalRunner,
    inputs: dict[str, Any],
    signals: SignalResult,
) -> dict[str, Any]:
    """What a decision records of the rollout beside it: its arm, and in shadow, what the
    candidate would have done with the same inputs and signals (never acted on)."""
    if rollout.mode == "canary":
        arm = "candidate" if served else "active"
        return {"id": rollout.id, "mode": "canary", "arm": arm, "version": rollout.version}
    shadow = draft(rollout.runtime, runner, "shadow", None, inputs, inputs, signals=signals)
    return {
        "id": rollout.id,
        "mode": "shadow",
        "arm": "shadow",
        "version": rollout.version,
        "action": shadow.action,
        "value": shadow.value,
        "rule": shadow.rule,
        "review": shadow.review,
    }


def _batch_message(flow: str, invalid: list[dict[str, Any]], total: int) -> str:
    """``flow 'f': 2 of 5 cases are invalid, so none was decided: case 1 (subject s1): …``."""
    parts = []
    for case in invalid[:MAX_LISTED]:
        subject = f" (subject {case['subject_id']})" if case["subject_id"] is not None else ""
        problems = "; ".join(
            f"{e['field']}: {e['error']}" if e["field"] else e["error"] for e in case["errors"]
        )
        parts.append(f"case {case['index']}{subject}: {problems}")
    more = len(invalid) - MAX_LISTED
    tail = f" — and {more} more" if more > 0 else ""
    return (
        f"flow '{flow}': {len(invalid)} of {total} cases are invalid, so none was decided: "
        + " | ".join(parts)
        + tail
    )
