"""Counters for everything that must not fail silently, in a registry owned by each engine."""

from __future__ import annotations

import logging
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram

log = logging.getLogger("keel")


class Metrics:
    """Prometheus metrics in the engine's own registry (no process-wide globals)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.decisions = Counter(
            "keel_decisions",
            "Decisions recorded",
            ["flow", "action", "status"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "keel_fallbacks",
            "Decisions that took the policy's fallback",
            ["flow", "cause"],
            registry=self.registry,
        )
        self.signal_failures = Counter(
            "keel_signal_failures",
            "Model calls that gave no signal",
            ["flow", "signal", "cause"],
            registry=self.registry,
        )
        self.guardrail_hits = Counter(
            "keel_guardrail_hits",
            "Guardrail hits",
            ["flow", "guardrail", "on_hit"],
            registry=self.registry,
        )
        self.rejected = Counter(
            "keel_rejected_requests",
            "Requests rejected before deciding",
            ["flow", "code"],
            registry=self.registry,
        )
        self.ledger_failures = Counter(
            "keel_ledger_write_failures",
            "Ledger appends that failed (decisions not returned)",
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_decision_seconds",
            "Time to decide and record, model calls included",
            ["flow"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self._decided: dict[tuple[str, str, str], Any] = {}
        self._latency: dict[str, Any] = {}

    def decided(self, flow: str, action: str, status: str, seconds: float) -> None:
        # Label lookups cost more than the increments; keep the children per combination.
        key = (flow, action, status)
        child = self._decided.get(key)
        if child is None:
            child = self._decided[key] = self.decisions.labels(flow, action, status)
        child.inc()
        hist = self._latency.get(flow)
        if hist is None:
            hist = self._latency[flow] = self.latency.labels(flow)
        hist.observe(seconds)
