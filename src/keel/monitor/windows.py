"""Windows over a flow's ledger: what was decided in a span of time, as columns.

A window is ``[since, until)`` on the time each decision was recorded. ``tumbling`` cuts a
span into back-to-back windows of one size, aligned to multiples of that size since the
Unix epoch (so two runs cut the same windows); ``sliding`` gives windows of one size whose
ends step back from an instant.

``read_window`` turns the decisions of a window into:

- drift columns — each input field (``input.<field>``; personal fields are unsealed in
  memory, erased ones counted and left out), each signal's score (``signal.<name>``), and
  the action taken (``action``). A field the flow declares ``type: string`` or with
  ``allowed`` values is a category, whatever its values look like: integer codes such as
  ``checking: 11`` are compared as categories, not as numbers;
- behaviour counts — decisions per status, with guardrail hits, decided by a fallback,
  with a failed model, and the decide time of each (``decide_ms``).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import text

from keel.context import Context
from keel.errors import ErasedDataError, InputError
from keel.flows import Flow
from keel.ledger.records import iso_time
from keel.protect import Sealed
from keel.yamlfile import parse_window

MAX_WINDOWS = 1000


@dataclass(frozen=True)
class Window:
    since: str
    until: str

    def to_dict(self) -> dict[str, str]:
        return {"since": self.since, "until": self.until}


def duration(name: str, value: str) -> timedelta:
    """'15m', '6h', '1d', '7d' → a duration, or ``InputError`` naming the option."""
    seconds = parse_window(value)
    if seconds is None:
        raise InputError(
            f"{name} must be a duration such as 15m, 6h, 1d or 7d, got {value!r}", {"field": name}
        )
    return timedelta(seconds=seconds)


def moment(instant: str) -> datetime:
    """A ledger instant (ISO 8601, UTC) as a datetime."""
    return datetime.fromisoformat(instant.replace("Z", "+00:00"))


def _iso(instant: datetime) -> str:
    return iso_time(instant.timestamp())


def tumbling(since: str, until: str, size: timedelta) -> list[Window]:
    """Back-to-back windows of ``size`` covering ``[since, until)``, aligned to the epoch;
    the first and last are cut to the span."""
    start, end = moment(since), moment(until)
    if start >= end:
        raise InputError(
            f"the span is empty: since {since} is not before until {until}",
            {"since": since, "until": until},
        )
    step = size.total_seconds()
    edge = datetime.fromtimestamp(start.timestamp() // step * step, UTC)
    windows = []
    while edge < end:
        nxt = edge + size
        windows.append(Window(_iso(max(edge, start)), _iso(min(nxt, end))))
        edge = nxt
        if len(windows) > MAX_WINDOWS:
            raise InputError(
                f"more than {MAX_WINDOWS} windows: choose a larger size or a shorter span",
                {"since": since, "until": until},
            )
    return windows


def sliding(until: str, size: timedelta, step: timedelta, count: int) -> list[Window]:
    """``count`` windows of ``size`` ending at ``until``, ``until − step``, …, oldest first."""
    if not 1 <= count <= MAX_WINDOWS:
        raise InputError(f"count must be between 1 and {MAX_WINDOWS}", {"count": count})
    end = moment(until)
    windows = [Window(_iso(end - i * step - size), _iso(end - i * step)) for i in range(count)]
    return windows[::-1]


@dataclass
class WindowData:
    """What a flow decided in one window."""

    window: Window
    decisions: int = 0
    columns: dict[str, list[Any]] = field(default_factory=dict)
    statuses: Counter[str] = field(default_factory=Counter)
    guardrail_hits: int = 0  # decisions with at least one hit
    fallbacks: int = 0
    model_errors: int = 0  # decisions where a model failed
    overrides: int = 0
    erased: int = 0  # decisions whose personal inputs were erased: inputs left out
    decide_ms: list[float] = field(default_factory=list)
    categorical: frozenset[str] = frozenset()  # columns that are categories by declaration

    def table(self) -> dict[str, np.ndarray]:
        """The drift columns as arrays: numbers where every present value is a number."""
        out: dict[str, np.ndarray] = {}
        for name, values in self.columns.items():
            present = [v for v in values if v is not None]
            numeric = (
                name not in self.categorical
                and bool(present)
                and all(isinstance(v, int | float) and not isinstance(v, bool) for v in present)
            )
            if numeric:
                out[name] = np.array([np.nan if v is None else v for v in values], dtype=float)
            else:
                out[name] = np.array([None if v is None else str(v) for v in values], object)
        return out


_ROWS = """
SELECT d.id, l.record, p.key_id, p.nonce, p.ciphertext
FROM decisions d
JOIN ledger l ON l.seq = d.seq
LEFT JOIN protected_values p ON p.record_id = d.id
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
ORDER BY d.seq
"""
_OVERRIDES = """
SELECT count(*) FROM reviews r JOIN decisions d ON d.id = r.decision_id
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
  AND r.kind = 'override' AND r.state = 'resolved'
"""


def categorical_columns(flow: Flow) -> frozenset[str]:
    """The drift columns of ``flow``'s inputs that are categories: ``type: string`` fields
    and fields with ``allowed`` values."""
    return frozenset(
        f"input.{name}"
        for name, spec in flow.fields.items()
        if spec.type == "string" or spec.allowed is not None
    )


def category_labels(flow: Flow) -> dict[str, dict[str, str]]:
    """Per drift column, the display label of each category (as the column holds it: text)
    that the flow labels, for reports."""
    return {
        f"input.{name}": {str(value): label for value, label in spec.labels.items()}
        for name, spec in flow.fields.items()
        if spec.labels
    }


def read_window(ctx: Context, flow: str, window: Window) -> WindowData:
    """The decisions ``flow`` recorded in ``window``, as drift columns and behaviour counts."""
    spec = ctx.registry.current(flow).flow
    fields = list(spec.fields)
    signals = list(spec.signals)
    data = WindowData(window, categorical=categorical_columns(spec))
    columns: dict[str, list[Any]] = {f"input.{f}": [] for f in fields}
    columns.update({f"signal.{s}": [] for s in signals})
    columns["action"] = []
    params = {"flow": flow, **window.to_dict()}
    with ctx.db.read() as conn:
        rows = conn.execute(text(_ROWS), params)
        for decision_id, record, key_id, nonce, ciphertext in rows:
            body = json.loads(record)["body"]
            data.decisions += 1
            data.statuses[body["status"]] += 1
            data.guardrail_hits += bool(body["guardrails"]["hits"])
            data.fallbacks += bool(body.get("fallback"))
            data.model_errors += bool(body.get("failed_signals"))
            data.decide_ms.append(float(body.get("timings", {}).get("decide_ms", 0.0)))
            sealed = Sealed(decision_id, key_id, nonce, ciphertext) if key_id else None
            try:
                inputs = ctx.protector.join(decision_id, body["inputs"], sealed)
            except ErasedDataError:
                data.erased += 1
                inputs = {}
            for f in fields:
                columns[f"input.{f}"].append(inputs.get(f))
            for s in signals:
                columns[f"signal.{s}"].append(body["signals"].get(s, {}).get("score"))
            columns["action"].append(body["action"])
        data.overrides = int(conn.execute(text(_OVERRIDES), params).scalar_one())
    data.columns = columns
    return data
