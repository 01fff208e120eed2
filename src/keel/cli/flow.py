"""``keel flow``: the kill switch, engaged in one step and released by a second person."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _print

app = typer.Typer(help="A flow's kill switch: stop it at once, release it with a second person.")


@app.command("stop")
def flow_stop(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    reason: ReasonOpt,
    alarm: Annotated[
        str | None,
        typer.Option(help="The flow's firing alarm that prompted it (another person resolves it)."),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Stop the flow now: every case is recorded deferred with the policy's fallback action
    and nothing is acted on, on every server from its next refresh (within a second).

    Example: keel flow stop credit_limit -r "Model outage" --alarm alm_0193...
    """
    with _engine(project) as engine:
        _print(engine.holds.stop(flow, engine.operator, reason, alarm).to_dict())


@app.command("release")
def flow_release(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Release a stopped flow: by someone other than who stopped it.

    Example: keel flow release credit_limit -r "Model back, checked"
    """
    with _engine(project) as engine:
        _print(engine.holds.lift(flow, engine.operator, reason).to_dict())
