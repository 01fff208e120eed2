"""``keel monitor``: a flow's drift and behaviour against its baseline, the runs that
recorded them, and the governor's holds."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import ProjectOpt, ReasonOpt, _engine, _print
from keel.errors import InputError

app = typer.Typer(help="Monitors: a flow's drift and behaviour against its baseline.")


@app.command("run")
def monitor_run(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    window: Annotated[
        str | None, typer.Option(help="The current window's length (default: the flow's).")
    ] = None,
    baseline: Annotated[
        str | None, typer.Option(help="The baseline's length, right before the current window.")
    ] = None,
    until: Annotated[
        str | None, typer.Option(help="End of the current window; default now.")
    ] = None,
    method: Annotated[
        list[str] | None, typer.Option(help="Only these drift methods (repeatable).")
    ] = None,
    max_change: Annotated[
        float | None, typer.Option(help="Every rate breaches when it moves by this much.")
    ] = None,
    max_ratio: Annotated[
        float | None, typer.Option(help="Latency p99 breaches at this multiple of the baseline.")
    ] = None,
    record: Annotated[
        bool,
        typer.Option(
            "--record",
            help="Record the run by the flow's monitoring section: raise or resolve alarms, "
            "and let the governor act.",
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print every figure as JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Compare a flow's last window with the baseline before it: drift of every input,
    signal score and action, and the behaviour figures (automation, escalation, override,
    guardrail-hit, fallback and model-error rates, latency p99). Thresholds come from the
    flow's monitoring section; options override them for a look that records nothing.
    Exits 1 on a breach.

    Example: keel monitor run credit_limit --window 1d --baseline 14d
    """
    from keel.ledger.records import parse_instant  # noqa: PLC0415
    from keel.monitor.windows import duration, moment  # noqa: PLC0415

    overrides = [window, baseline, method, max_change, max_ratio]
    with _engine(project) as engine:
        if record and any(o is not None for o in overrides):
            raise InputError(
                "--record judges by the flow's monitoring section: leave out --window, "
                "--baseline, --method, --max-change and --max-ratio",
                {"flow": flow},
            )
        end = parse_instant("until", until)
        end_ts = moment(end).timestamp() if end else engine.clock()
        if record:
            run = engine.monitoring.run(flow, engine.operator, end_ts)
            if run.state != "judged" or run.result is None:
                typer.echo(f"{flow}: run {run.id} {run.state}: {run.note}", err=True)
                raise typer.Exit(2)
            result = run.result
        else:
            result = engine.monitoring.look(
                flow,
                engine.operator,
                end_ts,
                duration("--window", window).total_seconds() if window else None,
                duration("--baseline", baseline).total_seconds() if baseline else None,
                max_change,
                max_ratio,
                method,
            )
        if as_json:
            typer.echo(json.dumps(result if not record else run.to_dict(), indent=2, default=str))
        else:
            _show_run(flow, result)
            if record:
                for alarm in run.alarms or []:
                    acts = ", ".join(a["action"] for a in alarm.actions) or "no action"
                    typer.echo(f"  {alarm.kind}: {alarm.id} {alarm.monitor} "
                               f"({alarm.severity}) — {acts}")  # fmt: skip
    if result["breaches"]:
        raise typer.Exit(1)


def _show_run(flow: str, result: dict[str, Any]) -> None:
    current, base = result["current"], result["baseline"]
    typer.echo(
        f"{flow}: {current['decisions']:,} decisions in [{current['since']}, "
        f"{current['until']}) against {base['decisions']:,} in [{base['since']}, "
        f"{base['until']})"
    )
    for check in result["behaviour"]:
        mark = {"breach": "BREACH", "band": "near"}.get(check["verdict"], "")
        typer.echo(
            f"  {check['figure']:<20} {_plain(check['baseline']):>10} → "
            f"{_plain(check['current']):>10}  {mark}"
        )
    performance = result.get("performance")
    if performance:
        span = performance["window"]
        typer.echo(
            f"  performance: {performance['scored']:,} scored outcomes ({performance['bad']:,} "
            f"bad) of decisions in [{span['since']}, {span['until']})"
        )
    for check in performance["checks"] if performance else []:
        mark = "BREACH" if check["verdict"] == "breach" else check["reason"] or ""
        typer.echo(
            f"  {check['figure']:<20} {_plain(check['current']):>10}   {check['bound']} "
            f"{check['limit']:g}  {mark}"
        )
    drift = result["drift"]
    if drift is not None:
        typer.echo(
            f"  drift: {len(drift['summary']['drifted'])} of {drift['summary']['columns']} "
            f"columns" + (f" ({', '.join(drift['summary']['drifted'])})"
                          if drift["summary"]["drifted"] else "")
        )  # fmt: skip
        for problem in drift["problems"]:
            typer.echo(f"  not compared: {problem}")
    for monitor, why in result.get("not_checked", {}).items():
        typer.echo(f"  {monitor}: not checked — {why}")
    fairness = result.get("fairness")
    if fairness is not None:
        typer.echo(f"  fairness: {fairness['verdict']}")
        for a in fairness["attributes"]:
            ratio = "–" if a["impact_ratio"] is None else f"{a['impact_ratio']:.3f}"
            typer.echo(
                f"    {a['label']}: impact ratio {ratio} ({a['lowest']} against "
                f"{a['highest']}), parity difference {a['parity_difference']:.1%}"
                + ("  BREACH" if a["breached"] else "")
            )


def _plain(value: float | None) -> str:
    return "–" if value is None else f"{value:.4g}"


@app.command("run-due")
def monitor_run_due(project: ProjectOpt = Path(".")) -> None:
    """Run every flow whose monitoring schedule (monitoring.every) has a period not yet
    run, and check that knowledge collections were synced within their limit — what a
    server does by itself; for a cron job where no server runs.

    Example: keel monitor run-due
    """
    with _engine(project) as engine:
        runs = engine.monitoring.run_due()
        freshness = engine.monitoring.check_freshness()
    for run in runs:
        typer.echo(f"{run.flow}: {run.id} {run.state}"
                   + (f" — breaches: {', '.join(run.breaches)}" if run.breaches else "")
                   + (f" — {run.note}" if run.note else ""))  # fmt: skip
    for alarm in freshness:
        typer.echo(f"{alarm.kind}: {alarm.id} {alarm.summary}")
    if not runs:
        typer.echo("no scheduled run was due", err=True)


@app.command("runs")
def monitor_runs(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 20,
    project: ProjectOpt = Path("."),
) -> None:
    """A flow's recent monitor runs, newest first: windows, state, breaches.

    Example: keel monitor runs credit_limit --limit 5
    """
    with _engine(project) as engine:
        runs = engine.monitoring.runs(flow, engine.operator, limit)
    for run in runs:
        said = ", ".join(run.breaches) or run.note or "no breach"
        typer.echo(f"{run.id}  {run.state:<8} {run.trigger:<10} "
                   f"[{run.current_since}, {run.current_until})  {said}")  # fmt: skip


@app.command("hold")
def monitor_hold(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    project: ProjectOpt = Path("."),
) -> None:
    """The hold on a flow (none, escalate_all or pause) and its history.

    Example: keel monitor hold credit_limit
    """
    with _engine(project) as engine:
        _print(engine.holds.show(flow, engine.operator).to_dict())


@app.command("lift")
def monitor_lift(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Lift the governor's hold on a flow; refused while an alarm that set it fires.

    Example: keel monitor lift credit_limit -r "Income feed fixed, drift resolved"
    """
    with _engine(project) as engine:
        _print(engine.holds.lift(flow, engine.operator, reason).to_dict())
