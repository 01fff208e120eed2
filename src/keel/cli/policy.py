"""``keel policy``: policy versions and the changes that put them into force."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import (
    ProjectOpt,
    ReasonOpt,
    _engine,
    _fail,
    _policy_file,
    _print,
)
from keel.errors import InputError

app = typer.Typer(help="Policy versions: propose, diff, approve, activate, roll back, history.")

FileOpt = Annotated[
    Path | None,
    typer.Option("--file", "-f", help="The policy YAML (default: the flow's policy file)."),
]


@app.command("propose")
def policy_propose(
    flow: Annotated[str, typer.Argument(help="The flow whose policy changes.")],
    reason: ReasonOpt,
    file: FileOpt = None,
    model: Annotated[
        list[str] | None,
        typer.Option(help="SIGNAL=PATH: a new model file for a signal (repeatable)."),
    ] = None,
    model_only: Annotated[
        bool, typer.Option(help="Keep the active policy; propose only the --model files.")
    ] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Propose the policy in a file (and, optionally, new model files) as the flow's next
    version; prints the change.

    Example: keel policy propose credit_limit -r "Retrained" --model default_risk=models/q3.skops
    """
    models = {}
    for item in model or []:
        signal, sep, path = item.partition("=")
        if not sep or not signal or not path:
            _fail(InputError(f"--model takes SIGNAL=PATH, got {item!r}"))
        models[signal] = Path(path)
    with _engine(project) as engine:
        text, source = (None, "<active>") if model_only else _policy_file(engine, flow, file)
        change = engine.changes.propose(flow, text, engine.operator, reason, source, models)
        _print(change.to_dict())


@app.command("edit")
def policy_edit(
    change_id: Annotated[str, typer.Argument(help="The change (chg_…).")],
    reason: ReasonOpt,
    file: FileOpt = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Replace a proposed change's version with a file's policy (its approvals are void).

    Example: keel policy edit chg_0193... -f policies/credit_limit.yaml -r "Keep the cap"
    """
    with _engine(project) as engine:
        flow = engine.changes.get(change_id, engine.operator).flow
        text, _ = _policy_file(engine, flow, file)
        _print(engine.changes.edit(change_id, text, engine.operator, reason).to_dict())


@app.command("diff")
def policy_diff(
    target: Annotated[
        str, typer.Argument(help="A change (chg_…), or a flow: its active version → its file.")
    ],
    before: Annotated[str | None, typer.Option("--from", help="With a flow: this version.")] = None,
    after: Annotated[str | None, typer.Option("--to", help="With a flow: this version.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON rows.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Show what changes between two policy versions: parameters, rules, guardrails.

    Example: keel policy diff chg_0193...      keel policy diff credit_limit --from 3f9a --to 77c1
    """
    from keel.rollout.diff import render_table  # noqa: PLC0415

    with _engine(project) as engine:
        me = engine.operator
        if target.startswith("chg_"):  # what HTTP answers: the policy and its model pins
            change, differences = engine.changes.change_diff(target, me)
            flow, old, new = change.flow, change.base_version, change.version
        else:
            flow = target
            old = (
                engine.changes.resolve(flow, before, me)
                if before
                else engine.runtime(flow).policy.version
            )
            new = (
                engine.changes.resolve(flow, after, me)
                if after
                else engine.changes.file_version(flow)
            )
            differences = engine.changes.diff(flow, old, new, me)
    if as_json:
        _print({"before": old, "after": new, "differences": [d.to_dict() for d in differences]})
        return
    typer.echo(f"{flow}: {old[:12]} → {new[:12]}")
    typer.echo(render_table(differences), nl=False)


@app.command("approve")
def policy_approve(
    change_id: Annotated[str, typer.Argument(help="The change (chg_…).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Approve a change's current version (never one you proposed or edited).

    Example: keel policy approve chg_0193... -r "Replayed on Q3: 2% fewer referrals"
    """
    with _engine(project) as engine:
        _print(engine.changes.approve(change_id, engine.operator, reason).to_dict())


@app.command("activate")
def policy_activate(
    change_id: Annotated[str, typer.Argument(help="An approved change (chg_…).")],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why now (optional).")] = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Put an approved change into force (servers follow within a second).

    Example: keel policy activate chg_0193...
    """
    with _engine(project) as engine:
        _print(engine.changes.activate(change_id, engine.operator, reason).to_dict())


@app.command("rollback")
def policy_rollback(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    version: Annotated[str, typer.Argument(help="A version it used before (or a prefix).")],
    reason: ReasonOpt,
    project: ProjectOpt = Path("."),
) -> None:
    """Put back a policy version the flow used before, at once.

    Example: keel policy rollback credit_limit 3f9a1c2e -r "Referrals doubled"
    """
    with _engine(project) as engine:
        _print(engine.changes.rollback(flow, version, engine.operator, reason).to_dict())


@app.command("history")
def policy_history(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Which version ran from when (activations), the flow's open and past changes, and the
    version in force now.

    Example: keel policy history credit_limit
    """
    with _engine(project) as engine:
        activations = engine.changes.history(flow, engine.operator)
        changes = engine.changes.changes(flow, engine.operator)
        drift = engine.changes.file_drift().get(flow)
        next_step = engine.changes.file_next_step(flow, drift[1]) if drift else ""
    if as_json:
        _print(
            {
                "activations": [a.to_dict() for a in activations],
                "changes": [c.to_dict() for c in changes],
            }
        )
        return
    for a in activations:  # a development-mode activation's kind is "development"
        typer.echo(
            f"{a.activated_at}  {a.kind:<11} {a.version[:12]}  by {a.activated_by}  {a.reason}"
        )
    for c in changes:
        typer.echo(f"{c.id}  {c.state:<11} {c.version[:12]}  by {c.author}  {c.reason}")
    if activations:
        now = activations[-1]
        typer.echo(f"in force: {now.version[:12]} since {now.activated_at} ({now.kind})")
    if drift:
        typer.echo(
            f"note: the policy file holds {drift[1][:12]}, not the active {drift[0][:12]}; "
            f"next: {next_step}",
            err=True,
        )


@app.command("active")
def policy_active(
    flow: Annotated[str, typer.Argument(help="The flow.")],
    at: Annotated[str | None, typer.Option(help="An instant (ISO 8601); default: now.")] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """The policy version in force now, or at a past instant.

    Example: keel policy active credit_limit --at 2026-11-01T09:00:00Z
    """
    from keel.ledger.records import parse_instant  # noqa: PLC0415

    with _engine(project) as engine:
        _print(engine.changes.active_at(flow, engine.operator, parse_instant("at", at)).to_dict())
