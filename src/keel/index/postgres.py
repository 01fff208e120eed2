"""The production index on PostgreSQL: full-text search and exact pgvector search.

Keyword scores are ``ts_rank_cd`` (cover density), not BM25: PostgreSQL has no BM25, and
the two rank differently, so fused results differ somewhat between backends. Vectors
are searched exactly (``<#>``, negative inner product) over the permitted rows, with no
HNSW or IVF index: an approximate index under a filter returns fewer than ``k`` rows or
misses permitted ones, so exact search is the default.

The ``vector`` extension and the ``index_vectors`` table are created on the first write,
not by the migration, so that a server without pgvector still migrates for everything
else Keel stores.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import Connection, bindparam, text
from sqlalchemy.exc import DBAPIError

from keel.errors import StoreError
from keel.index import access
from keel.index.base import ChunkIndex, Scored

VECTORS_DDL = (
    "CREATE TABLE IF NOT EXISTS index_vectors ("
    "seq integer PRIMARY KEY REFERENCES index_chunks (seq) ON DELETE CASCADE, "
    "embedding vector NOT NULL)"
)


def literal(vector: NDArray[np.float32]) -> str:
    """A vector in pgvector's text form, each float32 exactly (``repr`` round-trips)."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


class PostgresIndex(ChunkIndex):
    """Chunks in PostgreSQL: a generated ``tsvector`` column and a pgvector table."""

    def _has_vectors(self, conn: Connection) -> bool:
        return conn.execute(text("SELECT to_regclass('index_vectors')")).scalar() is not None

    def _keyword(
        self, conn: Connection, words: list[str], params: dict[str, object], depth: int
    ) -> list[Scored]:
        # websearch_to_tsquery never raises on user text; " or " makes any word match.
        sql = (
            "SELECT c.seq, ts_rank_cd(c.tsv, q) AS s "
            "FROM index_chunks c, websearch_to_tsquery('english', :words) q "
            "WHERE c.tsv @@ q AND c.seq IN (" + access.PERMITTED_SEQS + ") "
            "ORDER BY s DESC, c.seq LIMIT :depth"
        )
        rows = conn.execute(
            access.permitted_query(sql),
            {**params, "words": " or ".join(words), "depth": depth},
        ).all()
        return [Scored(int(r[0]), float(r[1])) for r in rows]

    def _vector(
        self,
        conn: Connection,
        vector: NDArray[np.float32],
        params: dict[str, object],
        depth: int,
        generation: int,
    ) -> list[Scored]:
        if not self._has_vectors(conn):
            return []
        # A join on the permitted ids, not ``IN``: each id occurs once, and the planner
        # then skips de-duplicating them (a hash aggregate that took about a tenth of
        # the query at 10,000 permitted chunks).
        sql = (
            "SELECT v.seq, -(v.embedding <#> CAST(:q AS vector)) AS s "
            "FROM (" + access.PERMITTED_SEQS + ") p JOIN index_vectors v ON v.seq = p.seq "
            "ORDER BY v.embedding <#> CAST(:q AS vector), v.seq LIMIT :depth"
        )
        rows = conn.execute(
            access.permitted_query(sql), {**params, "q": literal(vector), "depth": depth}
        ).all()
        if len({r[0] for r in rows}) < len(rows):  # the join relies on unique permitted ids
            raise StoreError("the permitted filter selected a chunk twice", {"query": "vector"})
        return [Scored(int(r[0]), float(r[1])) for r in rows]

    def _index_chunks(self, conn: Connection, rows: list[tuple[int, str, bytes]]) -> None:
        if not self._has_vectors(conn):
            available = conn.execute(
                text("SELECT 1 FROM pg_available_extensions WHERE name = 'vector'")
            ).first()
            if available is None:
                raise StoreError(
                    "the knowledge index on PostgreSQL needs the pgvector extension "
                    "('vector'), which this server does not have: install pgvector on it",
                    {"extension": "vector"},
                )
            try:
                conn.exec_driver_sql("CREATE EXTENSION IF NOT EXISTS vector")
                conn.exec_driver_sql(VECTORS_DDL)
            except DBAPIError as error:
                raise StoreError(
                    "cannot enable the pgvector extension ('vector') for the knowledge "
                    f"index: {str(error.orig).splitlines()[0]} (an administrator can run "
                    "CREATE EXTENSION vector in this database)",
                    {"extension": "vector"},
                ) from error
        conn.execute(
            text("INSERT INTO index_vectors (seq, embedding) VALUES (:seq, CAST(:v AS vector))"),
            [{"seq": seq, "v": literal(np.frombuffer(blob, dtype="<f4"))} for seq, _, blob in rows],
        )

    def _unindex_chunks(self, conn: Connection, seqs: list[int]) -> None:
        if not self._has_vectors(conn):
            return
        for start in range(0, len(seqs), 500):
            conn.execute(
                text("DELETE FROM index_vectors WHERE seq IN :seqs").bindparams(
                    bindparam("seqs", expanding=True)
                ),
                {"seqs": seqs[start : start + 500]},
            )
