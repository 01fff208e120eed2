"""What changes between two policy versions, by meaning rather than by text.

Parameters, actions, rules (by name: added, removed, changed field by field, moved), the
default and fallback, and guardrails (bounds by action, confidence floors by signal, rate and
exposure limits by name, the kill switch) — each difference one row with the value before
and after, ready to show side by side.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from keel.policy.model import Outcome, Policy, Rule

_RULE_FIELDS = ("when", "action", "value", "review", "reason")
_OUTCOME_FIELDS = ("action", "value", "review", "reason")


@dataclass(frozen=True)
class Difference:
    section: str  # params | actions | rules | default | fallback | guardrails.<kind>
    name: str  # the parameter, rule, action or guardrail
    field: str  # what about it changed ("" for the thing as a whole)
    change: str  # added | removed | changed | moved
    before: Any
    after: Any

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def diff_policies(before: Policy, after: Policy) -> list[Difference]:
    """Every difference from ``before`` to ``after`` (empty when they decide alike)."""
    return [
        *_mapping("params", before.params, after.params),
        *_actions(before.actions, after.actions),
        *_rules(before.rules, after.rules),
        *_outcome("default", before.default, after.default),
        *_outcome("fallback", before.fallback, after.fallback),
        *_guardrails(before, after),
    ]


def diff_models(before: Mapping[str, str], after: Mapping[str, str]) -> list[Difference]:
    """Model versions pinned per signal, before and after."""
    return list(_mapping("models", before, after))


def _mapping(
    section: str, before: Mapping[str, Any], after: Mapping[str, Any]
) -> Iterator[Difference]:
    for name in [*before, *(k for k in after if k not in before)]:
        if name not in after:
            yield Difference(section, name, "", "removed", before[name], None)
        elif name not in before:
            yield Difference(section, name, "", "added", None, after[name])
        elif before[name] != after[name]:
            yield Difference(section, name, "", "changed", before[name], after[name])


def _actions(before: tuple[str, ...], after: tuple[str, ...]) -> Iterator[Difference]:
    for action in before:
        if action not in after:
            yield Difference("actions", action, "", "removed", action, None)
    for action in after:
        if action not in before:
            yield Difference("actions", action, "", "added", None, action)


def _rule_view(rule: Rule) -> dict[str, Any]:
    return {f: getattr(rule, f) for f in _RULE_FIELDS}


def _rules(before: tuple[Rule, ...], after: tuple[Rule, ...]) -> Iterator[Difference]:
    old = {r.name: r for r in before}
    new = {r.name: r for r in after}
    for rule in before:
        if rule.name not in new:
            yield Difference("rules", rule.name, "", "removed", _rule_view(rule), None)
    kept_before = [r.name for r in before if r.name in new]
    kept_after = [r.name for r in after if r.name in old]
    for rule in after:
        if rule.name not in old:
            position = after.index(rule) + 1
            view = {"position": position, **_rule_view(rule)}
            yield Difference("rules", rule.name, "", "added", None, view)
            continue
        was = old[rule.name]
        for field in _RULE_FIELDS:
            if getattr(was, field) != getattr(rule, field):
                yield Difference(
                    "rules", rule.name, field, "changed", getattr(was, field), getattr(rule, field)
                )
        # Order decides which rule wins: a rule whose place among the kept rules changed moved.
        if kept_before.index(rule.name) != kept_after.index(rule.name):
            yield Difference(
                "rules",
                rule.name,
                "position",
                "moved",
                [r.name for r in before].index(rule.name) + 1,
                after.index(rule) + 1,
            )


def _outcome(section: str, before: Outcome, after: Outcome) -> Iterator[Difference]:
    for field in _OUTCOME_FIELDS:
        if getattr(before, field) != getattr(after, field):
            yield Difference(
                section, section, field, "changed", getattr(before, field), getattr(after, field)
            )


def _guardrails(before: Policy, after: Policy) -> Iterator[Difference]:
    b, a = before.guardrails, after.guardrails
    groups: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
        (
            "guardrails.bounds",
            {x.action: asdict(x) for x in b.bounds},
            {x.action: asdict(x) for x in a.bounds},
        ),
        (
            "guardrails.min_confidence",
            {x.signal: asdict(x) for x in b.confidence},
            {x.signal: asdict(x) for x in a.confidence},
        ),
        (
            "guardrails.limits",
            {x.name: asdict(x) for x in b.windows},
            {x.name: asdict(x) for x in a.windows},
        ),
        (
            "guardrails.kill_switch",
            {"kill_switch": asdict(b.kill_switch)} if b.kill_switch else {},
            {"kill_switch": asdict(a.kill_switch)} if a.kill_switch else {},
        ),
    ]
    for section, old, new in groups:
        for name in [*old, *(k for k in new if k not in old)]:
            if name not in new:
                yield Difference(section, name, "", "removed", old[name], None)
            elif name not in old:
                yield Difference(section, name, "", "added", None, new[name])
            else:
                for field, was in old[name].items():
                    now = new[name][field]
                    if was != now:
                        yield Difference(section, name, field, "changed", was, now)


def render_table(differences: list[Difference]) -> str:
    """The differences as an aligned text table: what, before, after."""
    if not differences:
        return "no differences: the two versions decide alike\n"
    rows = [("SECTION", "NAME", "CHANGE", "BEFORE", "AFTER")]
    for d in differences:
        what = f"{d.name}.{d.field}" if d.field and d.field != d.name else d.name
        rows.append((d.section, what, d.change, _cell(d.before), _cell(d.after)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = [
        "  ".join(cell.ljust(widths[i]) if i < 4 else cell for i, cell in enumerate(row)).rstrip()
        for row in rows
    ]
    return "\n".join(lines) + "\n"


def _cell(value: Any, limit: int = 60) -> str:
    if value is None:
        return "-"
    text = value if isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"
