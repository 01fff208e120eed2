"""Decisions: decide a case, explain a recorded decision, re-evaluate it with changes."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import ProjectOpt, _engine, _fail, _print
from keel.errors import KeelError


def _read_input(text: str) -> Any:
    if text.startswith("@"):
        path = Path(text[1:])
        try:
            text = sys.stdin.read() if text == "@-" else path.read_text(encoding="utf-8")
        except OSError as exc:
            raise KeelError(f"cannot read input file {path}: {exc}") from exc
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise KeelError(f"--input is not valid JSON: {exc}") from exc


def decide(
    flow: Annotated[str, typer.Argument(help="The flow to decide.")],
    input: Annotated[
        str | None,
        typer.Option("--input", "-i", help="Inputs as JSON, or @file.json, or @- for stdin."),
    ] = None,
    subject: Annotated[str | None, typer.Option(help="Who or what the case is about.")] = None,
    file: Annotated[
        Path | None,
        typer.Option(
            "--file", "-f", help="Decide every case in a .csv or .parquet file (one per row)."
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="With --file: write one row per decision to this .csv or .parquet."),
    ] = None,
    subject_column: Annotated[
        str | None,
        typer.Option(help="With --file: the column of subject ids (default: subject_id)."),
    ] = None,
    chunk_size: Annotated[
        int,
        typer.Option(min=1, max=10_000, help="With --file: cases recorded together, all or none."),
    ] = 1000,
    skip: Annotated[
        int,
        typer.Option(min=0, help="With --file: leave the first N cases (recorded before) alone."),
    ] = 0,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="With --file: no progress bar.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Decide one case and print the decision as JSON (it is in the ledger first); or, with
    --file, decide every case of a CSV or Parquet file, recorded in chunks, and print counts.

    Every row of a file is checked before anything is recorded: a file with bad rows records
    nothing, and every bad row is named.

    Example: keel decide credit_limit --input @examples/low_risk.json --subject cust-42

    Example: keel decide credit_limit --file cases.parquet --out decisions.parquet
    """
    if (input is None) == (file is None):
        _fail(KeelError("give either --input (one case) or --file (a file of cases)"))
    if file is None:
        for name, given in (("--out", out), ("--subject-column", subject_column)):
            if given is not None:
                _fail(KeelError(f"{name} goes with --file, not --input"))
        try:
            inputs = _read_input(input or "")
        except KeelError as error:
            _fail(error)
        with _engine(project) as engine:
            _print(engine.decide(flow, inputs, subject_id=subject).to_dict())
        return
    if subject is not None:
        _fail(KeelError("--subject goes with --input; with --file use --subject-column"))
    from keel.cli.batch import decide_file  # noqa: PLC0415 - only file runs need it

    decide_file(project, flow, file, out, subject_column, chunk_size, skip, quiet)


def explain(
    decision_id: Annotated[str, typer.Argument(help="The decision's id.")],
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the full explanation as JSON.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Explain why a decision was made: rule trace, guardrails, model attributions.

    Example: keel explain dec_0193...
    """
    with _engine(project) as engine:
        result = engine.explain(decision_id)
        if as_json:
            _print(result)
            return
        for sentence in result["why"]:
            typer.echo(f"- {sentence}")
        for note in result["notes"]:
            typer.echo(f"note: {note}")


def notice(
    decision_id: Annotated[str, typer.Argument(help="The decision's id.")],
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="text or html.", case_sensitive=False)
    ] = "text",
    out: Annotated[
        Path | None, typer.Option("--out", "-o", help="Write the notice to this file.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Render the adverse-action notice of a decline or reduced offer: the action, its
    principal reasons in the applicant's words, the date and whom to contact.

    Example: keel notice dec_0193... --format html --out notice.html
    """
    with _engine(project) as engine:
        text = engine.notice(decision_id, fmt.lower())
        if out is None:
            typer.echo(text, nl=False)
            return
        try:
            out.write_text(text, encoding="utf-8")
        except OSError as exc:
            _fail(KeelError(f"cannot write the notice to {out}: {exc}"))
        typer.echo(f"Wrote the notice of {decision_id} to {out}")


def _parse_assignments(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise KeelError(f"{what} must look like name=value, got {item!r}")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def what_if(
    decision_id: Annotated[str, typer.Argument(help="The recorded decision to re-evaluate.")],
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Change an input: field=value (repeatable).")
    ] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", help="Change a policy parameter: name=value.")
    ] = None,
    counterfactual: Annotated[
        bool, typer.Option(help="Also search for the smallest change that flips the action.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Re-evaluate a recorded decision with changed inputs or parameters; nothing is recorded.

    Example: keel what-if dec_0193... --set debt_to_income=0.3 --param review_risk=0.3
    """
    try:
        changes = _parse_assignments(set_ or [], "--set")
        params = _parse_assignments(param or [], "--param")
    except KeelError as error:
        _fail(error)
    with _engine(project) as engine:
        result = engine.what_if(decision_id, changes, params)
        search = engine.counterfactuals(decision_id) if counterfactual else None
        if search is not None:
            result.update(search.to_dict())
        _print(result)
        if search is not None and search.why_none is not None:
            typer.echo(f"no counterfactual: {search.why_none.message}", err=True)
