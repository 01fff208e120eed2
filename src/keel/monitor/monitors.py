"""Behaviour and drift monitors: a window of a flow against its baseline window.

Behaviour figures (each ``None`` when there is nothing to count, never 0):

- ``automation_rate`` — decisions acted on automatically (``final``) per decision;
- ``escalation_rate`` — decisions sent to review per decision;
- ``override_rate`` — resolved overrides per automatic decision;
- ``guardrail_hit_rate``, ``fallback_rate``, ``model_error_rate`` — decisions with a
  guardrail hit, decided by a fallback, with a failed model, per decision;
- ``latency_p99_ms`` — the 99th percentile of the time to decide.

A rate breaches its limit when it moved by at least ``max_change`` (absolute) from the
baseline; latency when it is at least ``max_ratio`` times the baseline's. Drift covers each
input field, each signal's score (the score distribution) and the action taken, with
Keel's statistics (``keel.monitor.stats``); a column drifts by its verdict method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from keel.errors import InputError
from keel.monitor.drift_report import report_data
from keel.monitor.profile import build_profile, compare
from keel.monitor.windows import Window, WindowData, read_window

if TYPE_CHECKING:
    from keel.engine import Engine

RATES = (
    "automation_rate",
    "escalation_rate",
    "override_rate",
    "guardrail_hit_rate",
    "fallback_rate",
    "model_error_rate",
)


@dataclass(frozen=True)
class Limits:
    """When a behaviour figure breaches: rates by absolute change, latency by ratio."""

    max_change: float = 0.1
    max_ratio: float = 1.5


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def behaviour(data: WindowData) -> dict[str, float | None]:
    """The behaviour figures of one window."""
    final = data.statuses.get("final", 0)
    return {
        "decisions": float(data.decisions),
        "automation_rate": _rate(final, data.decisions),
        "escalation_rate": _rate(data.statuses.get("pending_review", 0), data.decisions),
        "override_rate": _rate(data.overrides, final),
        "guardrail_hit_rate": _rate(data.guardrail_hits, data.decisions),
        "fallback_rate": _rate(data.fallbacks, data.decisions),
        "model_error_rate": _rate(data.model_errors, data.decisions),
        "latency_p99_ms": float(np.percentile(data.decide_ms, 99)) if data.decide_ms else None,
    }


def compare_behaviour(
    baseline: dict[str, float | None], current: dict[str, float | None], limits: Limits
) -> list[dict[str, Any]]:
    """Each behaviour figure against the baseline: values, change, limit, breach."""
    out = []
    for name in (*RATES, "latency_p99_ms"):
        before, now = baseline[name], current[name]
        entry: dict[str, Any] = {"figure": name, "baseline": before, "current": now}
        if before is None or now is None:
            entry.update(change=None, limit=None, breached=None)
        elif name == "latency_p99_ms":
            ratio = now / before if before else None
            entry.update(change=ratio, limit=limits.max_ratio,
                         breached=ratio is not None and ratio >= limits.max_ratio)  # fmt: skip
        else:
            entry.update(change=now - before, limit=limits.max_change,
                         breached=abs(now - before) >= limits.max_change)  # fmt: skip
        out.append(entry)
    return out


def run_monitor(
    engine: Engine,
    flow: str,
    current: Window,
    baseline: Window,
    limits: Limits | None = None,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    """The drift and behaviour of ``flow`` in ``current`` against ``baseline``."""
    limits = limits or Limits()
    before = read_window(engine, flow, baseline)
    now = read_window(engine, flow, current)
    for label, data in (("baseline", before), ("current", now)):
        if data.decisions == 0:
            raise InputError(
                f"the {label} window [{data.window.since}, {data.window.until}) holds no "
                f"decisions of flow '{flow}'",
                {"window": label, **data.window.to_dict()},
            )
    profile = build_profile(before.table(), f"{flow} {baseline.since}..{baseline.until}")
    comparison = compare(profile, now.table(), methods)
    drift = report_data(
        profile, comparison, current_source=f"{flow} {current.since}..{current.until}",
        current_rows=now.decisions, mode="keel", methods=methods,
        generated_at=current.until, charts=False,
    )  # fmt: skip
    checks = compare_behaviour(behaviour(before), behaviour(now), limits)
    return {
        "flow": flow,
        "baseline": {
            **baseline.to_dict(),
            "decisions": before.decisions,
            "erased": before.erased,
        },
        "current": {**current.to_dict(), "decisions": now.decisions, "erased": now.erased},
        "behaviour": checks,
        "drift": {k: drift[k] for k in ("summary", "problems", "columns")},
        "breaches": [c["figure"] for c in checks if c["breached"]]
        + [f"drift:{c}" for c in drift["summary"]["drifted"]],
    }
