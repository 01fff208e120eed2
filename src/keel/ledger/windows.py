"""Sliding-window usage of rate and exposure limits, exact to the event.

The ledger writer keeps one ``WindowState`` in memory and brings it up to date from the
``guardrail_usage`` table inside each write transaction, so a limit holds across restarts
and across processes. A limit is anything with a name, a kind, a maximum and a window
(``keel.policy.model.WindowLimit`` is one): the store does not need the policy's types.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass
from typing import NamedTuple, Protocol


class Limit(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def kind(self) -> str: ...  # "rate" counts actions; anything else sums their amounts
    @property
    def maximum(self) -> float: ...
    @property
    def window_s(self) -> int: ...


@dataclass(frozen=True)
class RateLimit:
    """A count over a sliding window that no policy states (a flow's review capacity)."""

    name: str
    maximum: float
    window_s: int
    kind: str = "rate"


class UsageRow(NamedTuple):
    """One consumption of a window limit; a tuple in the guardrail_usage table's order."""

    flow: str
    guardrail: str
    segment: str
    ts: float
    amount: float


class _Window:
    __slots__ = ("count", "events", "total")

    def __init__(self) -> None:
        self.events: deque[tuple[float, float]] = deque()
        self.count = 0
        self.total = 0.0

    def evict(self, cutoff: float) -> None:
        events = self.events
        while events and events[0][0] <= cutoff:
            _, amount = events.popleft()
            self.count -= 1
            self.total -= amount

    def add(self, ts: float, amount: float) -> None:
        self.events.append((ts, amount))
        self.count += 1
        self.total += amount


class WindowState:
    """Sliding-window usage per (flow, guardrail, segment), exact to the event."""

    def __init__(self) -> None:
        self._windows: dict[tuple[str, str, str], _Window] = {}

    def clear(self) -> None:
        self._windows.clear()

    def load(self, rows: Iterable[UsageRow]) -> None:
        for row in rows:
            self._window(row.flow, row.guardrail, row.segment).add(row.ts, row.amount)

    def _window(self, flow: str, guardrail: str, segment: str) -> _Window:
        key = (flow, guardrail, segment)
        window = self._windows.get(key)
        if window is None:
            window = self._windows[key] = _Window()
        return window

    def check(
        self,
        flow: str,
        limit: Limit,
        segment: str,
        amount: float,
        now: float,
    ) -> tuple[bool, float]:
        """Would one more action of ``amount`` stay within ``limit``? Returns (ok, used)."""
        window = self._window(flow, limit.name, segment)
        window.evict(now - limit.window_s)
        used = float(window.count) if limit.kind == "rate" else window.total
        step = 1.0 if limit.kind == "rate" else amount
        return used + step <= limit.maximum + 1e-9, used

    def consume(self, row: UsageRow) -> None:
        self._window(row.flow, row.guardrail, row.segment).add(row.ts, row.amount)
