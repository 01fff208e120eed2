"""Business-language text: reason templates and value formatting by the flow's field formats.

A template names values in braces: ``{input.annual_income}``, ``{signals.default_risk.score}``,
``{params.max_dti}``, ``{value}``; a format may follow a colon: ``{params.max_dti:percent}``.
Without one, an input uses its field's format.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from keel.errors import KeelError
from keel.flows import FORMATS, Flow
from keel.money import DEFAULT_MONEY, Money, format_decimal, format_money, format_percent

PROTECTED_TEXT = "‹protected›"  # what stands for a personal value a reader may not see
_PLACEHOLDER = re.compile(r"\{([^{}:]+)(?::([a-z]+))?\}")


class TemplateError(KeelError):
    """A reason template cannot be parsed or names something the flow does not have
    (reported inside the policy's ``invalid_definition``)."""

    code = "invalid_template"


def format_value(value: Any, fmt: str, money: Money = DEFAULT_MONEY) -> str:
    """``value`` as readers see it: in ``fmt`` (a field format), in the flow's locale and,
    for ``currency``, its currency."""
    if value is None:
        return "unknown"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float):
        if fmt == "percent":
            return format_percent(value, money)
        if fmt == "currency":
            return format_money(value, money)
        if fmt == "integer":
            return format_decimal(value, money, digits=0)
        if fmt in ("years", "months"):
            unit = fmt[:-1] if value == 1 else fmt
            return f"{format_decimal(value, money, digits=6)} {unit}"
        return format_decimal(value, money, digits=2 if isinstance(value, float) else 0)
    return str(value)


def _lookup(parts: tuple[str, ...], values: Mapping[str, Any]) -> Any:
    current: Any = values
    for part in parts:
        if not isinstance(current, dict) or part not in current:
            return None
        current = current[part]
    return current


def _default_format(path: str, flow: Flow) -> str:
    parts = path.split(".")
    if parts[0] == "input" and len(parts) == 2 and parts[1] in flow.fields:
        return flow.fields[parts[1]].format
    if parts[0] == "signals" and parts[-1] in ("score", "confidence"):
        return "number"
    return "number"


@lru_cache(maxsize=4096)
def _parse(template: str) -> tuple[tuple[str, tuple[str, ...], str | None], ...]:
    """Split a template once into (literal text, placeholder path, format) pieces."""
    pieces = []
    last = 0
    for match in _PLACEHOLDER.finditer(template):
        path = tuple(match.group(1).strip().split("."))
        pieces.append((template[last : match.start()], path, match.group(2)))
        last = match.end()
    pieces.append((template[last:], (), None))
    return tuple(pieces)


def render(template: str, values: Mapping[str, Any], flow: Flow) -> str:
    out = []
    for literal, path, fmt in _parse(template):
        out.append(literal)
        if path:
            dotted = ".".join(path)
            value = _lookup(path, values)
            out.append(format_value(value, fmt or _default_format(dotted, flow), flow.money))
    return "".join(out)


def check_template(template: str, flow: Flow, params: Mapping[str, Any]) -> None:
    """Raise ``TemplateError`` naming the first placeholder that cannot be filled."""
    for match in _PLACEHOLDER.finditer(template):
        path, fmt = match.group(1).strip(), match.group(2)
        parts = path.split(".")
        ok = (
            (parts == ["value"])
            or (parts[0] == "input" and len(parts) == 2 and parts[1] in flow.fields)
            or (parts[0] == "params" and len(parts) == 2 and parts[1] in params)
            or (
                parts[0] == "signals"
                and len(parts) == 3
                and parts[1] in flow.signals
                and parts[2] in ("score", "confidence", "label")
            )
        )
        if not ok:
            raise TemplateError(f"reason template names unknown value '{{{path}}}'")
        if fmt is not None and fmt not in FORMATS:
            raise TemplateError(
                f"reason template format '{fmt}' is not one of {', '.join(FORMATS)}"
            )
