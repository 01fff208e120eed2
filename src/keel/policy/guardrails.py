"""Guardrails: checks that always win over rules.

Static guardrails (kill switch, confidence floors, bounds) need only the case itself.
Window guardrails (rate and exposure limits) need what other decisions did over a sliding
window: ``keel.ledger.windows`` keeps that in memory, synchronised from the store inside the
ledger's write transaction, so limits hold across restarts and across processes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.money import DEFAULT_MONEY, Money, format_fixed
from keel.policy.model import Guardrails, WindowLimit


@dataclass(frozen=True)
class GuardrailHit:
    name: str
    kind: str  # kill_switch | confidence | bound | rate | exposure
    on_hit: str  # escalate | fallback | clamp
    detail: str

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind": self.kind, "on_hit": self.on_hit, "detail": self.detail}


@dataclass
class StaticResult:
    checked: list[str]
    hits: list[GuardrailHit]
    value: float | None


def check_static(
    guardrails: Guardrails,
    action: str,
    value: float | None,
    signals: Mapping[str, Mapping[str, Any]],
    money: Money = DEFAULT_MONEY,
) -> StaticResult:
    """Check the kill switch, confidence floors and bounds for a proposed action and value.
    A bound's detail writes the values in the flow's locale (``money``), as its reason does."""
    checked: list[str] = []
    hits: list[GuardrailHit] = []
    ks = guardrails.kill_switch
    if ks is not None:
        checked.append("kill_switch")
        if ks.engaged:
            hits.append(GuardrailHit("kill_switch", "kill_switch", "escalate", ks.reason))
    for floor in guardrails.confidence:
        name = f"min_confidence.{floor.signal}"
        signal = signals.get(floor.signal)
        if signal is None:
            continue  # a missing signal already sent the case to the fallback
        checked.append(name)
        confidence = float(signal["confidence"])
        if confidence < floor.minimum:
            detail = f"model confidence {confidence:.2f} is below the floor {floor.minimum:.2f}"
            hits.append(GuardrailHit(name, "confidence", floor.on_hit, detail))
    for bound in guardrails.bounds:
        if bound.action != action or value is None:
            continue
        name = f"bounds.{bound.action}"
        checked.append(name)
        low, high = bound.minimum, bound.maximum
        if low is not None and value < low:
            detail = (
                f"value {format_fixed(value, money)} is below the bound {format_fixed(low, money)}"
            )
            hits.append(GuardrailHit(name, "bound", bound.on_hit, detail))
            if bound.on_hit == "clamp":
                value = low
        elif high is not None and value > high:
            detail = (
                f"value {format_fixed(value, money)} is above the bound {format_fixed(high, money)}"
            )
            hits.append(GuardrailHit(name, "bound", bound.on_hit, detail))
            if bound.on_hit == "clamp":
                value = high
    return StaticResult(checked, hits, value)


_KINDS = {
    "bound": "bound",
    "confidence": "confidence floor",
    "rate": "rate limit",
    "exposure": "exposure limit",
}


def hit_cause(hit: Mapping[str, Any]) -> str:
    """A recorded hit in words, for the reason of a case a guardrail escalated or diverted.

    Takes the recorded form (``GuardrailHit.to_dict``) so that an explanation, which has only
    the ledger record, words it exactly as the decision did.
    """
    if hit["kind"] == "kill_switch":
        return "the policy's kill switch is engaged"
    if hit["kind"] == "review_capacity":
        return f"reviewers are at capacity ({hit['detail']})"
    if hit["kind"] in ("rate", "exposure"):
        return f"the {_KINDS[hit['kind']]} {hit['name']} is reached ({hit['detail']})"
    label = _KINDS.get(hit["kind"], "guardrail")
    return f"{label} {hit['name']}: {hit['detail']}"


def clamp_note(hit: Mapping[str, Any]) -> str:
    """Why the value in force is not the one the rule proposed (never naming the proposal)."""
    side = "raised to the minimum" if " below " in hit["detail"] else "capped at the maximum"
    return f"{side} by bound {hit['name']}"


def segment_of(limit: WindowLimit, inputs: Mapping[str, Any]) -> str:
    if limit.per is None:
        return "*"
    return str(inputs.get(limit.per, ""))
