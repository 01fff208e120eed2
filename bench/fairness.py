"""Fairness figures: Keel's against fairlearn's on the same rows, side by side.

    make bench-fairness    # or: .venv/bin/python bench/fairness.py [--rows 100000]

The rows are the example project's synthetic applicants (``keel.scaffold``), each with a
protected attribute drawn beside it (an age, grouped by the edges 25, 40, 60) and the
region. ``y_pred`` is whether a simple credit rule approves (debt-to-income and
utilisation), ``y_true`` whether the applicant repaid; a quarter of the outcomes are
unknown, as in a book where not every loan has matured. For each attribute both libraries
compute per group the selection rate (over every row) and the true and false positive
rates (over rows with an outcome), and per attribute the demographic parity difference and
ratio, the equal opportunity and the equalized odds differences. Printed: both sets of
figures, the largest absolute difference between them, and the time each took (best of
``--repeat``) with their ratio. fairlearn's time is mostly its own per-group bookkeeping
(pandas groupby, a list per metric argument); Keel counts with NumPy masks.
"""

from __future__ import annotations

import argparse
import platform
import time
from collections.abc import Callable
from typing import Any

import numpy as np
from fairlearn.metrics import (
    MetricFrame,
    demographic_parity_difference,
    demographic_parity_ratio,
    equal_opportunity_difference,
    equalized_odds_difference,
    false_positive_rate,
    selection_rate,
    true_positive_rate,
)

from keel.flows import FieldSpec
from keel.review.fairness import attribute_figures, group_of
from keel.scaffold import generate_applicants

AGE = FieldSpec("age", "integer", protected=True, groups=(25.0, 40.0, 60.0))


def rows(n: int, seed: int = 17) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    people = generate_applicants(n, seed)
    dti = np.array([p["debt_to_income"] for p in people])
    utilization = np.array([p["credit_utilization"] for p in people])
    ages = rng.integers(18, 80, n)
    return {
        "age": np.array([group_of(AGE, int(a)) for a in ages], dtype=object),
        "region": np.array([p["region"] for p in people], dtype=object),
        "y_pred": ((dti < 0.4) & (utilization < 0.75 + 0.002 * (ages - 40))).astype(int),
        "y_true": np.array([0 if p["defaulted"] else 1 for p in people]),
        "known": rng.random(n) < 0.75,
    }


def keel_figures(data: dict[str, np.ndarray], attribute: str) -> dict[str, Any]:
    good = np.where(data["known"], data["y_true"], np.nan)
    figures = attribute_figures(data[attribute], data["y_pred"], good)
    by = {g["group"]: g for g in figures["groups"]}
    return {
        "selection_rate": {k: g["selection_rate"] for k, g in by.items()},
        "true_positive_rate": {k: g["true_positive_rate"] for k, g in by.items()},
        "false_positive_rate": {k: g["false_positive_rate"] for k, g in by.items()},
        **{
            k: figures[k]
            for k in (
                "demographic_parity_difference",
                "demographic_parity_ratio",
                "equal_opportunity_difference",
                "equalized_odds_difference",
            )
        },
    }


def fairlearn_figures(data: dict[str, np.ndarray], attribute: str) -> dict[str, Any]:
    groups, y_pred, y_true, known = (data[k] for k in (attribute, "y_pred", "y_true", "known"))
    selection = MetricFrame(
        metrics=selection_rate, y_true=y_pred, y_pred=y_pred, sensitive_features=groups
    ).by_group
    rates = MetricFrame(
        metrics={"tpr": true_positive_rate, "fpr": false_positive_rate},
        y_true=y_true[known], y_pred=y_pred[known], sensitive_features=groups[known],
    ).by_group  # fmt: skip
    g = groups[known]
    return {
        "selection_rate": selection.to_dict(),
        "true_positive_rate": rates["tpr"].to_dict(),
        "false_positive_rate": rates["fpr"].to_dict(),
        "demographic_parity_difference": demographic_parity_difference(
            y_pred, y_pred, sensitive_features=groups
        ),
        "demographic_parity_ratio": demographic_parity_ratio(
            y_pred, y_pred, sensitive_features=groups
        ),
        "equal_opportunity_difference": equal_opportunity_difference(
            y_true[known], y_pred[known], sensitive_features=g
        ),
        "equalized_odds_difference": equalized_odds_difference(
            y_true[known], y_pred[known], sensitive_features=g
        ),
    }


def flat(figures: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in figures.items():
        if isinstance(value, dict):
            out.update({f"{key}[{g}]": float(v) for g, v in value.items()})
        else:
            out[key] = float(value)
    return out


def best_of(repeat: int, work: Callable[[], Any]) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    data = rows(args.rows)
    print(f"{args.rows:,} rows ({int(data['known'].sum()):,} with an outcome); "
          f"{platform.python_version()} on {platform.machine()}, {platform.system()}")  # fmt: skip
    worst = 0.0
    keel_s = fairlearn_s = 0.0
    for attribute in ("age", "region"):
        ours, theirs = flat(keel_figures(data, attribute)), flat(fairlearn_figures(data, attribute))
        assert set(ours) == set(theirs), (sorted(ours), sorted(theirs))
        print(f"\n{attribute}")
        print(f"  {'figure':<44} {'keel':>12} {'fairlearn':>12} {'|difference|':>13}")
        for name in ours:
            gap = abs(ours[name] - theirs[name])
            worst = max(worst, gap)
            print(f"  {name:<44} {ours[name]:>12.9f} {theirs[name]:>12.9f} {gap:>13.2e}")
        keel_s += best_of(args.repeat, lambda a=attribute: keel_figures(data, a))
        fairlearn_s += best_of(args.repeat, lambda a=attribute: fairlearn_figures(data, a))
    print(f"\nlargest absolute difference: {worst:.2e}")
    print(f"time (both attributes, best of {args.repeat}): keel {keel_s * 1000:,.1f} ms, "
          f"fairlearn {fairlearn_s * 1000:,.1f} ms; keel/fairlearn {keel_s / fairlearn_s:.4f} "
          f"(fairlearn takes {fairlearn_s / keel_s:,.0f}× as long)")  # fmt: skip


if __name__ == "__main__":
    main()
