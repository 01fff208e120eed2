"""Adverse-action notices: whether a decision is adverse, its principal reasons in the
applicant's words, and the notice rendered from the owner's template.

A decision is adverse when the action in force (the reviewer's, where a review resolved
it) is one of the flow's ``notice.adverse_actions``, or when its value is below what the
applicant asked for (``notice.request``): a reduced offer. The reasons, most important
first:

1. what decided: the deciding rule's ``notice`` text; for the policy's fallback, that the
   assessment could not be completed (or the fallback's ``notice``); for a guardrail that
   diverted or limited the case, that limit in words; for a reviewer's change, that a
   person decided;
2. the model features that pushed the score towards the adverse side most, each named by
   its field's ``notice_reason`` (or label). A ``protected`` or ``sensitive`` field is never
   stated, whatever its attribution.

Templates are project files and values come from cases, so they run in Jinja2's immutable
sandbox, HTML autoescaped, and an unknown name is an error rather than a blank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any

from keel.errors import KeelError, Problem
from keel.explain.attributions import Attributions
from keel.flows import Flow
from keel.flows.notice import NoticeSpec
from keel.policy.model import Policy
from keel.policy.text import PROTECTED_TEXT, format_value

FORMATS = ("text", "html")
SUFFIX = {"text": ".txt.j2", "html": ".html.j2"}
NOTICES_DIR = "notices"  # in the project: notices/<flow>.txt.j2 and notices/<flow>.html.j2

FALLBACK_NOTICE = "We could not complete an automated assessment of your application."
REVIEWED_NOTICE = "A member of our staff reviewed your application and made this decision."
CLAMP_NOTICE = "The amount is limited by the most we can offer for this product."
GUARDRAIL_NOTICES = {
    "confidence": "We could not assess your application with enough certainty.",
    "rate": "We had reached the number of applications we can approve in this period.",
    "exposure": "We had reached the amount of credit we can grant in this period.",
    "review_capacity": "Our staff could not review your application in time.",
}


class NoticeTemplateError(KeelError):
    """A notice template cannot be read or rendered (a syntax error, an unknown name, an
    operation the sandbox refuses): named with its file and line."""

    code = "invalid_notice_template"


@dataclass(frozen=True)
class InForce:
    """The action and value a decision leaves in force, and how it came to be."""

    action: str
    value: float | None
    date: str  # ISO time: when the decision was made, or the review that settled it
    resolution: str | None = None  # approve | reject | change, where a review settled it


@dataclass(frozen=True)
class Notice:
    """What a notice says; every text is formatted in the flow's locale and currency."""

    decision_id: str
    flow: str
    kind: str  # "adverse_action" | "reduced_offer"
    action: str
    value: str | None  # the value in force, formatted; None for an action without one
    requested: str | None  # what the applicant asked for, formatted, where the flow says
    date: str  # the date of the action in force, in the flow's locale
    reasons: tuple[str, ...]
    contact: str
    owner_name: str
    owner_email: str
    # The model scores, for a template that states them (the default templates do not).
    scores: Mapping[str, float] = field(default_factory=dict)
    subject_id: str | None = None
    # The case's inputs as readers see them (labels, the flow's formats), for a template
    # that addresses the applicant; protected and sensitive fields are never among them.
    inputs: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["reasons"] = list(self.reasons)
        out["scores"] = dict(self.scores)
        out["inputs"] = dict(self.inputs)
        return out


def adverse_kind(spec: NoticeSpec, in_force: InForce, requested: float | None) -> str | None:
    """``adverse_action``, ``reduced_offer``, or None for a decision that is neither."""
    if in_force.action in spec.adverse_actions:
        return "adverse_action"
    if requested is not None and in_force.value is not None and in_force.value < requested:
        return "reduced_offer"
    return None


def _deciding_reasons(
    policy: Policy, body: Mapping[str, Any], in_force: InForce, kind: str
) -> list[str]:
    """What decided, in the applicant's words (never a score or an internal threshold)."""
    if in_force.resolution in ("reject", "change"):
        return [REVIEWED_NOTICE]
    rule = body["rule"]
    hits: Sequence[Mapping[str, Any]] = body.get("guardrails", {}).get("hits", [])
    if rule == "fallback":
        diverted = [h for h in hits if h["on_hit"] in ("fallback", "pause")]
        if diverted:
            kinds = dict.fromkeys(h["kind"] for h in diverted)
            return [GUARDRAIL_NOTICES.get(k, FALLBACK_NOTICE) for k in kinds]
        return [policy.fallback.notice or FALLBACK_NOTICE]
    out = []
    if rule == "default":
        out.append(policy.default.notice)
    else:
        out.extend(r.notice for r in policy.rules if r.name == rule)
    if kind == "reduced_offer" and any(h["on_hit"] == "clamp" for h in hits):
        out.append(CLAMP_NOTICE)
    return [text for text in out if text]


def model_reasons(
    flow: Flow,
    spec: NoticeSpec,
    attributions: Mapping[str, Attributions],
    covered: frozenset[str] = frozenset(),
) -> list[str]:
    """The features that pushed the scores towards adverse, strongest first, as reasons.

    Protected and sensitive fields are left out whatever their attribution; a feature
    that pulled towards a favourable decision is no reason for an adverse one; a
    ``covered`` field is one the deciding rule's stated reason already speaks of.
    """
    pushes: dict[str, float] = {}
    for signal, attrs in attributions.items():
        sign = 1.0 if spec.leans_high(signal) else -1.0
        for item in attrs.items:
            push = sign * item.contribution
            field_spec = flow.fields.get(item.feature)
            if push <= 1e-12 or field_spec is None or field_spec.never_a_reason:
                continue
            if item.feature in covered:
                continue
            pushes[item.feature] = max(push, pushes.get(item.feature, 0.0))
    ranked = sorted(pushes, key=lambda name: pushes[name], reverse=True)
    return [flow.fields[name].stated_reason for name in ranked]


def principal_reasons(
    flow: Flow,
    spec: NoticeSpec,
    policy: Policy,
    body: Mapping[str, Any],
    in_force: InForce,
    kind: str,
    attributions: Mapping[str, Attributions],
) -> tuple[str, ...]:
    """The top ``spec.reasons`` reasons: what decided first, then the model's, no repeats.
    A field the deciding rule reads is not stated again when that rule's own ``notice``
    is ("Your checking account is overdrawn", then "Status of your checking account")."""
    deciding = _deciding_reasons(policy, body, in_force, kind)
    rule = next((r for r in policy.rules if r.name == body["rule"]), None)
    stated = rule is not None and bool(rule.notice) and rule.notice in deciding
    covered = frozenset(rule.inputs_read) if stated and rule is not None else frozenset()
    found = deciding + model_reasons(flow, spec, attributions, covered)
    return tuple(dict.fromkeys(found))[: spec.reasons]


def shown_inputs(flow: Flow, inputs: Mapping[str, Any], masked: frozenset[str]) -> dict[str, str]:
    """The inputs a template may show: never a protected or sensitive field; ``masked``
    fields (personal ones, for a reader who may not see them) as ``‹protected›``."""
    out = {}
    for name, value in inputs.items():
        spec = flow.fields.get(name)
        if spec is None or spec.never_a_reason:
            continue
        if name in masked:
            out[name] = PROTECTED_TEXT
        elif spec.allowed is not None and spec.labels:
            out[name] = spec.value_label(value)
        else:
            out[name] = format_value(value, spec.format, flow.money)
    return out


def build_notice(
    flow: Flow,
    decision_id: str,
    kind: str,
    in_force: InForce,
    requested: float | None,
    reasons: tuple[str, ...],
    scores: Mapping[str, float],
    subject_id: str | None = None,
    inputs: Mapping[str, str] | None = None,
) -> Notice:
    """The notice's content, every value formatted in the flow's locale and currency."""
    spec = flow.notice
    request = flow.fields.get(spec.request) if spec and spec.request else None
    fmt = request.format if request is not None else "number"
    return Notice(
        decision_id=decision_id,
        flow=flow.name,
        kind=kind,
        action=in_force.action,
        value=format_value(in_force.value, fmt, flow.money) if in_force.value is not None else None,
        requested=format_value(requested, fmt, flow.money) if requested is not None else None,
        date=_date(in_force.date, flow),
        reasons=reasons,
        contact=(spec.contact if spec else "") or f"{flow.owner.name}, {flow.owner.email}",
        owner_name=flow.owner.name,
        owner_email=flow.owner.email,
        scores=dict(scores),
        subject_id=subject_id,
        inputs=dict(inputs or {}),
    )


def _date(instant: str, flow: Flow) -> str:
    from datetime import datetime  # noqa: PLC0415

    from babel.dates import format_date  # noqa: PLC0415

    day = datetime.fromisoformat(instant.replace("Z", "+00:00")).date()
    return str(format_date(day, format="long", locale=flow.money.locale))


# ---- templates -------------------------------------------------------------------------

DEFAULT_TEXT = """\
Notice of action taken

Date: {{ notice.date }}
Reference: {{ notice.decision_id }}

{% if notice.kind == "reduced_offer" -%}
We are not able to grant your application as requested. We can offer {{ notice.value }}
{%- if notice.requested %} instead of the {{ notice.requested }} you asked for{% endif %}.
{%- else -%}
We are not able to grant your application.
{%- endif %}

{% if notice.reasons -%}
The principal reasons for our decision:
{% for reason in notice.reasons %}  {{ loop.index }}. {{ reason }}
{% endfor %}
{%- else -%}
We could not state a principal reason for this decision; please contact us.
{% endif %}
You may ask us for the reasons in more detail, and for a person to look at the decision
again, within 60 days of this notice.

Contact: {{ notice.contact }}
"""

DEFAULT_HTML = """\
<!DOCTYPE html>
<html lang="{{ lang }}">
<head><meta charset="utf-8"><title>Notice of action taken</title></head>
<body>
<h1>Notice of action taken</h1>
<p>Date: {{ notice.date }}<br>Reference: <code>{{ notice.decision_id }}</code></p>
{% if notice.kind == "reduced_offer" -%}
<p>We are not able to grant your application as requested. We can offer {{ notice.value }}
{%- if notice.requested %} instead of the {{ notice.requested }} you asked for{% endif %}.</p>
{%- else -%}
<p>We are not able to grant your application.</p>
{%- endif %}
{% if notice.reasons -%}
<p>The principal reasons for our decision:</p>
<ol>
{%- for reason in notice.reasons %}
  <li>{{ reason }}</li>
{%- endfor %}
</ol>
{%- else -%}
<p>We could not state a principal reason for this decision; please contact us.</p>
{%- endif %}
<p>You may ask us for the reasons in more detail, and for a person to look at the decision
again, within 60 days of this notice.</p>
<p>Contact: {{ notice.contact }}</p>
</body>
</html>
"""

_DEFAULTS = {"text": DEFAULT_TEXT, "html": DEFAULT_HTML}


def template_path(project_dir: Path, flow: str, fmt: str) -> Path:
    """Where a project's own template for ``flow`` in ``fmt`` lives."""
    return project_dir / NOTICES_DIR / f"{flow}{SUFFIX[fmt]}"


def _source(project_dir: Path, flow: str, fmt: str) -> tuple[str, str]:
    """The template text and its name: the project's file, else Keel's default."""
    path = template_path(project_dir, flow, fmt)
    if path.is_file():
        try:
            return path.read_text(encoding="utf-8"), str(path)
        except (OSError, UnicodeDecodeError) as exc:
            detail = {"file": str(path)}
            raise NoticeTemplateError(f"{path}: cannot be read: {exc}", detail) from exc
    return _DEFAULTS[fmt], f"<keel default {fmt} notice>"


def _line(tb: TracebackType | None, name: str) -> int | None:
    """The template line an error came from (Jinja2 puts template frames in tracebacks)."""
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == name:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render_notice(notice: Notice, fmt: str, project_dir: Path, locale: str) -> str:
    """The notice in ``fmt`` (text or html) from the flow's template, or Keel's default.

    ``NoticeTemplateError`` names the file and line of anything the template does wrong.
    """
    from jinja2 import StrictUndefined, TemplateError  # noqa: PLC0415 - loads to render only
    from jinja2.sandbox import ImmutableSandboxedEnvironment  # noqa: PLC0415

    if fmt not in FORMATS:
        raise NoticeTemplateError(
            f"a notice's format is one of {', '.join(FORMATS)}, got {fmt!r}", {"format": fmt}
        )
    source, name = _source(project_dir, notice.flow, fmt)
    env = ImmutableSandboxedEnvironment(
        autoescape=fmt == "html", undefined=StrictUndefined, keep_trailing_newline=True
    )
    try:
        template = env.from_string(source)
        template.filename = name
        return template.render(notice=notice.to_dict(), lang=locale.partition("_")[0])
    except TemplateError as exc:
        line = getattr(exc, "lineno", None) or _line(exc.__traceback__, name)
        raise _template_error(name, line, exc) from exc
    except (ArithmeticError, LookupError, TypeError, ValueError, AttributeError) as exc:
        raise _template_error(name, _line(exc.__traceback__, name), exc) from exc


def _template_error(name: str, line: int | None, exc: Exception) -> NoticeTemplateError:
    where = f"{name}:{line}" if line else name
    return NoticeTemplateError(
        f"{where}: the notice template failed: {exc} (templates may use the values of "
        "`notice` only; see the notices how-to)",
        {"file": name, "line": line},
    )


SAMPLE = Notice(
    decision_id="dec_sample",
    flow="sample",
    kind="adverse_action",
    action="decline",
    value="1,000",
    requested="2,000",
    date="January 1, 2026",
    reasons=("A sample reason",),
    contact="Owner, owner@example.com",
    owner_name="Owner",
    owner_email="owner@example.com",
    scores={},
)


def check_templates(project_dir: Path, flow: Flow) -> list[Problem]:
    """Render the flow's own templates with a sample notice, so that a template error is
    found at ``keel validate`` rather than when an applicant's notice is due."""
    problems = []
    for fmt in FORMATS:
        path = template_path(project_dir, flow.name, fmt)
        if not path.is_file():
            continue
        for kind in ("adverse_action", "reduced_offer"):
            sample = replace(
                SAMPLE,
                flow=flow.name,
                kind=kind,
                scores=dict.fromkeys(flow.signals, 0.5),
                subject_id="sample",
                inputs={n: "sample" for n, f in flow.fields.items() if not f.never_a_reason},
            )
            try:
                render_notice(sample, fmt, project_dir, flow.money.locale)
            except NoticeTemplateError as exc:
                line = exc.detail.get("line")
                problems.append(Problem(str(path), "notice", exc.message.split(": ", 1)[1],
                                        line=line))  # fmt: skip
                break
    return problems
