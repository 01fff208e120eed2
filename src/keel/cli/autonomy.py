"""``keel autonomy``: a flow's autonomy level, raised with evidence and approval."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _print
from keel.errors import KeelError

app = typer.Typer(help="Autonomy levels: raise with evidence and approval, lower.")


@app.command("request")
def autonomy_request(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    level: Annotated[str, typer.Argument(help="shadow, advisory, supervised or autonomous.")],
    reason: ReasonOpt,
    restore: Annotated[
        str | None,
        typer.Option(
            help="Restore the level the governor took away over this alarm (alm_…), "
            "now resolved: the resolution is the evidence."
        ),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Lower a flow's autonomy at once, or ask to raise it (checked against its evidence
    criteria, or with --restore against the resolved alarm; refused with the unmet ones).

    Example: keel autonomy request credit_limit autonomous -r "Six weeks at 97% agreement"
    """
    with _engine(project) as engine:
        try:
            asked = engine.autonomy.request(flow, level, engine.operator, reason, restore)
            _print(asked.to_dict())
        except KeelError as error:
            for line in error.detail.get("unmet", []):
                typer.echo(f"unmet: {line}", err=True)
            raise


@app.command("approve")
def autonomy_approve(
    request_id: Annotated[str, typer.Argument(help="The raise request (aut_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Approve a raise someone else requested; the evidence is checked again now.

    Example: keel autonomy approve aut_0193... -r "Evidence reviewed"
    """
    with _engine(project) as engine:
        _print(engine.autonomy.approve(request_id, engine.operator, reason).to_dict())


@app.command("show")
def autonomy_show(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    evidence: Annotated[
        str | None, typer.Option(help="Also show the evidence for raising to this level.")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """The level in force, its history and open raise requests.

    Example: keel autonomy show credit_limit --evidence autonomous
    """
    with _engine(project) as engine:
        shown = engine.autonomy.show(flow, engine.operator).to_dict()
        if evidence is not None:
            figures, unmet = engine.autonomy.evidence(flow, evidence, engine.operator)
            shown["evidence"] = {"level": evidence, "figures": figures, "unmet": unmet}
    _print(shown)
