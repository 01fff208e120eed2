"""The ``keel`` command line: a thin layer over the engine. Each docstring is the help text.

One module per command group (``keel ledger …`` is ``ledger.py``); the top-level commands
live with their subject (``project.py``: init, validate, demo, serve; ``decisions.py``:
decide, explain, notice, what-if; ``rollout.py``: replay). ``_common.py`` holds what they share.
Modules import the engine and other heavy parts inside commands, so ``keel --help`` stays
fast (a test checks it).
"""

from __future__ import annotations

import typer

from keel.cli import (
    alarms,
    audit,
    autonomy,
    decisions,
    deliveries,
    drift,
    flow,
    keys,
    knowledge,
    knowledge_reindex,  # noqa: F401 - adds reindex and reindex-status to the knowledge group
    ledger,
    models,
    monitor,
    outcomes,
    policy,
    project,
    report,
    review,
    rollout,
)

app = typer.Typer(
    name="keel",
    help="Keel: governed, explained and recorded decisions from AI models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# In the order `keel --help` lists them.
app.command()(project.init)
app.command()(project.validate)
app.command()(decisions.decide)
app.command()(decisions.explain)
app.command()(decisions.notice)
app.command("what-if")(decisions.what_if)
app.command()(project.demo)
app.command()(rollout.replay)
app.command()(project.serve)

app.add_typer(ledger.app, name="ledger")
app.add_typer(keys.app, name="keys")
app.add_typer(audit.app, name="audit")
app.add_typer(review.app, name="review")
app.add_typer(outcomes.app, name="outcomes")
app.add_typer(autonomy.app, name="autonomy")
app.add_typer(rollout.app, name="rollout")
app.add_typer(report.app, name="report")
app.add_typer(drift.app, name="drift")
app.add_typer(monitor.app, name="monitor")
app.add_typer(alarms.app, name="alarms")
app.add_typer(deliveries.app, name="deliveries")
app.add_typer(policy.app, name="policy")
app.add_typer(flow.app, name="flow")
app.add_typer(models.app, name="models")
app.add_typer(knowledge.app, name="knowledge")


def main() -> None:
    app()


def __getattr__(name: str) -> object:
    """``keel.cli.click_command``: the CLI as a Click command, built on first use — what
    the documentation site's CLI reference is generated from (``mkdocs-click``)."""
    if name == "click_command":
        return typer.main.get_command(app)
    raise AttributeError(f"module 'keel.cli' has no attribute {name!r}")
