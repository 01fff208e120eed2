"""``keel models``: the model inventory: every model version the flows used, and its card."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from keel.cli._common import ProjectOpt, _engine, _fail, _print
from keel.errors import InputError

if TYPE_CHECKING:
    from keel.models_inventory import CardRecord

app = typer.Typer(help="Model versions the flows used, and their cards: list, show, card.")

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]


def _short(version: str) -> str:
    return version.removeprefix("sha256:")[:12]


def _day(when: str | None) -> str:
    return (when or "–")[:19]


@app.command("list")
def models_list(
    flow: Annotated[str | None, typer.Option(help="Only this flow's models.")] = None,
    as_json: JsonOpt = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Every model version a flow used, from the ledger, oldest first.

    Example: keel models list --flow credit_limit
    """
    with _engine(project) as engine:
        found = engine.models.list_versions(engine.operator, flow)
    if as_json:
        _print([u.to_dict() for u in found])
        return
    for u in found:
        now = "  (runs now)" if u.current else ""
        typer.echo(
            f"{_short(u.version)}  {u.flow}/{u.signal}  {u.file or 'file unknown'}  "
            f"{u.decisions} decisions  {_day(u.first_used)} – {_day(u.last_used)}{now}"
        )
    if not found:
        typer.echo("no model versions recorded", err=True)


@app.command("show")
def models_show(
    version: Annotated[str, typer.Argument(help="A model version, or the start of its hash.")],
    as_json: JsonOpt = False,
    project: ProjectOpt = Path("."),
) -> None:
    """One model version: where and when it ran, its card, and figures from outcomes.

    Example: keel models show c093cc5e
    """
    with _engine(project) as engine:
        detail = engine.models.show(version, engine.operator)
    if as_json:
        _print(detail.to_dict())
        return
    card = detail.card
    lines = [
        f"version  {detail.version}",
        f"file     {detail.file or 'unknown'}",
        f"owner    {(card.fields.get('owner') if card else None) or 'unknown'}",
        f"card     {_card_state(detail.card_history, detail.card_on_disk)}",
    ]
    for u in detail.usages:
        now = "; runs now" if u.current else ""
        lines.append(
            f"used     {u.flow}/{u.signal}: {u.decisions} decisions "
            f"{_day(u.first_used)} – {_day(u.last_used)}; pinned {_day(u.active_from)} – "
            f"{_day(u.active_until) if u.active_until else 'now'}{now}"
        )
    for f in detail.figures:
        lines.append(
            f"figures  {f.flow}/{f.signal}: {f.with_outcomes} outcomes; accuracy "
            f"{_figure(f.accuracy, '.1%')} (n={f.judged}); AUC {_figure(f.auc)}, Gini "
            f"{_figure(f.gini)}, KS {_figure(f.ks)}, Brier {_figure(f.brier)} "
            f"(n={f.scored}, {f.bad} bad; decided {_day(f.since)} – {_day(f.until)})"
        )
        lines += [f"         {note}" for note in f.notes]
    typer.echo("\n".join(lines))


def _figure(value: float | None, spec: str = ".3f") -> str:
    return "–" if value is None else format(value, spec)


def _card_state(history: list[CardRecord], on_disk: str) -> str:
    if not history:
        return "none recorded"
    text = f"recorded {history[-1].recorded_at[:19]}, SHA-256 {history[-1].sha256[:12]}"
    if len(history) > 1:
        text += f"; changed {len(history) - 1} time(s) after it was first recorded"
    if on_disk == "changed":
        text += "; the card file now differs from the one recorded"
    return text


@app.command("card")
def models_card(
    version: Annotated[str, typer.Argument(help="A model version, or the start of its hash.")],
    fmt: Annotated[str, typer.Option("--format", help="md (Markdown) or html.")] = "md",
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the card to this file.", dir_okay=False)
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """A model card as Markdown or as one self-contained HTML page.

    Example: keel models card c093cc5e --format html --out model-card.html
    """
    from keel.models_report import render_card  # noqa: PLC0415

    with _engine(project) as engine:
        text = render_card(engine.models.show(version, engine.operator), fmt)
    if out is None:
        typer.echo(text, nl=False)
        return
    try:
        out.write_text(text, encoding="utf-8")
    except OSError as exc:
        _fail(InputError(f"cannot write {out}: {exc.strerror}", {"path": str(out)}))
    typer.echo(f"wrote {out}", err=True)
