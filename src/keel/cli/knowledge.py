"""``keel knowledge``: knowledge collections. ``eval`` measures keyword, vector and hybrid
retrieval on a BEIR-format set; it reads files only and needs no project."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli._common import _fail, _print
from keel.errors import KeelError

if TYPE_CHECKING:
    from keel.knowledge.evaluation import EvalReport

app = typer.Typer(help="Knowledge collections: retrieval quality.")


class EmbedderKind(StrEnum):
    onnx_int8 = "onnx-int8"
    torch = "torch"


class FusionMethod(StrEnum):  # keel.index.records.Fusion, without importing the index here
    rrf = "rrf"
    minmax = "minmax"
    zscore = "zscore"


@contextmanager
def _progress() -> Iterator[Callable[[int, int], None]]:
    """A progress bar for embedding on standard error when it is a terminal; nothing
    where output is logged or piped."""
    import sys  # noqa: PLC0415

    if not sys.stderr.isatty():
        yield lambda _done, _total: None
        return
    from rich.console import Console  # noqa: PLC0415 - rich comes with typer
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task("embedding chunks", total=None)
        yield lambda done, total: bar.update(task, completed=done, total=total)


def report_lines(report: EvalReport) -> list[str]:
    """The means per run and the paired comparisons, as lines of text."""
    from keel.knowledge.evaluation import MEASURES  # noqa: PLC0415

    headings = dict(MEASURES)
    lines = [
        f"{report.dataset}: {report.passages} passages, {report.queries} judged queries"
        + (f" ({len(report.unjudged)} unjudged, skipped)" if report.unjudged else ""),
        "",
        f"{'run':<9}" + "".join(f"{heading:>23}" for _, heading in MEASURES),
    ]
    for run in report.runs:
        cells = "".join(
            f"{f'{i.mean:.3f} ({i.low:.3f}-{i.high:.3f})':>23}"
            for i in (run.means[key] for key, _ in MEASURES)
        )
        lines.append(f"{run.name:<9}{cells}")
    lines.append("")
    lines.append(f"paired differences, {report.confidence:.0%} bootstrap intervals:")
    for c in report.comparisons:
        d = c.difference
        verdict = "better" if c.significant else "worse" if d.high < 0 else "no clear difference"
        lines.append(
            f"  {c.better} - {c.baseline:<8} {headings[c.measure]:<11} {d.mean:+.3f} "
            f"({d.low:+.3f} to {d.high:+.3f})  won {c.wins}, lost {c.losses}, tied "
            f"{c.ties}, p={c.p_value:.3g}: {verdict}"
        )
    return lines


@app.command("eval")
def knowledge_eval(
    folder: Annotated[
        Path,
        typer.Argument(help="A BEIR folder: corpus.jsonl, queries.jsonl, qrels/<split>.tsv."),
    ],
    split: Annotated[
        str, typer.Option(help="Which judgements to score: qrels/<split>.tsv (test, dev, ...).")
    ] = "test",
    out: Annotated[
        Path, typer.Option(help="Where report.json and report.html are written.")
    ] = Path("knowledge-eval"),
    embedder: Annotated[
        EmbedderKind,
        typer.Option(help="onnx-int8 (the default model) or torch (keel[embeddings-torch])."),
    ] = EmbedderKind.onnx_int8,
    keyword_weight: Annotated[
        float | None, typer.Option(help="Hybrid: the keyword list's fusion weight (default 1).")
    ] = None,
    vector_weight: Annotated[
        float | None, typer.Option(help="Hybrid: the vector list's fusion weight (default 1).")
    ] = None,
    rrf_k: Annotated[
        float | None, typer.Option(help="Hybrid: reciprocal-rank fusion's k (default 5).")
    ] = None,
    fusion: Annotated[
        FusionMethod | None,
        typer.Option(help="Hybrid: the fusion method (default: the index's)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the report as JSON instead of the table.")
    ] = False,
) -> None:
    """Measure keyword, vector and hybrid retrieval on a BEIR-format evaluation set:
    nDCG@10, recall@100 and MRR@10 per run with 95% bootstrap intervals, and hybrid
    compared with each of the others query by query. The set is chunked, embedded and
    indexed in a temporary database (never a project's store), then searched to depth
    100. Writes OUT/report.json and a self-contained OUT/report.html. Hybrid uses the
    index's default fusion weights unless given.

    Example: keel knowledge eval tests/fixtures/knowledge/eval --out knowledge-eval
    """
    import dataclasses  # noqa: PLC0415
    import time  # noqa: PLC0415

    from keel.embeddings.registry import embedder_for  # noqa: PLC0415
    from keel.index.records import Fusion, Weights  # noqa: PLC0415
    from keel.knowledge.evalrun import DEPTH, run_evaluation  # noqa: PLC0415
    from keel.knowledge.evaluation_html import render_html  # noqa: PLC0415
    from keel.ledger.records import iso_time  # noqa: PLC0415

    default = Weights()
    weights = dataclasses.replace(
        default,
        keyword=default.keyword if keyword_weight is None else keyword_weight,
        vector=default.vector if vector_weight is None else vector_weight,
        rrf_k=default.rrf_k if rrf_k is None else rrf_k,
        method=default.method if fusion is None else Fusion(fusion.value),
    )
    try:
        model = embedder_for({"kind": embedder.value})
        with _progress() as progress:
            report = run_evaluation(folder, model, weights, progress=progress, split=split)
    except KeelError as error:
        _fail(error)
    generated_at = iso_time(time.time())
    data: dict[str, Any] = report.to_dict()
    data["settings"] = {
        "embedding_space": model.space.to_dict() | {"id": model.space.id},
        "weights": dataclasses.asdict(weights),
        "split": split,
        "depth": DEPTH,
        "generated_at": generated_at,
    }
    out.mkdir(parents=True, exist_ok=True)
    json_path, html_path = out / "report.json", out / "report.html"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html_path.write_text(render_html(report, generated_at), encoding="utf-8")
    if as_json:
        _print(data)
    else:
        typer.echo("\n".join(report_lines(report)))
    typer.echo(f"wrote {html_path} and {json_path}", err=True)
