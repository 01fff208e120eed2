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
        str, typer.Option("--input", "-i", help="Inputs as JSON, or @file.json, or @- for stdin.")
    ],
    subject: Annotated[str | None, typer.Option(help="Who or what the case is about.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Decide one case and print the decision as JSON (it is in the ledger first).

    Example: keel decide credit_limit --input @examples/low_risk.json --subject cust-42
    """
    try:
        inputs = _read_input(input)
    except KeelError as error:
        _fail(error)
    with _engine(project) as engine:
        _print(engine.decide(flow, inputs, subject_id=subject).to_dict())


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
