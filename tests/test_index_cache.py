"""The SQLite index's caches never outlive a write: the permitted documents it resolves
select exactly the chunks the store's own filter selects, and a write between two searches
with the same keys (an access change, a withdrawal, an addition, a new version, a space
dropped and created again) shows in the second search, whether the write went through the
same index object or through another one on the same file (another process's view)."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import Connection

from keel.index import access
from keel.index.base import ChunkIndex
from keel.index.records import Hit, Validity, Weights
from keel.index.sqlite import GatheredCache, SqliteIndex
from keel.store.database import Database, open_database
from tests.indexing import chunk, embed, opened_index

NOW = 1_800_000_000.0
READER = frozenset({"group:readers"})
EVERYTHING = Weights(candidates=1000)
WORDS = ["alpha", "bravo", "charlie", "delta"]
ALWAYS = Validity()
TICKS = itertools.count(int(NOW) - 100_000)  # each version made live a second later


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, ChunkIndex]]:
    with opened_index(request.param, tmp_path) as opened:
        yield opened


def _add(
    conn: Connection,
    index: ChunkIndex,
    name: str,
    version: str,
    keys: frozenset[str] = READER,
    space: str = "s",
    validity: Validity = ALWAYS,
) -> None:
    chunks = [
        chunk(f"{name}-{version}-{space}-{j}", f"{WORDS[j % 4]} note {name} {j}", j)
        for j in range(3)
    ]
    index.add_version(conn, space, name, version, "c", keys, validity, chunks, at=next(TICKS))


def _found(index: ChunkIndex, keys: frozenset[str] = READER, space: str = "s") -> set[str]:
    """Chunk ids a hybrid, a vector-only and a keyword-only search return; all three
    must agree, since every chunk matches a word and the depth takes them all."""
    query = "alpha bravo charlie delta note"
    found = []
    for vector, weights in (
        (embed(query), EVERYTHING),
        (embed(query), Weights(keyword=0.0, candidates=1000)),
        (None, Weights(vector=0.0, candidates=1000)),
    ):
        hits: list[Hit] = index.search(space, ["c"], query, vector, keys, 1000, NOW, weights)
        found.append({h.chunk_id for h in hits})
    assert found[0] == found[1] == found[2]
    return found[0]


def _corpus(db: Database, index: ChunkIndex) -> None:
    with db.write() as conn:
        for i in range(6):
            _add(conn, index, f"d{i}", "v1")


@pytest.fixture(params=["same index", "another index on the same store"])
def writer(
    request: pytest.FixtureRequest, store: tuple[Database, ChunkIndex]
) -> Iterator[tuple[Database, ChunkIndex]]:
    db, index = store
    if request.param == "same index":
        yield db, index
        return
    other = open_database(db.url)
    try:
        yield other, type(index)(other)
    finally:
        other.close()


WRITES: dict[str, Callable[[Connection, ChunkIndex], None]] = {
    "access revoked": lambda conn, ix: ix.set_access(conn, "d1", frozenset({"group:other"})),
    "access emptied": lambda conn, ix: ix.set_access(conn, "d1", frozenset()),
    "document withdrawn": lambda conn, ix: ix.withdraw_document(conn, "d1") and None,
    "version withdrawn": lambda conn, ix: ix.withdraw_version(conn, "d1", "v1") and None,
    "document added": lambda conn, ix: _add(conn, ix, "d9", "v1"),
    "new version": lambda conn, ix: _add(conn, ix, "d1", "v2"),
    "access granted": lambda conn, ix: ix.set_access(conn, "d1", READER | {"group:x"}),
    "expired": lambda conn, ix: _add(conn, ix, "d1", "v3", validity=Validity(None, NOW - 1)),
}


def _expected(write: str, before: set[str]) -> set[str]:
    d1 = {c for c in before if c.startswith("d1-")}
    if write in (
        "access revoked",
        "access emptied",
        "document withdrawn",
        "version withdrawn",
        "expired",
    ):
        return before - d1
    if write == "document added":
        return before | {f"d9-v1-s-{j}" for j in range(3)}
    if write == "new version":
        return (before - d1) | {f"d1-v2-s-{j}" for j in range(3)}
    return before


@pytest.mark.parametrize("write", list(WRITES))
def test_a_write_between_two_searches_with_the_same_keys_shows_in_the_second(
    store: tuple[Database, ChunkIndex], writer: tuple[Database, ChunkIndex], write: str
) -> None:
    db, index = store
    _corpus(db, index)
    before = _found(index)
    assert before == {f"d{i}-v1-s-{j}" for i in range(6) for j in range(3)}
    assert _found(index) == before  # the second search is served from the caches
    writer_db, writer_index = writer
    with writer_db.write() as conn:
        WRITES[write](conn, writer_index)
    assert _found(index) == _expected(write, before)


def test_a_space_dropped_and_created_again_is_not_served_from_the_old_cache(
    store: tuple[Database, ChunkIndex], tmp_path: Path
) -> None:
    db, index = store
    _corpus(db, index)
    with db.write() as conn:  # more writes, so the old space's generation is the higher
        for i in range(6):
            index.set_access(conn, f"d{i}", READER)
    assert len(_found(index)) == 18
    other = open_database(db.url)
    try:
        again = type(index)(other)
        with other.write() as conn:
            again.drop_space(conn, "s")
            again.withdraw_document(conn, "d0")
            _add(conn, again, "d0", "v1")  # the same document and version, new chunks
        with other.engine.connect() as read:
            new_seq = read.exec_driver_sql("SELECT max(seq) FROM index_chunks").scalar_one()
        assert again.generation("s") == 1
    finally:
        other.close()
    assert index.generation("s") == 1
    # Same chunk ids as before the drop, but new rows: they must be scored and fetched.
    assert _found(index) == {f"d0-v1-s-{j}" for j in range(3)}
    if isinstance(index, SqliteIndex):
        assert new_seq in index.cache._spaces["s"].seqs


FIRST, SECOND = NOW - 100, NOW - 50  # when the versions below became live


def test_permitted_documents_select_what_the_chunk_filter_selects(tmp_path: Path) -> None:
    """The SQLite index resolves documents, then chunks through its cache; the store's
    filter (``access.PERMITTED_SEQS``) selects chunks directly. Over collections, access
    lists, validity, superseded and withdrawn versions, a second space and searches "as
    of" an earlier instant (when validity is judged then too), both agree."""
    rng = np.random.default_rng(5)
    keys = [f"group:g{i}" for i in range(4)] + ["person:p@bank.example"]
    validities = [Validity(), Validity(None, NOW - 1), Validity(NOW + 1, None)]
    with opened_index("sqlite", tmp_path) as (db, index):
        assert isinstance(index, SqliteIndex)
        with db.write() as conn:
            for i in range(40):
                access_list = frozenset(k for k in keys if rng.random() < 0.4)
                validity = validities[int(rng.integers(0, 3))]
                chunks = [chunk(f"x{i}-{j}", f"{WORDS[j]} text {i}", j) for j in range(3)]
                collection = "c" if i % 3 else "other"
                index.add_version(
                    conn, "s", f"x{i}", "v1", collection, access_list, validity, chunks, at=FIRST
                )
                if i % 5 == 0:  # the same version in a second space (a re-index)
                    copies = [chunk(f"x{i}-t{j}", f"{WORDS[j]} text {i}", j) for j in range(2)]
                    index.add_version(
                        conn, "t", f"x{i}", "v1", collection, access_list, validity, copies,
                        at=FIRST,
                    )  # fmt: skip
                if i % 7 == 0:  # superseded
                    newer = [chunk(f"x{i}-n", f"newer text {i}", 0)]
                    index.add_version(
                        conn, "s", f"x{i}", "v2", collection, access_list, validity, newer,
                        at=SECOND,
                    )  # fmt: skip
            index.withdraw_document(conn, "x3")
        for n, permitted in enumerate(
            itertools.chain.from_iterable(itertools.combinations(keys, r) for r in (1, 2, 5))
        ):
            collections = [["c"], ["other"], ["c", "other"]][n % 3]
            for space, as_of in itertools.product(("s", "t"), (None, FIRST + 1, FIRST - 1)):
                params = access.filter_params(space, collections, frozenset(permitted), NOW, as_of)
                with db.snapshot() as conn:
                    expected = set(
                        conn.execute(access.permitted_query(access.PERMITTED_SEQS), params)
                        .scalars()
                        .all()
                    )
                    resolved = index.permitted(conn, params)
                    got = (
                        set()
                        if resolved is None
                        else set(resolved.matrix.seqs[resolved.rows].tolist())
                    )
                assert got == expected, (space, collections, permitted, as_of)


def test_the_gathered_copy_is_found_only_by_the_same_rows_of_the_same_matrix(
    tmp_path: Path,
) -> None:
    with opened_index("sqlite", tmp_path) as (db, index):
        assert isinstance(index, SqliteIndex)
        _corpus(db, index)
        _found(index)
        matrix = index.cache._spaces["s"]
        cache = GatheredCache(max_bytes=10_000, max_entries=2)
        rows = np.array([0, 3, 5], np.int64)
        first = cache.vectors(matrix, rows)
        assert cache.vectors(matrix, rows) is first
        assert np.array_equal(first, matrix.vectors[rows])
        other = cache.vectors(matrix, np.array([0, 3, 6], np.int64))
        assert np.array_equal(other, matrix.vectors[[0, 3, 6]])
        cache.vectors(matrix, np.array([1], np.int64))  # a third entry pushes out the first
        assert cache.vectors(matrix, rows) is not first
        too_big = GatheredCache(max_bytes=10)
        assert too_big.vectors(matrix, rows) is not too_big.vectors(matrix, rows)
