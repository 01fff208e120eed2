"""The retrieval index: writes inside the caller's transaction, searches that pre-filter by
access inside the store's own query, and the re-check that catches a revocation that
committed while a search ran.

``keel.index.backend.open_index`` picks the backend: SQLite (FTS5 BM25, exact vector
search in NumPy over the permitted chunks) or PostgreSQL (full-text search, exact
pgvector search).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, bindparam, text

from keel.errors import ConflictError, InputError, NotFoundError
from keel.index import access
from keel.index.fusion import fuse_lists
from keel.index.records import Hit, IndexedChunk, Validity, Weights
from keel.store.database import Database

DEFAULT_WEIGHTS = Weights()
_CHUNK_COLUMNS = (
    "c.seq, c.chunk_id, c.document_id, c.version, c.ordinal, c.text, "
    "c.start_char, c.end_char, c.page"
)


@dataclass(frozen=True)
class Scored:
    """A candidate from one list: chunk ``seq`` and its score, best first."""

    seq: int
    score: float


class ChunkIndex(ABC):
    """Chunks of document versions with their vectors and access lists."""

    def __init__(self, db: Database) -> None:
        self.db = db

    # -- writes: each runs on the caller's connection, inside its write transaction --

    def add_version(
        self,
        conn: Connection,
        space_id: str,
        document_id: str,
        version: str,
        collection: str,
        access_keys: frozenset[str],
        validity: Validity,
        chunks: Sequence[IndexedChunk],
    ) -> int:
        """Make ``version`` the document's live version in ``space_id``; return the number
        of chunks added.

        A different live version is superseded: its chunks are deleted in this
        transaction. Adding the live version again in another space is a re-index (both
        spaces hold it until the old one is dropped); adding it again in the same space is
        a conflict. The document's collection, access list and validity are set from the
        arguments.
        """
        for value, what in (
            (space_id, "space_id"),
            (document_id, "document_id"),
            (version, "version"),
            (collection, "collection"),
        ):
            access.check_id(value, what)
        keys = access.check_keys(access_keys, "the access list")
        access.check_validity(validity)
        vectors = access.check_chunks(chunks)
        self._claim_space(conn, space_id, vectors[0].size)
        live = conn.execute(
            text("SELECT version FROM index_documents WHERE document_id = :d"),
            {"d": document_id},
        ).scalar()
        if live is not None and live != version:
            self._delete_chunks(
                conn, "document_id = :d AND version = :v", {"d": document_id, "v": live}
            )
        elif (
            live == version
            and conn.execute(
                text("SELECT 1 FROM index_chunks WHERE document_id = :d AND space_id = :s LIMIT 1"),
                {"d": document_id, "s": space_id},
            ).first()
        ):
            raise ConflictError(
                f"version {version} of document {document_id} is already indexed in "
                f"space {space_id}",
                {"document_id": document_id, "version": version},
            )
        taken = (
            conn.execute(
                text("SELECT chunk_id FROM index_chunks WHERE chunk_id IN :ids").bindparams(
                    bindparam("ids", expanding=True)
                ),
                {"ids": [c.chunk_id for c in chunks]},
            )
            .scalars()
            .all()
        )
        if taken:
            raise ConflictError(
                f"chunk id {taken[0]} is already in the index", {"chunk_id": taken[0]}
            )
        self._upsert_document(conn, document_id, version, collection, validity)
        self._replace_access(conn, document_id, keys)
        rows = [
            {
                "chunk_id": c.chunk_id,
                "document_id": document_id,
                "version": version,
                "space_id": space_id,
                "ordinal": c.ordinal,
                "text": c.text,
                "start_char": c.start,
                "end_char": c.end,
                "page": c.page,
                "vector": v.astype("<f4").tobytes(),
            }
            for c, v in zip(chunks, vectors, strict=True)
        ]
        conn.execute(
            text(
                "INSERT INTO index_chunks (chunk_id, document_id, version, space_id, "
                "ordinal, text, start_char, end_char, page, vector) VALUES (:chunk_id, "
                ":document_id, :version, :space_id, :ordinal, :text, :start_char, "
                ":end_char, :page, :vector)"
            ),
            rows,
        )
        seqs = conn.execute(
            text(
                "SELECT seq, text, vector FROM index_chunks WHERE document_id = :d "
                "AND version = :v AND space_id = :s ORDER BY seq"
            ),
            {"d": document_id, "v": version, "s": space_id},
        ).all()
        self._index_chunks(conn, [(r[0], r[1], r[2]) for r in seqs])
        self._bump(conn, [space_id])
        return len(rows)

    def withdraw_version(self, conn: Connection, version: str) -> int:
        """Delete every chunk of ``version`` (text, vector, keyword index); the document's
        row goes too when this was its live version. Returns the chunks removed."""
        access.check_id(version, "version")
        docs = (
            conn.execute(
                text("SELECT document_id FROM index_documents WHERE version = :v"), {"v": version}
            )
            .scalars()
            .all()
        )
        removed = self._delete_chunks(conn, "version = :v", {"v": version})
        for document_id in docs:
            self._delete_document_rows(conn, document_id)
        return removed

    def withdraw_document(self, conn: Connection, document_id: str) -> int:
        """Delete the document from the index: every chunk of every version, its access
        list and its row. Returns the chunks removed (0 for an unknown document)."""
        access.check_id(document_id, "document_id")
        removed = self._delete_chunks(conn, "document_id = :d", {"d": document_id})
        self._delete_document_rows(conn, document_id)
        return removed

    def set_access(self, conn: Connection, document_id: str, keys: frozenset[str]) -> None:
        """Replace the document's access list (an empty set: nobody may read it)."""
        access.check_id(document_id, "document_id")
        checked = access.check_keys(keys, "the access list")
        if (
            conn.execute(
                text("SELECT 1 FROM index_documents WHERE document_id = :d"), {"d": document_id}
            ).first()
            is None
        ):
            raise NotFoundError(f"document {document_id} is not in the index")
        self._replace_access(conn, document_id, checked)
        self._bump(conn, self._spaces_of(conn, "document_id = :d", {"d": document_id}))

    def drop_space(self, conn: Connection, space_id: str) -> int:
        """Delete every chunk of an embedding space (after a re-index moved away from it)."""
        access.check_id(space_id, "space_id")
        removed = self._delete_chunks(conn, "space_id = :s", {"s": space_id})
        conn.execute(text("DELETE FROM index_spaces WHERE space_id = :s"), {"s": space_id})
        return removed

    def generation(self, space_id: str) -> int | None:
        """The space's write generation (``None``: nothing was ever indexed in it)."""
        with self.db.read() as conn:
            value = conn.execute(
                text("SELECT generation FROM index_spaces WHERE space_id = :s"),
                {"s": space_id},
            ).scalar()
        return None if value is None else int(value)

    # -- reads --

    def search(
        self,
        space_id: str,
        collections: Sequence[str],
        query_text: str,
        query_vector: NDArray[np.float32] | None,
        permitted: frozenset[str],
        k: int,
        now: float,
        weights: Weights = DEFAULT_WEIGHTS,
    ) -> list[Hit]:
        """The ``k`` best chunks the holder of ``permitted`` may read, fused from a keyword
        and a vector list that are each pre-filtered inside their own query.

        Both lists and the chunks' details are read in one snapshot, so they agree with
        each other whatever commits meanwhile. Callers re-check the hits (``recheck``)
        before they leave the service.
        """
        access.check_id(space_id, "space_id")
        access.check_search(collections, query_text, query_vector is not None, k, weights)
        keys = access.check_keys(permitted, "the permitted set")
        if not keys:
            return []
        words = access.query_words(query_text)
        depth = max(k, weights.candidates)
        params = access.filter_params(space_id, collections, keys, now)
        with self.db.snapshot() as conn:
            space = conn.execute(
                text("SELECT dimension, generation FROM index_spaces WHERE space_id = :s"),
                {"s": space_id},
            ).first()
            vector = None
            if query_vector is not None:
                vector = access.as_vector(
                    query_vector, None if space is None else int(space[0]), "the query vector"
                )
            if space is None:
                return []
            keyword = self._keyword(conn, words, params, depth) if words else []
            vectors = (
                self._vector(conn, vector, params, depth, int(space[1]))
                if vector is not None
                else []
            )
            fused = fuse_lists(
                [(s.seq, s.score) for s in keyword], [(s.seq, s.score) for s in vectors],
                weights, k,
            )  # fmt: skip
            rows = self._chunks(conn, [f.key for f in fused])
        k_score = {s.seq: s.score for s in keyword}
        v_score = {s.seq: s.score for s in vectors}
        hits = []
        for f in fused:
            row = rows[f.key]
            hits.append(
                Hit(
                    chunk_id=row[1],
                    document_id=row[2],
                    version=row[3],
                    ordinal=row[4],
                    text=row[5],
                    start=row[6],
                    end=row[7],
                    page=row[8],
                    keyword_score=k_score.get(f.key),
                    keyword_rank=f.keyword_rank,
                    vector_score=v_score.get(f.key),
                    vector_rank=f.vector_rank,
                    fused=f.fused,
                )
            )
        return hits

    def recheck(
        self, hits: Sequence[Hit], permitted: frozenset[str], now: float
    ) -> tuple[list[Hit], list[Hit]]:
        """Split ``hits`` into those still readable by ``permitted`` at ``now`` and those
        not, from a fresh read of each document's current access list, live version and
        validity. A search that began before a withdrawal or an access change committed
        loses what that change removed here."""
        keys = access.check_keys(permitted, "the permitted set")
        if not hits:
            return [], []
        if not keys:
            return [], list(hits)
        sql = (
            "SELECT c.chunk_id, c.version FROM index_chunks c JOIN index_documents d "
            "ON d.document_id = c.document_id AND d.version = c.version "
            "WHERE c.chunk_id IN :ids "
            "AND (d.valid_from IS NULL OR d.valid_from <= :now) "
            "AND (d.valid_until IS NULL OR d.valid_until > :now) "
            "AND d.document_id IN (SELECT a.document_id FROM index_access a "
            "WHERE a.key IN :permitted)"
        )
        query = text(sql).bindparams(
            bindparam("ids", expanding=True), bindparam("permitted", expanding=True)
        )
        with self.db.read() as conn:
            live = {
                (str(r[0]), str(r[1]))
                for r in conn.execute(
                    query,
                    {
                        "ids": sorted({h.chunk_id for h in hits}),
                        "now": now,
                        "permitted": sorted(keys),
                    },
                ).all()
            }
        kept = [h for h in hits if (h.chunk_id, h.version) in live]
        dropped = [h for h in hits if (h.chunk_id, h.version) not in live]
        return kept, dropped

    # -- backend parts --

    @abstractmethod
    def _keyword(
        self, conn: Connection, words: list[str], params: dict[str, object], depth: int
    ) -> list[Scored]:
        """The best ``depth`` permitted chunks for ``words``, best first."""

    @abstractmethod
    def _vector(
        self,
        conn: Connection,
        vector: NDArray[np.float32],
        params: dict[str, object],
        depth: int,
        generation: int,
    ) -> list[Scored]:
        """The ``depth`` permitted chunks with the largest inner product, exactly."""

    @abstractmethod
    def _index_chunks(self, conn: Connection, rows: list[tuple[int, str, bytes]]) -> None:
        """Add new chunks (seq, text, vector bytes) to the backend's keyword/vector index."""

    @abstractmethod
    def _unindex_chunks(self, conn: Connection, seqs: list[int]) -> None:
        """Remove chunks from the backend's keyword/vector index before their rows go."""

    # -- shared helpers --

    def _claim_space(self, conn: Connection, space_id: str, dimension: int) -> None:
        known = conn.execute(
            text("SELECT dimension FROM index_spaces WHERE space_id = :s"), {"s": space_id}
        ).scalar()
        if known is None:
            conn.execute(
                text(
                    "INSERT INTO index_spaces (space_id, dimension, generation) VALUES (:s, :d, 0)"
                ),
                {"s": space_id, "d": dimension},
            )
        elif int(known) != dimension:
            raise InputError(
                f"the chunks' vectors have dimension {dimension}; space {space_id} has {known}",
                {"dimension": dimension, "expected": int(known)},
            )

    def _upsert_document(
        self, conn: Connection, document_id: str, version: str, collection: str, v: Validity
    ) -> None:
        params = {
            "d": document_id,
            "v": version,
            "c": collection,
            "f": v.valid_from,
            "u": v.valid_until,
        }
        updated = conn.execute(
            text(
                "UPDATE index_documents SET version = :v, collection = :c, "
                "valid_from = :f, valid_until = :u WHERE document_id = :d"
            ),
            params,
        ).rowcount
        if not updated:
            conn.execute(
                text(
                    "INSERT INTO index_documents (document_id, collection, version, "
                    "valid_from, valid_until) VALUES (:d, :c, :v, :f, :u)"
                ),
                params,
            )

    def _replace_access(self, conn: Connection, document_id: str, keys: frozenset[str]) -> None:
        conn.execute(text("DELETE FROM index_access WHERE document_id = :d"), {"d": document_id})
        if keys:
            conn.execute(
                text("INSERT INTO index_access (document_id, key) VALUES (:d, :k)"),
                [{"d": document_id, "k": key} for key in sorted(keys)],
            )

    def _delete_document_rows(self, conn: Connection, document_id: str) -> None:
        conn.execute(text("DELETE FROM index_access WHERE document_id = :d"), {"d": document_id})
        conn.execute(text("DELETE FROM index_documents WHERE document_id = :d"), {"d": document_id})

    def _spaces_of(self, conn: Connection, where: str, params: dict[str, object]) -> list[str]:
        return list(
            conn.execute(
                text(f"SELECT DISTINCT space_id FROM index_chunks WHERE {where}"),  # noqa: S608
                params,
            ).scalars()
        )

    def _delete_chunks(self, conn: Connection, where: str, params: dict[str, object]) -> int:
        """Delete the chunks ``where`` selects from every table and index; bump the
        generation of each space they were in."""
        rows = conn.execute(
            text(f"SELECT seq, space_id FROM index_chunks WHERE {where}"),  # noqa: S608
            params,
        ).all()
        if not rows:
            return 0
        seqs = [int(r[0]) for r in rows]
        self._unindex_chunks(conn, seqs)
        for start in range(0, len(seqs), 500):
            conn.execute(
                text("DELETE FROM index_chunks WHERE seq IN :seqs").bindparams(
                    bindparam("seqs", expanding=True)
                ),
                {"seqs": seqs[start : start + 500]},
            )
        self._bump(conn, sorted({str(r[1]) for r in rows}))
        return len(seqs)

    def _bump(self, conn: Connection, spaces: list[str]) -> None:
        for space_id in spaces:
            conn.execute(
                text("UPDATE index_spaces SET generation = generation + 1 WHERE space_id = :s"),
                {"s": space_id},
            )

    def _chunks(self, conn: Connection, seqs: list[int]) -> dict[int, Any]:
        if not seqs:
            return {}
        query = text(f"SELECT {_CHUNK_COLUMNS} FROM index_chunks c WHERE c.seq IN :seqs")  # noqa: S608 - our constant SQL; values are bound
        rows = conn.execute(
            query.bindparams(bindparam("seqs", expanding=True)), {"seqs": seqs}
        ).all()
        return {int(r[0]): r for r in rows}
