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

from keel.cli._common import _engine, _fail
from keel.errors import KeelError

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
    from keel.decide.casefile import CaseFile, open_sink  # noqa: PLC0415 - keep --help fast

    with _engine(project) as engine:
        runtime = engine.decider.allowed(engine.operator, flow)
        cases = CaseFile(file, runtime.flow.fields, subject_column)
        sink = open_sink(out, list(runtime.flow.signals)) if out is not None else None
        try:
            with _progress(not quiet and sys.stderr.isatty()) as progress:
                summary = engine.decide_file(flow, cases, sink, chunk_size, skip, progress)
        except KeelError as error:
            if sink is not None:
                sink.close()  # the chunks recorded so far stay in the file, readable
                if error.code != "batch_incomplete" and out is not None:
                    out.unlink()  # nothing was recorded: no empty file left behind
            _fail(error)
        if sink is not None:
            sink.close()
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
