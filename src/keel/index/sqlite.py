"""The embedded index on SQLite: FTS5 BM25 for keywords, exact NumPy search for vectors.

Vector search never scans a stale copy of the store: the permitted chunk ids come from SQL
in the search's own read transaction, and only those ids are scored. The vectors
themselves are cached per space in process memory, because a chunk's vector never changes
and its id is never reused; the cache is refreshed whenever the space's generation (read
in the same transaction) has moved past it, which drops withdrawn chunks' vectors from
memory and loads new ones.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, bindparam, text

from keel.errors import StoreError
from keel.index import access
from keel.index.base import ChunkIndex, Scored
from keel.store.database import Database


@dataclass(frozen=True)
class SpaceMatrix:
    """The vectors of one space's chunks as of ``generation``, by ascending ``seqs``."""

    generation: int
    seqs: NDArray[np.int64]
    vectors: NDArray[np.float32]


class VectorCache:
    """Per-space matrices of chunk vectors, shared by the threads of one process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._spaces: dict[str, SpaceMatrix] = {}

    def rows(
        self, conn: Connection, space_id: str, generation: int, seqs: NDArray[np.int64]
    ) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The vectors of ``seqs`` (ids selected in the read transaction ``conn`` at
        ``generation``), with the ids they belong to.

        A matrix older than ``generation`` is refreshed from ``conn`` first. A newer one
        (filled by a later search) lacks only chunks withdrawn since this transaction
        began; those are left out rather than scored from a stale copy.
        """
        with self._lock:
            matrix = self._spaces.get(space_id)
        if matrix is None or matrix.generation < generation:
            matrix = _refresh(conn, space_id, generation, matrix)
            with self._lock:
                current = self._spaces.get(space_id)
                if current is None or current.generation < matrix.generation:
                    self._spaces[space_id] = matrix
        if not len(matrix.seqs):
            return seqs[:0], matrix.vectors[:0]
        pos = np.searchsorted(matrix.seqs, seqs)
        pos = np.minimum(pos, len(matrix.seqs) - 1)
        found = matrix.seqs[pos] == seqs
        if matrix.generation == generation and not found.all():
            raise StoreError(
                f"the vector cache of space {space_id} disagrees with the store at "
                f"generation {generation}",
                {"space_id": space_id},
            )
        return seqs[found], matrix.vectors[pos[found]]

    def forget(self, space_id: str) -> None:
        with self._lock:
            self._spaces.pop(space_id, None)


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
    if old is not None and old.vectors.shape[1:] == (dimension,):
        keep = np.isin(old.seqs, current, assume_unique=True)
        seqs, vectors = old.seqs[keep], old.vectors[keep]
        after = int(old.seqs[-1]) if len(old.seqs) else 0
    else:
        seqs, vectors = np.empty(0, np.int64), np.empty((0, dimension), np.float32)
        after = 0
    new = conn.execute(
        text("SELECT seq, vector FROM index_chunks WHERE space_id = :s AND seq > :a ORDER BY seq"),
        {"s": space_id, "a": after},
    ).all()
    if new:
        seqs = np.concatenate([seqs, np.array([r[0] for r in new], np.int64)])
        blob = b"".join(bytes(r[1]) for r in new)
        added = np.frombuffer(blob, dtype="<f4").reshape(len(new), dimension)
        vectors = np.concatenate([vectors, added.astype(np.float32)])
    if not np.array_equal(seqs, current):
        if old is not None:
            return _refresh(conn, space_id, generation, None)
        raise StoreError(f"cannot load the vectors of space {space_id}", {"space_id": space_id})
    return SpaceMatrix(generation, seqs, np.ascontiguousarray(vectors))


def top(seqs: NDArray[np.int64], scores: NDArray[np.float32], depth: int) -> list[Scored]:
    """The ``depth`` best (seq, score), best first, ties by the smaller seq."""
    if not len(seqs):
        return []
    n = min(depth, len(seqs))
    best = np.argpartition(-scores, n - 1)[:n] if n < len(seqs) else np.arange(len(seqs))
    order = sorted(best.tolist(), key=lambda i: (-float(scores[i]), int(seqs[i])))
    return [Scored(int(seqs[i]), float(scores[i])) for i in order]


class SqliteIndex(ChunkIndex):
    """The embedded default: one SQLite file holds chunks, access lists and the FTS5 index."""

    def __init__(self, db: Database) -> None:
        super().__init__(db)
        self.cache = VectorCache()

    def _keyword(
        self, conn: Connection, words: list[str], params: dict[str, object], depth: int
    ) -> list[Scored]:
        # Each word quoted as an FTS5 string: any word matches (OR), no user syntax.
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        # Matches first (FTS5 ranks them in its own query), then the permitted filter in
        # the same statement: every match is considered, so none the caller may read is
        # missed. Filtering inside the MATCH query made SQLite test MATCH once per
        # permitted chunk instead.
        sql = (
            "WITH m AS MATERIALIZED (SELECT rowid AS seq, bm25(index_fts) AS s "  # noqa: S608 - our constant SQL; values are bound
            "FROM index_fts WHERE index_fts MATCH :match) "
            "SELECT m.seq, m.s FROM m WHERE m.seq IN (" + access.PERMITTED_SEQS + ") "
            "ORDER BY m.s, m.seq LIMIT :depth"
        )
        rows = conn.execute(
            access.permitted_query(sql), {**params, "match": match, "depth": depth}
        ).all()
        # bm25() is lower-is-better; report it so that higher is better, as for vectors.
        return [Scored(int(r[0]), -float(r[1])) for r in rows]

    def _vector(
        self,
        conn: Connection,
        vector: NDArray[np.float32],
        params: dict[str, object],
        depth: int,
        generation: int,
    ) -> list[Scored]:
        # fetchall, not a row iterator: fetching row by row cost more than the scoring.
        ids = conn.execute(access.permitted_query(access.PERMITTED_SEQS), params).scalars().all()
        permitted = np.array(ids, dtype=np.int64)
        if not len(permitted):
            return []
        permitted.sort()  # sorted in NumPy: ORDER BY in SQL makes SQLite scan every chunk
        seqs, matrix = self.cache.rows(conn, str(params["space_id"]), generation, permitted)
        return top(seqs, matrix @ vector, depth)

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
