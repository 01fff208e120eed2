"""Reading a flow file: every problem found at once, each with its place and line."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

from keel.flows.autonomy import Autonomy
from keel.flows.flow import (
    FIELD_TYPES,
    FORMATS,
    SATURATION,
    Classification,
    Criteria,
    FairnessSpec,
    FieldSpec,
    Flow,
    OutcomeSpec,
    Owner,
    ReviewCapacity,
    ReviewSettings,
    SignalSpec,
)
from keel.flows.monitoring import check_performance_limits, parse_monitoring
from keel.flows.notice import parse_notice
from keel.flows.schema import FLOW_KEYS
from keel.money import currency_problem, locale_problem
from keel.schema import children
from keel.yamlfile import NAME_RE, LocatedDict, Problems, load_yaml, parse_window

# ---- loading ---------------------------------------------------------------------------

_FLOW_KEYS = children(FLOW_KEYS, "")
_OWNER_KEYS = children(FLOW_KEYS, "owner")
_CRITERIA_KEYS = children(FLOW_KEYS, "earned_autonomy.<level>")
_LEVEL_KEYS = children(FLOW_KEYS, "earned_autonomy")
_REVIEW_KEYS = children(FLOW_KEYS, "review")
_OUTCOME_KEYS = children(FLOW_KEYS, "outcome")
_CAPACITY_KEYS = children(FLOW_KEYS, "review.capacity")
_FIELD_KEYS = children(FLOW_KEYS, "inputs.<name>")
_SIGNAL_KEYS = children(FLOW_KEYS, "signals.<name>")
_FAIRNESS_KEYS = children(FLOW_KEYS, "fairness")


def _number(c: Problems, node: LocatedDict, key: str, where: str) -> float | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        c.add(where, f"'{key}' must be a number, got {value!r}", node, key)
        return None
    return float(value)


# The type of a field whose declared type is wrong. The field stays known, so the signals
# and policy rules that name it are not each reported as naming a missing field: the user
# sees the one real mistake, the type.
UNKNOWN_TYPE = "unknown"


def _parse_field(c: Problems, name: str, raw: Any, parent: LocatedDict) -> FieldSpec:
    where = f"inputs.{name}"
    if not NAME_RE.match(name):
        c.add(where, "field names are lower_snake_case identifiers", parent, name)
    if not isinstance(raw, LocatedDict):
        c.add(where, "must be a mapping with at least 'type'", parent, name)
        return FieldSpec(name=name, type=UNKNOWN_TYPE)
    c.unknown_keys(raw, _FIELD_KEYS, where)
    ftype = raw.get("type")
    if ftype not in FIELD_TYPES:
        c.add(where, f"'type' must be one of {', '.join(FIELD_TYPES)}, got {ftype!r}", raw, "type")
        ftype = UNKNOWN_TYPE
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
    labels = raw.get("labels", {})
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        c.add(where, "'labels' must map each allowed value to a string", raw, "labels")
        labels = {}
    elif labels and allowed is None:
        c.add(where, "'labels' needs 'allowed': the values it labels", raw, "labels")
    elif allowed is not None:
        # YAML mapping keys reach us as text ("11" for 11): key each label by the allowed
        # value it names, so an integer-coded field's labels apply to its numbers.
        by_text = {str(a): a for a in allowed}
        for value in labels:
            if str(value) not in by_text:
                c.add(where, f"'labels' names {value!r}, which is not an allowed value", raw,
                      "labels")  # fmt: skip
        labels = {by_text[str(k)]: v for k, v in labels.items() if str(k) in by_text}
    notice_reason = raw.get("notice_reason", "")
    if not isinstance(notice_reason, str):
        c.add(where, "'notice_reason' must be a text", raw, "notice_reason")
        notice_reason = ""
    protected = raw.get("protected", False)
    if not isinstance(protected, bool):
        c.add(where, f"'protected' must be true or false, got {protected!r}", raw, "protected")
        protected = False
    groups = _parse_groups(c, raw, where, ftype, protected, allowed)
    actionable = bool(raw.get("actionable", False))
    if actionable and ftype not in ("number", "integer", UNKNOWN_TYPE):
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
        protected=protected,
        labels=dict(labels),
        groups=groups,
        notice_reason=notice_reason,
    )


def _parse_groups(
    c: Problems, raw: LocatedDict, where: str, ftype: str, protected: bool, allowed: Any
) -> tuple[float, ...] | None:
    """A protected number field's group edges: fairness figures need groups, and a number
    field's values are too many to be groups themselves."""
    groups = raw.get("groups")
    numeric = ftype in ("number", "integer")
    if groups is None:
        if protected and numeric and allowed is None:
            c.add(where, "a protected number field needs 'groups' (group edges, e.g. "
                  "[25, 40, 60]) or 'allowed' values, to report fairness per group", raw,
                  "protected")  # fmt: skip
        return None
    if not protected or not numeric:
        c.add(where, "'groups' belongs to protected number and integer fields", raw, "groups")
        return None
    if (
        not isinstance(groups, list)
        or not groups
        or not all(isinstance(g, int | float) and not isinstance(g, bool) for g in groups)
        or any(a >= b for a, b in pairwise(groups))
    ):
        c.add(where, f"'groups' must be ascending numbers, e.g. [25, 40, 60], got {groups!r}",
              raw, "groups")  # fmt: skip
        return None
    return tuple(float(g) for g in groups)


def _parse_signal(
    c: Problems, name: str, raw: Any, parent: LocatedDict, fields: Mapping[str, FieldSpec]
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
    categories: dict[str, tuple[str, ...]] = {}
    for feature in features:
        spec = fields.get(feature)
        if spec is None:
            c.add(where, f"feature '{feature}' is not an input field of the flow", raw, "features")
        elif spec.type == "string" and spec.allowed is None:
            # A model only knows the categories it was trained on: without `allowed` a new
            # value would reach it at decide time and fail (or be silently ignored).
            c.add(
                where,
                f"feature '{feature}' is a string field without 'allowed': a string feature "
                "needs 'allowed', the categories the model was trained on",
                raw,
                "features",
            )
        elif spec.type == "string":
            categories[feature] = tuple(str(v) for v in spec.allowed or ())
        elif spec.type not in ("number", "integer", "boolean"):
            c.add(
                where,
                f"feature '{feature}' must be a number, integer, boolean or string field",
                raw,
                "features",
            )
    timeout = raw.get("timeout_ms")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, int)):
        c.add(where, "'timeout_ms' must be an integer number of milliseconds", raw, "timeout_ms")
        timeout = None
    elif timeout is not None and timeout <= 0:
        c.add(where, "'timeout_ms' must be positive", raw, "timeout_ms")
        timeout = None
    reference = raw.get("reference")
    if reference is not None and not _good_reference(reference, features, categories):
        c.add(
            where,
            "'reference' must give every feature a value: a number, or one of the allowed "
            "values of a string feature",
            raw,
            "reference",
        )
        reference = None
    return SignalSpec(
        name=name,
        model=model,
        output=str(output),
        features=tuple(features),
        timeout_ms=timeout,
        label=str(raw.get("label", "")),
        reference={k: v if k in categories else float(v) for k, v in reference.items()}
        if reference
        else None,
        positive_class=raw.get("positive_class"),
        categories=categories,
        lines={key: line for key in raw if (line := raw.line_of(key)) is not None},
    )


def _good_reference(
    reference: Any, features: list[str], categories: Mapping[str, tuple[str, ...]]
) -> bool:
    """A number for every numeric feature and an allowed value for every string one."""
    if not isinstance(reference, dict) or set(reference) != set(features):
        return False
    return all(
        v in categories[k] if k in categories else isinstance(v, int | float)
        for k, v in reference.items()
    )


def parse_flow(raw: LocatedDict, path: Path) -> Flow:
    c = Problems(path)
    c.unknown_keys(raw, _FLOW_KEYS, "flow")
    name = raw.get("flow")
    if not isinstance(name, str) or not NAME_RE.match(name):
        c.add("flow", "'flow' must be a lower_snake_case name", raw, "flow")
        name = path.stem
    owner_raw = raw.get("owner")
    owner = Owner("", "")
    if isinstance(owner_raw, LocatedDict):
        c.unknown_keys(owner_raw, _OWNER_KEYS, "owner")
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
    known: Mapping[str, FieldSpec] = _AnyField()
    if not isinstance(inputs, LocatedDict) or not inputs:
        c.add("inputs", "'inputs' must map field names to their schema", raw, "inputs")
    else:
        for fname, fraw in inputs.items():
            fields[fname] = _parse_field(c, fname, fraw, inputs)
        known = _typed_for_signals(fields)
    signals: dict[str, SignalSpec] = {}
    sraw = raw.get("signals") or LocatedDict()
    if not isinstance(sraw, LocatedDict):
        c.add("signals", "'signals' must map signal names to models", raw, "signals")
    else:
        for sname, sval in sraw.items():
            sig = _parse_signal(c, sname, sval, sraw, known)
            if sig is not None:
                signals[sname] = sig
    reviewers = raw.get("reviewers", [])
    if not isinstance(reviewers, list) or not all(isinstance(r, str) for r in reviewers):
        c.add("reviewers", "'reviewers' must be a list of names or groups", raw, "reviewers")
        reviewers = []
    review = _parse_review(c, raw)
    outcome = _performance_signal(c, raw, _parse_outcome(c, raw), signals)
    earned = _parse_earned(c, raw)
    monitoring = parse_monitoring(c, raw)
    fairness = _parse_fairness(c, raw, signals)
    if monitoring.fairness is not None and (
        not fairness.favourable or not any(f.protected for f in fields.values())
    ):
        c.add("monitoring.fairness", "the fairness monitor needs protected input fields "
              "(`protected: true`) and `fairness: {favourable: [...]}`", raw,
              "monitoring")  # fmt: skip
    check_performance_limits(c, raw, monitoring, outcome, signals)
    notice = parse_notice(c, raw, {k: f.type for k, f in fields.items()}, set(signals))
    texts = {}
    for key, check in (("locale", locale_problem), ("currency", currency_problem)):
        value = raw.get(key)
        if value is not None and (problem := check(value)) is not None:
            c.add(key, problem, raw, key)
        texts[key] = value if isinstance(value, str) else ""
    c.raise_any()
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
        fairness=fairness,
        notice=notice,
        locale=texts["locale"],
        currency=texts["currency"],
    )


class _AnyField(Mapping[str, FieldSpec]):
    """The inputs as the signal checks see them when the 'inputs' section itself is wrong
    (already reported): any name may be a field, so no feature is reported as missing."""

    def __getitem__(self, name: str) -> FieldSpec:
        return FieldSpec(name=name, type="number")

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def _typed_for_signals(fields: Mapping[str, FieldSpec]) -> dict[str, FieldSpec]:
    """The fields as the signal checks see them: a field of unknown type (already reported)
    stands in as a number, so a signal reading it adds no second problem about its type."""
    return {
        name: spec if spec.type != UNKNOWN_TYPE else replace(spec, type="number")
        for name, spec in fields.items()
    }


def _parse_fairness(
    c: Problems, raw: LocatedDict, signals: Mapping[str, SignalSpec]
) -> FairnessSpec:
    """``fairness: {favourable: [approve], score: default_risk}``."""
    section = raw.get("fairness")
    if section is None:
        return FairnessSpec()
    if not isinstance(section, LocatedDict):
        c.add("fairness", "'fairness' must be a mapping: {favourable: [ACTION, ...]}", raw,
              "fairness")  # fmt: skip
        return FairnessSpec()
    c.unknown_keys(section, _FAIRNESS_KEYS, "fairness")
    favourable = section.get("favourable")
    if (
        not isinstance(favourable, list)
        or not favourable
        or not all(isinstance(a, str) and a for a in favourable)
    ):
        c.add("fairness.favourable", "'favourable' must list the actions favourable to the "
              f"person decided on, e.g. [approve], got {favourable!r}", section,
              "favourable")  # fmt: skip
        favourable = []
    score = section.get("score")
    if score is not None and score not in signals:
        known = ", ".join(signals) or "none"
        c.add("fairness.score", f"'score' must name a signal of the flow ({known}), got "
              f"{score!r}", section, "score")  # fmt: skip
        score = None
    return FairnessSpec(tuple(favourable), score)


def _parse_earned(c: Problems, raw: LocatedDict) -> dict[str, Criteria]:
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
    raisable = [a.value for a in Autonomy if a.value in _LEVEL_KEYS]
    for level, node in section.items():
        where = f"earned_autonomy.{level}"
        if level not in _LEVEL_KEYS:
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


def _parse_outcome(c: Problems, raw: LocatedDict) -> OutcomeSpec:
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
    positive = _label_list(c, section, "positive", clean)
    negative = _label_list(c, section, "negative", clean)
    signal = section.get("signal")
    if not positive:
        for key in ("negative", "signal"):
            if key in section:
                c.add(f"outcome.{key}", f"'{key}' needs 'positive': the bad labels", section, key)
    both = sorted(set(positive) & set(negative))
    if both:
        c.add("outcome.negative", f"{', '.join(both)} cannot be both positive and negative",
              section, "negative")  # fmt: skip
    if positive and "negative" not in section:
        negative = tuple(label for label in clean if label not in positive)
    if signal is not None and (not isinstance(signal, str) or not NAME_RE.match(signal)):
        c.add("outcome.signal", f"'signal' must name a signal, got {signal!r}", section, "signal")
        signal = None
    return OutcomeSpec(
        str(text["description"]), clean, str(text["value"]), positive, negative, signal
    )


def _label_list(
    c: Problems, section: LocatedDict, key: str, labels: Mapping[str, Any]
) -> tuple[str, ...]:
    """``outcome.positive`` or ``outcome.negative``: a list of the flow's outcome labels."""
    given = section.get(key)
    if given is None:
        return ()
    if isinstance(given, str):
        given = [given]
    if not isinstance(given, list) or not given or not all(isinstance(g, str) for g in given):
        c.add(f"outcome.{key}", f"'{key}' must list outcome labels", section, key)
        return ()
    unknown = [g for g in given if g not in labels]
    if unknown:
        c.add(
            f"outcome.{key}",
            f"{', '.join(unknown)} {'is not a label' if len(unknown) == 1 else 'are not labels'}"
            f" of outcome.labels ({', '.join(labels)})",
            section,
            key,
        )
        return ()
    return tuple(dict.fromkeys(given))


def _performance_signal(
    c: Problems, raw: LocatedDict, outcome: OutcomeSpec, signals: Mapping[str, SignalSpec]
) -> OutcomeSpec:
    """The signal whose score predicts ``outcome.positive``: the one named, or the flow's
    only probability signal (without one: its only score signal)."""
    if not outcome.positive:
        return outcome
    section = raw["outcome"]
    if outcome.signal is not None:
        spec = signals.get(outcome.signal)
        if spec is None:
            c.add("outcome.signal", f"no signal '{outcome.signal}' in this flow (signals: "
                  f"{', '.join(signals) or 'none'})", section, "signal")  # fmt: skip
        elif spec.output == "label":
            c.add("outcome.signal", f"signal '{outcome.signal}' gives a label, not a score",
                  section, "signal")  # fmt: skip
        return outcome
    candidates = [name for name, spec in signals.items() if spec.output == "probability"]
    kind = "probability"
    if not candidates:
        candidates = [name for name, spec in signals.items() if spec.output == "score"]
        kind = "score"
    if len(candidates) == 1:
        return replace(outcome, signal=candidates[0])
    found = f"{kind} signals: {', '.join(candidates)}" if candidates else "no score signal"
    c.add("outcome.positive", f"name the signal that predicts {', '.join(outcome.positive)} "
          f"with outcome.signal ({found})", section, "positive")  # fmt: skip
    return outcome


def _parse_review(c: Problems, raw: LocatedDict) -> ReviewSettings:
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


def _parse_capacity(c: Problems, section: LocatedDict) -> ReviewCapacity | None:
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
