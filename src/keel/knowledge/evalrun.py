"""``keel knowledge eval``: keyword, vector and hybrid retrieval measured on a BEIR set,
through the same chunking, embedder and index that a knowledge collection uses.

The set is indexed into a throwaway SQLite database in a temporary folder, never the
project's store: an evaluation must not leave passages behind in a governed index, and it
needs no project. Every passage is one document with one access key, which the evaluating
principal holds, so the access pre-filter runs as it does in service but hides nothing.

Each passage is indexed as a ``.txt`` document (``title``, a blank line, ``text``) and
chunked to the embedder's token limit, rather than fed to the model whole. A passage longer
than the model reads would otherwise be cut off silently at embedding while the keyword
index still saw all of it, which would favour keyword search; chunking makes both lists
see the same text. Most passages fit in one chunk; a longer one becomes several, and
``document_run`` gives the passage its best chunk's score.

The three runs come from the index's own ``search`` with the same query text and vector:
``keyword`` and ``vector`` switch the other list off with a zero weight (fusion then keeps
the one list's order), ``hybrid`` uses the weights given. No second BM25 or fusion exists
here, so the figures are those of the retrieval Keel serves.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from keel.embeddings.spaces import Embedder
from keel.embeddings.tokens import TokenCounter
from keel.index import access
from keel.index.backend import open_index
from keel.index.base import ChunkIndex
from keel.index.records import IndexedChunk, Validity, Weights
from keel.knowledge.chunking import Chunk, chunk
from keel.knowledge.documents import read_document
from keel.knowledge.evaluation import (
    HYBRID_COMPARISONS,
    RECALL_AT,
    Dataset,
    EvalReport,
    Run,
    document_run,
    evaluate,
    load_beir,
)
from keel.store.database import open_database

DEPTH = RECALL_AT  # results asked for per query: recall@100 needs the first 100
COLLECTION = "eval"
ACCESS_KEY = "eval:reader"  # the one key every passage carries and the evaluator holds
RUNS = ("keyword", "vector", "hybrid")
EMBED_BATCH = 64  # chunks embedded and indexed per step (and per progress report)

# (done, total) chunks embedded so far
Progress = Callable[[int, int], None]


@dataclass(frozen=True)
class _Passage:
    """A corpus passage as indexed: its index document id and its chunks."""

    beir_id: str
    document_id: str
    chunks: tuple[Chunk, ...]


def passage_text(title: str, text: str) -> str:
    """The text a passage is indexed as: its title, a blank line, then its text."""
    return f"{title}\n\n{text}" if title.strip() else text


def chunk_passages(dataset: Dataset, tokenizer: TokenCounter) -> list[_Passage]:
    """Each passage read as a ``.txt`` document and chunked to the model's token limit.

    Index document ids are ``p0``, ``p1``, … so that any BEIR id, however long, can be
    indexed; the mapping back is kept. A passage with no text has no chunks and so can
    never be found: it still counts in the corpus, as it does for any retriever."""
    out = []
    for number, (beir_id, passage) in enumerate(dataset.corpus.items()):
        data = passage_text(passage.title, passage.text).encode("utf-8")
        extracted = read_document(data, f"{beir_id}.txt", encoding="utf-8")
        chunks = chunk(extracted, tokenizer, tokenizer.max_tokens)
        out.append(_Passage(beir_id, f"p{number}", tuple(chunks)))
    return out


def _indexed(passage: _Passage, c: Chunk, vector: NDArray[np.float32]) -> IndexedChunk:
    return IndexedChunk(
        f"{passage.document_id}.{c.ordinal}", c.ordinal, c.text, c.start, c.end, None, vector
    )


def _index_passages(
    index: ChunkIndex,
    passages: Sequence[_Passage],
    embedder: Embedder,
    progress: Progress,
) -> None:
    """Embed the chunks in batches and add each passage as one document version."""
    space = embedder.space.id
    pending = [p for p in passages if p.chunks]
    total = sum(len(p.chunks) for p in pending)
    done = 0
    progress(0, total)
    indexed_at = time.time()  # each passage has one version, live from the run's start
    batch: list[_Passage] = []
    for position, passage in enumerate(pending):
        batch.append(passage)
        size = sum(len(p.chunks) for p in batch)
        if size < EMBED_BATCH and position < len(pending) - 1:
            continue
        vectors = iter(embedder.embed([c.text for p in batch for c in p.chunks]))
        with index.db.write(chain=False, durable=False) as conn:
            for p in batch:
                indexed = [_indexed(p, c, next(vectors)) for c in p.chunks]
                index.add_version(
                    conn, space, p.document_id, "v1", COLLECTION, frozenset({ACCESS_KEY}),
                    Validity(), indexed, at=indexed_at,
                )  # fmt: skip
        done += size
        progress(done, total)
        batch = []


def single_list(weights: Weights, keep: str) -> Weights:
    """``weights`` with only the ``keep`` list (``keyword`` or ``vector``) switched on."""
    return replace(
        weights, keyword=1.0 if keep == "keyword" else 0.0, vector=1.0 if keep == "vector" else 0.0
    )


def retrieval_runs(
    index: ChunkIndex,
    dataset: Dataset,
    embedder: Embedder,
    weights: Weights,
    document_of: Mapping[str, str],
    names: Sequence[str] = RUNS,
) -> dict[str, Run]:
    """For every judged query, the results (depth 100) of the index's ``search`` for each
    of ``names`` (``keyword``, ``vector``, ``hybrid``), mapped from chunks to passages."""
    space = embedder.space.id
    queries = list(dataset.queries.items())
    vectors = embedder.embed([text for _, text in queries])
    settings = {
        "keyword": single_list(weights, "keyword"),
        "vector": single_list(weights, "vector"),
        "hybrid": weights,
    }
    now = time.time()
    chunk_runs: dict[str, dict[str, list[tuple[str, float]]]] = {name: {} for name in names}
    for (query_id, text), vector in zip(queries, vectors, strict=True):
        for name in names:
            hits = index.search(
                space, [COLLECTION], text, vector, frozenset({ACCESS_KEY}), DEPTH, now,
                settings[name],
            )  # fmt: skip
            # scored by place, so that the evaluation keeps the index's own order,
            # tie-breaks included, instead of re-breaking equal fused scores by id
            chunk_runs[name][query_id] = [
                (h.chunk_id, float(len(hits) - place)) for place, h in enumerate(hits)
            ]
    return {name: document_run(run, document_of) for name, run in chunk_runs.items()}


@contextmanager
def indexed_set(
    dataset: Dataset, embedder: Embedder, progress: Progress | None = None
) -> Iterator[tuple[ChunkIndex, dict[str, str]]]:
    """The set's passages chunked, embedded and indexed in a temporary SQLite database
    that is deleted on exit, with the map from chunk ids back to passage ids. Searching it
    many times costs one embedding of the corpus (the fusion grid in ``bench/``)."""
    report = progress if progress is not None else (lambda _done, _total: None)
    passages = chunk_passages(dataset, embedder.tokenizer)
    document_of = {f"{p.document_id}.{c.ordinal}": p.beir_id for p in passages for c in p.chunks}
    with tempfile.TemporaryDirectory(prefix="keel-eval-") as tmp:
        db = open_database(f"sqlite:///{Path(tmp) / 'index.db'}")
        try:
            index = open_index(db)
            _index_passages(index, passages, embedder, report)
            yield index, document_of
        finally:
            db.close()


def run_evaluation(
    folder: str | Path,
    embedder: Embedder,
    weights: Weights | None = None,
    *,
    progress: Progress | None = None,
    split: str = "test",
) -> EvalReport:
    """Load the BEIR set in ``folder`` (judgements from ``qrels/<split>.tsv``), index it in
    a temporary SQLite database with ``embedder``, run the three retrievers on its judged
    queries and score them, hybrid compared with each of the others. ``weights`` default
    to the index's own (``Weights()``); ``progress`` is told ``(done, total)`` chunks as
    they are embedded."""
    weights = weights if weights is not None else Weights()
    # the index's own check, before minutes of embedding rather than at the first search
    access.check_search([COLLECTION], "", True, DEPTH, weights)
    dataset = load_beir(folder, split)
    with indexed_set(dataset, embedder, progress) as (index, document_of):
        runs = retrieval_runs(index, dataset, embedder, weights, document_of)
    return evaluate(dataset, runs, HYBRID_COMPARISONS)
