"""``keel report``: reports on a flow, as a table, JSON or a self-contained HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import ProjectOpt, _engine, _print

app = typer.Typer(help="Reports: trust metrics and fairness per flow.")


@app.command("trust")
def report_trust(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    since: Annotated[
        str | None, typer.Option(help="From (ISO 8601); default: 30 days before until.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="To (ISO 8601); default: now.")] = None,
    bucket: Annotated[str, typer.Option(help="hour, day or week.")] = "day",
    as_json: Annotated[bool, typer.Option("--json", help="Print the figures as JSON.")] = False,
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write a self-contained HTML report.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Trust metrics of a flow per time bucket: automation, escalation, overrides,
    agreement, guardrail hits, fallbacks, outcome accuracy.

    Example: keel report trust credit_limit --bucket week --html trust.html
    """
    from keel.ledger.records import iso_time, parse_instant  # noqa: PLC0415
    from keel.monitor.report import COLUMNS, trust_html  # noqa: PLC0415

    with _engine(project) as engine:
        now = iso_time(engine.clock())
        end = parse_instant("until", until) or now
        start = parse_instant("since", since) or _days_before(end, 30)
        report = engine.trust.metrics(engine.operator, flow, start, end, bucket)
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
    widths = [max(len(r[i]) for r in rows) for i in range(len(names))]
    typer.echo(f"{flow} ({report['autonomy']}): {report['since']} to {report['until']}")
    for r in rows:
        typer.echo(
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
        )


@app.command("fairness")
def report_fairness(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    since: Annotated[
        str | None, typer.Option(help="From (ISO 8601); default: 30 days before until.")
    ] = None,
    until: Annotated[str | None, typer.Option(help="To (ISO 8601); default: now.")] = None,
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
    from keel.ledger.records import iso_time, parse_instant  # noqa: PLC0415
    from keel.review.fairness_html import fairness_html, fairness_lines  # noqa: PLC0415

    with _engine(project) as engine:
        now = iso_time(engine.clock())
        end = parse_instant("until", until) or now
        start = parse_instant("since", since) or _days_before(end, 30)
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


def _days_before(instant: str, days: int) -> str:
    from datetime import datetime, timedelta  # noqa: PLC0415

    from keel.ledger.records import iso_time  # noqa: PLC0415

    moment = datetime.fromisoformat(instant.replace("Z", "+00:00")) - timedelta(days=days)
    return iso_time(moment.timestamp())
