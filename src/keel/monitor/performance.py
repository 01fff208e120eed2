"""Performance monitors: the model's AUC, Gini, KS and Brier score from reported outcomes,
judged against absolute bounds (``monitoring.limits.auc: {min: 0.7}``, ``brier: {max:
0.2}``) rather than against a baseline.

Outcomes come months after decisions, so these monitors do not read the run's current
window: they judge every decision recorded over ``monitoring.performance.over`` up to the
end of that window whose outcome was reported by then, all model versions together
(``keel.review.performance.pooled``). A figure that cannot be known (fewer than
``monitoring.performance.min_outcomes`` scored outcomes, or one class only) is
``unjudged``: it neither raises nor clears an alarm. Otherwise the verdict is ``breach``
beyond the bound and ``clean`` within it; alarms clear after ``clear_after`` clean runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from keel.context import Context
from keel.flows.monitoring import BRIER, PERFORMANCE, Check
from keel.ledger.records import iso_time
from keel.monitor.windows import Window, moment
from keel.review.performance import pooled

NAMES = {"auc": "AUC", "gini": "Gini", "ks": "KS", BRIER: "Brier score"}


def judge_performance(
    ctx: Context, flow: str, current: Window, checks: Mapping[str, Check]
) -> dict[str, Any] | None:
    """The watched performance figures of ``flow`` at the end of ``current``, each with
    its bound and verdict; ``None`` when none is watched."""
    watched = [name for name in PERFORMANCE if name in checks]
    if not watched:
        return None
    spec = ctx.registry.current(flow).flow
    end = moment(current.until).timestamp()
    period = Window(iso_time(end - spec.monitoring.performance_over_s), current.until)
    found, versions = pooled(ctx, spec, period.since, period.until, known_by=current.until)
    judged = []
    for name in watched:
        check = checks[name]
        value = found[name]
        bound = "max" if name == BRIER else "min"
        if value is None:
            verdict = "unjudged"
        elif (value > check.limit) if bound == "max" else (value < check.limit):
            verdict = "breach"
        else:
            verdict = "clean"
        judged.append({
            "figure": name, "current": value, bound: check.limit, "limit": check.limit,
            "bound": bound, "severity": check.severity, "verdict": verdict,
            "breached": verdict == "breach", "reason": found["reasons"].get(name),
        })  # fmt: skip
    return {
        "window": {**period.to_dict(), "known_by": current.until},
        "signal": spec.outcome.signal,
        "versions": versions,
        "scored": found["scored"],
        "bad": found["bad"],
        "good": found["good"],
        "checks": judged,
    }


def performance_evidence(result: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per performance monitor, the figures an alarm keeps (``run_monitor``'s result)."""
    judged = result.get("performance")
    if not judged:
        return {}
    common = {k: judged[k] for k in ("window", "signal", "versions", "scored", "bad", "good")}
    return {
        check["figure"]: {
            **common,
            **{k: check[k] for k in ("current", "limit", "bound", "severity")},
        }
        for check in judged["checks"]
    }


def performance_summary(monitor: str, evidence: Mapping[str, Any]) -> str:
    """One line for the owner: the figure, the bound it crossed, over how many outcomes."""
    word = "above the maximum" if evidence.get("bound") == "max" else "below the minimum"
    return (
        f"{NAMES.get(monitor, monitor)} {evidence['current']:.3f} "
        f"{word} {evidence['limit']:g} over {evidence.get('scored', 0):,} scored outcomes "
        f"of signal {evidence.get('signal')}"
    )
