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
T0 = NOW - 86_400.0  # when the corpus became live
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
                at=T0,
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


T1 = T0 + 3600.0  # when "fraud" gets its second version in the tests below
FRAUD_2 = "Card fraud is reported through the app."
OPEN = Validity()


def _fraud_v2(db: Database, index: ChunkIndex, validity: Validity = OPEN) -> None:
    with db.write() as conn:
        index.add_version(
            conn,
            "mini",
            "fraud",
            "v-fraud-2",
            "policies",
            READER,
            validity,
            [chunk("fraud-2-0", FRAUD_2)],
            at=T1,
        )


def _found(
    index: ChunkIndex, query: str, as_of: float | None, permitted: frozenset[str] = READER
) -> list[str]:
    """The "fraud" chunks a hybrid search finds, as ``chunk@version``."""
    hits = index.search("mini", ["policies"], query, embed(query), permitted, 10, NOW, as_of=as_of)
    return sorted(f"{h.chunk_id}@{h.version}" for h in hits if h.document_id == "fraud")


def test_new_version_supersedes_the_old_but_keeps_it(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    before = index.generation("mini")
    _fraud_v2(db, index)
    assert index.generation("mini") == (before or 0) + 1
    # Now only the new version; as of an instant in the old one's live period, only it.
    assert _found(index, "card fraud", None) == ["fraud-2-0@v-fraud-2"]
    assert _found(index, "card fraud", T0 + 1) == ["fraud-0@v-fraud"]
    assert _found(index, "card fraud", T1 - 0.001) == ["fraud-0@v-fraud"]
    assert _found(index, "card fraud", T1) == ["fraud-2-0@v-fraud-2"]  # live_from <= as_of
    assert _found(index, "card fraud", NOW + 10**6) == ["fraud-2-0@v-fraud-2"]
    assert run_sql(db.url, "SELECT count(*) FROM index_chunks WHERE version = 'v-fraud'") == [(1,)]
    assert sorted(
        run_sql(
            db.url,
            "SELECT version, live_from, live_until FROM index_versions WHERE document_id = 'fraud'",
        )
    ) == [("v-fraud", T0, T1), ("v-fraud-2", T1, None)]
    # The re-check judges as the search did: the old version passes as of its period,
    # not as the live version.
    old = index.search("mini", ["policies"], "fraud", None, READER, 10, NOW, as_of=T0 + 1)
    assert [h.version for h in old] == ["v-fraud"]
    assert index.recheck(old, READER, NOW, as_of=T0 + 1) == (old, [])
    assert index.recheck(old, READER, NOW) == ([], old)


def test_a_version_cannot_be_live_twice_nor_go_back_in_time(
    corpus: tuple[Database, ChunkIndex],
) -> None:
    db, index = corpus
    _fraud_v2(db, index)
    cases = [
        ("v-fraud-2", "fraud-2-x", T1 + 5, "already indexed in space mini"),
        ("v-fraud", "fraud-x", T1 + 5, "superseded at .* cannot become live twice"),
        ("v-fraud-3", "fraud-3-0", T1 - 5, "became live later"),
    ]
    for version, chunk_id, at, message in cases:
        with db.write() as conn, pytest.raises(ConflictError, match=message):
            index.add_version(
                conn,
                "mini",
                "fraud",
                version,
                "policies",
                READER,
                Validity(),
                [chunk(chunk_id, "again")],
                at=at,
            )
    assert _found(index, "card fraud again", None) == ["fraud-2-0@v-fraud-2"]


def test_reindexing_a_superseded_version_keeps_its_live_period(
    corpus: tuple[Database, ChunkIndex],
) -> None:
    db, index = corpus
    _fraud_v2(db, index)
    with db.write() as conn:  # the old version, embedded again in another space
        index.add_version(
            conn,
            "mini-2",
            "fraud",
            "v-fraud",
            "policies",
            READER,
            Validity(),
            [chunk("fraud-0-s2", CORPUS["fraud"])],
            at=NOW,
        )
    query = embed("card fraud")
    as_of = [
        h.chunk_id
        for h in index.search("mini-2", ["policies"], "", query, READER, 5, NOW, as_of=T0 + 1)
    ]
    assert as_of == ["fraud-0-s2"]
    assert index.search("mini-2", ["policies"], "", query, READER, 5, NOW) == []


def test_as_of_before_the_first_version_finds_nothing(
    corpus: tuple[Database, ChunkIndex],
) -> None:
    _, index = corpus
    query = "interest rate credit"
    assert index.search("mini", ["policies"], query, embed(query), READER, 10, NOW)
    assert (
        index.search("mini", ["policies"], query, embed(query), READER, 10, NOW, as_of=T0 - 1) == []
    )


def test_validity_belongs_to_each_version(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    # The first version expires an hour into its life; the second is valid only from NOW + 10.
    with db.write() as conn:
        index.withdraw_document(conn, "fraud")
        index.add_version(
            conn,
            "mini",
            "fraud",
            "v-fraud",
            "policies",
            READER,
            Validity(None, T0 + 1800),
            [chunk("fraud-0", CORPUS["fraud"])],
            at=T0,
        )
    _fraud_v2(db, index, Validity(NOW + 10, None))
    assert _found(index, "card fraud", T0 + 60) == ["fraud-0@v-fraud"]
    assert _found(index, "card fraud", T0 + 1800) == []  # live, but expired then
    assert _found(index, "card fraud", T1 + 60) == []  # live, not yet valid then
    assert _found(index, "card fraud", None) == []  # not yet valid at NOW
    assert _found(index, "card fraud", NOW + 10) == ["fraud-2-0@v-fraud-2"]


def test_withdrawing_a_superseded_version(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    _fraud_v2(db, index)
    earlier = index.search("mini", ["policies"], "fraud", None, READER, 10, NOW, as_of=T0 + 1)
    before = index.generation("mini")
    with db.write() as conn:
        assert index.withdraw_version(conn, "fraud", "v-fraud") == 1
    assert index.generation("mini") == (before or 0) + 1
    assert _found(index, "card fraud", T0 + 1) == []
    assert _found(index, "card fraud", None) == ["fraud-2-0@v-fraud-2"]
    assert index.recheck(earlier, READER, NOW, as_of=T0 + 1) == ([], earlier)
    assert run_sql(db.url, "SELECT count(*) FROM index_chunks WHERE text LIKE '%blocked%'") == [
        (0,)
    ]
    if db.is_sqlite:
        assert run_sql(
            db.url, "SELECT count(*) FROM index_fts WHERE index_fts MATCH 'blocked'"
        ) == [(0,)]
    # Withdrawing the live version leaves no live version; nothing becomes live again.
    with db.write() as conn:
        assert index.withdraw_version(conn, "fraud", "v-fraud-2") == 1
    assert _found(index, "card fraud", None) == _found(index, "card fraud", T1 + 1) == []


def test_withdrawing_the_document_removes_every_version(
    corpus: tuple[Database, ChunkIndex],
) -> None:
    db, index = corpus
    _fraud_v2(db, index)
    with db.write() as conn:
        assert index.withdraw_document(conn, "fraud") == 2
    assert _found(index, "card fraud", T0 + 1) == _found(index, "card fraud", None) == []
    assert run_sql(
        db.url,
        "SELECT (SELECT count(*) FROM index_versions WHERE document_id = 'fraud') + "
        "(SELECT count(*) FROM index_access WHERE document_id = 'fraud')",
    ) == [(0,)]


def test_revoked_access_hides_every_version(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    _fraud_v2(db, index)
    earlier = index.search("mini", ["policies"], "fraud", None, READER, 10, NOW, as_of=T0 + 1)
    assert [h.version for h in earlier] == ["v-fraud"]
    other = frozenset({"group:audit"})
    with db.write() as conn:
        index.set_access(conn, "fraud", other)
    for as_of in (None, T0 + 1, T1 + 1):
        assert _found(index, "card fraud", as_of) == []
    assert index.recheck(earlier, READER, NOW, as_of=T0 + 1) == ([], earlier)
    assert _found(index, "card fraud", T0 + 1, other) == ["fraud-0@v-fraud"]


def test_prune_superseded(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    _fraud_v2(db, index)
    t2 = T1 + 3600
    with db.write() as conn:
        index.add_version(
            conn,
            "mini",
            "fraud",
            "v-fraud-3",
            "policies",
            READER,
            Validity(),
            [chunk("fraud-3-0", "Card fraud: call the number on the card.")],
            at=t2,
        )
    with db.write() as conn:
        assert index.prune_superseded(conn, T1) == 0  # v-fraud's period ends at T1, not before
    assert _found(index, "card fraud", T0 + 1) == ["fraud-0@v-fraud"]
    before = index.generation("mini")
    with db.write() as conn:
        assert index.prune_superseded(conn, T1 + 1) == 1
    assert index.generation("mini") == (before or 0) + 1
    assert _found(index, "card fraud", T0 + 1) == []
    assert _found(index, "card fraud", T1 + 1) == ["fraud-2-0@v-fraud-2"]
    with db.write() as conn:  # live versions stay, however old
        assert index.prune_superseded(conn, NOW + 10**9) == 1
    assert _found(index, "card fraud", T1 + 1) == []
    assert _found(index, "card fraud", None) == ["fraud-3-0@v-fraud-3"]
    assert run_sql(db.url, "SELECT count(*) FROM index_chunks") == [(len(CORPUS),)]
    assert run_sql(db.url, "SELECT count(*) FROM index_versions WHERE document_id = 'fraud'") == [
        (1,)
    ]
    # A document whose live version was withdrawn loses its access list once pruned empty.
    with db.write() as conn:
        index.withdraw_version(conn, "fraud", "v-fraud-3")
    assert run_sql(db.url, "SELECT count(*) FROM index_access WHERE document_id = 'fraud'") == [
        (0,)
    ]


def test_withdrawal_removes_the_text(corpus: tuple[Database, ChunkIndex]) -> None:
    db, index = corpus
    with db.write() as conn:
        assert index.withdraw_document(conn, "mortgage") == 1
        assert index.withdraw_version(conn, "complaints", "v-complaints") == 1
    assert index.search("mini", ["policies"], "mortgage complaints", None, READER, 10, NOW) == []
    assert run_sql(db.url, "SELECT count(*) FROM index_chunks WHERE text LIKE '%ortgage%'") == [
        (0,)
    ]
    assert run_sql(
        db.url,
        "SELECT count(*) FROM index_versions WHERE document_id IN ('mortgage', 'complaints')",
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
            at=T0,
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
            at=T0,
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
            at=T0,
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
            at=T0,
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
            at=T0,
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
        (dict(as_of=float("nan")), "as_of must be a finite number"),
        (dict(as_of=float("inf")), "as_of must be a finite number"),
        (dict(as_of=-float("inf")), "as_of must be a finite number"),
        (dict(as_of="yesterday"), "as_of must be a finite number"),
        (dict(as_of=True), "as_of must be a finite number"),
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
    if "as_of" in call:
        with pytest.raises(InputError, match=message):
            index.recheck([], READER, NOW, as_of=call["as_of"])  # type: ignore[arg-type]


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
        (dict(at=float("nan")), "at must be a finite number"),
        (dict(at=None), "at must be a finite number"),
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
            "at": T0,
        }
        args.update(change)
        with db.write() as conn, pytest.raises((InputError, ConflictError), match=message):
            index.add_version(conn, **args)  # type: ignore[arg-type]
    assert index.search("mini", ["policies"], "text dup", None, READER, 10, NOW) == []
    for before in (float("nan"), float("inf"), "soon"):
        with db.write() as conn, pytest.raises(InputError, match="before must be a finite"):
            index.prune_superseded(conn, before)  # type: ignore[arg-type]
