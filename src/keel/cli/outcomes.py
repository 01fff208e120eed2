"""``keel outcomes``: what came of decisions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, _engine, _print

app = typer.Typer(help="What came of decisions: report, import, show.")


@app.command("report")
def outcomes_report(
    decision_id: Annotated[str, typer.Argument(help="The decision it is about.")],
    label: Annotated[str, typer.Argument(help="One of the flow's outcome labels.")],
    value: Annotated[float | None, typer.Option(help="A number that goes with it.")] = None,
    observed_at: Annotated[
        str | None, typer.Option(help="When it happened (ISO 8601; default: now).")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Report what came of one decision (a resend of the same outcome changes nothing).

    Example: keel outcomes report dec_0193... defaulted --value 1850 --observed-at 2027-06-01
    """
    from keel.review.outcomes import OutcomeReport  # noqa: PLC0415

    with _engine(project) as engine:
        result = engine.outcomes.report(
            OutcomeReport(decision_id, label, value, observed_at), engine.operator, "cli"
        )
    _print(result.row.to_dict())
    typer.echo("recorded" if result.created else "already recorded: nothing changed", err=True)


@app.command("import")
def outcomes_import(
    file: Annotated[Path, typer.Argument(help="A .csv or .parquet file of outcomes.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Import outcomes from a CSV or Parquet file: all rows, or (on any problem) none.

    Example: keel outcomes import outcomes-2027-06.parquet
    """
    with _engine(project) as engine:
        result = engine.outcomes.import_file(file, engine.operator)
    typer.echo(f"{result.recorded} outcomes recorded, {result.unchanged} already recorded")


@app.command("show")
def outcomes_show(
    decision_id: Annotated[str, typer.Argument(help="The decision.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Show the outcome reported for a decision.

    Example: keel outcomes show dec_0193...
    """
    with _engine(project) as engine:
        _print(engine.outcomes.get(decision_id, engine.operator).to_dict())
