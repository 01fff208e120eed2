"""``keel rollout`` and ``keel replay``: candidate policy versions tried beside the active
one, live (shadow, canary) or on recorded decisions (replay)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _policy_file, _print

app = typer.Typer(help="Shadow and canary rollouts of candidate policy versions.")


@app.command("start")
def rollout_start(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    candidate: Annotated[
        str, typer.Argument(help="Shadow: a version or change; canary: an approved change.")
    ],
    reason: ReasonOpt,
    mode: Annotated[str, typer.Option(help="shadow or canary.")] = "shadow",
    share: Annotated[float, typer.Option(help="Canary: share of subjects served.")] = 0.0,
    max_guardrail_hit_rate: Annotated[float | None, typer.Option()] = None,
    max_override_rate: Annotated[float | None, typer.Option()] = None,
    min_decisions: Annotated[int | None, typer.Option()] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Run a candidate beside the active version, in shadow or as a canary.

    Example: keel rollout start credit_limit chg_0193... --mode canary --share 0.1 -r "10%"
    """
    given = {
        "max_guardrail_hit_rate": max_guardrail_hit_rate,
        "max_override_rate": max_override_rate,
        "min_decisions": min_decisions,
    }
    bounds = {k: float(v) for k, v in given.items() if v is not None}
    with _engine(project) as engine:
        started = engine.rollouts.start(
            flow, mode, candidate, engine.operator, reason, share, bounds
        )
        _print(started.to_dict())


@app.command("stop")
def rollout_stop(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Stop the flow's running rollout.

    Example: keel rollout stop credit_limit -r "Seen enough"
    """
    with _engine(project) as engine:
        _print(engine.rollouts.stop(flow, engine.operator, reason).to_dict())


@app.command("report")
def rollout_report(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    project: ProjectOpt = Path("."),
) -> None:
    """The running (or latest) rollout: agreement for a shadow, per-arm rates for a canary.

    Example: keel rollout report credit_limit
    """
    with _engine(project) as engine:
        current = engine.rollouts.current(flow, engine.operator)
        _print(engine.rollouts.report(current.id, engine.operator).to_dict())


def replay(
    flow: Annotated[str, typer.Argument(help="The flow whose decisions are replayed.")],
    since: Annotated[str, typer.Option(help="From this instant (ISO 8601), inclusive.")],
    until: Annotated[str, typer.Option(help="To this instant (ISO 8601), exclusive.")],
    candidate: Annotated[
        str | None, typer.Argument(help="A change (chg_…) or a stored version (prefix).")
    ] = None,
    file: Annotated[
        Path | None, typer.Option("--file", "-f", help="Or: a policy YAML to replay.")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, max=64, help="Processes (default: one per CPU).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole report.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Replay a candidate policy on the decisions recorded in a time range: what changes.

    Example: keel replay credit_limit chg_0193... --since 2026-10-01 --until 2026-11-01
    """
    from keel.money import format_fixed  # noqa: PLC0415
    from keel.policy.text import format_value  # noqa: PLC0415
    from keel.review.fairness_html import comparison_lines  # noqa: PLC0415
    from keel.rollout.options import replay_window  # noqa: PLC0415

    with _engine(project) as engine:
        start, end = replay_window(candidate, file is not None, since, until, "--file")
        if candidate is not None:
            chosen = candidate
        else:
            text, source = _policy_file(engine, flow, file)
            chosen = engine.changes.register(flow, text, engine.operator, source)
        report = engine.replay(flow, chosen, start, end, workers)
        spec = engine.runtime(flow).flow
    if as_json:
        _print(report)
        return
    typer.echo(
        f"{flow}: candidate {report['candidate'][:12]} on {report['decisions']:,} decisions "
        f"from {report['since']} to {report['until']} ({report['seconds']:,.1f} s)"
    )
    not_modelled = report["not_modelled"]
    if not_modelled:
        causes = ", ".join(f"{cause} {n:,}" for cause, n in not_modelled.items())
        typer.echo(
            f"not modelled: {sum(not_modelled.values()):,} decisions shaped by live traffic "
            f"({causes}), left out of the comparison"
        )
    typer.echo(f"changed: {report['changed']:,} ({report['changed_share']:.1%})")
    typer.echo("transitions (recorded → candidate):")
    for old, row in report["transitions"].items():
        cells = ", ".join(f"{new} {n:,}" for new, n in row.items())
        typer.echo(f"  {old:<12} → {cells}")

    def value(amount: float) -> str:  # in the flow's locale; in its currency if money
        if spec.value_format == "currency":
            return format_value(amount, "currency", spec.money)
        return format_fixed(amount, spec.money)

    typer.echo("sums of values (recorded → candidate):")
    for action, sums in report["sums"].items():
        typer.echo(f"  {action:<12} {value(sums['recorded']):>16} → {value(sums['candidate']):>16}")
    review = report["review"]
    typer.echo(f"waiting for review: {review['recorded']:,} → {review['candidate']:,}")
    outcomes = report["outcomes"]
    if outcomes["known"]:
        typer.echo(
            f"outcomes known: {outcomes['known']:,}; right {outcomes['recorded_right']:,} → "
            f"{outcomes['candidate_right']:,} (fixed {outcomes['fixed']:,}, "
            f"broken {outcomes['broken']:,}; value {value(outcomes['fixed_value'])} gained, "
            f"{value(outcomes['broken_value'])} lost)"
        )
    for line in comparison_lines(report["fairness"]):
        typer.echo(line)
    tradeoff = report["tradeoff"]
    if tradeoff["favourable"] is not None:
        sides = [_tradeoff_side(tradeoff[side]) for side in ("recorded", "candidate")]
        typer.echo(
            f"{tradeoff['favourable']} rate, bad rate among them "
            f"({', '.join(tradeoff['bad'])}; recorded → candidate):"
        )
        typer.echo(f"  {sides[0]}\n  → {sides[1]}")
    if report["erased"]:
        typer.echo(f"not replayed: {report['erased']:,} decisions whose inputs were erased")
    typer.echo(f"not replayed: {report['not_replayed']}", err=True)


def _tradeoff_side(side: dict[str, Any]) -> str:
    """One side of the approval-rate against bad-rate trade-off, in one line."""
    rate = "n/a" if side["approval_rate"] is None else f"{side['approval_rate']:.1%}"
    bad = "n/a" if side["bad_rate"] is None else f"{side['bad_rate']:.1%}"
    return (
        f"{rate} ({side['approved']:,}), bad {bad} of {side['with_outcome']:,} with an "
        f"outcome, {side['no_outcome']:,} without"
    )
