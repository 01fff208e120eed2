"""The model performance section of ``keel report trust``, as terminal tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

SHORT_VERSION = 12  # characters of a model version's digest shown in a table
FIGURES = (("auc", "AUC"), ("gini", "Gini"), ("ks", "KS"), ("brier", "Brier"))


def show_performance(perf: dict[str, Any], table: Callable[[list[list[str]]], None]) -> None:
    """Print the figures per model version and bucket, then the tables of the whole range,
    and why any figure of the whole range is not given."""
    typer.echo("")
    if not perf["configured"]:
        typer.echo(f"Model performance: none ({perf['reason']})")
        return
    good = ", ".join(perf["negative"]) or "none"
    typer.echo(
        f"Model performance of signal {perf['signal']} ({perf['output']}): bad = "
        f"{', '.join(perf['positive'])}; good = {good}"
    )
    rows = [["version", "from", "outcomes", "scored", "bad rate", *(n for _, n in FIGURES)]]
    for version in perf["versions"]:
        short = _short(version["version"])
        for b in [*version["buckets"], {"start": "all", **version["total"]}]:
            rows.append([short, b["start"], *_figures(b)])
    rows.append(["all", "all", *_figures(perf["total"])])
    table(rows)
    total = perf["total"]
    for key, name in FIGURES:
        reason = total["reasons"].get(key)
        if reason:
            typer.echo(f"  {name} not given: {reason}")
    if perf["unjudged_outcomes"]:
        typer.echo(f"  {perf['unjudged_outcomes']:,} outcomes with labels neither good nor bad "
                   "left out")  # fmt: skip
    if total["calibration"]:
        typer.echo("\nCalibration (all versions)")
        table([["predicted", "n", "mean predicted", "observed bad rate"]] + [
            [f"{c['low']:.1f}–{c['high']:.1f}", f"{c['n']:,}", f"{c['mean_predicted']:.3f}",
             f"{c['bad_rate']:.1%}"] for c in total["calibration"]
        ])  # fmt: skip
    if total["bands"]:
        typer.echo("\nScore bands and cut-offs (all versions): approving every case at or "
                   "below a band's highest score")  # fmt: skip
        table([["band", "scores", "n", "bad rate", "approval rate", "bad rate approved"]] + [
            [str(b["band"]), f"{b['low']:.3f}–{b['high']:.3f}", f"{b['n']:,}",
             f"{b['bad_rate']:.1%}", f"{c['approval_rate']:.1%}", f"{c['bad_rate']:.1%}"]
            for b, c in zip(total["bands"], total["cutoffs"], strict=True)
        ])  # fmt: skip
    confusion = total["confusion"]
    typer.echo("\nOutcomes per action in force")
    if confusion["actions"]:
        table([["action", "good", "bad", "bad rate"]] + [
            [a["action"], f"{a['good']:,}", f"{a['bad']:,}", f"{a['bad_rate']:.1%}"]
            for a in confusion["actions"]
        ])  # fmt: skip
    else:
        typer.echo("  none")
    if confusion["not_in_force"]:
        typer.echo(f"  {confusion['not_in_force']:,} outcomes of decisions that acted on "
                   "nothing (unresolved review, advisory, shadow, deferred) left out")  # fmt: skip


def _short(version: str) -> str:
    return version.removeprefix("sha256:")[:SHORT_VERSION]


def _figures(group: dict[str, Any]) -> list[str]:
    rate = group["bad_rate"]
    return [
        f"{group['outcomes']:,}",
        f"{group['scored']:,}",
        "-" if rate is None else f"{rate:.1%}",
        *("-" if group[key] is None else f"{group[key]:.3f}" for key, _ in FIGURES),
    ]
