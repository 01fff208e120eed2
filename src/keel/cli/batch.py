"""``keel decide FLOW --file``: decide a CSV or Parquet file of cases, with a progress bar on
a terminal and counts at the end. The work is ``keel.decide.batch``'s; this module reads the
options, draws the bar and prints the summary."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from keel.cli._common import _engine

if TYPE_CHECKING:
    from keel.decide.batch import BatchSummary, Progress


def decide_file(
    project: Path,
    flow: str,
    file: Path,
    out: Path | None,
    subject_column: str | None,
    chunk_size: int,
    skip: int,
    quiet: bool,
) -> None:
    with _engine(project) as engine:
        engine.load_models(flow)  # before the bar: it counts cases, not the model's loading
        with _progress(not quiet and sys.stderr.isatty()) as progress:
            summary = engine.decide_file(
                flow, file, out, subject_column, chunk_size, skip, progress
            )
    _report(summary, out)


def _report(summary: BatchSummary, out: Path | None) -> None:
    skipped = f", {summary.skipped:,} skipped" if summary.skipped else ""
    typer.echo(
        f"decided {summary.decided:,} cases from {summary.file}{skipped} in "
        f"{summary.seconds:.1f} s ({summary.rate:,.0f} cases/s)"
    )
    for what, counts in (("action", summary.by_action), ("status", summary.by_status)):
        listed = ", ".join(f"{name} {count:,}" for name, count in counts.most_common())
        typer.echo(f"  by {what}: {listed}")
    if out is not None:
        typer.echo(f"  written to {out}")


@contextmanager
def _progress(shown: bool) -> Iterator[Progress]:
    """A progress bar on standard error when it is a terminal; nothing where output is
    logged or piped (and with --quiet)."""
    if not shown:
        yield lambda _step, _done, _total: None
        return
    from rich.console import Console  # noqa: PLC0415 - rich comes with typer
    from rich.progress import Progress as Bar  # noqa: PLC0415

    with Bar(console=Console(stderr=True), transient=True) as bar:
        tasks: dict[str, object] = {}

        def advance(step: str, done: int, total: int | None) -> None:
            if step not in tasks:
                tasks[step] = bar.add_task(step, total=total)
            bar.update(tasks[step], advance=done)  # type: ignore[arg-type]

        yield advance
