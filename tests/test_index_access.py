"""Access control that cannot leak: the property test over random principals, access lists,
validity, queries, withdrawals and access changes; the vector cache across a withdrawal;
and searches running while another thread withdraws, on SQLite and PostgreSQL."""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from keel.index import access
from keel.index.base import ChunkIndex
from keel.index.records import Hit, Validity, Weights
from keel.index.sqlite import SqliteIndex
from keel.store.database import Database
from tests.indexing import chunk, embed, opened_index

NOW = 1_800_000_000.0
EXAMPLES = int(os.environ.get("KEEL_INDEX_EXAMPLES", "1500"))
KEYS = (
    [f"person:p{i}@bank.example" for i in range(4)]
    + [f"group:g{i}" for i in range(4)]
    + [f"role:r{i}" for i in range(3)]
)
WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]
VALIDITY = [
    Validity(),
    Validity(None, NOW - 10),  # expired
    Validity(NOW + 10, None),  # not yet valid
    Validity(NOW - 10, NOW + 10),
]
ALL = Weights(candidates=1000)


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Database, ChunkIndex]]:
    with opened_index(request.param, tmp_path) as opened:
        yield opened


T0 = NOW - 1000.0  # the first versions become live here; each new version 10 s later
VALIDITY += [
    Validity(T0 + 15, None),  # valid from the middle of the test's history
    Validity(None, T0 + 25),  # expired during it
]


@dataclass
class Version:
    """What the test believes about one version of a document."""

    version: str
    validity: Validity
    chunks: dict[str, str]  # chunk id -> text
    live_from: float
    live_until: float | None = None
    gone: bool = False  # withdrawn or pruned

    def readable(self, as_of: float | None) -> bool:
        at = NOW if as_of is None else as_of
        v = self.validity
        valid = (v.valid_from is None or v.valid_from <= at) and (
            v.valid_until is None or v.valid_until > at
        )
        if as_of is None:
            live = self.live_until is None
        else:
            live = self.live_from <= as_of and (self.live_until is None or as_of < self.live_until)
        return not self.gone and valid and live


@dataclass
class Doc:
    """What the test believes about one document: the model the index must agree with."""

    access: frozenset[str]
    versions: list[Version] = field(default_factory=list)

    def readable(self, permitted: frozenset[str], as_of: float | None) -> dict[str, str]:
        if not self.access & permitted:
            return {}
        return {c: t for v in self.versions if v.readable(as_of) for c, t in v.chunks.items()}

    def indexed(self) -> bool:
        return any(not v.gone for v in self.versions)


keys = st.frozensets(st.sampled_from(KEYS), max_size=4)
docs = st.lists(
    st.tuples(
        keys,
        st.sampled_from(VALIDITY),
        st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=4), min_size=1, max_size=3),
    ),
    min_size=1,
    max_size=6,
)
principal = st.builds(
    lambda person, rest: frozenset({person}) | rest,
    st.sampled_from(KEYS[:4]),
    st.frozensets(st.sampled_from(KEYS[4:]), max_size=3),
)
# None (the live versions now) or an instant from before the first version to after the
# last, on period boundaries (multiples of 10 s) and between them.
instant = st.one_of(st.none(), st.integers(-2, 30).map(lambda k: T0 + 5.0 * k))
search_op = st.tuples(
    st.just("search"),
    principal,
    st.lists(st.sampled_from(WORDS), max_size=3),
    st.booleans(),
    instant,
)
ops = st.lists(
    st.one_of(
        search_op,
        st.tuples(st.just("withdraw_document"), st.integers(0, 5)),
        st.tuples(st.just("withdraw_version"), st.integers(0, 5), st.integers(0, 5)),
        st.tuples(st.just("set_access"), st.integers(0, 5), keys),
        st.tuples(
            st.just("new_version"),
            st.integers(0, 5),
            st.sampled_from(WORDS),
            st.sampled_from(VALIDITY),
        ),
        st.tuples(st.just("prune"), st.integers(-2, 30).map(lambda k: T0 + 5.0 * k)),
    ),
    min_size=1,
    max_size=12,
)


def test_no_search_returns_what_the_principal_may_not_read(
    store: tuple[Database, ChunkIndex],
) -> None:
    db, index = store
    counter = itertools.count()

    @settings(
        max_examples=EXAMPLES if db.is_sqlite else max(EXAMPLES // 3, 100),
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    @given(documents=docs, operations=ops)
    def check(
        documents: list[tuple[frozenset[str], Validity, list[list[str]]]], operations: list[tuple]
    ) -> None:  # type: ignore[type-arg]
        n = next(counter)
        collection = f"c{n}"
        model: dict[str, Doc] = {}
        with db.write() as conn:
            for i, (access, validity, texts) in enumerate(documents):
                chunks = {f"e{n}-d{i}-v0-{j}": " ".join(t) for j, t in enumerate(texts)}
                version = Version(f"e{n}-d{i}-v0", validity, chunks, T0)
                model[f"e{n}-d{i}"] = Doc(access, [version])
                index.add_version(
                    conn,
                    "prop",
                    f"e{n}-d{i}",
                    version.version,
                    collection,
                    access,
                    validity,
                    [chunk(cid, body, j) for j, (cid, body) in enumerate(chunks.items())],
                    at=T0,
                )
        clock = T0
        withdrawn: set[str] = set()  # chunks of withdrawn or pruned versions
        names = list(model)
        for op in operations:
            if op[0] == "search":
                _, permitted, words, with_vector, as_of = op
                text = " ".join(words)
                if not text and not with_vector:
                    continue
                vector = embed(text or "alpha") if with_vector else None
                hits = index.search(
                    "prop", [collection], text, vector, permitted, 1000, NOW, ALL, as_of=as_of
                )
                readable: dict[str, str] = {}
                for doc in model.values():
                    readable |= doc.readable(permitted, as_of)
                returned = {h.chunk_id for h in hits}
                assert returned <= set(readable), "returned a chunk the principal may not read"
                assert not returned & withdrawn, "returned a withdrawn chunk"
                assert len(returned) == len(hits)
                if with_vector:  # exact search over the permitted set misses nothing
                    assert returned == set(readable)
                elif words:
                    assert all(set(words) & set(readable[c].split()) for c in returned)
                kept, dropped = index.recheck(hits, permitted, NOW, as_of)
                assert dropped == [] and kept == hits
                continue
            if op[0] == "prune":
                with db.write() as conn:
                    index.prune_superseded(conn, op[1])
                for doc in model.values():
                    for v in doc.versions:
                        if not v.gone and v.live_until is not None and v.live_until < op[1]:
                            v.gone = True
                            withdrawn |= set(v.chunks)
                continue
            name = names[op[1] % len(names)]
            doc = model[name]
            with db.write() as conn:
                if op[0] == "withdraw_document":
                    index.withdraw_document(conn, name)
                    for v in doc.versions:
                        v.gone = True
                        withdrawn |= set(v.chunks)
                elif op[0] == "withdraw_version":
                    v = doc.versions[op[2] % len(doc.versions)]
                    index.withdraw_version(conn, name, v.version)
                    v.gone = True
                    withdrawn |= set(v.chunks)
                elif op[0] == "set_access":
                    if doc.indexed():
                        index.set_access(conn, name, op[2])
                        doc.access = op[2]
                else:
                    clock += 10.0
                    version = f"{name}-v{next(counter)}"
                    body = f"{op[2]} {name}"
                    for v in doc.versions:
                        if not v.gone and v.live_until is None:
                            v.live_until = clock
                    doc.versions.append(Version(version, op[3], {f"{version}-0": body}, clock))
                    index.add_version(
                        conn,
                        "prop",
                        name,
                        version,
                        collection,
                        doc.access,
                        op[3],
                        [chunk(f"{version}-0", body)],
                        at=clock,
                    )

    check()
    if db.is_sqlite:  # thousands of deletes later, the keyword index is still sound
        with db.write() as conn:
            conn.exec_driver_sql("INSERT INTO index_fts (index_fts) VALUES ('integrity-check')")


def _corpus(db: Database, index: ChunkIndex, collection: str = "c") -> None:
    with db.write() as conn:
        for i in range(30):
            body = f"routine note {i} about {WORDS[i % len(WORDS)]}"
            index.add_version(
                conn,
                "s",
                f"doc{i}",
                f"v{i}",
                collection,
                frozenset({"group:g"}),
                Validity(),
                [chunk(f"doc{i}-0", body)],
                at=T0,
            )
        # The target memo's first version, live from T0 until the second replaced it.
        for version, chunk_id, at in (("vt0", "target-old-0", T0), ("vt", "target-0", T0 + 100)):
            index.add_version(
                conn,
                "s",
                "target",
                version,
                collection,
                frozenset({"group:g"}),
                Validity(),
                [chunk(chunk_id, "the target memo about routine alpha")],
                at=at,
            )


def _search(index: ChunkIndex, as_of: float | None = None) -> list[Hit]:
    text = "target memo routine alpha"
    return index.search("s", ["c"], text, embed(text), frozenset({"group:g"}), 5, NOW, as_of=as_of)


def test_cached_vectors_never_outlive_a_withdrawal(tmp_path: Path) -> None:
    with opened_index("sqlite", tmp_path) as (db, index):
        assert isinstance(index, SqliteIndex)
        _corpus(db, index)
        assert _search(index)[0].chunk_id == "target-0"  # the cache now holds its vector
        target_seq = (
            db.engine.connect()
            .exec_driver_sql("SELECT seq FROM index_chunks WHERE chunk_id = 'target-0'")
            .scalar_one()
        )
        # A read transaction that began before the withdrawal, and what it may read.
        with db.snapshot() as old:
            params = access.filter_params("s", ["c"], frozenset({"group:g"}), NOW)
            assert old.exec_driver_sql(
                f"SELECT 1 FROM index_chunks WHERE seq = {target_seq}"
            ).first()
            with db.write() as conn:
                index.withdraw_document(conn, "target")
            after = _search(index)  # refreshes the cache to the new generation
            assert "target-0" not in {h.chunk_id for h in after}
            assert target_seq not in index.cache._spaces["s"].seqs
            # The older transaction still sees the target (its re-check drops it) and
            # reads it for itself; the shared cache does not take it back.
            permitted = index.permitted(old, params)
            assert permitted is not None
            assert target_seq in permitted.matrix.seqs[permitted.rows]
            assert target_seq not in index.cache._spaces["s"].seqs
        assert "target-0" not in {h.chunk_id for h in _search(index)}


@pytest.mark.parametrize(
    ("as_of", "target"),
    [(None, "target-0"), (T0 + 50, "target-old-0")],
    ids=["live-document", "as-of-superseded-version"],
)
def test_searches_during_a_withdrawal(
    store: tuple[Database, ChunkIndex], as_of: float | None, target: str
) -> None:
    """Searches of the live versions while the document is withdrawn, or searches "as
    of" an earlier instant while the superseded version they find is withdrawn."""
    db, index = store
    _corpus(db, index)
    committed = threading.Event()
    before_commit = threading.Semaphore(0)
    results: list[tuple[bool, list[Hit]]] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def searcher() -> None:
        try:
            after = 0
            while after < 15:
                started_after = committed.is_set()
                hits = _search(index, as_of)
                with lock:
                    results.append((started_after, hits))
                before_commit.release()
                after += started_after
        except BaseException as error:  # reported by the main thread
            errors.append(error)
            committed.set()

    def withdrawer() -> None:
        try:
            for _ in range(10):  # let searches run (and fill caches) first
                before_commit.acquire(timeout=60)
            with db.write() as conn:
                if as_of is None:
                    index.withdraw_document(conn, "target")
                else:
                    index.withdraw_version(conn, "target", "vt0")
        except BaseException as error:  # reported by the main thread
            errors.append(error)
        finally:
            committed.set()

    threads = [threading.Thread(target=searcher) for _ in range(3)]
    threads.append(threading.Thread(target=withdrawer))
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors, errors
    assert all(not t.is_alive() for t in threads)
    late = [hits for started_after, hits in results if started_after]
    early = [hits for started_after, hits in results if not started_after]
    assert len(late) >= 45 and early
    for hits in late:
        assert target not in {h.chunk_id for h in hits}
    leaked = [hits for hits in early if any(h.chunk_id == target for h in hits)]
    assert leaked, "searches before the withdrawal found the target"
    for hits in leaked:
        kept, dropped = index.recheck(hits, frozenset({"group:g"}), NOW, as_of)
        assert [h.chunk_id for h in dropped] == [target]
        assert len(kept) == len(hits) - 1
