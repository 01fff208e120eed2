"""The retrieval index: keyword, vector and fused ranking, writes, and bad input, on real
SQLite and PostgreSQL (with pgvector)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from keel.errors import ConflictError, InputError, NotFoundError
from keel.index.base import ChunkIndex
from keel.index.fusion import fuse
from keel.index.records import Validity, Weights
from keel.store.database import Database
from tests.conftest import run_sql
from tests.indexing import DIM, chunk, embed, opened_index

NOW = 1_800_000_000.0
READER = frozenset({"group:credit-risk"})

CORPUS = {
    "rates": "Interest rates on revolving credit are reviewed every quarter by the committee.",
    "limits": "A credit limit increase needs two years of history and a low utilisation.",
    "fraud": "Report suspected card fraud at once; the card is blocked while it is checked.",
    "complaints": "Complaints are answered within fifteen working days of their receipt.",
    "savings": "Savings accounts pay a variable interest rate, credited monthly.",
    "mortgage": "Mortgage applications need proof of income and a valuation of the property.",
}


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, ChunkIndex]]:
    with opened_index(request.param, tmp_path) as opened:
        yield opened


@pytest.fixture
def corpus(store: tuple[Database, ChunkIndex]) -> tuple[Database, ChunkIndex]:
    db, index = store
    with db.write() as conn:
        for name, body in CORPUS.items():
            index.add_version(
                conn,
                "mini",
                name,
                f"v-{name}",
                "policies",
                READER,
                Validity(),
                [chunk(f"{name}-0", body)],
            )
    return db, index


def test_keyword_ranking_reports_scores_and_ranks(corpus: tuple[Database, ChunkIndex]) -> None:
    _, index = corpus
    weights = Weights(vector=0.0)
    hits = index.search("mini", ["policies"], "interest rate", None, READER, 10, NOW, weights)
    assert [h.document_id for h in hits][:2] in (["rates", "savings"], ["savings", "rates"])
    assert {h.document_id for h in hits} == {"rates", "savings"}
    assert [h.keyword_rank for h in hits] == [1, 2]
    assert hits[0].keyword_score is not None and hits[1].keyword_score is not None
    assert hits[0].keyword_score >= hits[1].keyword_score > 0
    assert all(h.vector_rank is None and h.vector_score is None for h in hits)
    assert hits[0].fused == pytest.approx(1 / (Weights().rrf_k + 1))


def test_vector_ranking_is_exact(corpus: tuple[Database, ChunkIndex]) -> None:
    _, index = corpus
    query = embed(CORPUS["fraud"])
    hits = index.search("mini", ["policies"], "", query, READER, 6, NOW)
    assert hits[0].document_id == "fraud" and hits[0].vector_score == pytest.approx(1.0)
    expected = sorted(CORPUS, key=lambda n: -float(embed(CORPUS[n]) @ query))
    assert [h.document_id for h in hits] == expected
    assert [h.vector_rank for h in hits] == [1, 2, 3, 4, 5, 6]
    for hit in hits:
        assert hit.vector_score == pytest.approx(
            float(embed(CORPUS[hit.document_id]) @ query), abs=1e-5
        )


def test_fused_ranking_combines_both_lists(corpus: tuple[Database, ChunkIndex]) -> None:
    _, index = corpus
    text = "credit limit history"
    hits = index.search("mini", ["policies"], text, embed(text), READER, 3, NOW)
    assert hits[0].document_id == "limits"
    assert hits[0].keyword_rank == 1 and hits[0].vector_rank == 1
    for hit in hits:
        expected = sum(1 / (Weights().rrf_k + r) for r in (hit.keyword_rank, hit.vector_rank) if r)
        assert hit.fused == pytest.approx(expected)
    assert [h.fused for h in hits] == sorted((h.fused for h in hits), reverse=True)
    assert hits[0].text == CORPUS["limits"] and (hits[0].start, hits[0].end) == (
        0,
        len(CORPUS["limits"]),
    )


def test_query_syntax_in_text_is_only_words(corpus: tuple[Database, ChunkIndex]) -> None:
    _, index = corpus
    hits = index.search("mini", ["policies"], 'fraud" OR NOT -card* (', None, READER, 5, NOW)
    assert hits and hits[0].document_id == "fraud"


def test_fuse_is_reciprocal_rank_fusion() -> None:
    fused = fuse([1, 2, 3], [3, 4], Weights(rrf_k=60.0), 10)
    scores = {f.key: f.fused for f in fused}
    assert scores[3] == pytest.approx(1 / 63 + 1 / 61)
    assert scores[1] == pytest.approx(1 / 61)
    assert [f.key for f in fused] == [3, 1, 4, 2]  # 1 and 4 tie on 1/61: 4 has a vector rank
    assert fused[0].keyword_rank == 3 and fused[0].vector_rank == 1


def test_fuse_weights_rrf_k_and_k() -> None:
    fused = fuse([1, 2], [2, 1], Weights(keyword=2.0, vector=1.0, rrf_k=1.0), 1)
    assert [f.key for f in fused] == [1]
    assert fused[0].fused == pytest.approx(2 / 2 + 1 / 3)
    only_vector = fuse([1, 2], [2, 3], Weights(keyword=0.0), 10)
    assert [f.key for f in only_vector] == [2, 3]
    assert only_vector[0].keyword_rank == 2  # reported, adds nothing
    assert fuse([], [], Weights(), 5) == []


def test_new_version_supersedes_the_old(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    before = index.generation("mini")
    with db.write() as conn:
        index.add_version(
            conn,
            "mini",
            "fraud",
            "v-fraud-2",
            "policies",
            READER,
            Validity(),
            [chunk("fraud-2-0", "Card fraud is reported through the app.")],
        )
    assert index.generation("mini") == (before or 0) + 2  # old chunks out, new in
    hits = index.search("mini", ["policies"], "fraud", None, READER, 10, NOW)
    assert [(h.chunk_id, h.version) for h in hits] == [("fraud-2-0", "v-fraud-2")]
    assert run_sql(db.url, "SELECT count(*) FROM index_chunks WHERE version = 'v-fraud'") == [(0,)]
    with db.write() as conn, pytest.raises(ConflictError):
        index.add_version(
            conn,
            "mini",
            "fraud",
            "v-fraud-2",
            "policies",
            READER,
            Validity(),
            [chunk("fraud-2-x", "again")],
        )


def test_withdrawal_removes_the_text(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    with db.write() as conn:
        assert index.withdraw_document(conn, "mortgage") == 1
        assert index.withdraw_version(conn, "v-complaints") == 1
    assert index.search("mini", ["policies"], "mortgage complaints", None, READER, 10, NOW) == []
    assert run_sql(db.url, "SELECT count(*) FROM index_chunks WHERE text LIKE '%ortgage%'") == [
        (0,)
    ]
    assert run_sql(
        db.url,
        "SELECT count(*) FROM index_documents WHERE document_id IN ('mortgage', 'complaints')",
    ) == [(0,)]
    if db.is_sqlite:
        assert run_sql(db.url, "SELECT count(*) FROM index_fts WHERE text LIKE '%ortgage%'") == [
            (0,)
        ]
        assert run_sql(
            db.url, "SELECT count(*) FROM index_fts WHERE index_fts MATCH 'mortgage'"
        ) == [(0,)]
    else:
        assert run_sql(db.url, "SELECT count(*) FROM index_vectors") == [(4,)]
    with db.write() as conn:
        assert index.withdraw_document(conn, "mortgage") == 0


def test_access_and_validity_filter(store: tuple[Database, ChunkIndex]) -> None:
    db, index = store
    with db.write() as conn:
        add = index.add_version
        add(
            conn,
            "s",
            "open",
            "v1",
            "c",
            frozenset({"role:reader"}),
            Validity(),
            [chunk("o", "loan terms")],
        )
        add(
            conn,
            "s",
            "team",
            "v2",
            "c",
            frozenset({"group:risk"}),
            Validity(),
            [chunk("t", "loan terms")],
        )
        add(
            conn,
            "s",
            "old",
            "v3",
            "c",
            frozenset({"role:reader"}),
            Validity(None, NOW - 1),
            [chunk("x", "loan terms")],
        )
        add(
            conn,
            "s",
            "new",
            "v4",
            "c",
            frozenset({"role:reader"}),
            Validity(NOW + 1, None),
            [chunk("n", "loan terms")],
        )
        add(
            conn,
            "s",
            "other",
            "v5",
            "d",
            frozenset({"role:reader"}),
            Validity(),
            [chunk("d", "loan terms")],
        )
    q = embed("loan terms")
    found = index.search("s", ["c"], "loan", q, frozenset({"role:reader"}), 10, NOW)
    assert [h.chunk_id for h in found] == ["o"]
    both = index.search(
        "s", ["c", "d"], "loan", q, frozenset({"role:reader", "group:risk"}), 10, NOW
    )
    assert {h.chunk_id for h in both} == {"o", "t", "d"}
    assert index.search("s", ["c"], "loan", q, frozenset(), 10, NOW) == []
    assert index.search("s", ["c"], "loan", q, frozenset({"group:nobody"}), 10, NOW) == []
    assert index.search("elsewhere", ["c"], "loan", q, frozenset({"role:reader"}), 10, NOW) == []
    with db.write() as conn:
        index.set_access(conn, "team", frozenset())
        with pytest.raises(NotFoundError):
            index.set_access(conn, "missing", frozenset({"role:reader"}))
    assert index.search("s", ["c"], "loan", q, frozenset({"group:risk"}), 10, NOW) == []


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (dict(query_vector=np.ones(DIM + 1, np.float32)), "dimension 65"),
        (dict(query_vector=np.full(DIM, np.nan, np.float32)), "NaN"),
        (dict(query_vector=np.zeros(DIM, np.float32)), "all zeros"),
        (dict(query_vector=[[1.0] * DIM]), "one-dimensional"),
        (dict(query_text="  "), "query is empty"),
        (dict(query_text="x" * 9000), "at most 8192"),
        (dict(k=0), "k must be"),
        (dict(k=10_000), "k must be"),
        (dict(collections=[]), "at least one collection"),
        (dict(collections="policies"), "at least one collection"),
        (dict(permitted=frozenset({"alice"})), "not an access key"),
        (dict(weights=Weights(keyword=0.0, vector=0.0)), "at least one fusion weight"),
        (dict(weights=Weights(rrf_k=float("nan"))), "fusion weights"),
    ],
)
def test_bad_search_input_is_refused(
    corpus: tuple[Database, ChunkIndex], call: dict[str, object], message: str
) -> None:
    _, index = corpus
    args: dict[str, object] = {
        "space_id": "mini",
        "collections": ["policies"],
        "query_text": "",
        "query_vector": None,
        "permitted": READER,
        "k": 5,
        "now": NOW,
    }
    if "query_vector" not in call and "query_text" not in call:
        args["query_text"] = "credit"
    args.update(call)
    with pytest.raises(InputError, match=message):
        index.search(**args)  # type: ignore[arg-type]


def test_bad_writes_are_refused(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    cases = [
        (dict(chunks=[chunk("a", "x"), chunk("a", "y")]), "given twice"),
        (dict(chunks=[]), "at least one chunk"),
        (dict(access_keys=frozenset({"everyone"})), "not an access key"),
        (dict(validity=Validity(NOW, NOW - 5)), "after valid_from"),
        (
            dict(
                chunks=[
                    chunk("short", "x").__class__(
                        "short", 0, "x", 0, 1, None, np.ones(3, np.float32)
                    )
                ]
            ),
            "space mini has 64",
        ),
        (dict(chunks=[chunk("rates-0", "dup")]), "already in the index"),
    ]
    for change, message in cases:
        args: dict[str, object] = {
            "space_id": "mini",
            "document_id": "new",
            "version": "v-new",
            "collection": "policies",
            "access_keys": READER,
            "validity": Validity(),
            "chunks": [chunk("new-0", "text")],
        }
        args.update(change)
        with db.write() as conn, pytest.raises((InputError, ConflictError), match=message):
            index.add_version(conn, **args)  # type: ignore[arg-type]
    assert index.search("mini", ["policies"], "text dup", None, READER, 10, NOW) == []
