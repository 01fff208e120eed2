"""A static type check of CEL expressions against the flow's declared input types.

The typed probe in ``compiler.py`` catches operators with no overload (``"a" - 1``), but
CEL's equality is heterogeneous: ``input.checking == "A11"`` on an integer field is simply
false for every case, and ``in`` over a list of strings never holds for an integer. A rule
written that way validates and then silently never matches. This module parses the
expression and infers the type of every operand from the flow's schema, the signals'
attributes and the policy's parameters, and reports each comparison (``==``, ``!=``,
``<``, ``<=``, ``>``, ``>=``, ``in``) between values of different kinds. A field with
``allowed`` values compared by ``==``, ``!=`` or ``in`` with a literal outside them
(``input.checking == "a11"`` when the codes are ``A11``…``A14``) is reported too: the
comparison can never hold for a valid case.

Types it cannot know (a map's values, a function it does not model) are ``dyn`` and never
reported, so a problem it names is always real. Numbers (integer, unsigned, double)
compare with each other; ``null`` compares with anything under ``==`` and ``!=``.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

DYN = "dyn"
_NUMBERS = frozenset({"int", "uint", "double"})
_FIELD_TYPES = {"number": "double", "integer": "int", "string": "string", "boolean": "bool"}
_SIGNAL_TYPES = {"score": "double", "confidence": "double", "label": "string"}
_NAMES = {
    "int": "an integer",
    "uint": "an unsigned integer",
    "double": "a number",
    "string": "a string",
    "bool": "a boolean",
    "bytes": "bytes",
    "null": "null",
    "map": "a map",
}
_RESULTS = {
    "size": "int",
    "int": "int",
    "uint": "uint",
    "double": "double",
    "string": "string",
    "bool": "bool",
    "bytes": "bytes",
    "contains": "bool",
    "startsWith": "bool",
    "endsWith": "bool",
    "matches": "bool",
    "has": "bool",
    "all": "bool",
    "exists": "bool",
    "exists_one": "bool",
    "map": "list:dyn",
    "filter": "list:dyn",
}
_MACROS = frozenset({"all", "exists", "exists_one", "map", "filter"})
_TOKEN_RE = re.compile(
    r"""
    (?P<space>\s+|//[^\n]*)
  | (?P<string>(?:[rR][bB]?|[bB][rR]?)?
        (?:'''.*?'''|\"\"\".*?\"\"\"|'(?:\\.|[^'\\\n])*'|"(?:\\.|[^"\\\n])*"))
  | (?P<number>0[xX][0-9a-fA-F]+[uU]?|(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?[uU]?)
  | (?P<ident>[A-Za-z_]\w*)
  | (?P<op>\|\||&&|==|!=|<=|>=|[<>+\-*/%!?:.,()\[\]{}])
    """,
    re.S | re.X,
)
_RELATIONS = frozenset({"==", "!=", "<", "<=", ">", ">=", "in"})


class _Unsupported(Exception):
    """Syntax this checker does not model: it then reports nothing (the probe still runs)."""


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    start: int
    end: int


@dataclass(frozen=True)
class _Typed:
    type: str
    start: int
    end: int
    field: str | None = None  # the input field an ``input.x`` operand reads
    values: tuple[Any, ...] | None = None  # a literal's value, or a literal list's items


def _tokens(source: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(source):
        match = _TOKEN_RE.match(source, pos)
        if match is None or match.lastgroup is None:
            raise _Unsupported(source[pos:])
        if match.lastgroup != "space":
            out.append(_Token(match.lastgroup, match.group(), pos, match.end()))
        pos = match.end()
    out.append(_Token("end", "", pos, pos))
    return out


def _literal_type(token: _Token) -> str:
    if token.kind == "string":
        prefix = token.text[: min(token.text.find(q) for q in "'\"" if q in token.text)]
        return "bytes" if "b" in prefix.lower() else "string"
    text = token.text.lower()
    if text.endswith("u"):
        return "uint"
    if not text.startswith("0x") and ("." in text or "e" in text):
        return "double"
    return "int"


def _literal_value(token: _Token) -> tuple[Any, ...] | None:
    """The value of a plain string or decimal number literal; None for any other form
    (raw, bytes, hexadecimal, unsigned), which the allowed-value check then leaves alone."""
    text = token.text
    if token.kind == "string":
        if text[0] not in "'\"" or text.startswith(("'''", '"""')):
            return None
        try:
            return (ast.literal_eval(text),)
        except (ValueError, SyntaxError):
            return None
    if re.fullmatch(r"\d+", text):
        return (int(text),)
    if re.fullmatch(r"(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?", text):
        return (float(text),)
    return None


def value_type(value: Any) -> str:
    """The CEL type of a parameter's value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "double"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "map"
    if isinstance(value, list | tuple):
        kinds = {value_type(v) for v in value}
        return "list:" + (kinds.pop() if len(kinds) == 1 else DYN)
    return DYN


def _kind(type_: str) -> str:
    if type_ in _NUMBERS:
        return "number"
    return "list" if type_.startswith("list:") else type_


def _name(type_: str) -> str:
    if type_.startswith("list:"):
        return "a list"
    return _NAMES.get(type_, type_)


def _plural(type_: str) -> str:
    name = _name(type_)
    return name if name in ("bytes", "null") else name.split(" ", 1)[1] + "s"


def _element(type_: str) -> str:
    return type_[len("list:") :] if type_.startswith("list:") else DYN


class _Checker:
    def __init__(
        self,
        source: str,
        inputs: Mapping[str, str],
        signals: frozenset[str],
        params: Mapping[str, Any],
        allowed: Mapping[str, tuple[Any, ...]],
    ) -> None:
        self.source = source
        self.allowed = allowed
        self.tokens = _tokens(source)
        self.pos = 0
        self.inputs = inputs
        self.signals = signals
        self.params = params
        self.bound: list[dict[str, str]] = []
        self.problems: list[str] = []

    # -- tokens
    @property
    def token(self) -> _Token:
        return self.tokens[self.pos]

    def take(self, text: str | None = None) -> _Token:
        token = self.token
        if text is not None and token.text != text:
            raise _Unsupported(f"expected {text!r} at {token.start}")
        self.pos += 1
        return token

    def at(self, *texts: str) -> bool:
        return self.token.kind in ("op", "ident") and self.token.text in texts

    def text(self, node: _Typed) -> str:
        return self.source[node.start : node.end].strip()

    # -- grammar (CEL's precedence, lowest first)
    def expr(self) -> _Typed:
        cond = self.binary(0)
        if not self.at("?"):
            return cond
        self.take("?")
        yes = self.binary(0)
        self.take(":")
        no = self.expr()
        same = yes.type if yes.type == no.type else DYN
        return _Typed(same, cond.start, no.end)

    _LEVELS: tuple[frozenset[str], ...] = (
        frozenset({"||"}),
        frozenset({"&&"}),
        _RELATIONS,
        frozenset({"+", "-"}),
        frozenset({"*", "/", "%"}),
    )

    def binary(self, level: int) -> _Typed:
        if level == len(self._LEVELS):
            return self.unary()
        left = self.binary(level + 1)
        while self.token.kind in ("op", "ident") and self.token.text in self._LEVELS[level]:
            op = self.take().text
            right = self.binary(level + 1)
            left = _Typed(self.combine(op, left, right), left.start, right.end)
        return left

    def combine(self, op: str, left: _Typed, right: _Typed) -> str:
        if op in ("||", "&&"):
            return "bool"
        if op in _RELATIONS:
            self.compare(op, left, right)
            return "bool"
        if left.type == right.type and (left.type in _NUMBERS or op == "+"):
            return left.type
        return DYN

    def compare(self, op: str, left: _Typed, right: _Typed) -> None:
        other = _element(right.type) if op == "in" else right.type
        if op == "in" and _kind(right.type) == "map":
            return  # the keys' type is not tracked
        a, b = _kind(left.type), _kind(other)
        if a == b and a != DYN:
            self.check_allowed(op, left, right)
        if DYN in (a, b) or a == b:
            return
        if "null" in (a, b) and op in ("==", "!=", "in"):
            return
        if op == "in":
            self.problems.append(
                f"'{self.text(left)}' is {_name(left.type)} but the list "
                f"'{self.text(right)}' holds {_plural(other)}: 'in' is never true"
            )
        elif op in ("==", "!="):
            always = "false" if op == "==" else "true"
            self.problems.append(
                f"'{self.text(left)} {op} {self.text(right)}' compares {_name(left.type)} "
                f"with {_name(other)}: it is always {always}"
            )
        else:
            self.problems.append(
                f"'{self.text(left)} {op} {self.text(right)}' compares {_name(left.type)} "
                f"with {_name(other)}"
            )

    def check_allowed(self, op: str, left: _Typed, right: _Typed) -> None:
        """A field with allowed values against a literal outside them: never (or, for
        ``!=``, always) true for a case that passed input validation."""
        if op not in ("==", "!=", "in"):
            return
        field, literal = left, right
        if op != "in" and left.field is None:
            field, literal = right, left
        if field.field is None or literal.values is None or field.field not in self.allowed:
            return
        allowed = self.allowed[field.field]
        outside = [v for v in literal.values if v not in allowed]
        if not outside:
            return
        shown = ", ".join(repr(v) for v in outside)
        known = ", ".join(str(v) for v in allowed)
        what = f"{shown} {'is' if len(outside) == 1 else 'are'} not"
        if op == "in":
            effect = (
                "it never matches"
                if len(outside) == len(literal.values)
                else ("it never matches on that value")
            )
        else:
            effect = f"it is always {'false' if op == '==' else 'true'}"
        self.problems.append(
            f"'{self.text(left)} {op} {self.text(right)}': {what} among the allowed values "
            f"of {field.field} ({known}): {effect}"
        )

    def unary(self) -> _Typed:
        if self.at("!", "-"):
            op = self.take()
            inner = self.unary()
            return _Typed("bool" if op.text == "!" else inner.type, op.start, inner.end)
        return self.member()

    def member(self) -> _Typed:
        node = self.primary()
        while True:
            if self.at("."):
                self.take(".")
                name = self.take()
                if name.kind != "ident":
                    raise _Unsupported(name.text)
                if self.at("("):
                    node = self.call(name.text, node, node.start)
                else:
                    read = name.text if node.type == "root:input" else None
                    node = _Typed(self.field(node.type, name.text), node.start, name.end, read)
            elif self.at("["):
                self.take("[")
                self.expr()
                end = self.take("]")
                node = _Typed(_element(node.type), node.start, end.end)
            elif self.at("{"):
                raise _Unsupported("message construction")
            else:
                return node

    def field(self, owner: str, name: str) -> str:
        if owner == "root:input":
            return self.inputs.get(name, DYN)
        if owner == "root:signals":
            return "signal" if name in self.signals else DYN
        if owner == "signal":
            return _SIGNAL_TYPES.get(name, DYN)
        if owner == "root:params":
            return value_type(self.params[name]) if name in self.params else DYN
        return DYN

    def call(self, name: str, target: _Typed | None, start: int) -> _Typed:
        self.take("(")
        if name in _MACROS and target is not None and self.token.kind == "ident":
            var = self.take().text
            self.take(",")
            self.bound.append({var: _element(target.type)})
            try:
                self.arguments()
            finally:
                self.bound.pop()
        else:
            self.arguments()
        end = self.take(")")
        result = _RESULTS.get(name, DYN)
        if name == "filter" and target is not None:
            result = target.type
        return _Typed(result, start, end.end)

    def arguments(self) -> None:
        while not self.at(")"):
            self.expr()
            if not self.at(")"):
                self.take(",")

    def primary(self) -> _Typed:
        token = self.token
        if token.kind in ("string", "number"):
            self.take()
            return _Typed(_literal_type(token), token.start, token.end, None, _literal_value(token))
        if token.kind == "ident":
            self.take()
            if token.text in ("true", "false"):
                return _Typed("bool", token.start, token.end)
            if token.text == "null":
                return _Typed("null", token.start, token.end)
            if self.at("("):
                return self.call(token.text, None, token.start)
            return _Typed(self.variable(token.text), token.start, token.end)
        if self.at("("):
            self.take("(")
            inner = self.expr()
            end = self.take(")")
            return _Typed(inner.type, token.start, end.end)
        if self.at("["):
            self.take("[")
            kinds = set()
            items: list[Any] | None = []
            while not self.at("]"):
                item = self.expr()
                kinds.add(item.type)
                items = items + list(item.values) if items is not None and item.values else None
                if not self.at("]"):
                    self.take(",")
            end = self.take("]")
            element = kinds.pop() if len(kinds) == 1 else DYN
            values = tuple(items) if items else None
            return _Typed("list:" + element, token.start, end.end, None, values)
        if self.at("{"):
            self.take("{")
            while not self.at("}"):
                self.expr()
                self.take(":")
                self.expr()
                if not self.at("}"):
                    self.take(",")
            end = self.take("}")
            return _Typed("map", token.start, end.end)
        raise _Unsupported(token.text)

    def variable(self, name: str) -> str:
        for scope in reversed(self.bound):
            if name in scope:
                return scope[name]
        if name in ("input", "signals", "params"):
            return "root:" + name
        return DYN


def comparison_problems(
    source: str,
    inputs: Mapping[str, str],
    signals: frozenset[str],
    params: Mapping[str, Any],
    allowed: Mapping[str, tuple[Any, ...]] | None = None,
) -> list[str]:
    """Each comparison in ``source`` between values of different types, or of a field with
    ``allowed`` values with a literal outside them, described.

    ``inputs`` maps each input field to its flow type (number, integer, string, boolean);
    ``allowed``, the fields that declare allowed values to them.
    An expression this checker cannot parse gives no problem: CEL's own compiler has
    already accepted it, and the typed probe still runs.
    """
    typed = {name: _FIELD_TYPES.get(kind, DYN) for name, kind in inputs.items()}
    try:
        checker = _Checker(source, typed, signals, params, allowed or {})
        checker.expr()
        if checker.token.kind != "end":
            return []
    except _Unsupported:
        return []
    return checker.problems
