"""Flows: one named business decision, its owner, input schema, signals and autonomy level."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.errors import DefinitionError, InputError, Problem
from keel.yamlfile import LocatedDict, load_yaml

if TYPE_CHECKING:
    from keel.monitoring import MonitoringSpec
    from keel.policy.model import WindowLimit

NAME_RE = re.compile(r"^[a-z][a-z0-9_]{0,62}$")


class Autonomy(StrEnum):
    """How much a flow may do on its own, lowest to highest (see DESIGN.md)."""

    SHADOW = "shadow"
    ADVISORY = "advisory"
    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"


class Classification(StrEnum):
    PUBLIC = "public"
    INTERNAL = "internal"
    PERSONAL = "personal"
    SENSITIVE = "sensitive"

    @property
    def protected(self) -> bool:
        """Personal and sensitive values are encrypted at rest and never logged."""
        return self in (Classification.PERSONAL, Classification.SENSITIVE)


FIELD_TYPES = ("number", "integer", "string", "boolean")
FORMATS = ("number", "integer", "percent", "currency", "text", "years", "months")


@dataclass(frozen=True)
class FieldSpec:
    name: str
    type: str
    required: bool = True
    minimum: float | None = None
    maximum: float | None = None
    allowed: tuple[Any, ...] | None = None
    classification: Classification = Classification.INTERNAL
    label: str = ""
    format: str = "number"
    actionable: bool = False
    direction: str | None = None  # "increase" or "decrease": how a person could change it

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()


@dataclass(frozen=True)
class SignalSpec:
    """A model the flow consults, and how to turn its output into a signal."""

    name: str
    model: str
    output: str = "probability"  # probability | score | label
    features: tuple[str, ...] = ()
    timeout_ms: int | None = None
    label: str = ""
    reference: Mapping[str, float] | None = None
    positive_class: Any = None

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ")


@dataclass(frozen=True)
class Owner:
    name: str
    email: str


_WINDOW_RE = re.compile(r"^(\d+)\s*(s|m|h|d)$")
_WINDOW_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_window(text: Any) -> int | None:
    """'90s', '15m', '1h', '7d' → seconds (a window, a deadline, a lifetime)."""
    match = _WINDOW_RE.match(str(text).strip()) if isinstance(text, str | int) else None
    if not match or int(match.group(1)) <= 0:
        return None
    return int(match.group(1)) * _WINDOW_UNITS[match.group(2)]


SATURATION = ("fallback", "pause")


@dataclass(frozen=True)
class ReviewCapacity:
    """How many reviews the flow's reviewers can take per period, and what happens beyond.

    ``fallback``: a case that would wait for review is decided with the policy's fallback
    (its safe action), final. ``pause``: automation pauses — the case is recorded as
    ``deferred``, nothing is acted on or queued, and the caller tries again later.
    """

    max_reviews: int
    period_s: int
    when_saturated: str = "fallback"

    @cached_property
    def limit(self) -> WindowLimit:
        """The budget as a sliding-window rate limit, kept with the guardrail windows."""
        from keel.policy.model import WindowLimit  # noqa: PLC0415 - it imports this module

        return WindowLimit(
            name="review_capacity",
            kind="rate",
            action="*",
            maximum=float(self.max_reviews),
            window_s=self.period_s,
            on_hit=self.when_saturated,
        )


@dataclass(frozen=True)
class ReviewSettings:
    """How the flow's review queue works: deadline, four eyes, reviewer capacity."""

    deadline_s: int | None = None  # open reviews past this age are breached
    four_eyes: bool = False  # whoever requested a decision cannot review it
    capacity: ReviewCapacity | None = None  # None: reviews are never refused for lack of people


@dataclass(frozen=True)
class OutcomeSpec:
    """What counts as the flow's outcome: the labels reporters may use, each with the action
    that would have been right for it (``None``: the label does not judge the action)."""

    description: str = ""
    labels: Mapping[str, str | None] = field(default_factory=dict)
    value: str = ""  # what a reported value means, e.g. "amount written off, EUR"


@dataclass(frozen=True)
class Criteria:
    """The evidence a flow must show, over the last ``over_s`` seconds, to be raised to a
    level: enough reviewed cases, enough agreement, few enough guardrail hits, and (if set)
    enough outcome accuracy."""

    over_s: int
    min_reviewed: int = 0
    min_agreement: float | None = None
    max_guardrail_hits: int | None = None
    min_outcome_accuracy: float | None = None
    min_outcomes: int = 0


def _monitoring_defaults() -> MonitoringSpec:
    from keel.monitoring import MonitoringSpec  # noqa: PLC0415 - it imports this module

    return MonitoringSpec()


@dataclass(frozen=True)
class Flow:
    name: str
    owner: Owner
    policy: str
    autonomy: Autonomy
    fields: Mapping[str, FieldSpec]
    signals: Mapping[str, SignalSpec]
    description: str = ""
    source: str = ""
    outcome: OutcomeSpec = field(default_factory=OutcomeSpec)
    reviewers: tuple[str, ...] = field(default_factory=tuple)
    review: ReviewSettings = field(default_factory=ReviewSettings)
    earned_autonomy: Mapping[str, Criteria] = field(default_factory=dict)  # by target level
    monitoring: MonitoringSpec = field(default_factory=_monitoring_defaults)

    def validate_input(self, inputs: Any) -> dict[str, Any]:
        """Check ``inputs`` against the schema; return a normalised copy or raise ``InputError``.

        Every problem is reported at once, each naming the field.
        """
        if not isinstance(inputs, Mapping):
            raise InputError(
                f"flow '{self.name}': inputs must be a JSON object, got {type(inputs).__name__}",
                {"flow": self.name},
            )
        errors: list[dict[str, str]] = []
        out: dict[str, Any] = {}
        for key in inputs:
            if key not in self.fields:
                errors.append({"field": str(key), "error": "unknown field"})
        for spec in self.fields.values():
            if spec.name not in inputs or inputs[spec.name] is None:
                if spec.required:
                    errors.append({"field": spec.name, "error": "required field is missing"})
                continue
            value, error = _coerce(spec, inputs[spec.name])
            if error:
                errors.append({"field": spec.name, "error": error})
            else:
                out[spec.name] = value
        if errors:
            summary = "; ".join(f"{e['field']}: {e['error']}" for e in errors)
            raise InputError(
                f"flow '{self.name}': invalid input ({summary})",
                {"flow": self.name, "errors": errors},
            )
        return out

    @cached_property
    def _protected(self) -> list[str]:
        return [f.name for f in self.fields.values() if f.classification.protected]

    def protected_fields(self) -> list[str]:
        return self._protected


def _coerce(spec: FieldSpec, value: Any) -> tuple[Any, str | None]:
    if spec.type in ("number", "integer"):
        kind = type(value)  # exact types: bool is an int subclass and must not pass as one
        if kind is not float and kind is not int:
            return None, f"expected a {spec.type}, got {kind.__name__} {value!r}"
        if kind is float and not math.isfinite(value):
            return None, f"expected a finite number, got {value!r}"
        if spec.type == "integer":
            if isinstance(value, float) and not value.is_integer():
                return None, f"expected an integer, got {value!r}"
            value = int(value)
        else:
            value = float(value)
        if spec.minimum is not None and value < spec.minimum:
            return None, f"{value!r} is below the minimum {spec.minimum:g}"
        if spec.maximum is not None and value > spec.maximum:
            return None, f"{value!r} is above the maximum {spec.maximum:g}"
    elif spec.type == "string":
        if not isinstance(value, str):
            return None, f"expected a string, got {type(value).__name__} {value!r}"
    elif spec.type == "boolean" and not isinstance(value, bool):
        return None, f"expected true or false, got {value!r}"
    if spec.allowed is not None and value not in spec.allowed:
        allowed = ", ".join(repr(a) for a in spec.allowed)
        return None, f"{value!r} is not one of {allowed}"
    return value, None


# ---- loading ---------------------------------------------------------------------------

_FLOW_KEYS = {
    "flow",
    "monitoring",
    "description",
    "owner",
    "policy",
    "autonomy",
    "inputs",
    "signals",
    "outcome",
    "reviewers",
    "review",
    "earned_autonomy",
}
_CRITERIA_KEYS = {
    "over",
    "min_reviewed",
    "min_agreement",
    "max_guardrail_hits",
    "min_outcome_accuracy",
    "min_outcomes",
}
_REVIEW_KEYS = {"deadline", "four_eyes", "capacity"}
_OUTCOME_KEYS = {"description", "labels", "value"}
_CAPACITY_KEYS = {"max_reviews", "per", "when_saturated"}
_FIELD_KEYS = {
    "type",
    "required",
    "min",
    "max",
    "allowed",
    "classification",
    "label",
    "format",
    "actionable",
    "direction",
}
_SIGNAL_KEYS = {
    "model",
    "output",
    "features",
    "timeout_ms",
    "label",
    "reference",
    "positive_class",
}


class _Collector:
    def __init__(self, path: Path) -> None:
        self.path = str(path)
        self.problems: list[Problem] = []

    def add(self, where: str, message: str, node: LocatedDict | None = None, key: str = "") -> None:
        line = node.line_of(key) if node is not None else None
        self.problems.append(Problem(self.path, where, message, line=line))

    def unknown_keys(self, node: LocatedDict, known: set[str], where: str) -> None:
        for key in node:
            if key not in known:
                self.add(
                    where, f"unknown key '{key}' (known: {', '.join(sorted(known))})", node, key
                )


def _number(c: _Collector, node: LocatedDict, key: str, where: str) -> float | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        c.add(where, f"'{key}' must be a number, got {value!r}", node, key)
        return None
    return float(value)


def _parse_field(c: _Collector, name: str, raw: Any, parent: LocatedDict) -> FieldSpec | None:
    where = f"inputs.{name}"
    if not NAME_RE.match(name):
        c.add(where, "field names are lower_snake_case identifiers", parent, name)
    if not isinstance(raw, LocatedDict):
        c.add(where, "must be a mapping with at least 'type'", parent, name)
        return None
    c.unknown_keys(raw, _FIELD_KEYS, where)
    ftype = raw.get("type")
    if ftype not in FIELD_TYPES:
        c.add(where, f"'type' must be one of {', '.join(FIELD_TYPES)}, got {ftype!r}", raw, "type")
        return None
    classification = raw.get("classification", "internal")
    try:
        cls = Classification(classification)
    except ValueError:
        options = ", ".join(x.value for x in Classification)
        c.add(where, f"'classification' must be one of {options}", raw, "classification")
        cls = Classification.INTERNAL
    allowed = raw.get("allowed")
    if allowed is not None and (not isinstance(allowed, list) or not allowed):
        c.add(where, "'allowed' must be a non-empty list", raw, "allowed")
        allowed = None
    fmt = raw.get("format", "number" if ftype in ("number", "integer") else "text")
    if fmt not in FORMATS:
        c.add(where, f"'format' must be one of {', '.join(FORMATS)}", raw, "format")
    direction = raw.get("direction")
    if direction not in (None, "increase", "decrease"):
        c.add(where, "'direction' must be 'increase' or 'decrease'", raw, "direction")
    minimum = _number(c, raw, "min", where)
    maximum = _number(c, raw, "max", where)
    if minimum is not None and maximum is not None and minimum > maximum:
        c.add(where, f"'min' {minimum:g} is greater than 'max' {maximum:g}", raw, "min")
    actionable = bool(raw.get("actionable", False))
    if actionable and ftype not in ("number", "integer"):
        c.add(where, "only numeric fields can be actionable", raw, "actionable")
    if actionable and (minimum is None or maximum is None):
        c.add(where, "an actionable field needs 'min' and 'max' to bound the search", raw, "min")
    return FieldSpec(
        name=name,
        type=ftype,
        required=bool(raw.get("required", True)),
        minimum=minimum,
        maximum=maximum,
        allowed=tuple(allowed) if allowed else None,
        classification=cls,
        label=str(raw.get("label", "")),
        format=str(fmt),
        actionable=actionable,
        direction=direction,
    )


def _parse_signal(
    c: _Collector, name: str, raw: Any, parent: LocatedDict, fields: Mapping[str, FieldSpec]
) -> SignalSpec | None:
    where = f"signals.{name}"
    if not NAME_RE.match(name):
        c.add(where, "signal names are lower_snake_case identifiers", parent, name)
    if not isinstance(raw, LocatedDict):
        c.add(where, "must be a mapping with at least 'model' and 'features'", parent, name)
        return None
    c.unknown_keys(raw, _SIGNAL_KEYS, where)
    model = raw.get("model")
    if not isinstance(model, str) or not model:
        c.add(where, "'model' must name a model file or python:module:function", raw, "model")
        return None
    output = raw.get("output", "probability")
    if output not in ("probability", "score", "label"):
        c.add(where, "'output' must be probability, score or label", raw, "output")
    features = raw.get("features", [])
    if not isinstance(features, list) or not all(isinstance(f, str) for f in features):
        c.add(where, "'features' must be a list of input field names", raw, "features")
        features = []
    for feature in features:
        if feature not in fields:
            c.add(where, f"feature '{feature}' is not an input field of the flow", raw, "features")
        elif fields[feature].type not in ("number", "integer", "boolean"):
            c.add(where, f"feature '{feature}' must be numeric or boolean", raw, "features")
    timeout = raw.get("timeout_ms")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
        c.add(where, "'timeout_ms' must be an integer number of milliseconds", raw, "timeout_ms")
        timeout = None
    elif timeout is not None and timeout <= 0:
        c.add(where, "'timeout_ms' must be positive", raw, "timeout_ms")
        timeout = None
    reference = raw.get("reference")
    if reference is not None and (
        not isinstance(reference, dict)
        or set(reference) != set(features)
        or not all(isinstance(v, int | float) for v in reference.values())
    ):
        c.add(where, "'reference' must give a number for every feature", raw, "reference")
        reference = None
    return SignalSpec(
        name=name,
        model=model,
        output=str(output),
        features=tuple(features),
        timeout_ms=timeout,
        label=str(raw.get("label", "")),
        reference={k: float(v) for k, v in reference.items()} if reference else None,
        positive_class=raw.get("positive_class"),
    )


def parse_flow(raw: LocatedDict, path: Path) -> Flow:
    c = _Collector(path)
    c.unknown_keys(raw, _FLOW_KEYS, "flow")
    name = raw.get("flow")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.add("flow", "'flow' must be a lower_snake_case name", raw, "flow")
        name = path.stem
    owner_raw = raw.get("owner")
    owner = Owner("", "")
    if (
        not isinstance(owner_raw, dict)
        or not isinstance(owner_raw.get("name"), str)
        or not isinstance(owner_raw.get("email"), str)
        or "@" not in owner_raw["email"]
    ):
        c.add(
            "owner",
            "every flow needs exactly one accountable owner: {name: ..., email: ...}",
            raw,
            "owner",
        )
    else:
        owner = Owner(owner_raw["name"], owner_raw["email"])
    policy = raw.get("policy")
    if not isinstance(policy, str) or not NAME_RE.match(policy):
        c.add("policy", "'policy' must name a policy in policies/", raw, "policy")
        policy = ""
    try:
        autonomy = Autonomy(raw.get("autonomy", "supervised"))
    except ValueError:
        levels = ", ".join(a.value for a in Autonomy)
        c.add("autonomy", f"'autonomy' must be one of {levels}", raw, "autonomy")
        autonomy = Autonomy.SHADOW
    fields: dict[str, FieldSpec] = {}
    inputs = raw.get("inputs")
    if not isinstance(inputs, LocatedDict) or not inputs:
        c.add("inputs", "'inputs' must map field names to their schema", raw, "inputs")
    else:
        for fname, fraw in inputs.items():
            spec = _parse_field(c, fname, fraw, inputs)
            if spec is not None:
                fields[fname] = spec
    signals: dict[str, SignalSpec] = {}
    sraw = raw.get("signals") or LocatedDict()
    if not isinstance(sraw, LocatedDict):
        c.add("signals", "'signals' must map signal names to models", raw, "signals")
    else:
        for sname, sval in sraw.items():
            sig = _parse_signal(c, sname, sval, sraw, fields)
            if sig is not None:
                signals[sname] = sig
    reviewers = raw.get("reviewers", [])
    if not isinstance(reviewers, list) or not all(isinstance(r, str) for r in reviewers):
        c.add("reviewers", "'reviewers' must be a list of names or groups", raw, "reviewers")
        reviewers = []
    review = _parse_review(c, raw)
    outcome = _parse_outcome(c, raw)
    earned = _parse_earned(c, raw)
    from keel.monitoring import parse_monitoring  # noqa: PLC0415 - it imports this module

    monitoring = parse_monitoring(c, raw)
    if c.problems:
        raise DefinitionError(c.problems)
    return Flow(
        name=name,
        owner=owner,
        policy=policy,
        autonomy=autonomy,
        fields=fields,
        signals=signals,
        description=str(raw.get("description", "")),
        source=str(path),
        outcome=outcome,
        earned_autonomy=earned,
        reviewers=tuple(reviewers),
        review=review,
        monitoring=monitoring,
    )


def _parse_earned(c: Any, raw: LocatedDict) -> dict[str, Criteria]:
    """``earned_autonomy: {LEVEL: {over: 14d, min_reviewed: 500, ...}}``: what raising the
    flow to each level takes. A level not listed cannot be reached by a raise."""
    section = raw.get("earned_autonomy")
    if section is None:
        return {}
    if not isinstance(section, LocatedDict):
        c.add(
            "earned_autonomy", "'earned_autonomy' maps levels to criteria", raw, "earned_autonomy"
        )
        return {}
    out: dict[str, Criteria] = {}
    raisable = [a.value for a in Autonomy][1:]
    for level, node in section.items():
        where = f"earned_autonomy.{level}"
        if level not in raisable:
            c.add(
                where,
                f"'{level}' is not a level to raise to ({', '.join(raisable)})",
                section,
                level,
            )
            continue
        if not isinstance(node, LocatedDict):
            c.add(where, "criteria must be a mapping", section, level)
            continue
        for key in node:
            if key not in _CRITERIA_KEYS:
                known = ", ".join(sorted(_CRITERIA_KEYS))
                c.add(f"{where}.{key}", f"unknown criterion '{key}' (known: {known})", node, key)
        over = parse_window(node.get("over"))
        if over is None:
            c.add(
                f"{where}.over",
                f"'over' must look like 7d or 14d, got {node.get('over')!r}",
                node,
                "over",
            )
        counts = {}
        for key in ("min_reviewed", "max_guardrail_hits", "min_outcomes"):
            value = node.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 0
            ):
                c.add(
                    f"{where}.{key}",
                    f"'{key}' must be a whole number ≥ 0, got {value!r}",
                    node,
                    key,
                )
                value = None
            counts[key] = value
        shares = {}
        for key in ("min_agreement", "min_outcome_accuracy"):
            value = node.get(key)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1
            ):
                c.add(
                    f"{where}.{key}",
                    f"'{key}' must be a share from 0 to 1, got {value!r}",
                    node,
                    key,
                )
                value = None
            shares[key] = float(value) if value is not None else None
        if over is not None:
            out[level] = Criteria(
                over_s=over,
                min_reviewed=counts["min_reviewed"] or 0,
                min_agreement=shares["min_agreement"],
                max_guardrail_hits=counts["max_guardrail_hits"],
                min_outcome_accuracy=shares["min_outcome_accuracy"],
                min_outcomes=counts["min_outcomes"] or 0,
            )
    return out


def _parse_outcome(c: Any, raw: LocatedDict) -> OutcomeSpec:
    """``outcome: TEXT`` describes it; a mapping also names the labels that can be reported."""
    section = raw.get("outcome")
    if section is None:
        return OutcomeSpec()
    if isinstance(section, str):
        return OutcomeSpec(description=section)
    if not isinstance(section, LocatedDict):
        c.add("outcome", "'outcome' must be a text or a mapping with labels", raw, "outcome")
        return OutcomeSpec()
    for key in section:
        if key not in _OUTCOME_KEYS:
            known = ", ".join(sorted(_OUTCOME_KEYS))
            c.add(
                f"outcome.{key}", f"unknown key '{key}' in outcome (known: {known})", section, key
            )
    labels = section.get("labels")
    if not isinstance(labels, dict) or not labels:
        c.add(
            "outcome.labels",
            "'labels' must map each outcome label to the action that would have been right "
            "(or null)",
            section,
            "labels",
        )
        labels = {}
    clean: dict[str, str | None] = {}
    for label, action in labels.items():
        if not isinstance(label, str) or not NAME_RE.match(label):
            c.add(f"outcome.labels.{label}", "an outcome label must be lower_snake_case", labels)
        elif action is not None and not isinstance(action, str):
            c.add(f"outcome.labels.{label}", "must name an action, or be null", labels, label)
        else:
            clean[label] = action
    text = {k: section.get(k, "") for k in ("description", "value")}
    for key, value in text.items():
        if not isinstance(value, str):
            c.add(f"outcome.{key}", f"'{key}' must be a text", section, key)
    return OutcomeSpec(str(text["description"]), clean, str(text["value"]))


def _parse_review(c: Any, raw: LocatedDict) -> ReviewSettings:
    section = raw.get("review")
    if section is None:
        return ReviewSettings()
    if not isinstance(section, LocatedDict):
        c.add("review", "'review' must be a mapping with deadline and four_eyes", raw, "review")
        return ReviewSettings()
    for key in section:
        if key not in _REVIEW_KEYS:
            known = ", ".join(sorted(_REVIEW_KEYS))
            c.add(f"review.{key}", f"unknown key '{key}' in review (known: {known})", section, key)
    deadline = None
    if "deadline" in section:
        deadline = parse_window(section["deadline"])
        if deadline is None:
            c.add(
                "review.deadline",
                f"'deadline' must look like 30m, 4h or 2d, got {section['deadline']!r}",
                section,
                "deadline",
            )
    four_eyes = section.get("four_eyes", False)
    if not isinstance(four_eyes, bool):
        c.add("review.four_eyes", "'four_eyes' must be true or false", section, "four_eyes")
        four_eyes = False
    return ReviewSettings(deadline, four_eyes, _parse_capacity(c, section))


def _parse_capacity(c: Any, section: LocatedDict) -> ReviewCapacity | None:
    raw = section.get("capacity")
    if raw is None:
        return None
    where = "review.capacity"
    if not isinstance(raw, LocatedDict):
        c.add(where, "'capacity' must be a mapping with max_reviews, per, when_saturated", section)
        return None
    for key in raw:
        if key not in _CAPACITY_KEYS:
            known = ", ".join(sorted(_CAPACITY_KEYS))
            c.add(f"{where}.{key}", f"unknown key '{key}' in capacity (known: {known})", raw, key)
    count = raw.get("max_reviews")
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        c.add(
            f"{where}.max_reviews",
            f"'max_reviews' must be a whole number of at least 1, got {count!r}",
            raw,
            "max_reviews",
        )
        count = None
    period = parse_window(raw.get("per"))
    if period is None:
        c.add(
            f"{where}.per",
            f"'per' must look like 30m, 8h or 1d, got {raw.get('per')!r}",
            raw,
            "per",
        )
    mode = raw.get("when_saturated", "fallback")
    if mode not in SATURATION:
        c.add(
            f"{where}.when_saturated",
            f"'when_saturated' must be one of {', '.join(SATURATION)}, got {mode!r}",
            raw,
            "when_saturated",
        )
        return None
    if count is None or period is None:
        return None
    return ReviewCapacity(count, period, mode)


def load_flow(path: Path) -> Flow:
    return parse_flow(load_yaml(path), path)
