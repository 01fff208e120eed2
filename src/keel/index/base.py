"""The retrieval index: writes inside the caller's transaction, searches that pre-filter by
access inside the store's own query (of the live versions, or of those live "as of" an
instant), and the re-check that catches a revocation that committed while a search ran.

``keel.index.backend.open_index`` picks the backend: SQLite (FTS5 BM25, exact vector
search in NumPy over the permitted chunks) or PostgreSQL (full-text search, exact
pgvector search).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, bindparam, text

from keel.errors import ConflictError, InputError, NotFoundError
from keel.index import access, versions
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
        *,
        at: float,
    ) -> int:
        """Make ``version`` the document's live version in ``space_id`` from ``at`` (epoch
        seconds, from the caller's clock); return the number of chunks added.

        The live version it supersedes stays in the index, searchable "as of" an instant
        in its live period, which ends at ``at``, until it is withdrawn or pruned: nothing
        is silently replaced. Adding a version the index already holds in another space is
        a re-index: its chunks are added to that space and its live period is kept (``at``
        is not used). Adding it again in a space that holds it is a conflict. The
        version's validity, the document's collection and its access list (one current
        list for all its versions) are set from the arguments.
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
        when = access.check_instant(at, "at")
        vectors = access.check_chunks(chunks)
        self._claim_space(conn, space_id, vectors[0].size)
        period = conn.execute(
            text("SELECT live_until FROM index_versions WHERE document_id = :d AND version = :v"),
            {"d": document_id, "v": version},
        ).first()
        if period is None:
            versions.supersede(conn, document_id, version, collection, validity, when)
        else:
            versions.check_reindex(conn, space_id, document_id, version, period[0])
            conn.execute(
                text(
                    "UPDATE index_versions SET valid_from = :f, valid_until = :u "
                    "WHERE document_id = :d AND version = :v"
                ),
                {
                    "d": document_id,
                    "v": version,
                    "f": validity.valid_from,
                    "u": validity.valid_until,
                },
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
        conn.execute(
            text("UPDATE index_versions SET collection = :c WHERE document_id = :d"),
            {"d": document_id, "c": collection},
        )
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
        # The superseded version's chunks, and any space the collection or access list
        # changed in, now answer searches differently.
        self._bump(conn, self._spaces_of(conn, "document_id = :d", {"d": document_id}))
        return len(rows)

    def withdraw_version(self, conn: Connection, document_id: str, version: str) -> int:
        """Delete every chunk of the document's ``version`` (text, vector, keyword index),
        live or superseded, and its row; a document left with no version loses its access
        list too. Returns the chunks removed (0 when the index does not hold it).

        Withdrawing the live version does not make the one it superseded live again: the
        document has no live version until a new one is added."""
        access.check_id(document_id, "document_id")
        access.check_id(version, "version")
        where = "document_id = :d AND version = :v"
        params: dict[str, object] = {"d": document_id, "v": version}
        removed = self._delete_chunks(conn, where, params)
        conn.execute(text(f"DELETE FROM index_versions WHERE {where}"), params)  # noqa: S608 - our constant SQL
        self._forget_empty(conn, [document_id])
        return removed

    def withdraw_document(self, conn: Connection, document_id: str) -> int:
        """Delete the document from the index: every chunk of every version, live or
        superseded, its versions' rows and its access list. Returns the chunks removed (0
        for an unknown document)."""
        access.check_id(document_id, "document_id")
        removed = self._delete_chunks(conn, "document_id = :d", {"d": document_id})
        conn.execute(text("DELETE FROM index_versions WHERE document_id = :d"), {"d": document_id})
        self._forget_empty(conn, [document_id])
        return removed

    def prune_superseded(self, conn: Connection, before: float) -> int:
        """Delete the versions superseded before ``before`` (``live_until < before``,
        epoch seconds), for retention: their chunks (text, vector, keyword index) and rows.
        A search "as of" an instant in their live periods finds nothing from then on.
        Live versions are never pruned. Returns the chunks removed."""
        cutoff = access.check_instant(before, "before")
        params: dict[str, object] = {"b": cutoff}
        docs = (
            conn.execute(
                text(
                    "SELECT DISTINCT document_id FROM index_versions "
                    "WHERE live_until IS NOT NULL AND live_until < :b"
                ),
                params,
            )
            .scalars()
            .all()
        )
        removed = self._delete_chunks(
            conn,
            "EXISTS (SELECT 1 FROM index_versions p "
            "WHERE p.document_id = index_chunks.document_id "
            "AND p.version = index_chunks.version "
            "AND p.live_until IS NOT NULL AND p.live_until < :b)",
            params,
        )
        conn.execute(
            text("DELETE FROM index_versions WHERE live_until IS NOT NULL AND live_until < :b"),
            params,
        )
        self._forget_empty(conn, docs)
        return removed

    def holds(self, conn: Connection, document_id: str) -> bool:
        """Whether the index holds a version of the document, live or superseded. A
        document whose live version was withdrawn may still have superseded versions
        here, searched "as of" their live periods under its current access list, so a
        change to that list must reach the index while this is true."""
        access.check_id(document_id, "document_id")
        found = conn.execute(
            text("SELECT 1 FROM index_versions WHERE document_id = :d"), {"d": document_id}
        ).first()
        return found is not None

    def set_access(self, conn: Connection, document_id: str, keys: frozenset[str]) -> None:
        """Replace the document's access list (an empty set: nobody may read it)."""
        access.check_id(document_id, "document_id")
        checked = access.check_keys(keys, "the access list")
        if not self.holds(conn, document_id):
            raise NotFoundError(f"document {document_id} is not in the index")
        self._replace_access(conn, document_id, checked)
        self._bump(conn, self._spaces_of(conn, "document_id = :d", {"d": document_id}))

    def drop_space(self, conn: Connection, space_id: str, collection: str | None = None) -> int:
        """Delete every chunk of an embedding space (after a re-index moved away from it),
        or with ``collection`` only that collection's chunks in it: spaces are shared by
        the collections that use the same embedder, and the others keep theirs."""
        access.check_id(space_id, "space_id")
        if collection is not None:
            access.check_id(collection, "collection")
            return self._delete_chunks(
                conn,
                "space_id = :s AND document_id IN "
                "(SELECT document_id FROM index_versions WHERE collection = :c)",
                {"s": space_id, "c": collection},
            )
        removed = self._delete_chunks(conn, "space_id = :s", {"s": space_id})
        conn.execute(text("DELETE FROM index_spaces WHERE space_id = :s"), {"s": space_id})
        return removed

    # -- re-index: copying a collection's versions into another space --

    def versions_in(self, conn: Connection, collection: str, space_id: str) -> int:
        """How many of the collection's versions (live and superseded) have chunks in
        ``space_id``."""
        return int(
            conn.execute(
                text(
                    "SELECT COUNT(*) FROM index_versions v WHERE v.collection = :c AND EXISTS "
                    "(SELECT 1 FROM index_chunks k WHERE k.document_id = v.document_id "
                    "AND k.version = v.version AND k.space_id = :s)"
                ),
                {"c": collection, "s": space_id},
            ).scalar_one()
        )

    def missing_versions(
        self, conn: Connection, collection: str, from_space: str, to_space: str, limit: int
    ) -> list[tuple[str, str]]:
        """Up to ``limit`` (document id, version) pairs of the collection that have chunks
        in ``from_space`` and none in ``to_space``: what a re-index has still to copy."""
        rows = conn.execute(
            text(
                "SELECT v.document_id, v.version FROM index_versions v "
                "WHERE v.collection = :c "
                "AND EXISTS (SELECT 1 FROM index_chunks k WHERE k.document_id = v.document_id "
                "AND k.version = v.version AND k.space_id = :f) "
                "AND NOT EXISTS (SELECT 1 FROM index_chunks k WHERE k.document_id = "
                "v.document_id AND k.version = v.version AND k.space_id = :t) "
                "ORDER BY v.document_id, v.version LIMIT :n"
            ),
            {"c": collection, "f": from_space, "t": to_space, "n": limit},
        ).all()
        return [(str(r[0]), str(r[1])) for r in rows]

    def version_chunks(
        self, conn: Connection, document_id: str, version: str, space_id: str
    ) -> list[IndexedChunk]:
        """The chunks of a version in ``space_id``, in order, with their vectors there."""
        rows = conn.execute(
            text(
                "SELECT chunk_id, ordinal, text, start_char, end_char, page, vector "
                "FROM index_chunks WHERE document_id = :d AND version = :v AND space_id = :s "
                "ORDER BY ordinal"
            ),
            {"d": document_id, "v": version, "s": space_id},
        ).all()
        return [
            IndexedChunk(
                str(r[0]), int(r[1]), str(r[2]), int(r[3]), int(r[4]),
                None if r[5] is None else int(r[5]),
                np.frombuffer(r[6], dtype="<f4").astype(np.float32),
            )
            for r in rows
        ]  # fmt: skip

    def version_terms(
        self, conn: Connection, document_id: str, version: str
    ) -> tuple[frozenset[str], Validity] | None:
        """The document's current access list and the version's validity (``None`` when
        the index no longer holds the version): what a copy into another space keeps."""
        period = conn.execute(
            text(
                "SELECT valid_from, valid_until FROM index_versions "
                "WHERE document_id = :d AND version = :v"
            ),
            {"d": document_id, "v": version},
        ).first()
        if period is None:
            return None
        keys = conn.execute(
            text("SELECT key FROM index_access WHERE document_id = :d"), {"d": document_id}
        ).scalars()
        validity = Validity(
            None if period[0] is None else float(period[0]),
            None if period[1] is None else float(period[1]),
        )
        return frozenset(str(k) for k in keys), validity

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
        as_of: float | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks the holder of ``permitted`` may read, fused from a keyword
        and a vector list that are each pre-filtered inside their own query.

        With ``as_of`` (epoch seconds) the search sees the versions that were live at that
        instant and valid then, instead of the live versions valid at ``now``; withdrawn
        and pruned versions are gone, and access is always the documents' current access
        lists, so a revoked key reads nothing as of any instant.

        Both lists and the chunks' details are read in one snapshot, so they agree with
        each other whatever commits meanwhile. Callers re-check the hits (``recheck``,
        with the same ``as_of``) before they leave the service.
        """
        access.check_id(space_id, "space_id")
        access.check_search(collections, query_text, query_vector is not None, k, weights)
        if as_of is not None:
            as_of = access.check_instant(as_of, "as_of")
        keys = access.check_keys(permitted, "the permitted set")
        if not keys:
            return []
        words = access.query_words(query_text)
        depth = max(k, weights.candidates)
        params = access.filter_params(space_id, collections, keys, now, as_of)
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
        self,
        hits: Sequence[Hit],
        permitted: frozenset[str],
        now: float,
        as_of: float | None = None,
    ) -> tuple[list[Hit], list[Hit]]:
        """Split ``hits`` into those still readable by ``permitted`` and those not, from a
        fresh read of each document's current access list and its versions' live periods
        and validity, judged as ``search`` judged them (at ``now``, or ``as_of`` an
        instant). A search that began before a withdrawal, a new version or an access
        change committed loses what that change removed here."""
        if as_of is not None:
            as_of = access.check_instant(as_of, "as_of")
        keys = access.check_keys(permitted, "the permitted set")
        if not hits:
            return [], []
        if not keys:
            return [], list(hits)
        sql = (
            f"SELECT c.chunk_id, c.version FROM {access.PERMITTED_FROM} "  # noqa: S608 - our constant SQL; values are bound
            f"WHERE c.chunk_id IN :ids AND {access.READABLE_WHERE}"
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
                        "permitted": sorted(keys),
                        **access.instant_params(now, as_of),
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

    def _replace_access(self, conn: Connection, document_id: str, keys: frozenset[str]) -> None:
        conn.execute(text("DELETE FROM index_access WHERE document_id = :d"), {"d": document_id})
        if keys:
            conn.execute(
                text("INSERT INTO index_access (document_id, key) VALUES (:d, :k)"),
                [{"d": document_id, "k": key} for key in sorted(keys)],
            )

    def _forget_empty(self, conn: Connection, document_ids: Sequence[str]) -> None:
        """Delete the access lists of those documents that have no version left."""
        for document_id in document_ids:
            conn.execute(
                text(
                    "DELETE FROM index_access WHERE document_id = :d AND NOT EXISTS "
                    "(SELECT 1 FROM index_versions v WHERE v.document_id = :d)"
                ),
                {"d": document_id},
            )

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

    def live_vectors(self, document_id: str, space_id: str) -> dict[str, NDArray[np.float32]]:
        """The vectors of the document's live chunks in ``space_id``, by the SHA-256 of
        each chunk's text: a new version reuses them for unchanged text instead of
        embedding it again."""
        access.check_id(document_id, "document_id")
        with self.db.read() as conn:
            rows = conn.execute(
                text(
                    "SELECT c.text, c.vector FROM index_chunks c JOIN index_versions d "
                    "ON d.document_id = c.document_id AND d.version = c.version "
                    "WHERE c.document_id = :d AND c.space_id = :s AND d.live_until IS NULL"
                ),
                {"d": document_id, "s": space_id},
            ).all()
        return {
            hashlib.sha256(str(r[0]).encode("utf-8")).hexdigest(): np.frombuffer(
                r[1], dtype="<f4"
            ).astype(np.float32)
            for r in rows
        }
