"""A flow's definition: one named business decision, its owner, input schema, signals,
review settings, outcome labels, autonomy criteria and monitoring."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from typing import Any

from keel.errors import InputError
from keel.flows.autonomy import Autonomy
from keel.flows.monitoring import MonitoringSpec
from keel.flows.notice import NoticeSpec
from keel.ledger.windows import RateLimit
from keel.money import DEFAULT_MONEY, Money
from keel.text import article
from keel.text import problem as text_problem

MAX_INTEGER = 10**15 - 1  # whole numbers a float holds exactly, with room to spare


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
    # A characteristic the law protects (age, sex, nationality…): never a stated reason,
    # reported per group by the fairness figures, a warning at validate when a model reads it.
    protected: bool = False
    labels: Mapping[Any, str] = field(default_factory=dict)  # allowed value → display label
    # A protected number field's group edges for the fairness figures, ascending: [25, 40]
    # cuts "under 25", "25 to under 40", "40 or over".
    groups: tuple[float, ...] | None = None
    notice_reason: str = ""  # how a notice names the field as a reason, in customer language

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ").capitalize()

    @property
    def stated_reason(self) -> str:
        """How an adverse-action notice names the field as a reason."""
        return self.notice_reason or self.display

    @property
    def never_a_reason(self) -> bool:
        """Protected characteristics and sensitive data are never a stated reason."""
        return self.protected or self.classification is Classification.SENSITIVE

    def value_label(self, value: Any) -> str:
        """How explanations and notices name one of the field's values."""
        return self.labels.get(value, str(value))


@dataclass(frozen=True)
class SignalSpec:
    """A model the flow consults, and how to turn its output into a signal."""

    name: str
    model: str
    output: str = "probability"  # probability | score | label
    features: tuple[str, ...] = ()
    timeout_ms: int | None = None
    label: str = ""
    reference: Mapping[str, float | str] | None = None
    positive_class: Any = None
    # Each categorical (``type: string``) feature and its allowed values, in the flow's
    # order: the model receives these as text, and a probe row uses the first value.
    categories: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    # The line of each key in the flow file, so a model that disagrees with the signal
    # (feature order, classes) is reported at the key it contradicts.
    lines: Mapping[str, int] = field(default_factory=dict, compare=False, repr=False)

    def line_of(self, key: str) -> int | None:
        return self.lines.get(key, self.lines.get("model"))

    @property
    def display(self) -> str:
        return self.label or self.name.replace("_", " ")


@dataclass(frozen=True)
class Owner:
    name: str
    email: str


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
    def limit(self) -> RateLimit:
        """The budget as a sliding-window rate limit, kept with the guardrail windows."""
        return RateLimit("review_capacity", float(self.max_reviews), self.period_s)


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
    # Model performance: the labels of the bad (positive) event a signal's score predicts,
    # the labels that count as good (every other label when not named), and that signal.
    positive: tuple[str, ...] = ()
    negative: tuple[str, ...] = ()
    signal: str | None = None

    def judged(self, label: str) -> bool | None:
        """Whether ``label`` is the bad event (True), a good one (False), or left out of
        performance figures (None)."""
        if label in self.positive:
            return True
        return False if label in self.negative else None

    def favourable(self) -> str | None:
        """The action the labels outside ``positive`` call right, if they agree on one:
        the action a bad outcome makes a mistake of (approve, when a loan defaults)."""
        good = {a for label, a in self.labels.items() if label in self.negative and a}
        return next(iter(good)) if self.positive and len(good) == 1 else None


@dataclass(frozen=True)
class FairnessSpec:
    """What the fairness figures count: the actions favourable to the person decided on
    (their share is the selection rate), and the signal whose score calibration is judged
    within groups (``None``: the flow's only signal, if it has exactly one)."""

    favourable: tuple[str, ...] = ()
    score: str | None = None


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
    monitoring: MonitoringSpec = field(default_factory=MonitoringSpec)
    fairness: FairnessSpec = field(default_factory=FairnessSpec)
    notice: NoticeSpec | None = None  # None: the flow gives no adverse-action notices
    locale: str = ""  # as the flow file sets it; "" → keel.yaml's
    currency: str = ""
    # What the flow's texts are written in: its own locale and currency, else keel.yaml's
    # (the project sets it when it loads the flow).
    money: Money = DEFAULT_MONEY

    @property
    def value_format(self) -> str:
        """How a decision's value is written: like the input the flow's notices compare it
        with (``notice.request``, e.g. a requested amount in ``currency``), so explanations
        and replay reports say "12.000 €" as the notice does; a plain number otherwise."""
        request = self.notice.request if self.notice is not None else None
        field = self.fields.get(request) if request else None
        return field.format if field is not None else "number"

    @property
    def protected_attributes(self) -> tuple[str, ...]:
        """The input fields marked ``protected`` (characteristics the law protects), in the
        order the flow lists them. Not ``protected_fields``: those are the personal and
        sensitive fields encrypted at rest."""
        return tuple(name for name, spec in self.fields.items() if spec.protected)

    def validate_input(self, inputs: Any) -> dict[str, Any]:
        """Check ``inputs`` against the schema; return a normalised copy or raise ``InputError``.

        Every problem is reported at once, each naming the field. A required field sent as
        ``null`` is refused as null, not as missing; an optional one sent as ``null`` is
        treated as absent.
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
                # An optional field sent as null is left out, as if it were absent.
                if spec.required:
                    missing = "is null; a value is required" if spec.name in inputs else None
                    errors.append(
                        {"field": spec.name, "error": missing or "required field is missing"}
                    )
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
            return None, f"expected {article(spec.type)}, got {kind.__name__} {value!r}"
        if kind is float and not math.isfinite(value):
            return None, f"expected a finite number, got {value!r}"
        if kind is int and not -MAX_INTEGER <= value <= MAX_INTEGER:
            return None, f"expected a number of at most 15 digits, got {len(str(abs(value)))}"
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
        unsafe = text_problem(value, spec.name)
        if unsafe is not None:
            return None, unsafe
    elif spec.type == "boolean" and not isinstance(value, bool):
        return None, f"expected true or false, got {value!r}"
    if spec.allowed is not None and value not in spec.allowed:
        allowed = ", ".join(repr(a) for a in spec.allowed)
        return None, f"{value!r} is not one of {allowed}"
    return value, None
