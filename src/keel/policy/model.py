"""The policy document: parsing YAML into immutable, hash-versioned policy objects.

A policy version is the SHA-256 of the canonical JSON of the parsed document, so comments,
key order and formatting do not change it, and any change of meaning does.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keel.canonical import sha256_hex
from keel.errors import DefinitionError, Problem
from keel.policy.schema import BOUND_ON_HIT, KILL_SWITCH_REASON, ON_HIT, POLICY_KEYS
from keel.schema import children
from keel.yamlfile import NAME_RE, LocatedDict, Problems, load_yaml, parse_window

_GUARDRAIL_KEYS = children(POLICY_KEYS, "guardrails")
_BOUND_KEYS = children(POLICY_KEYS, "guardrails.bounds[]")
_FLOOR_KEYS = children(POLICY_KEYS, "guardrails.min_confidence[]")
_KILL_SWITCH_KEYS = children(POLICY_KEYS, "guardrails.kill_switch")
_POLICY_KEYS = children(POLICY_KEYS, "")
_RULE_KEYS = children(POLICY_KEYS, "rules[]")


@dataclass(frozen=True)
class Outcome:
    """An action with its reason, used for the default, the fallback and the kill switch."""

    action: str
    reason: str
    review: bool = False
    value: str | None = None
    notice: str = ""  # the reason an adverse-action notice states, in customer language


_INPUT_FIELD = re.compile(r"\binput\.([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Rule:
    name: str
    when: str
    action: str
    reason: str
    value: str | None = None
    review: bool = False  # the grey zone: a supervised flow escalates it to a human
    line: int | None = None
    when_line: int | None = None
    value_line: int | None = None
    reason_line: int | None = None
    notice: str = ""  # the reason an adverse-action notice states, in customer language

    @property
    def inputs_read(self) -> tuple[str, ...]:
        """The input fields the condition reads (``input.x``), in order, each once."""
        return tuple(dict.fromkeys(_INPUT_FIELD.findall(self.when)))


@dataclass(frozen=True)
class Bound:
    action: str
    minimum: float | None
    maximum: float | None
    on_hit: str


@dataclass(frozen=True)
class ConfidenceFloor:
    signal: str
    minimum: float
    on_hit: str


@dataclass(frozen=True)
class WindowLimit:
    """A rate limit (count) or an exposure limit (sum of the action's value) over a window."""

    name: str
    kind: str  # "rate" | "exposure"
    action: str
    maximum: float
    window_s: int
    on_hit: str
    per: str | None = None  # input field that splits the limit into segments


@dataclass(frozen=True)
class KillSwitch:
    engaged: bool
    action: str
    reason: str


@dataclass(frozen=True)
class Guardrails:
    bounds: tuple[Bound, ...] = ()
    confidence: tuple[ConfidenceFloor, ...] = ()
    windows: tuple[WindowLimit, ...] = ()
    kill_switch: KillSwitch | None = None


@dataclass(frozen=True)
class Policy:
    name: str
    version: str
    actions: tuple[str, ...]
    params: Mapping[str, Any]
    rules: tuple[Rule, ...]
    default: Outcome
    fallback: Outcome
    guardrails: Guardrails
    document: Mapping[str, Any]
    source: str = ""
    description: str = ""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _outcome(p: Problems, raw: Any, where: str, parent: LocatedDict) -> Outcome | None:
    if not isinstance(raw, LocatedDict):
        p.add(where, "must be a mapping with 'action' and 'reason'", parent, where)
        return None
    p.unknown_keys(raw, children(POLICY_KEYS, where), where)
    action, reason = raw.get("action"), raw.get("reason")
    if not isinstance(action, str) or not isinstance(reason, str):
        p.add(where, "needs an 'action' and a 'reason' (strings)", raw, "action")
        return None
    value = raw.get("value")
    notice = _notice(p, raw, where)
    return Outcome(action, reason, bool(raw.get("review", False)), _expr(value), notice)


def _notice(p: Problems, raw: LocatedDict, where: str) -> str:
    notice = raw.get("notice", "")
    if not isinstance(notice, str):
        p.add(where, "'notice' must be a text in the applicant's words", raw, "notice")
        return ""
    return notice.strip()


def _expr(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _on_hit(p: Problems, raw: LocatedDict, where: str, allowed: tuple[str, ...]) -> str:
    on_hit = raw.get("on_hit", "escalate")
    if on_hit not in allowed:
        p.add(where, f"'on_hit' must be one of {', '.join(allowed)}", raw, "on_hit")
    return str(on_hit)


def _list(p: Problems, node: LocatedDict, key: str, where: str) -> list[LocatedDict]:
    raw = node.get(key) or []
    if not isinstance(raw, list) or not all(isinstance(x, LocatedDict) for x in raw):
        p.add(where, f"'{key}' must be a list of mappings", node, key)
        return []
    return raw


def _num(p: Problems, node: LocatedDict, key: str, where: str, required: bool) -> float | None:
    value = node.get(key)
    if value is None:
        if required:
            p.add(where, f"'{key}' is required", node, key)
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        p.add(where, f"'{key}' must be a number, got {value!r}", node, key)
        return None
    return float(value)


def _guardrails(p: Problems, raw: Any, parent: LocatedDict) -> Guardrails:
    if raw is None:
        return Guardrails()
    if not isinstance(raw, LocatedDict):
        p.add("guardrails", "must be a mapping", parent, "guardrails")
        return Guardrails()
    p.unknown_keys(raw, _GUARDRAIL_KEYS, "guardrails")
    bounds = []
    for i, b in enumerate(_list(p, raw, "bounds", "guardrails.bounds")):
        where = f"guardrails.bounds[{i}]"
        p.unknown_keys(b, _BOUND_KEYS, where)
        lo, hi = _num(p, b, "min", where, False), _num(p, b, "max", where, False)
        if lo is None and hi is None:
            p.add(where, "a bound needs 'min', 'max' or both", b, "action")
        if lo is not None and hi is not None and lo > hi:
            p.add(where, f"'min' {lo:g} is greater than 'max' {hi:g}", b, "min")
        bounds.append(Bound(str(b.get("action")), lo, hi, _on_hit(p, b, where, BOUND_ON_HIT)))
    floors = []
    for i, f in enumerate(_list(p, raw, "min_confidence", "guardrails.min_confidence")):
        where = f"guardrails.min_confidence[{i}]"
        p.unknown_keys(f, _FLOOR_KEYS, where)
        minimum = _num(p, f, "min", where, True)
        if minimum is not None and not 0 <= minimum <= 1:
            p.add(where, "'min' is a confidence between 0 and 1", f, "min")
        floors.append(
            ConfidenceFloor(str(f.get("signal")), minimum or 0.0, _on_hit(p, f, where, ON_HIT))
        )
    windows = []
    names: set[str] = set()
    for kind, key in (("rate", "rate_limits"), ("exposure", "exposure_limits")):
        for i, w in enumerate(_list(p, raw, key, f"guardrails.{key}")):
            where = f"guardrails.{key}[{i}]"
            p.unknown_keys(w, children(POLICY_KEYS, f"guardrails.{key}[]"), where)
            name = w.get("name")
            if not isinstance(name, str) or not NAME_RE.match(name):
                p.add(where, "'name' must be a lower_snake_case name", w, "name")
                name = f"{key}_{i}"
            if name in names:
                p.add(where, f"duplicate guardrail name '{name}'", w, "name")
            names.add(name)
            maximum = _num(p, w, "max", where, True)
            if maximum is not None and maximum < 0:
                p.add(where, "'max' cannot be negative", w, "max")
            if kind == "rate" and maximum is not None and not float(maximum).is_integer():
                p.add(where, "a rate limit's 'max' is a whole number of actions", w, "max")
            window = parse_window(w.get("window"))
            if window is None:
                p.add(where, "'window' must look like 30s, 15m, 1h or 7d", w, "window")
            per = w.get("per")
            if per is not None and not isinstance(per, str):
                p.add(where, "'per' must name an input field", w, "per")
                per = None
            windows.append(
                WindowLimit(
                    name=name,
                    kind=kind,
                    action=str(w.get("action")),
                    maximum=maximum or 0.0,
                    window_s=window or 1,
                    on_hit=_on_hit(p, w, where, ON_HIT),
                    per=per,
                )
            )
    kill = None
    kraw = raw.get("kill_switch")
    if kraw is not None:
        if not isinstance(kraw, LocatedDict):
            p.add("guardrails.kill_switch", "must be a mapping", raw, "kill_switch")
        else:
            p.unknown_keys(kraw, _KILL_SWITCH_KEYS, "guardrails.kill_switch")
            if not isinstance(kraw.get("engaged", False), bool):
                p.add("guardrails.kill_switch", "'engaged' must be true or false", kraw, "engaged")
            kill = KillSwitch(
                bool(kraw.get("engaged", False)),
                str(kraw.get("action")),
                str(kraw.get("reason", KILL_SWITCH_REASON)),
            )
    return Guardrails(tuple(bounds), tuple(floors), tuple(windows), kill)


def parse_policy(raw: LocatedDict, path: Path) -> Policy:
    """Check the document's shape and build a ``Policy``; the compiler checks expressions."""
    p = Problems(str(path))
    p.unknown_keys(raw, _POLICY_KEYS, "policy")
    name = raw.get("policy")
    if not isinstance(name, str) or not NAME_RE.match(name):
        p.add("policy", "'policy' must be a lower_snake_case name", raw, "policy")
        name = path.stem
    actions = raw.get("actions")
    if not isinstance(actions, list) or not actions or not all(isinstance(a, str) for a in actions):
        p.add("actions", "'actions' must be a non-empty list of action names", raw, "actions")
        actions = []
    elif len(set(actions)) != len(actions):
        p.add("actions", "'actions' lists an action twice", raw, "actions")
    params = raw.get("params") or {}
    if not isinstance(params, dict):
        p.add("params", "'params' must map names to values", raw, "params")
        params = {}
    for key, value in params.items():
        if not NAME_RE.match(key):
            p.add(f"params.{key}", "parameter names are lower_snake_case", params, key)
        if not isinstance(value, int | float | str | bool):
            p.add(f"params.{key}", "a parameter is a number, string or boolean", params, key)
        elif isinstance(value, float) and not math.isfinite(value):
            p.add(f"params.{key}", f"a parameter must be a finite number, got {value}", params, key)
    rules: list[Rule] = []
    seen: dict[str, int] = {}
    for i, r in enumerate(_list(p, raw, "rules", "rules")):
        where = f"rules[{i}]"
        p.unknown_keys(r, _RULE_KEYS, where)
        rname = r.get("name")
        if not isinstance(rname, str) or not NAME_RE.match(rname):
            p.add(where, "'name' must be a lower_snake_case name", r, "name")
            rname = f"rule_{i}"
        else:
            where = f"rule '{rname}'"
        if rname in seen:
            p.add(where, f"duplicate rule name (also rules[{seen[rname]}])", r, "name")
        seen.setdefault(rname, i)
        when = r.get("when")
        if not isinstance(when, str | bool):
            p.add(where, "'when' must be a CEL expression", r, "when")
            when = "false"
        reason = r.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            p.add(where, "'reason' must say why, in business language", r, "reason")
            reason = ""
        rules.append(
            Rule(
                name=rname,
                when=_expr(when) or "false",
                action=str(r.get("action")),
                reason=reason,
                value=_expr(r.get("value")),
                review=bool(r.get("review", False)),
                line=r.line,
                when_line=r.line_of("when"),
                value_line=r.line_of("value"),
                reason_line=r.line_of("reason"),
                notice=_notice(p, r, where),
            )
        )
    if not raw.get("rules"):
        p.add("rules", "a policy needs at least one rule", raw, "rules")
    default = _outcome(p, raw.get("default"), "default", raw)
    fallback = _outcome(p, raw.get("fallback"), "fallback", raw)
    guardrails = _guardrails(p, raw.get("guardrails"), raw)
    if p.items or default is None or fallback is None:
        raise DefinitionError(p.items)
    document = _plain(raw)
    return Policy(
        name=name,
        version=sha256_hex(document),
        actions=tuple(actions),
        params=dict(params),
        rules=tuple(rules),
        default=default,
        fallback=fallback,
        guardrails=guardrails,
        document=document,
        source=str(path),
        description=str(raw.get("description", "")),
    )


def load_policy(path: Path) -> Policy:
    return parse_policy(load_yaml(path), path)


def policy_from_document(document: Mapping[str, Any], source: str = "<store>") -> Policy:
    """Rebuild a policy from its stored canonical document (for what-if on past decisions)."""
    located = _locate(document)
    if not isinstance(located, LocatedDict):
        raise DefinitionError([Problem(source, "policy", "a stored policy must be a mapping")])
    return parse_policy(located, Path(source))


def _locate(value: Any) -> Any:
    if isinstance(value, Mapping):
        out = LocatedDict()
        for k, v in value.items():
            out[k] = _locate(v)
        return out
    if isinstance(value, list):
        return [_locate(v) for v in value]
    return value
