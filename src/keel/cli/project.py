"""Projects: create one, check it, run the demo in one, serve one over HTTP."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from keel.cli._common import ProjectOpt, _fail
from keel.errors import KeelError, MissingExtraError


def init(
    directory: Annotated[Path, typer.Argument(help="Folder to create the project in.")],
    name: Annotated[str | None, typer.Option(help="Project name (default: folder name).")] = None,
    example: Annotated[
        str,
        typer.Option(
            help="Which example: credit-limit (numeric features) or credit-categorical "
            "(a loan flow whose Pipeline takes categorical codes, with protected "
            "attributes, notices, fairness and performance figures)."
        ),
    ] = "credit-limit",
) -> None:
    """Create a Keel project with an example flow, policy and trained model.

    Example: keel init my-decisions

    Example: keel init --example credit-categorical loans
    """
    from keel.scaffold import init_project  # noqa: PLC0415

    try:
        path = init_project(directory, name, example=example)
    except KeelError as error:
        _fail(error)
    typer.echo(f"Created Keel project in {path}")
    if example == "credit-categorical":
        typer.echo(
            f"Next: cd {directory} && keel validate && keel decide loan_application "
            "--input @examples/approved.json"
        )
        return
    typer.echo(
        f"Next: cd {directory} && keel validate && keel decide credit_limit "
        "--input @examples/low_risk.json"
    )


def validate(
    project: ProjectOpt = Path("."),
    strict: Annotated[
        bool, typer.Option("--strict", help="Exit with status 1 when there are warnings.")
    ] = False,
) -> None:
    """Check every flow, policy and model of the project; list every problem found.

    Problems are errors (exit status 2). Warnings (a model reads a protected or sensitive
    field; a rule whose action is adverse has no notice text) are printed with their file
    and line; they fail the check only with --strict.

    Example: keel validate --project my-decisions
    """
    from keel.config import load_settings  # noqa: PLC0415
    from keel.project import load_project  # noqa: PLC0415

    try:
        loaded = load_project(load_settings(project), load_models=True)
    except KeelError as error:
        _fail(error)
    for name, runtime in loaded.flows.items():
        policy = runtime.policy.policy
        typer.echo(
            f"ok  flow {name}: owner {runtime.flow.owner.email}, autonomy {runtime.flow.autonomy}, "
            f"policy {policy.name} {policy.version[:12]} ({len(policy.rules)} rules), "
            f"signals {', '.join(runtime.models) or 'none'}"
        )
    for warning in loaded.warnings:
        typer.echo(f"warning  {warning}")
    if loaded.warnings:
        typer.echo(f"{len(loaded.warnings)} warning(s)")
        if strict:
            raise typer.Exit(1)


def demo(
    directory: Annotated[
        Path, typer.Option("--dir", help="Where to create the demo project.")
    ] = Path("demo-project"),
    count: Annotated[int, typer.Option(help="How many applicants to decide.")] = 300,
) -> None:
    """Run the credit-limit demo: train a model, decide a stream of applicants, verify the ledger.

    Example: keel demo --dir /tmp/keel-demo
    """
    from keel.demo import run_demo  # noqa: PLC0415

    try:
        ok = run_demo(directory, count, typer.echo)
    except KeelError as error:
        _fail(error)
    if not ok:
        raise typer.Exit(1)


def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    workers: Annotated[int, typer.Option(min=1, max=64, help="Worker processes.")] = 1,
    audit_sink: Annotated[
        Path | None, typer.Option(help="Also append audit events to this JSON-lines file.")
    ] = None,
    graceful_timeout: Annotated[
        int | None,
        typer.Option(
            min=1,
            help="On SIGTERM, seconds to finish accepted requests before cancelling them "
            "(default: api.graceful_timeout_s in keel.yaml, 25).",
        ),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Serve the project's HTTP API (uvicorn); every route but /healthz and /readyz needs a key.

    On SIGTERM it stops accepting connections, answers every request it accepted, closes
    idle keep-alive connections, then stops its scheduled jobs and closes the store.

    Example: keel serve --port 8080 --workers 2 --graceful-timeout 20
    """
    import os  # noqa: PLC0415

    try:
        from keel.api import serving  # noqa: PLC0415
    except ImportError:
        _fail(MissingExtraError("server", "keel serve"))
    from keel.api.server import ENV_AUDIT_SINK, ENV_PROJECT, ENV_WORKERS  # noqa: PLC0415
    from keel.config import load_settings  # noqa: PLC0415

    try:
        settings = load_settings(project)
    except KeelError as error:
        _fail(error)
    os.environ[ENV_PROJECT] = str(project.resolve())
    os.environ[ENV_WORKERS] = str(workers)
    if audit_sink is not None:
        os.environ[ENV_AUDIT_SINK] = str(audit_sink.resolve())
    status = serving.run(
        "keel.api.server:app_from_env",
        host,
        port,
        workers,
        graceful_timeout or settings.graceful_timeout_s,
        "warning",
        settings.worker_hang_s,
    )
    if status:
        raise typer.Exit(status)
