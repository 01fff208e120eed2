"""``keel review``: the review queue, as the local operator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _print

app = typer.Typer(help="The review queue: list, claim, resolve, override, sweep.")

ActionOpt = Annotated[
    str | None, typer.Option("--action", help="With change: the action to take instead.")
]
ValueOpt = Annotated[float | None, typer.Option("--value", help="With change: its value.")]


@app.command("list")
def review_list(
    flow: Annotated[
        list[str] | None, typer.Option("--flow", help="Only these flows (repeatable).")
    ] = None,
    state: Annotated[
        str | None, typer.Option(help="open, claimed or resolved (default: all).")
    ] = None,
    limit: Annotated[
        int, typer.Option(min=1, max=10_000, help="At most this many reviews (one page).")
    ] = 100,
    after: Annotated[
        str | None,
        typer.Option(help="List the reviews after this decision's (the last page's next)."),
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every matching review, page after page.")
    ] = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print {reviews, total, next} as JSON.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """List reviews, oldest first, with their deadlines (overdue ones marked).

    Lists one page of --limit reviews and says when more exist; --all lists them all.

    Example: keel review list --flow credit_limit --state open
    """
    with _engine(project) as engine:
        page = engine.reviews.page(engine.operator, flow or None, state, limit, after)
        rows = list(page.reviews)
        while every and page.next is not None:
            page = engine.reviews.page(engine.operator, flow or None, state, limit, page.next)
            rows.extend(page.reviews)
    if as_json:
        _print({"reviews": [row.to_dict() for row in rows], "total": page.total,
                "next": page.next})  # fmt: skip
        return
    for row in rows:
        late = "  OVERDUE" if row.overdue else ""
        value = f" {row.proposed_value:g}" if row.proposed_value is not None else ""
        done = f" → {row.resolution} by {row.reviewer}" if row.resolution else ""
        typer.echo(
            f"{row.decision_id}  {row.flow:<16} {row.kind:<10} {row.state:<8} "
            f"{row.proposed_action}{value}  due {row.due_at or '-'}{late}{done}"
        )
    typer.echo(_summary(len(rows), page.total, page.next), err=True)


def _summary(shown: int, total: int, after: str | None) -> str:
    """The count under a listing, and how to see the rest when it is not all of it."""
    noun = "review" if total == 1 else "reviews"
    if after is None and shown == total:
        return f"{total} {noun}"
    more = f"; more with --after {after}, a larger --limit, or --all" if after else ""
    return f"showing {shown} of {total} {noun}{more}"


@app.command("claim")
def review_claim(
    decision_id: Annotated[str, typer.Argument(help="The decision under review.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Claim an open review, so that no one else resolves it.

    Example: keel review claim dec_0193...
    """
    with _engine(project) as engine:
        _print(engine.reviews.claim(decision_id, engine.operator).to_dict())


@app.command("resolve")
def review_resolve(
    decision_id: Annotated[str, typer.Argument(help="The decision under review.")],
    resolution: Annotated[str, typer.Argument(help="approve, reject or change.")],
    reason: ReasonOpt,
    action: ActionOpt = None,
    value: ValueOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Resolve a review; prints the review's ledger record.

    Example: keel review resolve dec_0193... change --action approve --value 4000
             -r "Income verified"
    (approve and reject take no --action or --value).
    """
    with _engine(project) as engine:
        _print(
            engine.reviews.resolve(
                decision_id, engine.operator, resolution, reason, action, value
            ).to_dict()
        )


@app.command("override")
def review_override(
    decision_id: Annotated[str, typer.Argument(help="A final decision.")],
    resolution: Annotated[str, typer.Argument(help="reject or change.")],
    reason: ReasonOpt,
    action: ActionOpt = None,
    value: ValueOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Override a final decision; prints the review's ledger record.

    Example: keel review override dec_0193... reject -r "Customer disputed the data"
    """
    with _engine(project) as engine:
        _print(
            engine.reviews.override(
                decision_id, engine.operator, resolution, reason, action, value
            ).to_dict()
        )


@app.command("sweep")
def review_sweep(project: ProjectOpt = Path(".")) -> None:
    """Record a deadline breach for each review still waiting past its deadline (once each).

    Example: keel review sweep
    """
    with _engine(project) as engine:
        breaches = engine.reviews.sweep()
    for b in breaches:
        typer.echo(f"{b.decision}  {b.flow:<16} {b.kind:<10} due {b.due_at}")
    typer.echo(f"{len(breaches)} deadline breaches recorded", err=True)
