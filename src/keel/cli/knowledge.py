"""``keel knowledge``: knowledge collections through ``keel.knowledge.service.Knowledge``,
acting as the local operator or as the key in ``KEEL_API_KEY`` (so two keys search as two
people): create and change collections, add and sync documents, search, withdraw, set
access lists and revoke a person. ``eval`` measures keyword, vector and hybrid retrieval on
a BEIR-format set; it reads files only and needs no project.

A document is named by its id (``doc_…``, as ``add``, ``sync`` and ``search`` print it) or
by the path of the file it was added from."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from keel.cli._common import ProjectOpt, _engine, _fail, _print
from keel.errors import InputError, KeelError

if TYPE_CHECKING:
    from keel.knowledge.evaluation import EvalReport
    from keel.knowledge.records import IngestResult, SearchResult

app = typer.Typer(
    help="Knowledge collections: documents, access lists, governed search, retrieval quality."
)

Name = Annotated[str, typer.Argument(help="The collection.")]
Doc = Annotated[str, typer.Argument(help="A document id (doc_…) or the file it came from.")]
Reason = Annotated[str, typer.Option("--reason", "-r", help="Why, in words.")]
AccessOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--access",
        help="An access key: person:P, group:G or role:R (repeatable).",
        show_default=False,
    ),
]


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


# ---- collections -------------------------------------------------------------------------


@app.command("create")
def knowledge_create(
    name: Annotated[str, typer.Argument(help="The new collection's name (a-z, 0-9, _ and -).")],
    owner: Annotated[str, typer.Option(help="The accountable person (name or e-mail).")],
    classification: Annotated[
        str, typer.Option(help="public, internal, confidential or restricted.")
    ],
    access: Annotated[
        list[str],
        typer.Option(
            "--access",
            help="An access key the documents inherit: person:P, group:G or role:R (repeatable).",
        ),
    ],
    source_folder: Annotated[
        Path | None, typer.Option(help="The folder `keel knowledge sync` reads.", file_okay=False)
    ] = None,
    retention_days: Annotated[
        int | None, typer.Option(help="Days a superseded or withdrawn version's record is kept.")
    ] = None,
    reason: Reason = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Create a knowledge collection; its documents inherit the --access keys unless they
    set their own list. Needs the create_collection permission (admin, or a global
    knowledge_owner grant).

    Example: keel knowledge create handbook --owner hr@example.com --classification internal
    --access role:reader --source-folder handbook
    """
    with _engine(project) as engine:
        made = engine.knowledge.create_collection(
            engine.operator,
            name,
            owner=owner,
            classification=classification,
            default_access=access,
            retention_days=retention_days,
            source_folder=source_folder,
            reason=reason,
        )
    settings = made.settings
    typer.echo(
        f"Created collection {made.name} ({settings.classification}, owner {settings.owner}); "
        f"its documents inherit {', '.join(settings.default_access) or 'no access key'}."
    )
    typer.echo(f"Recorded in the ledger as {made.record_id}.")


@app.command("list")
def knowledge_list(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """List the collections you may search.

    Example: keel knowledge list
    """
    from keel.knowledge.views import collection_json  # noqa: PLC0415

    with _engine(project) as engine:
        found = engine.knowledge.collections(engine.operator)
    if as_json:
        _print([collection_json(c) for c in found])
        return
    if not found:
        typer.echo("No collection you may search.")
    for c in found:
        s = c.settings
        typer.echo(
            f"{c.name:<20} {s.classification:<13} owner {s.owner}; "
            f"default access {', '.join(s.default_access) or '(none)'}"
        )


@app.command("show")
def knowledge_show(name: Name, project: ProjectOpt = Path(".")) -> None:
    """Print a collection's settings as JSON, verified against their ledger entry.

    Example: keel knowledge show handbook
    """
    from keel.knowledge.views import collection_json  # noqa: PLC0415

    with _engine(project) as engine:
        _print(collection_json(engine.knowledge.collection(engine.operator, name)))


@app.command("change")
def knowledge_change(
    name: Name,
    owner: Annotated[str | None, typer.Option(help="A new accountable person.")] = None,
    classification: Annotated[str | None, typer.Option(help="A new classification.")] = None,
    access: AccessOpt = None,
    no_access: Annotated[
        bool, typer.Option("--no-access", help="Empty the default access list.")
    ] = False,
    source_folder: Annotated[
        Path | None, typer.Option(help="A new source folder.", file_okay=False)
    ] = None,
    retention_days: Annotated[int | None, typer.Option(help="A new retention.")] = None,
    reason: Reason = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Change a collection's settings (manage_collection); what is not given stays. A new
    default access list (--access, repeatable) reaches every document that inherits it at
    once. Prints the settings as JSON.

    Example: keel knowledge change handbook --access role:reader --access group:hr -r "HR reads all"
    """
    from keel.knowledge.views import collection_json  # noqa: PLC0415

    if access and no_access:
        _fail(InputError("give --access or --no-access, not both"))
    changes: dict[str, Any] = {}
    if owner is not None:
        changes["owner"] = owner
    if classification is not None:
        changes["classification"] = classification
    if access or no_access:
        changes["default_access"] = access or []
    if source_folder is not None:
        changes["source_folder"] = source_folder
    if retention_days is not None:
        changes["retention_days"] = retention_days
    if not changes:
        _fail(InputError("nothing to change: give --owner, --classification, --access, …"))
    with _engine(project) as engine:
        changed = engine.knowledge.change_collection(
            engine.operator, name, reason=reason, **changes
        )
        _print(collection_json(changed))


# ---- documents ---------------------------------------------------------------------------


@app.command("add")
def knowledge_add(
    name: Name,
    paths: Annotated[
        list[Path], typer.Argument(help="Files: txt, md, html, pdf or docx.", dir_okay=False)
    ],
    access: AccessOpt = None,
    owner: Annotated[str | None, typer.Option(help="The documents' owner (default: you).")] = None,
    classification: Annotated[
        str | None, typer.Option(help="Default: the collection's classification.")
    ] = None,
    reason: Reason = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Add files to a collection (curate_knowledge). A file whose text changed becomes a
    new version of its document; an unchanged one writes nothing. With --access the
    documents get their own access list instead of inheriting the collection's.

    Example: keel knowledge add handbook handbook/leave.md handbook/expenses.md
    """
    options: dict[str, Any] = {"owner": owner, "classification": classification}
    if access:
        options["access"] = access
    with _engine(project) as engine, _files_progress("adding", len(paths)) as advance:
        for path in paths:
            result = engine.knowledge.ingest_file(
                engine.operator, name, path, reason=reason, **options
            )
            advance()
            typer.echo(_ingested(result, str(path)))


@app.command("sync")
def knowledge_sync(
    name: Name,
    folder: Annotated[
        Path | None,
        typer.Argument(help="Default: the collection's source folder.", file_okay=False),
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Bring a collection in line with a folder (curate_knowledge): new and changed files
    are ingested, unchanged ones left alone, and documents whose file is gone are
    withdrawn. A file that cannot be read is listed as failed and the others go on.

    Example: keel knowledge sync handbook
    """
    from keel.knowledge.search import source_name  # noqa: PLC0415

    with _engine(project) as engine, _files_progress("syncing", None):
        result = engine.knowledge.sync(engine.operator, name, folder)
    for done in result.ingested:
        typer.echo(_ingested(done, source_name(done.source_uri)))
    for doc in result.removed:
        typer.echo(f"removed    {doc}")
    for failure in result.failed:
        typer.echo(f"failed     {failure.file}: {failure.error}")
    for skipped in result.skipped:
        typer.echo(f"skipped    {skipped} (not a format Keel reads)")
    typer.echo(
        f"{result.count('new')} new, {result.count('changed')} changed, "
        f"{result.count('unchanged')} unchanged, {len(result.removed)} removed, "
        f"{len(result.failed)} failed"
    )
    if result.failed:
        raise typer.Exit(1)


@app.command("documents")
def knowledge_documents(
    name: Name,
    doc: Annotated[
        str | None,
        typer.Argument(help="One document (id or file): print its record as JSON."),
    ] = None,
    withdrawn: Annotated[
        bool, typer.Option("--withdrawn", help="List the withdrawn documents too.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """List a collection's documents (curate_knowledge): state, revision, live version,
    access list (inherit: the collection's), source and id. With DOC, print that
    document's record as JSON: source, owner, access list, validity, data subjects,
    metadata and live version.

    Example: keel knowledge documents handbook      keel knowledge documents handbook leave.md
    """
    from keel.knowledge.search import source_name  # noqa: PLC0415
    from keel.knowledge.views import document_json  # noqa: PLC0415

    with _engine(project) as engine:
        if doc is not None:
            _print(document_json(engine.knowledge.document(engine.operator, name, _doc(name, doc))))
            return
        found = engine.knowledge.documents(engine.operator, name, include_withdrawn=withdrawn)
    if as_json:
        _print([document_json(d) for d in found])
        return
    for d in found:
        access = "inherit" if d.access is None else ",".join(d.access) or "(nobody)"
        version = (d.version or "-")[:16]
        typer.echo(
            f"{d.state:<9} v{d.revision:<3} {version:<16}  {access:<24} "
            f"{source_name(d.source_uri)}  {d.document_id}"
        )
    typer.echo(f"{len(found)} documents")


@app.command("versions")
def knowledge_versions(name: Name, doc: Doc, project: ProjectOpt = Path(".")) -> None:
    """List every version a document had, oldest first (curate_knowledge).

    Example: keel knowledge versions handbook handbook/leave.md
    """
    from keel.ledger.records import iso_time  # noqa: PLC0415

    with _engine(project) as engine:
        found = engine.knowledge.versions(engine.operator, name, _doc(name, doc))
    for v in found:
        typer.echo(
            f"{v.revision:>3}  {v.version[:16]}  {v.state:<10} {v.chunks:>4} chunks  "
            f"{iso_time(v.created_at)}  {v.record_id}"
        )


@app.command("withdraw")
def knowledge_withdraw(
    name: Name,
    doc: Doc,
    reason: Annotated[str, typer.Option("--reason", "-r", help="Why, in words (required).")],
    version: Annotated[
        str | None, typer.Option(help="Withdraw only this version (its content hash).")
    ] = None,
    project: ProjectOpt = Path("."),
) -> None:
    """Withdraw a document, or one version of it (curate_knowledge). Its chunks leave the
    index in the transaction of the ledger entry: no search returns them once this has
    printed.

    Example: keel knowledge withdraw handbook handbook/expenses.md -r "replaced by the 2027 policy"
    """
    if not reason.strip():
        _fail(InputError("--reason is required: say why the document is withdrawn"))
    with _engine(project) as engine:
        knowledge, me, doc_id = engine.knowledge, engine.operator, _doc(name, doc)
        if version is None:
            done = knowledge.withdraw_document(me, name, doc_id, reason)
        else:
            done = knowledge.withdraw_version(me, name, doc_id, version, reason)
    typer.echo(
        f"Withdrew {doc_id}: {done.chunks_removed} chunks out of the index "
        f"(ledger entry {done.record_id})."
    )


@app.command("access")
def knowledge_access(
    name: Name,
    doc: Doc,
    keys: Annotated[
        list[str] | None,
        typer.Argument(help="Access keys: person:P, group:G or role:R.", show_default=False),
    ] = None,
    inherit: Annotated[
        bool, typer.Option("--inherit", help="Use the collection's default list again.")
    ] = False,
    reason: Reason = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Set a document's access list (curate_knowledge): only callers holding one of the
    keys find it from now on. --inherit gives it the collection's default list again.

    Example: keel knowledge access handbook handbook/salary-bands.md group:hr-managers
    """
    if bool(keys) == inherit:
        _fail(InputError("give the access keys, or --inherit (not both)"))
    with _engine(project) as engine:
        doc_id = _doc(name, doc)
        done = engine.knowledge.set_access(
            engine.operator, name, doc_id, "inherit" if inherit else keys or [], reason
        )
    shown = "the collection's default list" if inherit else ", ".join(sorted(keys or []))
    typer.echo(f"{doc_id} may be read by {shown} (ledger entry {done.record_id}).")


@app.command("revoke")
def knowledge_revoke(
    name: Name,
    person: Annotated[str, typer.Option(help="The person whose own access key is removed.")],
    reason: Reason = "",
    project: ProjectOpt = Path("."),
) -> None:
    """Remove person:PERSON from every access list of a collection, its default list
    included (manage_collection). Groups and roles the person holds are revoked where
    they are granted (their API keys).

    Example: keel knowledge revoke handbook --person alice@example.com -r "left the company"
    """
    with _engine(project) as engine:
        done = engine.knowledge.revoke_person(engine.operator, person, name, reason)
    typer.echo(
        f"Revoked person:{done.person}: {len(done.documents)} documents' lists, "
        f"{len(done.defaults_changed)} default lists (ledger entry {done.record_id})."
    )


# ---- search ------------------------------------------------------------------------------


@app.command("search")
def knowledge_search(
    name: Name,
    query: Annotated[str, typer.Argument(help="What to search for.")],
    k: Annotated[int, typer.Option("-k", help="How many chunks to return.")] = 5,
    as_of: Annotated[
        str | None,
        typer.Option(
            "--as-of",
            help="Search the versions live and valid at this instant (ISO 8601), under "
            "today's access lists.",
        ),
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    project: ProjectOpt = Path("."),
) -> None:
    """Search a collection among the documents you may read, best first: citation,
    scores (fused, keyword, vector) and the text of each chunk. The search is recorded in
    the ledger (who, the query's SHA-256, the chunks returned).

    Example: KEEL_API_KEY=$ALICE keel knowledge search handbook "How many days of leave?"
    --as-of 2026-11-30T12:00:00Z
    """
    from keel.knowledge.views import search_json  # noqa: PLC0415
    from keel.ledger.records import parse_instant  # noqa: PLC0415

    try:
        instant = parse_instant("--as-of", as_of)
    except KeelError as error:
        _fail(error)
    at = None if instant is None else datetime.fromisoformat(instant).timestamp()
    with _engine(project) as engine:
        result = engine.knowledge.search(engine.operator, name, query, k, as_of=at)
    if as_json:
        _print(search_json(result, at))
        return
    typer.echo("\n".join(search_lines(result, instant)))


def search_lines(result: SearchResult, as_of: str | None = None) -> list[str]:
    """The hits as a reader scans them: citation and scores, where, and the text; the
    last line says what was searched when it was not the versions live now."""
    from keel.text import escape  # noqa: PLC0415

    lines = []
    for hit in result.hits:
        scores = [f"fused {hit.fused:.4f}"]
        if hit.keyword_score is not None:
            scores.append(f"keyword {hit.keyword_score:.3f}")
        if hit.vector_score is not None:
            scores.append(f"vector {hit.vector_score:.3f}")
        text = " ".join(hit.text.split())
        lines += [
            f"{hit.citation}  {'  '.join(scores)}",
            f"    {hit.document_id} version {hit.version[:16]}",
            f"    {escape(text[:EXCERPT] + ('…' if len(text) > EXCERPT else ''))}",
        ]
    lines.append(
        f"{len(result.hits)} hits"
        + (f" as of {as_of}" if as_of else "")
        + f"; search recorded in the ledger as {result.record_id}"
        + (f" ({result.dropped} dropped by the re-check)" if result.dropped else "")
    )
    return lines


EXCERPT = 240  # characters of a hit's text the search prints


def _ingested(result: IngestResult, shown: str) -> str:
    line = f"{result.status:<10} {shown}  {result.document_id}  v{result.revision}"
    if result.status != "unchanged":
        line += f" ({result.chunks} chunks, {result.embedded} embedded)"
    return line


def _doc(collection: str, doc: str) -> str:
    """A document id as given, or the id of the document a file was added from (the
    service derives it from the collection and the file's URI)."""
    from keel.knowledge.fields import document_id_for  # noqa: PLC0415

    if doc.startswith("doc_"):
        return doc
    path = Path(doc)
    if not path.is_file():
        _fail(InputError(f"{doc} is neither a document id (doc_…) nor a file", {"doc": doc}))
    return document_id_for(collection, path.resolve().as_uri())


@contextmanager
def _files_progress(what: str, total: int | None) -> Iterator[Callable[[], None]]:
    """A progress bar (or, without a total, a spinner) on standard error when it is a
    terminal and there is more than one file; nothing where output is piped."""
    import sys  # noqa: PLC0415

    if not sys.stderr.isatty() or total == 1:
        yield lambda: None
        return
    from rich.console import Console  # noqa: PLC0415
    from rich.progress import Progress  # noqa: PLC0415

    with Progress(console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(f"{what} files", total=total)
        yield lambda: bar.advance(task)
