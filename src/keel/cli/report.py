"""``keel report``: reports on a flow, as a table, JSON or a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import ProjectOpt, _engine, _print

app = typer.Typer(help="Reports: trust metrics and fairness per flow.")

SinceOpt = Annotated[
    str | None, typer.Option(help="From (ISO 8601); default: 30 days before until.")
]
UntilOpt = Annotated[str | None, typer.Option(help="To (ISO 8601); default: now.")]


@app.command("trust")
def report_trust(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    bucket: Annotated[str, typer.Option(help="hour, day or week.")] = "day",
    min_outcomes: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="Model performance figures need this many scored outcomes per group "
            "(default: the flow's monitoring.performance.min_outcomes).",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Trust metrics of a flow per time bucket: automation, escalation, overrides,
    agreement, guardrail hits, fallbacks, outcome accuracy; and the model's performance
    from outcomes (AUC, Gini, KS, Brier score, calibration, score bands, cut-offs, outcomes
    per action in force) per model version and bucket.

    Example: keel report trust credit_limit --bucket week --html trust.html
    """
    from keel.cli._performance import show_performance  # noqa: PLC0415
    from keel.ledger.records import iso_time, report_range  # noqa: PLC0415
    from keel.monitor.report import COLUMNS, trust_html  # noqa: PLC0415

    with _engine(project) as engine:
        now = iso_time(engine.clock())
        start, end = report_range(engine.clock(), since, until)
        report = engine.trust.metrics(engine.operator, flow, start, end, bucket, min_outcomes)
    if html is not None:
        html.write_text(trust_html(report, now), encoding="utf-8")
        typer.echo(f"wrote {html}", err=True)
    if as_json:
        _print(report)
        return
    names = ["from"] + [name for _, name, _ in COLUMNS]
    rows = [names]
    for b in [*report["buckets"], {"start": "all", **report["total"]}]:
        rows.append([b["start"]] + [_cell(b[key], kind) for key, _, kind in COLUMNS])
    typer.echo(f"{flow} ({report['autonomy']}): {report['since']} to {report['until']}")
    _table(rows)
    show_performance(report["performance"], _table)


def _table(rows: list[list[str]]) -> None:
    """Rows of cells in columns: the first left-aligned, the others right-aligned."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        typer.echo(
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
        )


@app.command("fairness")
def report_fairness(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    since: SinceOpt = None,
    until: UntilOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Fairness per protected attribute and group: selection rate, adverse impact ratio
    (four-fifths rule), demographic parity, true and false positive rates from outcomes,
    calibration within groups.

    Example: keel report fairness credit_limit --html fairness.html
    """
    from keel.ledger.records import iso_time, report_range  # noqa: PLC0415
    from keel.review.fairness_html import fairness_html, fairness_lines  # noqa: PLC0415

    with _engine(project) as engine:
        now = iso_time(engine.clock())
        start, end = report_range(engine.clock(), since, until)
        report = engine.fairness.report(engine.operator, flow, start, end)
    if html is not None:
        html.write_text(fairness_html(report, now), encoding="utf-8")
        typer.echo(f"wrote {html}", err=True)
    if as_json:
        _print(report)
        return
    for line in fairness_lines(report):
        typer.echo(line)


def _cell(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    return f"{value:.1%}" if kind == "rate" else f"{value:,}"
