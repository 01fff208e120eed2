"""Counters for everything that must not fail silently, in a registry owned by each engine."""

from __future__ import annotations

import logging
from collections import Counter as Counter_
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

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
        self.reviews = Counter(
            "keel_reviews",
            "Reviews resolved by people (approvals, rejections, changes, overrides)",
            ["flow", "kind", "resolution"],
            registry=self.registry,
        )
        self.outcomes = Counter(
            "keel_outcomes",
            "Outcomes reported for decisions (new ones; resends are not counted)",
            ["flow", "label"],
            registry=self.registry,
        )
        self.rollbacks = Counter(
            "keel_rollout_rollbacks",
            "Canary rollouts stopped automatically for passing their bounds",
            ["flow"],
            registry=self.registry,
        )
        self.rollout_check_failures = Counter(
            "keel_rollout_check_failures",
            "Scheduled checks of canary bounds that failed (the next one tries again)",
            registry=self.registry,
        )
        self.review_breaches = Counter(
            "keel_review_breaches",
            "Reviews still waiting past their flow's deadline (counted once each)",
            ["flow", "kind"],
            registry=self.registry,
        )
        self.auth_failures = Counter(
            "keel_authentication_failures",
            "Failed authentications (every attempt, also those refused for the rate)",
            ["limited"],
            registry=self.registry,
        )
        self.oidc_groups_ignored = Counter(
            "keel_oidc_groups_ignored",
            "Items of OIDC tokens' groups claims ignored: not a string, or not a group name",
            registry=self.registry,
        )
        self.integrity_held = Gauge(
            "keel_integrity_held_flows",
            "Flows held because a stored row disagrees with the ledger (0 when all verify)",
            registry=self.registry,
        )
        self.integrity_refusals = Counter(
            "keel_integrity_refusals",
            "Acts refused because a row they read disagrees with the ledger (a review, an "
            "autonomy approval, a policy approval)",
            ["flow", "act"],
            registry=self.registry,
        )
        self.integrity_check_failures = Counter(
            "keel_integrity_check_failures",
            "Scheduled integrity checks that failed (the next one tries again)",
            registry=self.registry,
        )
        self.sweep_failures = Counter(
            "keel_review_sweep_failures",
            "Review deadline sweeps that failed (the next one tries again)",
            registry=self.registry,
        )
        self.monitor_runs = Counter(
            "keel_monitor_runs",
            "Monitor runs, by how they ended (judged, skipped for too little data, failed)",
            ["flow", "state"],
            registry=self.registry,
        )
        self.alarms = Counter(
            "keel_alarms",
            "Alarms raised",
            ["flow", "monitor", "severity"],
            registry=self.registry,
        )
        self.alarms_suppressed = Counter(
            "keel_alarm_notices_suppressed",
            "Breaches of a firing alarm not notified again (inside its cool-down)",
            ["flow", "monitor"],
            registry=self.registry,
        )
        self.governor_actions = Counter(
            "keel_governor_actions",
            "Actions the governor took on alarms (skipped ones included)",
            ["flow", "action"],
            registry=self.registry,
        )
        self.deliveries = Counter(
            "keel_deliveries",
            "Tries at delivering alarm notices and retraining requests, by how they went: "
            "delivered, failed (tried again later), dead (no more tries)",
            ["flow", "kind", "state"],
            registry=self.registry,
        )
        self.deliveries_waiting = Gauge(
            "keel_deliveries_waiting",
            "Deliveries in the outbox not delivered, by state (pending, dead), as the last "
            "dispatch in this process counted them",
            ["state"],
            registry=self.registry,
        )
        self.delivery_dispatch_failures = Counter(
            "keel_delivery_dispatch_failures",
            "Scheduled outbox dispatches that failed (the next one tries again)",
            registry=self.registry,
        )
        self.ledger_failures = Counter(
            "keel_ledger_write_failures",
            "Ledger appends that failed (decisions not returned)",
            registry=self.registry,
        )
        self.knowledge_recheck_drops = Counter(
            "keel_knowledge_recheck_drops",
            "Search hits dropped by the re-check before they left the service: the "
            "document's access list, live version or validity changed while the search ran",
            ["collection"],
            registry=self.registry,
        )
        self.knowledge_integrity_refusals = Counter(
            "keel_knowledge_integrity_refusals",
            "Knowledge collection rows refused because they disagree with their ledger entry",
            ["collection"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "keel_decide_call_seconds",
            "Time for one decide (single) or decide_many (batch) call, model calls included",
            ["flow", "kind"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        )
        self._decided: dict[tuple[str, str, str], Any] = {}
        self._latency: dict[tuple[str, str], Any] = {}

    def exposition(self) -> bytes:
        """Every metric in the Prometheus text format."""
        return bytes(generate_latest(self.registry))

    def decided(self, flow: str, outcomes: list[tuple[str, str]], seconds: float) -> None:
        """Count a call's decisions by (action, status), and the call's latency once."""
        # Label lookups and increments take locks; a batch pays them per outcome, not per case.
        for (action, status), n in Counter_(outcomes).items():
            key = (flow, action, status)
            child = self._decided.get(key)
            if child is None:
                child = self._decided[key] = self.decisions.labels(flow, action, status)
            child.inc(n)
        kind = "batch" if len(outcomes) > 1 else "single"
        hist = self._latency.get((flow, kind))
        if hist is None:
            hist = self._latency[(flow, kind)] = self.latency.labels(flow, kind)
        hist.observe(seconds)
