"""Counterfactual search: the smallest change to actionable fields that flips the action.

Only fields the flow marks ``actionable`` are changed, only in their allowed ``direction``,
and only within the schema's ``min``/``max``. One field at a time is tried first (a grid,
then bisection to the smallest change that flips); pairs are tried only when no single
field can flip the decision. Cost is the change as a share of each field's range.
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
) -> list[Counterfactual]:
    def flips(action: str) -> bool:
        return action == target if target is not None else action != current_action

    fields = [f for f in flow.fields.values() if f.actionable and f.name in inputs]
    found: list[Counterfactual] = []
    for spec in fields:
        x0 = float(inputs[spec.name])
        for direction in _directions(spec):
            edge = spec.maximum if direction > 0 else spec.minimum
            if edge is None or edge == x0:
                continue
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
    return unique[:max_results]


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
