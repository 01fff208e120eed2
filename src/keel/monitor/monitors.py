"""Behaviour and drift monitors: a window of a flow against its baseline window.

Behaviour figures (each ``None`` when there is nothing to count, never 0):

- ``automation_rate`` — decisions acted on automatically (``final``) per decision;
- ``escalation_rate`` — decisions sent to review per decision;
- ``override_rate`` — resolved overrides per automatic decision;
- ``guardrail_hit_rate``, ``fallback_rate``, ``model_error_rate`` — decisions with a
  guardrail hit, decided by a fallback, with a failed model, per decision;
- ``latency_p99_ms`` — the 99th percentile of the time to decide.

Each monitor (``keel.flows.monitoring.MONITORS``) gets a verdict against the flow's checks:
``breach`` when a rate moved by at least its ``max_change`` (absolute), latency reached
``max_ratio`` times the baseline's, or at least ``min_columns`` columns drifted; ``clean``
when a rate's change is under ``clear_below`` times its limit (latency: the ratio's excess
over 1 likewise; drift: no column drifted); ``band`` in between (an alarm neither opens nor
counts towards clearing: the hysteresis); ``unjudged`` when a figure has no value. Drift
covers each input field, each signal's score (the score distribution) and the action
taken, with Keel's statistics (``keel.monitor.stats``); a column drifts by its verdict
method. Fairness (``monitoring.fairness``) judges the current window alone, per protected
attribute (``keel.review.fairness.judge_fairness``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from keel.context import Context
from keel.errors import InputError
from keel.flows.monitoring import (
    DEFAULT_CLEAR_BELOW,
    DRIFT,
    FAIRNESS,
    LATENCY,
    RATES,
    Check,
    MonitoringSpec,
)
from keel.monitor.drift_report import report_data
from keel.monitor.performance import judge_performance
from keel.monitor.profile import Profile, ProfileStore, build_profile, compare
from keel.monitor.windows import Window, WindowData, read_window
from keel.review.fairness import judge_fairness


@dataclass(frozen=True)
class Limits:
    """The figures a run judges by (default: the flow's ``monitoring`` section)."""

    checks: Mapping[str, Check]
    clear_below: float = DEFAULT_CLEAR_BELOW
    min_decisions: int = 1

    @classmethod
    def of(cls, spec: MonitoringSpec) -> Limits:
        return cls(spec.checks, spec.clear_below, spec.min_decisions)


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
        LATENCY: float(np.percentile(data.decide_ms, 99)) if data.decide_ms else None,
    }


def compare_behaviour(
    baseline: dict[str, float | None], current: dict[str, float | None], limits: Limits
) -> list[dict[str, Any]]:
    """Each watched behaviour figure against the baseline: values, change, limit, verdict."""
    out = []
    for name in (*RATES, LATENCY):
        check = limits.checks.get(name)
        if check is None:
            continue
        before, now = baseline[name], current[name]
        entry: dict[str, Any] = {"figure": name, "baseline": before, "current": now,
                                 "limit": check.limit, "severity": check.severity}  # fmt: skip
        if name == LATENCY:
            change = now / before if before and now is not None else None
            size = None if change is None else change - 1.0
            bound = check.limit - 1.0
        else:
            change = now - before if before is not None and now is not None else None
            size = None if change is None else abs(change)
            bound = check.limit
        entry["change"] = change
        entry["verdict"] = _verdict(size, bound, limits.clear_below)
        entry["breached"] = entry["verdict"] == "breach"
        out.append(entry)
    return out


def _verdict(size: float | None, bound: float, clear_below: float) -> str:
    if size is None:
        return "unjudged"
    if size >= bound:
        return "breach"
    return "clean" if size < bound * clear_below else "band"


def require_decisions(data: WindowData, label: str, flow: str, least: int = 1) -> None:
    """Refuse a window with fewer than ``least`` decisions, naming it (``detail.window``)."""
    window = data.window
    if data.decisions == 0:
        raise InputError(
            f"the {label} window [{window.since}, {window.until}) holds no decisions of "
            f"flow '{flow}'",
            {"window": label, **window.to_dict()},
        )
    if data.decisions < least:
        raise InputError(
            f"the {label} window [{window.since}, {window.until}) holds {data.decisions} "
            f"decisions of flow '{flow}', fewer than the {least} a judgement needs "
            "(monitoring.min_decisions)",
            {"window": label, **window.to_dict(), "decisions": data.decisions},
        )


def run_monitor(
    ctx: Context,
    flow: str,
    current: Window,
    baseline: Window,
    limits: Limits | None = None,
    methods: list[str] | None = None,
) -> dict[str, Any]:
    """The drift and behaviour of ``flow`` in ``current`` against ``baseline``.

    With drift not watched (``monitoring.drift: false``) the baseline is needed only for the
    rates and latency: a baseline too small to judge them leaves them ``unjudged`` and drift
    uncompared, and the result's ``not_checked`` says so, instead of refusing the run that
    performance and fairness (judged on the current window alone) still need."""
    spec = ctx.registry.current(flow).flow.monitoring
    limits = limits or Limits.of(spec)
    methods = methods if methods is not None else list(spec.methods) or None
    before = read_window(ctx, flow, baseline)
    now = read_window(ctx, flow, current)
    drift_check = limits.checks.get(DRIFT)
    judge_baseline = drift_check is not None or before.decisions >= limits.min_decisions
    if judge_baseline:
        require_decisions(before, "baseline", flow, limits.min_decisions)
    require_decisions(now, "current", flow, limits.min_decisions)
    not_checked: dict[str, str] = {}
    drift: dict[str, Any] | None
    if judge_baseline:
        drift = _drift(ctx, flow, spec.reference, before, now, methods)
        checks = compare_behaviour(behaviour(before), behaviour(now), limits)
    else:
        drift = None
        checks = compare_behaviour(dict.fromkeys(behaviour(before)), behaviour(now), limits)
        not_checked[DRIFT] = (
            f"drift is not watched (monitoring.drift: false) and the baseline window "
            f"[{baseline.since}, {baseline.until}) holds {before.decisions} decisions, fewer "
            f"than {limits.min_decisions}: the rates and latency are unjudged"
        )
    verdicts = {c["figure"]: c["verdict"] for c in checks}
    performance = judge_performance(ctx, flow, current, limits.checks)
    if performance is not None:
        verdicts.update({c["figure"]: c["verdict"] for c in performance["checks"]})
    drifted = drift["summary"]["drifted"] if drift is not None else []
    if drift_check is not None:
        verdicts[DRIFT] = (
            "breach" if len(drifted) >= drift_check.limit else "band" if drifted else "clean"
        )
    fairness = None
    if spec.fairness is not None and FAIRNESS in limits.checks:
        fairness = judge_fairness(ctx, flow, current.since, current.until, spec.fairness,
                                  limits.clear_below)  # fmt: skip
        verdicts[FAIRNESS] = fairness["verdict"]
    return {
        "flow": flow,
        "fairness": fairness,
        "baseline": {
            **baseline.to_dict(),
            "decisions": before.decisions,
            "erased": before.erased,
        },
        "current": {**current.to_dict(), "decisions": now.decisions, "erased": now.erased},
        "behaviour": checks,
        "performance": performance,
        "drift": None if drift is None
                 else {k: drift[k] for k in ("summary", "problems", "columns")},
        "drift_check": None if drift_check is None else {
            "min_columns": int(drift_check.limit), "severity": drift_check.severity,
            "drifted": drifted,
        },
        "not_checked": not_checked,
        "verdicts": verdicts,
        "breaches": [m for m, v in verdicts.items() if v == "breach"],
    }  # fmt: skip


def _drift(
    ctx: Context,
    flow: str,
    reference: str | None,
    before: WindowData,
    now: WindowData,
    methods: list[str] | None,
) -> dict[str, Any]:
    """The drift report of the current window against the baseline, or against the stored
    training-data profile ``reference`` names."""
    table = now.table()
    if reference is not None:
        profile = ProfileStore.of_project(ctx.settings.project_dir).find(reference)
        table = _as_named_in(profile, table)
    else:
        window = before.window
        profile = build_profile(before.table(), f"{flow} {window.since}..{window.until}")
    comparison = compare(profile, table, methods)
    current = now.window
    return report_data(
        profile, comparison, current_source=f"{flow} {current.since}..{current.until}",
        current_rows=now.decisions, mode="keel", methods=methods,
        generated_at=current.until, charts=False,
    )  # fmt: skip


def _as_named_in(profile: Profile, table: dict[str, Any]) -> dict[str, Any]:
    """A window's columns named as in a training-data profile: ``input.income`` is
    compared with the profile's ``income`` when the profile has no ``input.income``."""
    out = {}
    for name, values in table.items():
        plain = name.removeprefix("input.")
        renamed = plain != name and plain in profile.columns and name not in profile.columns
        out[plain if renamed else name] = values
    return out


# ---- looks: judgements that record nothing (`keel monitor run`, `keel drift report --flow`)


def look_limits(
    spec: MonitoringSpec, max_change: float | None = None, max_ratio: float | None = None
) -> Limits:
    """The flow's limits for a look that records nothing: ``max_change`` replaces every
    rate's limit and ``max_ratio`` latency's (severities stay), and one decision in each
    window is enough."""
    checks = dict(spec.checks)
    for name, check in checks.items():
        if name == LATENCY and max_ratio is not None:
            checks[name] = Check(max_ratio, check.severity)
        elif name in RATES and max_change is not None:
            checks[name] = Check(max_change, check.severity)
    return Limits(checks, spec.clear_below, min_decisions=1)


def window_tables(
    ctx: Context, flow: str, current: Window, baseline: Window
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """The drift columns (inputs, signal scores, action) of a flow's baseline and current
    windows, in that order; a window without decisions is refused by name."""
    before = read_window(ctx, flow, baseline)
    require_decisions(before, "baseline", flow)
    now = read_window(ctx, flow, current)
    require_decisions(now, "current", flow)
    return before.table(), now.table()
