"""Governed search: the caller's access keys decide what the index may return, every hit
is re-checked before it leaves, and every search is recorded in the ledger.

The permitted set comes from ``Principal.access_keys`` alone; the caller passes a query
and ``k``, nothing that could widen it. The index filters inside its own query
(``keel.index.access``), then ``recheck`` reads each hit's document again: a withdrawal or
access change that committed while the search ran removes the hit here. Such a drop is
counted (``keel_knowledge_recheck_drops``) and written to the audit trail as a security
event. The ledger records who searched, the SHA-256 of the query (never its text) and the
chunks and versions returned.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Mapping
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import unquote, urlparse

from sqlalchemy import select

from keel.context import Context
from keel.embeddings.spaces import Embedder
from keel.errors import ConflictError, InputError
from keel.events import KnowledgeSearched, pending
from keel.index.access import MAX_K, MAX_QUERY_CHARS, check_instant
from keel.index.base import ChunkIndex
from keel.index.records import Hit
from keel.knowledge import collections as colls
from keel.knowledge.collections import Collection
from keel.knowledge.records import SearchHit, SearchResult
from keel.knowledge.tables import knowledge_collections, knowledge_documents
from keel.security.audit import AuditLog
from keel.security.roles import Principal

security_log = logging.getLogger("keel.security")
_MAX_SPACE_TRIES = 3


class Searcher:
    """Runs searches for ``keel.knowledge.service.Knowledge``, which checks permissions
    and loads the collection first."""

    def __init__(
        self,
        ctx: Context,
        index: ChunkIndex,
        audit: AuditLog | None,
        embedder: Callable[[Mapping[str, Any]], Embedder],
    ) -> None:
        self._ctx = ctx
        self._index = index
        self._audit = audit
        self._embedder = embedder

    def search(
        self, principal: Principal, coll: Collection, query: str, k: int, as_of: float | None
    ) -> SearchResult:
        _check(query, k)
        if as_of is not None:
            as_of = check_instant(as_of, "as_of")
        now = self._ctx.clock()
        at = now if as_of is None else as_of
        permitted = principal.access_keys(coll.name)
        # A re-index switches the collection's space and deletes its chunks in the old one
        # in one transaction. A search reads one space only; one that ran in the old space
        # while the switch committed runs again in the new, so it neither mixes spaces nor
        # comes back empty (and what the switch deleted is not reported as a re-check drop).
        for _ in range(_MAX_SPACE_TRIES):
            vector = self._embedder(coll.settings.embedder).embed([query])[0]
            hits = self._index.search(
                coll.settings.space_id,
                [coll.name],
                query,
                vector,
                permitted,
                k,
                at,
                coll.settings.weights,
                as_of=as_of,
            )
            kept, dropped = self._index.recheck(hits, permitted, at, as_of=as_of)
            moved = self._moved(coll)
            if moved is None:
                break
            coll = moved
        else:
            raise ConflictError(
                f"collection '{coll.name}' changed embedding space {_MAX_SPACE_TRIES} times "
                "while searching it; search again",
                {"collection": coll.name},
            )
        if dropped:
            self._report_drops(principal, coll.name, dropped)
        digest = hashlib.sha256(query.encode("utf-8")).hexdigest()
        event = KnowledgeSearched(
            collection=coll.name,
            principal=principal.id,
            person=principal.person,
            query_sha256=digest,
            k=k,
            results=[
                {"chunk": h.chunk_id, "document": h.document_id, "version": h.version} for h in kept
            ],
            dropped=len(dropped),
            as_of=as_of,
        )
        entry = self._ctx.writer.append([pending(event, None, self._ctx.clock())])[0]
        sources = self._sources([h.document_id for h in kept])
        return SearchResult(
            coll.name,
            digest,
            [_hit(i, h, sources.get(h.document_id, h.document_id)) for i, h in enumerate(kept, 1)],
            len(dropped),
            entry.record_id,
            coll.settings.space_id,
        )

    def _moved(self, coll: Collection) -> Collection | None:
        """The collection as it is now if it moved to another space since ``coll`` was
        read, else ``None``."""
        with self._ctx.db.read() as conn:
            record_id = conn.execute(
                select(knowledge_collections.c.record_id).where(
                    knowledge_collections.c.name == coll.name
                )
            ).scalar()
            if record_id is None or record_id == coll.record_id:
                return None
            current = colls.load(conn, coll.name)
        return None if current.settings.space_id == coll.settings.space_id else current

    def _report_drops(self, principal: Principal, collection: str, dropped: list[Hit]) -> None:
        self._ctx.metrics.knowledge_recheck_drops.labels(collection).inc(len(dropped))
        chunks = [
            {"chunk": h.chunk_id, "document": h.document_id, "version": h.version} for h in dropped
        ]
        security_log.warning(
            "knowledge search on '%s' by %s: %d hits dropped by the re-check (their "
            "document was withdrawn or its access changed while the search ran): %s",
            collection,
            principal.id,
            len(dropped),
            ", ".join(h.chunk_id for h in dropped[:10]),
        )
        if self._audit is not None:
            self._audit.record(
                "security",
                principal.id,
                "knowledge_recheck_drop",
                collection,
                "dropped",
                {"count": len(dropped), "chunks": chunks[:50]},
            )

    def _sources(self, document_ids: list[str]) -> dict[str, str]:
        if not document_ids:
            return {}
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(knowledge_documents.c.document_id, knowledge_documents.c.source_uri).where(
                    knowledge_documents.c.document_id.in_(sorted(set(document_ids)))
                )
            ).all()
        return {r[0]: r[1] for r in rows}


def _check(query: object, k: object) -> None:
    if not isinstance(query, str) or not query.strip():
        raise InputError("the query is empty: give the text to search for")
    if len(query) > MAX_QUERY_CHARS:
        raise InputError(f"the query has {len(query)} characters; at most {MAX_QUERY_CHARS}")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer from 1 to {MAX_K}", {"k": str(k)[:20]})


def source_name(source_uri: str) -> str:
    """The short name a citation shows: a file URI's file name, else the source as given."""
    parsed = urlparse(source_uri)
    if parsed.scheme in ("file", "http", "https") and parsed.path:
        return unquote(PurePosixPath(parsed.path).name) or source_uri
    return source_uri


def citation(rank: int, source_uri: str, page: int | None, start: int, end: int) -> str:
    """``[1] leave.md §120-480``, with ``p.2`` before the span for a PDF page."""
    where = f" p.{page}" if page is not None else ""
    return f"[{rank}] {source_name(source_uri)}{where} §{start}-{end}"


def _hit(rank: int, hit: Hit, source_uri: str) -> SearchHit:
    return SearchHit(
        rank=rank,
        chunk_id=hit.chunk_id,
        document_id=hit.document_id,
        version=hit.version,
        source_uri=source_uri,
        text=hit.text,
        start=hit.start,
        end=hit.end,
        page=hit.page,
        keyword_score=hit.keyword_score,
        vector_score=hit.vector_score,
        fused=hit.fused,
        citation=citation(rank, source_uri, hit.page, hit.start, hit.end),
    )
