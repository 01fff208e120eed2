"""The decision path: validated inputs → signals → rules → guardrails → autonomy → record.

Everything up to the static guardrails happens on the caller's thread and yields a
``Draft``. Window guardrails (rate and exposure limits) are settled by ``Draft.finalize``
inside the ledger's write transaction, so limits hold across processes; the record it
returns is exactly what the ledger hashes.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from keel.events import DecisionRecorded, body
from keel.flows import Autonomy
from keel.ledger.records import iso_time
from keel.ledger.writer import WindowGate
from keel.policy.compiler import Evaluation
from keel.policy.guardrails import GuardrailHit, check_static, clamp_note, hit_cause, segment_of
from keel.policy.text import PROTECTED_TEXT, render
from keel.protect import Sealed
from keel.runtime import INTEGRITY, NO_HOLD, FlowRuntime
from keel.signals.runner import SignalResult, SignalRunner

# What a caller is told when a hold defers its case: the hold, not the policy's fallback
# reason (which explains a different failure, such as a model that gave no answer).
HELD_REASONS = {
    "stop": "Automatic decisions on this flow are stopped (kill switch); nothing was acted on.",
    "pause": "Automatic decisions on this flow are paused after an alarm; nothing was acted on.",
    INTEGRITY: "This flow is held: its stored state does not match the ledger; nothing was "
    "acted on.",
}


class Status:
    FINAL = "final"
    PENDING_REVIEW = "pending_review"
    ADVISORY = "advisory"
    SHADOW = "shadow"
    DEFERRED = "deferred"  # reviewers saturated and the flow pauses: nothing acted on


WAITING = (Status.PENDING_REVIEW, Status.ADVISORY)  # statuses that open a review


def settle_status(autonomy: Autonomy, review: bool, escalated: bool) -> str:
    """Which status a decision gets at an autonomy level (DESIGN.md, 'Autonomy level')."""
    if autonomy is Autonomy.SHADOW:
        return Status.SHADOW
    if autonomy is Autonomy.ADVISORY:
        return Status.ADVISORY
    if autonomy is Autonomy.SUPERVISED and (review or escalated):
        return Status.PENDING_REVIEW
    if autonomy is Autonomy.AUTONOMOUS and escalated:
        return Status.PENDING_REVIEW
    return Status.FINAL


def guarded_reason(
    base: str, action: str, status: str, rule: str, hits: Sequence[Mapping[str, Any]]
) -> str:
    """The reason a caller is told and the ledger records, true after guardrails.

    ``base`` is the deciding template rendered with the value in force. A guardrail that
    clamped the value, escalated the case or sent it to the fallback is said in words, so a
    reason never reads "approved" for a case that waits for review, and a fallback's own text
    (written for a model that failed) never stands for a guardrail's diversion. ``hits`` are
    in their recorded form, so ``keel explain`` words a decision exactly as it was recorded.
    """
    if rule == "hold":
        return base  # holds have their own reasons (HELD_REASONS)
    diverted = [h for h in hits if h["on_hit"] in ("fallback", "pause")]
    if rule == "fallback" and diverted:
        causes = "; ".join(hit_cause(h) for h in diverted)
        if status == Status.DEFERRED:
            return f"Nothing was acted on: {causes}."
        tail = "; waiting for review." if status in WAITING else "."
        return f"The policy's fallback ({action}) applies: {causes}{tail}"
    text = base
    clamps = [h for h in hits if h["on_hit"] == "clamp"]
    if clamps and rule != "kill_switch":
        note = "; ".join(clamp_note(h) for h in clamps)
        text = f"{text[:-1]} ({note})." if text.endswith(".") else f"{text} ({note})"
    escalations = [
        h
        for h in hits
        if h["on_hit"] == "escalate" and (rule != "kill_switch" or h["kind"] == "kill_switch")
    ]
    if escalations and status in (*WAITING, Status.SHADOW):
        lead = "Waiting for review" if status in WAITING else "Would wait for review (shadow)"
        causes = "; ".join(hit_cause(h) for h in escalations)
        return f"{lead}: {causes}; proposed: {action} — {text}"
    return text


@lru_cache(maxsize=1024)
def quotes_any(template: str, fields: tuple[str, ...]) -> bool:
    """Does a reason template quote any of these input fields?"""
    return any(f"{{input.{name}" in template for name in fields)


def masked_view(inputs: Mapping[str, Any], protected: list[str]) -> dict[str, Any]:
    return {k: (PROTECTED_TEXT if k in protected else v) for k, v in inputs.items()}


@dataclass
class Draft:
    """A decision before window guardrails; ``finalize`` completes it under the ledger lock."""

    runtime: FlowRuntime
    decision_id: str
    subject_id: str | None
    inputs: dict[str, Any]
    stored_inputs: dict[str, Any]
    signals: SignalResult
    evaluation: Evaluation
    action: str
    value: float | None
    reason: str
    fallback: str | None
    checked: list[str]
    hits: list[GuardrailHit]
    review: bool
    rule: str
    started: float
    result: dict[str, Any] = field(default_factory=dict)
    body: dict[str, Any] = field(default_factory=dict)
    sealed: Sealed | None = None
    requested_by: str | None = None  # the principal that asked (four-eyes reviews)
    requested_person: str | None = None  # the person behind it
    beside: dict[str, Any] | None = None  # the shadow or canary rollout it went through

    def _reason_for_record(self, template_owner: str, rendered: str, value: float | None) -> str:
        """Re-render the reason with personal inputs masked: the ledger never holds them."""
        protected = self.runtime.flow.protected_fields()
        if not protected:
            return rendered
        template = self.runtime.policy.reason_template(template_owner)
        if template is None or not quotes_any(template, tuple(protected)):
            return rendered  # nothing personal in it: the caller's text is the record's
        values = {
            "input": masked_view(self.inputs, protected),
            "signals": self.signals.values,
            "params": self.runtime.policy.policy.params,
            "value": value,
        }
        return render(template, values, self.runtime.flow)

    def _queue(self, status: str, now: float) -> dict[str, Any] | None:
        """A waiting case's deadline, recorded with it (the queue row copies it)."""
        if status not in WAITING:
            return None
        deadline = self.runtime.flow.review.deadline_s
        return {"due_at": iso_time(now + deadline) if deadline else None}

    def finalize(self, gate: WindowGate) -> dict[str, Any]:
        flow = self.runtime.flow
        policy = self.runtime.policy.policy
        escalated = any(h.on_hit == "escalate" for h in self.hits)
        status = settle_status(flow.autonomy, self.review, escalated)
        action, value, reason, owner = self.action, self.value, self.reason, self.rule
        hits = list(self.hits)
        checked = list(self.checked)
        fallback = self.fallback
        hold = self.runtime.hold
        if hold == "escalate_all" and status == Status.FINAL:
            status = Status.PENDING_REVIEW
        elif hold == INTEGRITY and status != Status.SHADOW:
            # The store disagrees with the ledger: nothing it holds is acted on, advisory
            # cases included; the action named is the last verified policy's fallback.
            status, action, value, owner = Status.DEFERRED, policy.fallback.action, None, "hold"
            reason = HELD_REASONS[INTEGRITY]
            fallback = f"integrity: {self.runtime.integrity}"
        elif hold in ("pause", "stop") and status in (Status.FINAL, Status.PENDING_REVIEW):
            status, action, value, owner = Status.DEFERRED, policy.fallback.action, None, "hold"
            reason = HELD_REASONS[hold]
            fallback = (
                "hold: the flow is stopped (kill switch)"
                if hold == "stop"
                else "hold: automation paused by the governor"
            )
        if status == Status.FINAL:
            limits = [w for w in policy.guardrails.windows if w.action == action]
            breached = None
            for limit in limits:
                checked.append(limit.name)
                segment = segment_of(limit, self.inputs)
                ok, used = gate.check(flow.name, limit, segment, value or 0.0)
                if not ok:
                    unit = "actions" if limit.kind == "rate" else "in value"
                    where = f" for {limit.per} {segment}" if limit.per else ""
                    detail = (
                        f"{used:,.0f} {unit} already in the last {limit.window_s:,} s{where}; "
                        f"limit {limit.maximum:,.0f}"
                    )
                    breached = GuardrailHit(limit.name, limit.kind, limit.on_hit, detail)
                    break
            if breached is not None:
                hits.append(breached)
                if breached.on_hit == "fallback":
                    action, value, reason, owner = (
                        policy.fallback.action,
                        None,
                        self.runtime.policy.evaluate_fallback_reason(self.inputs),
                        "fallback",
                    )
                    status = settle_status(flow.autonomy, policy.fallback.review, False)
                else:
                    status = settle_status(flow.autonomy, self.review, True)
            else:
                for limit in limits:
                    gate.consume(flow.name, limit, segment_of(limit, self.inputs), value or 0.0)
        capacity = flow.review.capacity
        if status in WAITING and capacity is not None:
            checked.append("review_capacity")
            ok, used = gate.check(flow.name, capacity.limit, "*", 0.0)
            if ok:
                gate.consume(flow.name, capacity.limit, "*", 0.0)
            else:
                detail = (
                    f"{used:,.0f} reviews opened in the last {capacity.period_s:,} s; "
                    f"capacity {capacity.max_reviews:,}"
                )
                mode = capacity.when_saturated
                hits.append(GuardrailHit("review_capacity", "review_capacity", mode, detail))
                action, value, owner = policy.fallback.action, None, "fallback"
                reason = self.runtime.policy.evaluate_fallback_reason(self.inputs)
                status = Status.FINAL if mode == "fallback" else Status.DEFERRED
                fallback = f"review_capacity: {detail}"
        recorded_hits = [h.to_dict() for h in hits]
        told = guarded_reason(reason, action, status, owner, recorded_hits)
        recorded = self._reason_for_record(owner, reason, value)
        self.result = {
            "action": action,
            "value": value,
            "status": status,
            "reason": told,
            "hits": hits,
            "checked": checked,
            "rule": owner,
        }
        record = DecisionRecorded(
            subject_id=self.subject_id,
            requested_by=self.requested_by,
            requested_person=self.requested_person,
            inputs=self.stored_inputs,
            autonomy=flow.autonomy.value,
            owner=flow.owner.email,
            policy={"name": policy.name, "version": policy.version},
            signals={
                name: {**self.signals.values.get(name, {}), **meta}
                for name, meta in self.signals.meta.items()
            },
            failed_signals=dict(self.signals.failed),
            rule=owner,
            proposed={"action": self.evaluation.action, "value": self.evaluation.value},
            action=action,
            value=value,
            status=status,
            reason=guarded_reason(recorded, action, status, owner, recorded_hits),
            fallback=fallback,
            guardrails={"checked": checked, "hits": recorded_hits},
            trace=self.evaluation.trace,
            timings={
                "model_ms": round(self.signals.model_ms, 3),
                "decide_ms": round((time.perf_counter() - self.started) * 1000, 3),
            },
            hold=hold if hold != NO_HOLD else None,  # why a case waited or was deferred
            rollout=self.beside,
            queue=self._queue(status, gate.now),
        )
        self.body = body(record)
        return self.body


def draft(
    runtime: FlowRuntime,
    runner: SignalRunner,
    decision_id: str,
    subject_id: str | None,
    inputs: dict[str, Any],
    stored_inputs: dict[str, Any],
    params: Mapping[str, Any] | None = None,
    signals: SignalResult | None = None,
) -> Draft:
    """Evaluate one validated case up to (not including) the window guardrails."""
    started = time.perf_counter()
    if signals is None:
        signals = runtime.signals(runner, inputs)
    compiled = runtime.policy
    evaluation = compiled.evaluate(inputs, signals.values, signals.failed, params)
    action, value, reason = evaluation.action, evaluation.value, evaluation.reason
    review = evaluation.review
    fallback = evaluation.fallback_cause
    rule = evaluation.rule
    static = check_static(
        compiled.policy.guardrails, action, value, signals.values, runtime.flow.money
    )
    if static.value != value and reason:
        # A bound clamped the value: the reason names the value in force, not the proposal.
        value = static.value
        reason = compiled.render_reason(rule, inputs, signals.values, value, params) or reason
    value = static.value
    for hit in static.hits:
        if hit.kind == "kill_switch":
            ks = compiled.policy.guardrails.kill_switch
            if ks is not None:
                action, value, reason, rule = ks.action, None, ks.reason, "kill_switch"
            break
        if hit.on_hit == "fallback":
            fb = compiled.policy.fallback
            action, value = fb.action, None
            reason = compiled.evaluate_fallback_reason(inputs)
            review = fb.review
            rule = "fallback"
            fallback = f"guardrail {hit.name}: {hit.detail}"
            break
    return Draft(
        runtime=runtime,
        decision_id=decision_id,
        subject_id=subject_id,
        inputs=inputs,
        stored_inputs=stored_inputs,
        signals=signals,
        evaluation=evaluation,
        action=action,
        value=value,
        reason=reason,
        fallback=fallback,
        checked=static.checked,
        hits=static.hits,
        review=review,
        rule=rule,
        started=started,
    )
