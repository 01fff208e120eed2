"""The embedded index on SQLite: FTS5 BM25 for keywords, exact NumPy search for vectors.

What a caller may read is decided in SQL, in the search's own read transaction, every
time: the documents whose live version, collection, validity and access list admit the
caller's keys (a few rows per document, where the chunks would be many). What is cached
in process memory is only what never changes without the space's generation moving:
each chunk's vector, and which chunks belong to which document version (a chunk's vector
and owner never change, and its id is never reused). A search maps its permitted
document versions to rows of that cache and scores exactly those rows.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, bindparam, text

from keel.errors import StoreError
from keel.index.base import ChunkIndex, Scored
from keel.store.database import Database

# The document versions a caller may read (live now, or live at an "as of" instant):
# ``access.PERMITTED_WHERE`` without the chunk (the space is the cache's own key), so that
# SQLite reads one row per document version, not per chunk.
# tests/test_index_cache.py checks that both select the same chunks.
# Run on the driver's cursor (a thousand rows cost more through SQLAlchemy's result
# objects than in SQLite); the braces become one ``?`` per collection and per key.
PERMITTED_DOCUMENTS = """
    SELECT d.document_id, d.version FROM index_versions d
    WHERE d.collection IN ({collections})
    AND d.live_from <= ?
    AND (d.live_until IS NULL OR d.live_until > ?)
    AND (d.valid_from IS NULL OR d.valid_from <= ?)
    AND (d.valid_until IS NULL OR d.valid_until > ?)
    AND d.document_id IN (SELECT a.document_id FROM index_access a WHERE a.key IN ({keys}))
"""
LOAD_BATCH = 20_000  # rows fetched at a time when filling the cache
# Contiguous copies of permitted rows' vectors kept for permitted sets searched again.
GATHERED_BYTES = 512 * 2**20
GATHERED_ENTRIES = 8


@dataclass(frozen=True)
class Snapshot:
    """What a read transaction sees of a space: its generation and its newest chunk id
    (``None``: the space holds no chunk)."""

    generation: int
    last_seq: int | None


@dataclass(frozen=True)
class SpaceMatrix:
    """One space's chunks as of ``generation``: ids ascending, their vectors, and for each
    document version (``codes``) the rows that belong to it, ``order[bounds[c]:bounds[c+1]]``."""

    generation: int
    seqs: NDArray[np.int64]
    vectors: NDArray[np.float32]
    owners: NDArray[np.int64]
    codes: Mapping[tuple[str, str], int]
    order: NDArray[np.int64]
    bounds: NDArray[np.int64]

    def serves(self, snapshot: Snapshot) -> bool:
        """Whether this matrix holds every chunk ``snapshot`` sees, except those withdrawn
        since. A matrix at a later generation of the same space does: ids only grow, so
        what was added after ``snapshot`` has ids above its ``last_seq`` and is cut off by
        the caller. The newest id being present tells the space was not dropped and
        created again since (its chunks would all have newer ids)."""
        if self.generation < snapshot.generation or snapshot.last_seq is None:
            return False
        pos = int(np.searchsorted(self.seqs, snapshot.last_seq))
        return pos < len(self.seqs) and int(self.seqs[pos]) == snapshot.last_seq

    def rows_of(self, versions: Iterable[tuple[str, str]], last_seq: int) -> NDArray[np.int64]:
        """The rows of the chunks of ``versions`` (document id, version) with ids up to
        ``last_seq``; versions with no chunk in this space have none."""
        found = [c for c in (self.codes.get(v) for v in versions) if c is not None]
        if not found:
            return np.empty(0, np.int64)
        codes = np.array(found, np.int64)
        starts, stops = self.bounds[codes], self.bounds[codes + 1]
        lengths = stops - starts
        total = int(lengths.sum())
        # Concatenated ranges order[start:stop] without a Python loop over them.
        shift = np.repeat(starts - (np.cumsum(lengths) - lengths), lengths)
        rows: NDArray[np.int64] = self.order[np.arange(total, dtype=np.int64) + shift]
        return rows[self.seqs[rows] <= last_seq]


def _matrix(
    generation: int,
    seqs: NDArray[np.int64],
    vectors: NDArray[np.float32],
    owners: NDArray[np.int64],
    codes: Mapping[tuple[str, str], int],
) -> SpaceMatrix:
    order = np.argsort(owners, kind="stable")
    bounds = np.searchsorted(owners[order], np.arange(len(codes) + 1, dtype=np.int64))
    return SpaceMatrix(generation, seqs, vectors, owners, codes, order, bounds.astype(np.int64))


class VectorCache:
    """Per-space matrices of chunk vectors and owners, shared by one process's threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spaces: dict[str, SpaceMatrix] = {}

    def matrix(self, conn: Connection, space_id: str, snapshot: Snapshot) -> SpaceMatrix:
        """A matrix that serves ``snapshot`` (read in the transaction ``conn``): the
        cached one, or one refreshed from ``conn``.

        A refreshed matrix replaces the cached one when it is newer, or when the cached
        one belongs to a space since dropped (all its ids are older than the new ones);
        a search in an older transaction refreshes for itself only.
        """
        with self._lock:
            cached = self._spaces.get(space_id)
        if cached is not None and cached.serves(snapshot):
            return cached
        fresh = _refresh(conn, space_id, snapshot.generation, cached)
        with self._lock:
            current = self._spaces.get(space_id)
            if (
                current is None
                or current.generation < fresh.generation
                or not len(current.seqs)
                or (len(fresh.seqs) and fresh.seqs[0] > current.seqs[-1])
            ):
                self._spaces[space_id] = fresh
        return fresh

    def forget(self, space_id: str) -> None:
        with self._lock:
            self._spaces.pop(space_id, None)


@dataclass(frozen=True)
class _Gathered:
    matrix: weakref.ref[SpaceMatrix]
    rows: NDArray[np.int64]
    vectors: NDArray[np.float32]


class GatheredCache:
    """Contiguous copies of the vectors of permitted rows, by the rows themselves.

    Copying the permitted rows out of the space's matrix costs several times the scoring
    (the rows are scattered), and the same callers search the same permitted set again
    and again. An entry is found by the exact rows a search resolved in its own read
    transaction, in the same matrix, so it is only ever a copy of what that search would
    gather itself: no write can make it stale. Least recently used entries go first.
    """

    def __init__(
        self, max_bytes: int = GATHERED_BYTES, max_entries: int = GATHERED_ENTRIES
    ) -> None:
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple[int, bytes], _Gathered] = OrderedDict()
        self._bytes = 0
        self.max_bytes, self.max_entries = max_bytes, max_entries

    def vectors(self, matrix: SpaceMatrix, rows: NDArray[np.int64]) -> NDArray[np.float32]:
        digest = hashlib.blake2b(rows.tobytes(), digest_size=16).digest()
        key = (id(matrix), digest)
        with self._lock:
            entry = self._entries.get(key)
            if entry is not None:
                self._entries.move_to_end(key)
        if entry is not None and entry.matrix() is matrix and np.array_equal(entry.rows, rows):
            return entry.vectors
        gathered = matrix.vectors[rows]
        if gathered.nbytes <= self.max_bytes:
            with self._lock:
                old = self._entries.pop(key, None)
                self._bytes -= 0 if old is None else old.vectors.nbytes
                self._entries[key] = _Gathered(weakref.ref(matrix), rows.copy(), gathered)
                self._bytes += gathered.nbytes
                while self._bytes > self.max_bytes or len(self._entries) > self.max_entries:
                    _, dropped = self._entries.popitem(last=False)
                    self._bytes -= dropped.vectors.nbytes
        return gathered


def _refresh(
    conn: Connection, space_id: str, generation: int, old: SpaceMatrix | None
) -> SpaceMatrix:
    """The space's matrix as ``conn`` sees it: the old matrix's rows that still exist,
    plus the rows added after its last id (ids grow with every insert, and SQLite's
    single writer commits them in order)."""
    current = np.array(
        conn.execute(
            text("SELECT seq FROM index_chunks WHERE space_id = :s ORDER BY seq"),
            {"s": space_id},
        )
        .scalars()
        .all(),
        dtype=np.int64,
    )
    dimension = int(
        conn.execute(
            text("SELECT dimension FROM index_spaces WHERE space_id = :s"), {"s": space_id}
        ).scalar_one()
    )
    if old is not None and old.vectors.shape[1:] == (dimension,) and len(old.seqs):
        keep = np.isin(old.seqs, current, assume_unique=True)
        seqs, vectors, owners = old.seqs[keep], old.vectors[keep], old.owners[keep]
        codes = dict(old.codes)
        after = int(old.seqs[-1])
    else:
        seqs, vectors = np.empty(0, np.int64), np.empty((0, dimension), np.float32)
        owners, codes, after = np.empty(0, np.int64), {}, 0
    count = len(current) - int(np.searchsorted(current, after, side="right"))
    new_seqs, new_vectors, new_owners = _load(conn, space_id, after, count, dimension, codes)
    if len(new_seqs):
        seqs = np.concatenate([seqs, new_seqs])
        vectors = np.concatenate([vectors, new_vectors]) if len(vectors) else new_vectors
        owners = np.concatenate([owners, new_owners])
    if not np.array_equal(seqs, current):
        if old is not None:
            return _refresh(conn, space_id, generation, None)
        raise StoreError(f"cannot load the vectors of space {space_id}", {"space_id": space_id})
    used = np.unique(owners)
    if len(used) < len(codes):  # renumber, so that withdrawn versions do not accumulate
        renumber = np.full(len(codes), -1, np.int64)
        renumber[used] = np.arange(len(used))
        owners = renumber[owners]
        codes = {key: int(renumber[code]) for key, code in codes.items() if renumber[code] >= 0}
    return _matrix(generation, seqs, np.ascontiguousarray(vectors), owners, codes)


def _load(
    conn: Connection,
    space_id: str,
    after: int,
    count: int,
    dimension: int,
    codes: dict[tuple[str, str], int],
) -> tuple[NDArray[np.int64], NDArray[np.float32], NDArray[np.int64]]:
    """The ``count`` chunks of the space with ids above ``after``, in batches into arrays
    allocated once (a million vectors are 1.5 GB: no list of them is built); ``codes``
    gains their document versions."""
    seqs = np.empty(count, np.int64)
    vectors = np.empty((count, dimension), np.float32)
    owners = np.empty(count, np.int64)
    result = conn.exec_driver_sql(
        "SELECT seq, document_id, version, vector FROM index_chunks "
        "WHERE space_id = ? AND seq > ? ORDER BY seq",
        (space_id, after),
    )
    filled = 0
    for batch in result.partitions(LOAD_BATCH):
        end = filled + len(batch)
        if end > count:
            raise StoreError(f"cannot load the vectors of space {space_id}", {"space_id": space_id})
        seqs[filled:end] = [r[0] for r in batch]
        blob = b"".join(r[3] for r in batch)
        vectors[filled:end] = np.frombuffer(blob, dtype="<f4").reshape(len(batch), dimension)
        owners[filled:end] = [codes.setdefault((r[1], r[2]), len(codes)) for r in batch]
        filled = end
    return seqs[:filled], vectors[:filled], owners[:filled]


def _fetch(conn: Connection, sql: str, params: list[Any]) -> list[Any]:
    """All rows of ``sql`` as plain tuples, read on ``conn``'s own driver connection (so
    in its transaction), without SQLAlchemy's per-row result objects."""
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        return cursor.execute(sql, params).fetchall()  # type: ignore[no-any-return]
    except sqlite3.Error as error:
        raise StoreError(f"the knowledge index could not be read: {error}") from error
    finally:
        cursor.close()


def top(seqs: NDArray[np.int64], scores: NDArray[np.float32], depth: int) -> list[Scored]:
    """The ``depth`` best (seq, score), best first, ties by the smaller seq."""
    if not len(seqs):
        return []
    n = min(depth, len(seqs))
    best = np.argpartition(-scores, n - 1)[:n] if n < len(seqs) else np.arange(len(seqs))
    order = sorted(best.tolist(), key=lambda i: (-float(scores[i]), int(seqs[i])))
    return [Scored(int(seqs[i]), float(scores[i])) for i in order]


@dataclass(frozen=True)
class Permitted:
    """The rows of ``matrix`` a search may score: its permitted chunks, as its read
    transaction sees them."""

    matrix: SpaceMatrix
    rows: NDArray[np.int64]


@dataclass(frozen=True)
class _Resolved:
    """A thread's last resolution, held weakly: the transaction it was read in, the
    filter, the matrix and the permitted rows of it (``None``: nothing permitted)."""

    transaction: weakref.ref[Any]
    key: tuple[Any, ...]
    matrix: weakref.ref[SpaceMatrix] | None
    rows: NDArray[np.int64] | None


class SqliteIndex(ChunkIndex):
    """The embedded default: one SQLite file holds chunks, access lists and the FTS5 index."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.cache = VectorCache()
        self.gathered = GatheredCache()
        # The last permitted set each thread resolved, with the transaction it was read
        # in: a hybrid search's keyword and vector lists share one resolution. Held
        # weakly, so that no thread keeps a replaced matrix alive.
        self._last = threading.local()

    def drop_space(self, conn: Connection, space_id: str, collection: str | None = None) -> int:
        removed = super().drop_space(conn, space_id, collection)
        self.cache.forget(space_id)  # frees the memory; another process's cache refreshes
        return removed

    def permitted(self, conn: Connection, params: Mapping[str, Any]) -> Permitted | None:
        """The chunks the filter ``params`` admits in the read transaction ``conn``
        (``None``: nothing, or the space holds no chunk)."""
        transaction = conn.get_transaction()
        key = (
            params["space_id"],
            tuple(params["collections"]),
            tuple(params["permitted"]),
            params["now"],
        )
        last: _Resolved | None = getattr(self._last, "value", None)
        if (
            transaction is not None
            and last is not None
            and last.key == key
            and last.transaction() is transaction
        ):
            if last.rows is None:
                return None
            matrix = last.matrix() if last.matrix is not None else None
            if matrix is not None:
                return Permitted(matrix, last.rows)
        found = self._resolve(conn, params)
        self._last.value = (
            None
            if transaction is None
            else _Resolved(
                weakref.ref(transaction),
                key,
                None if found is None else weakref.ref(found.matrix),
                None if found is None else found.rows,
            )
        )
        return found

    def _resolve(self, conn: Connection, params: Mapping[str, Any]) -> Permitted | None:
        space_id = str(params["space_id"])
        row = conn.execute(
            text(
                "SELECT s.generation, (SELECT max(c.seq) FROM index_chunks c "
                "WHERE c.space_id = s.space_id) FROM index_spaces s WHERE s.space_id = :s"
            ),
            {"s": space_id},
        ).first()
        if row is None or row[1] is None:
            return None
        snapshot = Snapshot(int(row[0]), int(row[1]))
        collections, keys = list(params["collections"]), list(params["permitted"])
        sql = PERMITTED_DOCUMENTS.format(
            collections=",".join("?" * len(collections)), keys=",".join("?" * len(keys))
        )
        live_at, now = params["live_at"], params["now"]
        versions = _fetch(conn, sql, [*collections, live_at, live_at, now, now, *keys])
        if not versions:
            return None
        matrix = self.cache.matrix(conn, space_id, snapshot)
        return Permitted(matrix, matrix.rows_of(versions, int(row[1])))

    def _keyword(
        self, conn: Connection, words: list[str], params: dict[str, object], depth: int
    ) -> list[Scored]:
        permitted = self.permitted(conn, params)
        if permitted is None or not len(permitted.rows):
            return []
        # Each word quoted as an FTS5 string: any word matches (OR), no user syntax.
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        # Every match with its BM25 (FTS5 ranks them in its own query), then only the
        # permitted ones kept, in NumPy: none the caller may read is missed, and SQLite
        # need not build the set of permitted chunk ids for an IN test.
        matches = _fetch(
            conn, "SELECT rowid, bm25(index_fts) FROM index_fts WHERE index_fts MATCH ?", [match]
        )
        if not matches:
            return []
        seqs = np.fromiter((r[0] for r in matches), np.int64, len(matches))
        scores = np.fromiter((r[1] for r in matches), np.float64, len(matches))
        matrix = permitted.matrix
        size = len(matrix.seqs)
        allowed = np.zeros(size + 1, bool)  # the last slot stands for "not in this space"
        allowed[permitted.rows] = True
        pos = np.searchsorted(matrix.seqs, seqs)
        pos[matrix.seqs[np.minimum(pos, size - 1)] != seqs] = size
        keep = allowed[pos]
        seqs, scores = seqs[keep], scores[keep]
        # bm25() is lower-is-better, ties by the smaller id; report it so that higher is
        # better, as for vectors.
        best = np.lexsort((seqs, scores))[:depth]
        return [Scored(int(seqs[i]), -float(scores[i])) for i in best]

    def _vector(
        self,
        conn: Connection,
        vector: NDArray[np.float32],
        params: dict[str, object],
        depth: int,
        generation: int,
    ) -> list[Scored]:
        permitted = self.permitted(conn, params)
        if permitted is None or not len(permitted.rows):
            return []
        matrix, rows = permitted.matrix, permitted.rows
        # einsum, not BLAS: OpenBLAS splits a matrix-vector product over threads, and on
        # a busy machine waiting for them took 30 times as long as one thread's loop.
        scores = np.einsum("ij,j->i", self.gathered.vectors(matrix, rows), vector)
        return top(matrix.seqs[rows], scores, depth)

    def _index_chunks(self, conn: Connection, rows: list[tuple[int, str, bytes]]) -> None:
        conn.execute(
            text("INSERT INTO index_fts (rowid, text) VALUES (:seq, :text)"),
            [{"seq": seq, "text": body} for seq, body, _ in rows],
        )

    def _unindex_chunks(self, conn: Connection, seqs: list[int]) -> None:
        # Freed pages are overwritten with zeros, so withdrawn text does not linger in
        # the file, and 'rebuild' rewrites the FTS index from the remaining rows, so no
        # posting of a withdrawn word remains either. ('optimize', which would merge the
        # segments more cheaply, corrupts the index after deletes on SQLite 3.40.)
        conn.exec_driver_sql("PRAGMA secure_delete = ON")
        for start in range(0, len(seqs), 500):
            conn.execute(
                text("DELETE FROM index_fts WHERE rowid IN :seqs").bindparams(
                    bindparam("seqs", expanding=True)
                ),
                {"seqs": seqs[start : start + 500]},
            )
        conn.exec_driver_sql("INSERT INTO index_fts (index_fts) VALUES ('rebuild')")
