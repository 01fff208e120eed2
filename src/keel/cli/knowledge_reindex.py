"""``keel knowledge reindex`` and ``keel knowledge reindex-status``: move a collection to
another embedding space, acting as the local operator.

The re-index runs in a thread of this process (``keel.knowledge.reindex``), so the command
waits for it, with a progress bar on a terminal. Interrupted, it leaves the collection
served from its old space; the same command resumes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from keel.cli._common import ProjectOpt, _engine, _fail, _print
from keel.cli.knowledge import app
from keel.errors import InputError

WAIT_S = 0.5  # how often the progress bar is brought up to date


def _embedder(text: str) -> dict[str, Any]:
    try:
        spec = json.loads(text)
    except ValueError as error:
        _fail(InputError(f"--embedder is not JSON: {error}", {"embedder": text[:200]}))
    if not isinstance(spec, dict):
        _fail(InputError('--embedder must be a JSON object, like {"kind": "onnx-int8"}'))
    return spec


@app.command("reindex")
def knowledge_reindex(
    name: Annotated[str, typer.Argument(help="The collection.")],
    embedder: Annotated[
        str,
        typer.Option(help='The new embedder, as JSON: {"kind": "onnx-int8", "max_tokens": 128}.'),
    ],
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why, in words.")] = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Move a collection to the embedding space of another embedder (manage_collection).
    Searches go on in the old space until the new one holds every version; then the
    collection switches in one transaction. Waits for the end and prints the status as
    JSON; exits 1 if the re-index failed. Run it again to resume an interrupted one.

    Example: keel knowledge reindex handbook --embedder '{"kind": "onnx-int8", "max_tokens": 128}'
    """
    from keel.cli.knowledge import _progress  # noqa: PLC0415

    spec = _embedder(embedder)
    with _engine(project) as engine:
        knowledge = engine.knowledge
        status = knowledge.reindex(engine.operator, name, spec, reason=reason)
        with _progress() as show:
            while status.state == "running":
                show(status.done, status.total)
                status = knowledge.reindex_wait(engine.operator, name, timeout=WAIT_S)
        _print(status.to_dict())
    if status.state != "completed":
        raise typer.Exit(1)


@app.command("reindex-status")
def knowledge_reindex_status(
    name: Annotated[str, typer.Argument(help="The collection.")],
    project: ProjectOpt = Path("."),
) -> None:
    """Where the collection's latest re-index stands, as JSON: none, running, completed,
    failed or interrupted (started, never finished: run keel knowledge reindex again).

    Example: keel knowledge reindex-status handbook
    """
    with _engine(project) as engine:
        _print(engine.knowledge.reindex_status(engine.operator, name).to_dict())
