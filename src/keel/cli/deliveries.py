"""``keel deliveries``: the outbox of alarm notices and retraining requests."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _print

app = typer.Typer(help="Webhook deliveries (alarm notices, retraining requests): list, retry.")


@app.command("list")
def deliveries_list(
    state: Annotated[str | None, typer.Option(help="pending, delivered or dead.")] = None,
    flow: Annotated[str | None, typer.Option(help="Only this flow's deliveries.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 100,
    project: ProjectOpt = Path("."),
) -> None:
    """Deliveries, newest first: state, tries, the last error, and when the next try is due.

    Example: keel deliveries list --state dead --flow credit_limit
    """
    with _engine(project) as engine:
        found = engine.deliveries.find(engine.operator, state, flow, limit)
    for d in found:
        when = (f"next try {d.next_attempt_at}" if d.state == "pending"
                else f"at {d.delivered_at}" if d.state == "delivered" else "")  # fmt: skip
        error = f"  last error: {d.last_error}" if d.last_error and d.state != "delivered" else ""
        typer.echo(f"{d.id}  {d.state:<9} {d.flow}  {d.kind} → {d.target}  "
                   f"tries {d.attempts}  {when}{error}")  # fmt: skip
    if not found:
        typer.echo("no deliveries", err=True)


@app.command("show")
def deliveries_show(
    delivery_id: Annotated[str, typer.Argument(help="The delivery (dlv_…).")],
    project: ProjectOpt = Path("."),
) -> None:
    """One delivery with what it sends.

    Example: keel deliveries show dlv_0193...
    """
    with _engine(project) as engine:
        _print(engine.deliveries.show(delivery_id, engine.operator).to_dict())


@app.command("retry")
def deliveries_retry(
    delivery_id: Annotated[str, typer.Argument(help="The dead delivery (dlv_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Send a dead delivery again (recorded in the ledger); it is tried once at once, then
    on the outbox's schedule like a new one.

    Example: keel deliveries retry dlv_0193... -r "Receiver's certificate renewed"
    """
    with _engine(project) as engine:
        _print(engine.deliveries.retry(delivery_id, engine.operator, reason).to_dict(False))


@app.command("dispatch")
def deliveries_dispatch(project: ProjectOpt = Path(".")) -> None:
    """Try every delivery that is due — what a server does by itself every
    deliveries.check_s; for a cron job where no server runs. Exits 1 if any failed.

    Example: keel deliveries dispatch
    """
    with _engine(project) as engine:
        tried = engine.deliveries.dispatch_due()
    for d in tried:
        typer.echo(f"{d.id}  {d.state:<9} {d.flow}  {d.kind} → {d.target}"
                   + (f"  {d.last_error}" if d.state != "delivered" else ""))  # fmt: skip
    if not tried:
        typer.echo("no delivery was due", err=True)
    if any(d.state != "delivered" for d in tried):
        raise typer.Exit(1)
