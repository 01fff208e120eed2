"""``keel alarms``: alarms raised by monitor runs."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _print

app = typer.Typer(help="Alarms from monitors: list, show, resolve.")


@app.command("list")
def alarms_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow's alarms.")] = None,
    state: Annotated[str | None, typer.Option(help="firing or resolved.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    project: ProjectOpt = Path("."),
) -> None:
    """Alarms, newest first.

    Example: keel alarms list --flow credit_limit --state firing
    """
    with _engine(project) as engine:
        found = engine.monitoring.alarms(engine.operator, flow, state, limit)
    for a in found:
        typer.echo(f"{a.id}  {a.state:<8} {a.severity:<8} {a.flow}/{a.monitor}"
                   f"  since {a.opened_at}  {a.summary}")  # fmt: skip
    if not found:
        typer.echo("no alarms", err=True)


@app.command("show")
def alarms_show(
    alarm_id: Annotated[str, typer.Argument(help="The alarm (alm_…).")],
    project: ProjectOpt = Path("."),
) -> None:
    """One alarm with its evidence and what the governor did about it.

    Example: keel alarms show alm_0193...
    """
    with _engine(project) as engine:
        _print(engine.monitoring.alarm(alarm_id, engine.operator).to_dict())


@app.command("resolve")
def alarms_resolve(
    alarm_id: Annotated[str, typer.Argument(help="The alarm (alm_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Resolve a firing alarm by hand; holds and autonomy stay as the governor left them.

    Example: keel alarms resolve alm_0193... -r "New price list explains the shift"
    """
    with _engine(project) as engine:
        _print(engine.monitoring.resolve(alarm_id, engine.operator, reason).to_dict())
