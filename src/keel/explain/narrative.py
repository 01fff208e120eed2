"""Turning a decision record into business-language sentences: the "why"."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.explain.attributions import Attributions
from keel.flows import Flow
from keel.policy.text import format_value

TOP_ATTRIBUTIONS = 3

_STATUS_TEXT = {
    "final": "acted on automatically",
    "pending_review": "waiting for human review",
    "advisory": "a recommendation; a person decides",
    "shadow": "recorded in shadow mode; nothing was acted on",
    "deferred": "deferred: reviewers were at capacity, so nothing was acted on",
}


def _label(path: str, flow: Flow) -> str:
    parts = path.split(".")
    if parts[0] == "input" and len(parts) == 2 and parts[1] in flow.fields:
        return flow.fields[parts[1]].display
    if parts[0] == "signals" and len(parts) == 3 and parts[1] in flow.signals:
        return f"{flow.signals[parts[1]].display} {parts[2]}".capitalize()
    if parts[0] == "params" and len(parts) == 2:
        return f"threshold {parts[1]}"
    return path


def _value(path: str, value: Any, flow: Flow) -> str:
    """A value the rule read, as the condition wrote it; a category with a label also gets
    the label, since a code such as "A11" means nothing to a reader on its own."""
    parts = path.split(".")
    fmt = "number"
    if parts[0] == "input" and len(parts) == 2 and parts[1] in flow.fields:
        field = flow.fields[parts[1]]
        fmt = field.format
        if field.labels and not isinstance(value, bool):
            key = int(value) if isinstance(value, float) and value.is_integer() else value
            label = field.value_label(key)
            if label != str(key):
                return f"{format_value(value, fmt, flow.money)} ({label})"
    return format_value(value, fmt, flow.money)


def _subject(flow: Flow, feature: str, value: Any, hidden: bool) -> str:
    """How a sentence names a feature and its value: "Annual income of €85,000", and a
    category by its label, "Checking account (no checking account)"."""
    field = flow.fields.get(feature)
    if field is None:
        return feature if hidden else f"{feature} of {format_value(value, 'number', flow.money)}"
    if hidden:
        return field.display
    if field.type == "string" or field.labels:
        key = int(value) if isinstance(value, float) and value.is_integer() else value
        return f"{field.display} ({field.value_label(key)})"
    return f"{field.display} of {format_value(value, field.format, flow.money)}"


def attribution_sentences(
    flow: Flow, signal: str, attributions: Attributions, hidden: frozenset[str] = frozenset()
) -> list[str]:
    """Sentences for the strongest attributions; values of ``hidden`` fields are not shown."""
    spec = flow.signals.get(signal)
    target = spec.display if spec else signal
    ranked = sorted(attributions.items, key=lambda a: abs(a.contribution), reverse=True)
    sentences = []
    for i, item in enumerate(ranked[:TOP_ATTRIBUTIONS]):
        if abs(item.contribution) < 1e-12:
            continue
        subject = _subject(flow, item.feature, item.value, item.feature in hidden)
        verb = "raised" if item.contribution > 0 else "lowered"
        most = " the most" if i == 0 else ""
        sentences.append(
            f"{subject} {verb} the {target}{most} ({item.contribution:+.2f} {attributions.unit})."
        )
    return sentences


def explain_record(
    flow: Flow,
    body: Mapping[str, Any],
    trace: list[dict[str, Any]],
    reason: str,
    attributions: Mapping[str, Attributions],
    hidden: frozenset[str] = frozenset(),
) -> list[str]:
    """The "why" of one decision as a list of sentences, most important first."""
    action = body["action"]
    value = body.get("value")
    shown = f" {format_value(value, flow.value_format, flow.money)}" if value is not None else ""
    status = _STATUS_TEXT.get(body["status"], body["status"])
    why = [f"Decision: {action}{shown} ({status}).", f"Reason: {reason}"]
    matched = next((s for s in trace if s.get("matched")), None)
    skipped = [s["rule"] for s in trace if s.get("matched") is False]
    if matched is not None:
        facts = ", ".join(
            f"{_label(k, flow)} = {_value(k, v, flow)}"
            for k, v in matched.get("values", {}).items()
        )
        # A condition that reads nothing (``true``) held with no values to show.
        held = f" held with {facts}" if facts else " held"
        why.append(f"Rule '{matched['rule']}' decided: {matched['when']}{held}.")
    elif body.get("rule") == "default":
        why.append("No rule matched, so the policy's default action applies.")
    if skipped:
        why.append(f"Rules checked first that did not apply: {', '.join(skipped)}.")
    if body.get("fallback"):
        why.append(f"The fallback was taken because {body['fallback']}.")
    for name, cause in body.get("failed_signals", {}).items():
        why.append(f"No signal from {name}: {cause}.")
    hits = body.get("guardrails", {}).get("hits", [])
    checked = body.get("guardrails", {}).get("checked", [])
    for hit in hits:
        why.append(f"Guardrail {hit['name']} was hit: {hit['detail']} (so: {hit['on_hit']}).")
    if checked and not hits:
        why.append(f"All {len(checked)} guardrails checked passed: {', '.join(checked)}.")
    if body.get("rule") != "default" and body.get("proposed", {}).get("action") != action:
        proposed = body["proposed"]["action"]
        why.append(f"The rules proposed {proposed}; guardrails changed it to {action}.")
    for signal, attrs in attributions.items():
        why.extend(attribution_sentences(flow, signal, attrs, hidden))
    return why
