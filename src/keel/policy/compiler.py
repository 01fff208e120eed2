"""Compile a policy against its flow once per version, and evaluate it per decision.

Compilation checks everything that can be checked before traffic arrives: CEL syntax,
references to unknown inputs, signals, signal attributes and parameters, unknown actions,
type errors (each expression is evaluated on a typed probe built from the flow's schema,
and comparisons between values of different types are found statically: ``types.py``),
conditions that are not boolean, reason templates, and rules that can never be reached.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import cel

from keel.flows import Flow
from keel.policy.model import Outcome, Policy, Rule
from keel.policy.text import TemplateError, check_template, render
from keel.policy.types import comparison_problems
from keel.yamlfile import Problems

SIGNAL_ATTRIBUTES = ("score", "confidence", "label")
_STRING_RE = re.compile(r"""'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\])*'|"(?:\\.|[^"\\])*\"""", re.S)
_REF_RE = re.compile(r"\b(input|signals|params)\s*\.\s*([A-Za-z_]\w*)(?:\s*\.\s*([A-Za-z_]\w*))?")
_ROOTS = frozenset({"input", "signals", "params"})


def references(source: str) -> set[tuple[str, str, str | None]]:
    """The (root, name, attribute) references of an expression, string literals excluded."""
    code = _STRING_RE.sub("''", source)
    return {(m.group(1), m.group(2), m.group(3)) for m in _REF_RE.finditer(code)}


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    when: Any  # cel.Program
    value: Any | None
    signals: frozenset[str]
    variables: tuple[Ref, ...]


@dataclass
class Evaluation:
    """What the rules decided for one case, before guardrails."""

    action: str
    value: float | None
    reason: str
    rule: str  # the rule's name, or "default" / "fallback"
    review: bool
    trace: list[str] = field(default_factory=list)  # the rules evaluated, in order
    fallback_cause: str | None = None


@dataclass(frozen=True)
class CompiledPolicy:
    policy: Policy
    flow: Flow
    rules: tuple[CompiledRule, ...]
    default_value: Any | None
    fallback_value: Any | None

    def reason_template(self, decided_by: str) -> str | None:
        """The reason template of a rule, or of 'default', 'fallback' or 'kill_switch'."""
        return self._templates.get(decided_by)

    def render_reason(
        self,
        decided_by: str,
        inputs: Mapping[str, Any],
        signals: Mapping[str, Any],
        value: float | None,
        params: Mapping[str, Any] | None = None,
    ) -> str | None:
        """A rule's (or 'default', 'fallback', 'kill_switch') reason rendered with ``value``.

        A guardrail can change the value after the rules ran (a bound clamps it); the reason
        is rendered again so that it names the value in force, not the rule's proposal.
        """
        template = self.reason_template(decided_by)
        if template is None:
            return None
        merged = {**self.policy.params, **params} if params else self.policy.params
        values = {"input": inputs, "signals": signals, "params": merged, "value": value}
        return render(template, values, self.flow)

    @cached_property
    def _templates(self) -> dict[str, str]:
        policy = self.policy
        out = {r.rule.name: r.rule.reason for r in self.rules}
        out["default"] = policy.default.reason
        out["fallback"] = policy.fallback.reason
        if policy.guardrails.kill_switch is not None:
            out["kill_switch"] = policy.guardrails.kill_switch.reason
        return out

    _local: threading.local = field(default_factory=threading.local, compare=False, repr=False)

    @property
    def version(self) -> str:
        return self.policy.version

    def _context(self, inputs: Mapping[str, Any], signals: Mapping[str, Any]) -> Any:
        # Building a cel.Context converts values once; every rule then runs against it. A
        # context per thread keeps concurrent decisions apart without rebuilding params.
        ctx = getattr(self._local, "ctx", None)
        if ctx is None:
            ctx = cel.Context({"params": dict(self.policy.params)})
            self._local.ctx = ctx
        ctx.add_variable("input", inputs)  # converted to CEL values, so never aliased
        ctx.add_variable("signals", signals)
        return ctx

    def evaluate(
        self,
        inputs: Mapping[str, Any],
        signals: Mapping[str, Mapping[str, Any]],
        failed: Mapping[str, str] | None = None,
        params: Mapping[str, Any] | None = None,
        reason: bool = True,
    ) -> Evaluation:
        """Run the rules in order; the first whose condition holds decides.

        ``reason=False`` leaves the reason text empty (replay needs only the outcome).

        ``failed`` maps signals that are missing (error, timeout) to the cause; a rule that
        needs one is never evaluated on a made-up value: the fallback decides instead.
        ``params`` overrides parameters (for what-if) without touching the policy.
        """
        failed = failed or {}
        merged: Mapping[str, Any]
        if params:
            merged = {**self.policy.params, **params}
            ctx = cel.Context({"params": merged, "input": dict(inputs), "signals": dict(signals)})
        else:
            merged = self.policy.params  # read-only here
            ctx = self._context(inputs, signals)
        values = {"input": inputs, "signals": signals, "params": merged}
        trace: list[str] = []
        for compiled in self.rules:
            missing = sorted(compiled.signals & failed.keys())
            if missing:
                cause = f"signal '{missing[0]}' unavailable: {failed[missing[0]]}"
                return self._outcome(
                    self.policy.fallback, self.fallback_value, "fallback", ctx, values, trace, cause
                )
            try:
                matched = compiled.when.execute(ctx)
                value = None
                if matched and compiled.value is not None:
                    value = _number(compiled.value.execute(ctx))
            except _RUNTIME_ERRORS as exc:
                # A condition that cannot be evaluated on this case (an optional input that is
                # absent, a division by zero) must not guess: the fallback decides, recorded.
                cause = f"rule '{compiled.rule.name}' could not be evaluated: {_describe(exc)}"
                return self._outcome(
                    self.policy.fallback, self.fallback_value, "fallback", ctx, values, trace, cause
                )
            trace.append(compiled.rule.name)
            if matched:
                text = ""
                if reason:
                    text = render(compiled.rule.reason, {**values, "value": value}, self.flow)
                return Evaluation(
                    action=compiled.rule.action,
                    value=value,
                    reason=text,
                    rule=compiled.rule.name,
                    review=compiled.rule.review,
                    trace=trace,
                )
        return self._outcome(
            self.policy.default, self.default_value, "default", ctx, values, trace, None, reason
        )

    def trace_details(
        self,
        evaluated: list[str],
        decided: str,
        inputs: Mapping[str, Any],
        signals: Mapping[str, Mapping[str, Any]],
    ) -> list[dict[str, Any]]:
        """Each evaluated rule with its condition and the values it compared.

        The ledger keeps only the names of the rules evaluated: the values follow from the
        recorded inputs, signals and this policy version, so they are rebuilt here.
        """
        by_name = {r.rule.name: r for r in self.rules}
        values = {"input": inputs, "signals": signals, "params": self.policy.params}
        out = []
        for name in evaluated:
            compiled = by_name.get(name)
            if compiled is None:
                continue
            out.append(
                {
                    "rule": name,
                    "when": compiled.rule.when,
                    "matched": name == decided,
                    "values": _values(compiled.variables, values),
                }
            )
        return out

    def evaluate_fallback_reason(self, inputs: Mapping[str, Any]) -> str:
        values = {"input": inputs, "signals": {}, "params": self.policy.params, "value": None}
        return render(self.policy.fallback.reason, values, self.flow)

    def _outcome(
        self,
        outcome: Outcome,
        program: Any | None,
        rule: str,
        ctx: Any,
        values: Mapping[str, Any],
        trace: list[str],
        cause: str | None,
        reason: bool = True,
    ) -> Evaluation:
        value = None
        if program is not None:
            try:
                value = _number(program.execute(ctx))
            except _RUNTIME_ERRORS:
                value = None  # a fallback's value may need the failed signal; act without it
        return Evaluation(
            action=outcome.action,
            value=value,
            reason=render(outcome.reason, {**values, "value": value}, self.flow) if reason else "",
            rule=rule,
            review=outcome.review,
            trace=trace,
            fallback_cause=cause,
        )


_RUNTIME_ERRORS = (KeyError, TypeError, ValueError, ZeroDivisionError, OverflowError, RuntimeError)


def _describe(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"no value for {exc.args[0]!r}"
    return _first_line(exc)


def _number(result: Any) -> float:
    if isinstance(result, bool) or not isinstance(result, int | float):
        raise TypeError(f"a value expression must give a number, got {result!r}")
    if not math.isfinite(result):
        raise ValueError(f"a value expression gave {result!r}, not a finite number")
    return float(result)


Ref = tuple[str, str, str | None, str, str]  # root, name, attribute, its key, the name's key


def _values(refs: tuple[Ref, ...], values: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for root, name, attr, key, base in refs:
        item = values[root].get(name)
        if attr is not None and type(item) is dict:
            out[key] = item.get(attr)
        elif attr is None or item is None:
            out[base] = item
    return out


# ---- compilation -------------------------------------------------------------------------


def probe_inputs(flow: Flow) -> dict[str, Any]:
    """A typed example input for every field, used to find type errors at load time."""
    out: dict[str, Any] = {}
    for spec in flow.fields.values():
        if spec.allowed:
            out[spec.name] = spec.allowed[0]
        elif spec.type == "number":
            lo = spec.minimum if spec.minimum is not None else 0.0
            hi = spec.maximum if spec.maximum is not None else lo + 1.0
            out[spec.name] = float((lo + hi) / 2)
        elif spec.type == "integer":
            out[spec.name] = int(spec.minimum or 0)
        elif spec.type == "boolean":
            out[spec.name] = True
        else:
            out[spec.name] = "example"
    return out


def probe_signals(flow: Flow) -> dict[str, dict[str, Any]]:
    return {name: {"score": 0.5, "confidence": 0.9, "label": "1"} for name in flow.signals}


class _Compiler:
    def __init__(self, policy: Policy, flow: Flow) -> None:
        self.policy = policy
        self.flow = flow
        self.problems = Problems(policy.source)
        self.probe = cel.Context(
            {
                "input": probe_inputs(flow),
                "signals": probe_signals(flow),
                "params": dict(policy.params),
            }
        )

    @cached_property
    def input_types(self) -> dict[str, str]:
        return {name: spec.type for name, spec in self.flow.fields.items()}

    @cached_property
    def signals(self) -> frozenset[str]:
        return frozenset(self.flow.signals)

    @property
    def params(self) -> Mapping[str, Any]:
        return self.policy.params

    def add(self, where: str, message: str, line: int | None = None) -> None:
        self.problems.add(where, message, line=line)

    def check_refs(self, source: str, where: str, line: int | None) -> None:
        for root, name, attr in sorted(references(source), key=str):
            if root == "input" and name not in self.flow.fields:
                self.add(where, f"unknown input '{name}' (flow '{self.flow.name}')", line)
            elif root == "params" and name not in self.policy.params:
                self.add(where, f"unknown parameter '{name}'", line)
            elif root == "signals":
                if name not in self.flow.signals:
                    self.add(where, f"unknown signal '{name}' (flow '{self.flow.name}')", line)
                elif attr not in SIGNAL_ATTRIBUTES:
                    attrs = ", ".join(SIGNAL_ATTRIBUTES)
                    self.add(where, f"signal '{name}' has no attribute '{attr}' ({attrs})", line)

    def compile(self, source: str, where: str, line: int | None, want: str) -> Any | None:
        try:
            program = cel.compile(source)
        except ValueError as exc:
            self.add(where, f"CEL syntax error in {source!r}: {_first_line(exc)}", line)
            return None
        unknown = sorted(set(program.variables()) - _ROOTS - _comprehension_vars(source))
        if unknown:
            self.add(where, f"unknown variable '{unknown[0]}' (use input, signals or params)", line)
            return None
        before = len(self.problems.items)
        self.check_refs(source, where, line)
        if len(self.problems.items) > before:
            return None
        allowed = {n: s.allowed for n, s in self.flow.fields.items() if s.allowed is not None}
        found = comparison_problems(source, self.input_types, self.signals, self.params, allowed)
        for problem in found:
            self.add(where, f"CEL type error in {source!r}: {problem}", line)
        if len(self.problems.items) > before:
            return None
        try:
            result = program.execute(self.probe)
        except TypeError as exc:
            self.add(where, f"CEL type error in {source!r}: {_first_line(exc)}", line)
            return None
        except (KeyError, ValueError, ZeroDivisionError, RuntimeError):
            return program  # data-dependent; the probe cannot decide it
        if want == "bool" and not isinstance(result, bool):
            self.add(where, f"'when' must be true or false, but {source!r} gives a value", line)
        if want == "number" and (isinstance(result, bool) or not isinstance(result, int | float)):
            self.add(where, f"'value' must be a number, but {source!r} gives {result!r}", line)
        return program

    def template(self, text: str, where: str, line: int | None) -> None:
        try:
            check_template(text, self.flow, self.policy.params)
        except TemplateError as exc:
            self.add(where, str(exc), line)

    def action(self, action: str, where: str, line: int | None) -> None:
        if action not in self.policy.actions:
            known = ", ".join(self.policy.actions)
            self.add(where, f"unknown action '{action}' (declared: {known})", line)

    def run(self) -> CompiledPolicy:
        rules = []
        always: str | None = None
        seen_conditions: dict[str, str] = {}
        for rule in self.policy.rules:
            where = f"rule '{rule.name}'"
            if always is not None:
                self.add(where, f"unreachable: rule '{always}' before it always matches", rule.line)
            elif rule.when.strip() in seen_conditions:
                earlier = seen_conditions[rule.when.strip()]
                self.add(where, f"unreachable: rule '{earlier}' has the same condition", rule.line)
            seen_conditions.setdefault(rule.when.strip(), rule.name)
            self.action(rule.action, where, rule.line)
            when = self.compile(rule.when, where, rule.when_line, "bool")
            value = (
                self.compile(rule.value, where, rule.value_line, "number") if rule.value else None
            )
            self.template(rule.reason, where, rule.reason_line)
            if when is None:
                continue
            if not when.variables() and when.execute({}) is True:
                always = rule.name
            refs = tuple(
                (r, n, a, f"{r}.{n}.{a}" if a else f"{r}.{n}", f"{r}.{n}")
                for r, n, a in sorted(references(rule.when), key=str)
            )
            needs = frozenset(
                n for r, n, _ in references(rule.when + " " + (rule.value or "")) if r == "signals"
            )
            rules.append(CompiledRule(rule, when, value, needs, refs))
        outcomes = []
        for label, outcome in (
            ("default", self.policy.default),
            ("fallback", self.policy.fallback),
        ):
            self.action(outcome.action, label, None)
            self.template(outcome.reason, label, None)
            outcomes.append(
                self.compile(outcome.value, label, None, "number") if outcome.value else None
            )
        self._guardrails()
        self.problems.raise_any()
        return CompiledPolicy(self.policy, self.flow, tuple(rules), outcomes[0], outcomes[1])

    def _guardrails(self) -> None:
        g = self.policy.guardrails
        for i, bound in enumerate(g.bounds):
            self.action(bound.action, f"guardrails.bounds[{i}]", None)
        for i, floor in enumerate(g.confidence):
            where = f"guardrails.min_confidence[{i}]"
            spec = self.flow.signals.get(floor.signal)
            if spec is None:
                self.add(where, f"unknown signal '{floor.signal}' (flow '{self.flow.name}')")
            elif spec.output == "score":
                self.add(where, f"signal '{floor.signal}' is a score and has no confidence")
        for window in g.windows:
            where = f"guardrail '{window.name}'"
            self.action(window.action, where, None)
            if window.per is not None and window.per not in self.flow.fields:
                self.add(where, f"'per' names unknown input '{window.per}'")
        if g.kill_switch is not None:
            self.action(g.kill_switch.action, "guardrails.kill_switch", None)


def _comprehension_vars(source: str) -> set[str]:
    # Names bound by macros such as  list.exists(x, x > 1)  are identifiers too.
    return set(re.findall(r"\.\s*(?:all|exists|exists_one|map|filter)\s*\(\s*(\w+)\s*,", source))


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__


def compile_policy(policy: Policy, flow: Flow) -> CompiledPolicy:
    """Check ``policy`` against ``flow`` and compile its expressions; raise on any problem."""
    return _Compiler(policy, flow).run()
