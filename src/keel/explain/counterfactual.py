"""Counterfactual search: the smallest change to actionable fields that flips the action.

Only fields the flow marks ``actionable`` are changed, only in their allowed ``direction``,
and only within the schema's ``min``/``max``. One field at a time is tried first (a grid,
then bisection to the smallest change that flips); pairs are tried only when no single
field can flip the decision.

``cost`` measures how far a counterfactual moves the case: each changed field's change as a
share of its declared range (``|to - from| / (max - min)``), summed over the fields changed.
It has no unit: 0.1 is a tenth of one field's range; 1.0 is a whole range. Results come
cheapest first.

When nothing is found the search says why (``CounterfactualSearch.why_none``), so an empty
list is never the whole answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from itertools import combinations
from typing import Any

from keel.flows import FieldSpec, Flow

GRID_STEPS = 24
PAIR_STEPS = 8
BISECT_STEPS = 10


@dataclass(frozen=True)
class Counterfactual:
    changes: dict[str, tuple[Any, Any]]  # field → (from, to)
    action: str
    value: float | None
    cost: float

    def to_dict(self) -> dict[str, Any]:
        return {
            "changes": {k: {"from": a, "to": b} for k, (a, b) in self.changes.items()},
            "action": self.action,
            "value": self.value,
            "cost": round(self.cost, 4),
        }


# Why a search found nothing: a stable code, for programs, with its sentence for people.
NO_ACTIONABLE_FIELDS = "no_actionable_fields"
ALREADY_TARGET = "already_target"
GUARDRAIL_DECIDED = "guardrail_decided"
FALLBACK_DECIDED = "fallback_decided"
AT_LIMITS = "at_limits"
SEARCH_EXHAUSTED = "search_exhausted"
WHY_NONE = (
    NO_ACTIONABLE_FIELDS, ALREADY_TARGET, GUARDRAIL_DECIDED, FALLBACK_DECIDED, AT_LIMITS,
    SEARCH_EXHAUSTED,
)  # fmt: skip


@dataclass(frozen=True)
class NoCounterfactual:
    """Why a search found no counterfactual."""

    code: str  # one of WHY_NONE
    message: str

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}


@dataclass(frozen=True)
class CounterfactualSearch:
    """What a search found, cheapest first, and, when it found nothing, why."""

    found: list[Counterfactual]
    why_none: NoCounterfactual | None = None

    def to_dict(self) -> dict[str, Any]:
        """``counterfactuals`` and, when there are none, ``no_counterfactual``."""
        out: dict[str, Any] = {"counterfactuals": [c.to_dict() for c in self.found]}
        if self.why_none is not None:
            out["no_counterfactual"] = self.why_none.to_dict()
        return out


Simulate = Callable[[Mapping[str, Any]], tuple[str, float | None]]


def _directions(spec: FieldSpec) -> list[int]:
    if spec.direction == "increase":
        return [1]
    if spec.direction == "decrease":
        return [-1]
    return [1, -1]


def _cast(spec: FieldSpec, value: float) -> float | int:
    lo = spec.minimum if spec.minimum is not None else value
    hi = spec.maximum if spec.maximum is not None else value
    value = min(max(value, lo), hi)
    return round(value) if spec.type == "integer" else float(value)


def _span(spec: FieldSpec) -> float:
    return float((spec.maximum or 0) - (spec.minimum or 0)) or 1.0


def search_counterfactuals(
    flow: Flow,
    inputs: Mapping[str, Any],
    current_action: str,
    simulate: Simulate,
    target: str | None = None,
    max_results: int = 3,
    current_rule: str = "",
) -> CounterfactualSearch:
    """The cheapest changes to the actionable fields that give another action (``target``,
    if named). ``current_rule`` is the rule that decides the case as it is, so that a case
    decided by the kill switch or the fallback is told apart from one no change can move."""

    def flips(action: str) -> bool:
        return action == target if target is not None else action != current_action

    def none(code: str, message: str) -> CounterfactualSearch:
        return CounterfactualSearch([], NoCounterfactual(code, message))

    if target is not None and target == current_action:
        return none(ALREADY_TARGET, f"the decision is already '{target}'")
    if current_rule == "kill_switch":
        return none(
            GUARDRAIL_DECIDED,
            "the kill switch decided this case: no change to the inputs changes the action "
            "while it is engaged",
        )
    fields = [f for f in flow.fields.values() if f.actionable and f.name in inputs]
    if not fields:
        return none(
            NO_ACTIONABLE_FIELDS,
            f"flow '{flow.name}' marks no input actionable that this case has: the search "
            "changes only fields with 'actionable: true'",
        )
    found: list[Counterfactual] = []
    movable = 0  # (field, direction) pairs with room to move before the field's limit
    for spec in fields:
        x0 = float(inputs[spec.name])
        for direction in _directions(spec):
            edge = spec.maximum if direction > 0 else spec.minimum
            if edge is None or edge == x0:
                continue
            movable += 1
            previous = x0
            for k in range(1, GRID_STEPS + 1):
                x = _cast(spec, x0 + (edge - x0) * k / GRID_STEPS)
                action, _ = simulate({**inputs, spec.name: x})
                if flips(action):
                    best = _bisect(spec, inputs, previous, x, simulate, flips)
                    found.append(best)
                    break
                previous = x
    if not found:
        for a, b in combinations(fields, 2):
            found.extend(_pair(a, b, inputs, simulate, flips))
    found.sort(key=lambda c: c.cost)
    unique: list[Counterfactual] = []
    for c in found:
        if all(c.changes != u.changes for u in unique):
            unique.append(c)
    if unique:
        return CounterfactualSearch(unique[:max_results])
    names = ", ".join(f.name for f in fields)
    wanted = f"'{target}'" if target is not None else f"another action than '{current_action}'"
    if current_rule == "fallback":
        return none(
            FALLBACK_DECIDED,
            f"the policy's fallback decided this case, and no change to {names} within their "
            f"limits gives {wanted}",
        )
    if movable == 0:
        return none(
            AT_LIMITS,
            f"every actionable field ({names}) is already at the limit of the direction it "
            "may move",
        )
    return none(
        SEARCH_EXHAUSTED,
        f"no change to {names}, one field or two at a time, within their min and max and "
        f"in their allowed direction, gives {wanted}",
    )


def _bisect(
    spec: FieldSpec,
    inputs: Mapping[str, Any],
    ok_x: float,
    flip_x: float,
    simulate: Simulate,
    flips: Callable[[str], bool],
) -> Counterfactual:
    action, value = simulate({**inputs, spec.name: flip_x})
    for _ in range(BISECT_STEPS):
        mid = _cast(spec, (ok_x + flip_x) / 2)
        if mid in (ok_x, flip_x):
            break
        mid_action, mid_value = simulate({**inputs, spec.name: mid})
        if flips(mid_action):
            flip_x, action, value = mid, mid_action, mid_value
        else:
            ok_x = mid
    x0 = inputs[spec.name]
    cost = abs(flip_x - float(x0)) / _span(spec)
    return Counterfactual({spec.name: (x0, flip_x)}, action, value, cost)


def _pair(
    a: FieldSpec,
    b: FieldSpec,
    inputs: Mapping[str, Any],
    simulate: Simulate,
    flips: Callable[[str], bool],
) -> list[Counterfactual]:
    out: list[Counterfactual] = []
    for da in _directions(a):
        for db in _directions(b):
            ea = a.maximum if da > 0 else a.minimum
            eb = b.maximum if db > 0 else b.minimum
            if ea is None or eb is None:
                continue
            xa0, xb0 = float(inputs[a.name]), float(inputs[b.name])
            for i in range(1, PAIR_STEPS + 1):
                for j in range(1, PAIR_STEPS + 1):
                    xa = _cast(a, xa0 + (ea - xa0) * i / PAIR_STEPS)
                    xb = _cast(b, xb0 + (eb - xb0) * j / PAIR_STEPS)
                    action, value = simulate({**inputs, a.name: xa, b.name: xb})
                    if flips(action):
                        cost = abs(xa - xa0) / _span(a) + abs(xb - xb0) / _span(b)
                        changes = {a.name: (inputs[a.name], xa), b.name: (inputs[b.name], xb)}
                        out.append(Counterfactual(changes, action, value, cost))
                        break
    return out
