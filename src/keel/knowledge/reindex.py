"""Moving a collection to another embedding space: a recorded re-index in the background.

Vectors of two spaces are never compared, so a collection is searched in exactly one space,
the ``space_id`` of its settings, and a search reads it once. A re-index fills the new
space beside the old one while searches go on in the old:

1. ``start`` records ``knowledge_reindex_started`` and starts a thread in this process.
2. The thread copies the collection's versions (live and superseded) into the new space in
   batches: it reads a batch's chunks, embeds their text with the new embedder outside
   any transaction, then writes the batch in one short write transaction
   (``ChunkIndex.add_version`` into the new space; each version keeps its chunks' text and
   spans, so citations stay the same, and its live period, access list and validity).
3. Documents ingested, withdrawn or changed meanwhile are caught up: ingest writes only the
   space the collection is served from, withdrawals remove a version from every space,
   and the thread asks the index again for what the new space still lacks until nothing is
   left.
4. One write transaction checks that nothing is left, switches the collection's settings
   to the new embedder and space (``knowledge_collection_changed``), deletes the
   collection's chunks in the old space and records ``knowledge_reindex_completed``. An
   ingest that prepared its chunks for the old space and commits after the switch is
   prepared again for the new one (``keel.knowledge.ingest``); a search that ran in the old
   space while the switch committed runs again in the new (``keel.knowledge.search``).

A thread was chosen over a queued job because Keel has no job runner: the server's process
(or the CLI's, which waits for it) runs it. If that process dies, nothing is half-switched:
the collection is still served from the old space, ``status`` says ``interrupted``, and
starting the re-index again resumes it (what the new space holds is kept). A failure is
recorded (``knowledge_reindex_failed``) and the chunks written into the new space are
deleted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
from sqlalchemy import Connection, select

from keel.context import Context
from keel.embeddings.spaces import Embedder
from keel.errors import ConflictError, InputError
from keel.events import ReindexCompleted, ReindexFailed, ReindexStarted, pending
from keel.index.base import ChunkIndex
from keel.index.records import IndexedChunk
from keel.knowledge import collections as colls
from keel.knowledge.collections import Collection
from keel.ledger.records import new_id
from keel.ledger.writer import WindowGate, append_in
from keel.store.schema import ledger

log = logging.getLogger("keel.knowledge")
BATCH_CHUNKS = 256  # chunks embedded, then written in one transaction
_KINDS = (ReindexStarted.KIND, ReindexCompleted.KIND, ReindexFailed.KIND)


@dataclass(frozen=True)
class ReindexStatus:
    """Where a collection's latest re-index stands.

    ``state`` is ``none`` (never re-indexed), ``running`` (its thread runs in this
    process), ``completed``, ``failed`` or ``interrupted`` (started, never finished, and
    not running here: start it again to resume). ``done`` and ``total`` count versions:
    those in the new space, of those in the space it is served from (while running or
    interrupted), or those the finished run copied."""

    collection: str
    state: str
    from_space: str | None = None
    to_space: str | None = None
    started: str | None = None  # the knowledge_reindex_started ledger entry
    finished: str | None = None  # its completed or failed entry
    done: int = 0
    total: int = 0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "collection": self.collection,
            "state": self.state,
            "from_space": self.from_space,
            "to_space": self.to_space,
            "started": self.started,
            "finished": self.finished,
            "done": self.done,
            "total": self.total,
            "error": self.error,
        }


@dataclass
class _Job:
    collection: str
    started: str
    from_space: str
    to_space: str
    spec: dict[str, Any]
    by: dict[str, str]
    thread: threading.Thread | None = None
    versions: int = 0
    chunks: int = 0


@dataclass(frozen=True)
class _Copy:
    """One version's chunks read from the old space, and their copies for the new."""

    document_id: str
    version: str
    old_ids: tuple[str, ...]
    chunks: list[IndexedChunk]


def space_chunk_id(chunk_id: str, space_id: str) -> str:
    """The id of a chunk's copy in another space: chunk ids are unique across the index."""
    digest = hashlib.sha256(f"{chunk_id}\x00{space_id}".encode()).hexdigest()
    return f"ch_{digest[:40]}"


class Reindexer:
    """Starts, runs and reports re-indexes for ``keel.knowledge.service.Knowledge``, which
    checks the caller's permission and the new embedder first."""

    def __init__(
        self,
        ctx: Context,
        index: ChunkIndex,
        embedder: Callable[[Mapping[str, Any]], Embedder],
        batch_chunks: int = BATCH_CHUNKS,
    ) -> None:
        self._ctx = ctx
        self._index = index
        self._embedder = embedder
        self._batch = batch_chunks
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    # ---- starting -------------------------------------------------------------------

    def start(
        self,
        coll: Collection,
        spec: dict[str, Any],
        to_space: str,
        by: dict[str, str],
        reason: str,
    ) -> ReindexStatus:
        """Record the start and run the re-index in a thread; ``ConflictError`` if one
        runs for the collection in this process or the space is already its own."""
        name, from_space = coll.name, coll.settings.space_id
        if to_space == from_space:
            raise ConflictError(
                f"collection '{name}' is already in embedding space {to_space}",
                {"collection": name, "space_id": to_space},
            )
        with self._lock:
            running = self._jobs.get(name)
            if running is not None and running.thread is not None and running.thread.is_alive():
                raise ConflictError(
                    f"collection '{name}' is being re-indexed into {running.to_space} "
                    "already; wait for it (keel knowledge reindex-status)",
                    {"collection": name, "started": running.started},
                )

            def work(conn: Connection, gate: WindowGate) -> _Job:
                stored = colls.load(conn, name)
                if stored.settings.space_id != from_space:
                    raise ConflictError(
                        f"collection '{name}' moved to another space meanwhile; read it again",
                        {"collection": name},
                    )
                self._forget_abandoned(conn, name, from_space, to_space)
                record_id = new_id("evt", gate.now)
                event = ReindexStarted(
                    collection=name,
                    from_space=from_space,
                    to_space=to_space,
                    embedder=spec,
                    versions=self._index.versions_in(conn, name, from_space),
                    by=by,
                    reason=reason,
                )
                append_in(conn, [pending(event, None, gate.now, record_id)], gate)
                return _Job(name, record_id, from_space, to_space, spec, by)

            job = self._ctx.writer.transact(work)
            job.thread = threading.Thread(
                target=self._run, args=(job,), name=f"keel-reindex-{name}", daemon=True
            )
            self._jobs[name] = job
            job.thread.start()
        return self.status(name)

    def _forget_abandoned(
        self, conn: Connection, name: str, from_space: str, to_space: str
    ) -> None:
        """An interrupted re-index into a space other than ``to_space`` left chunks there
        that nothing will serve: delete them before starting anew."""
        latest = _latest(conn, name)
        if latest is None or latest[1] is not None:
            return
        abandoned = str(latest[0]["to_space"])
        if abandoned not in (to_space, from_space):
            self._index.drop_space(conn, abandoned, collection=name)

    # ---- running --------------------------------------------------------------------

    def wait(self, name: str, timeout: float | None = None) -> ReindexStatus:
        """Wait for the collection's re-index thread in this process (if any) to end."""
        with self._lock:
            job = self._jobs.get(name)
        if job is not None and job.thread is not None:
            job.thread.join(timeout)
        return self.status(name)

    def _run(self, job: _Job) -> None:
        try:
            embedder = self._embedder(job.spec)
            while True:
                copies = self._next_batch(job)
                if not copies:
                    if self._switch(job):
                        return
                    continue
                self._copy(job, embedder, copies)
        except Exception as error:  # recorded in the ledger and logged, then the thread ends
            log.exception("re-index of collection '%s' failed", job.collection)
            message = error.message if isinstance(error, InputError | ConflictError) else None
            self._fail(job, message or f"{type(error).__name__}: {error}")

    def _next_batch(self, job: _Job) -> list[_Copy]:
        """Versions the new space still lacks, up to about ``batch_chunks`` chunks."""
        copies: list[_Copy] = []
        size = 0
        with self._ctx.db.read() as conn:
            pending_versions = self._index.missing_versions(
                conn, job.collection, job.from_space, job.to_space, max(1, self._batch // 4)
            )
            for document_id, version in pending_versions:
                chunks = self._index.version_chunks(conn, document_id, version, job.from_space)
                if not chunks:
                    continue
                copies.append(
                    _Copy(document_id, version, tuple(c.chunk_id for c in chunks), chunks)
                )
                size += len(chunks)
                if size >= self._batch:
                    break
        return copies

    def _copy(self, job: _Job, embedder: Embedder, copies: list[_Copy]) -> None:
        """Embed the batch (no transaction open), then write it in one transaction."""
        texts = [c.text for copy in copies for c in copy.chunks]
        vectors = embedder.embed(texts)
        if vectors.shape[0] != len(texts):
            raise InputError(
                f"the embedder returned {vectors.shape[0]} vectors for {len(texts)} texts"
            )
        rows = iter(np.asarray(vectors, dtype=np.float32))
        ready = [
            replace(
                copy,
                chunks=[
                    replace(c, chunk_id=space_chunk_id(c.chunk_id, job.to_space), vector=next(rows))
                    for c in copy.chunks
                ],
            )
            for copy in copies
        ]

        def work(conn: Connection, gate: WindowGate) -> tuple[int, int]:
            versions = chunks = 0
            for copy in ready:
                # withdrawn, pruned or copied (by another process) since it was read: skip
                now_old = self._index.version_chunks(
                    conn, copy.document_id, copy.version, job.from_space
                )
                if tuple(c.chunk_id for c in now_old) != copy.old_ids:
                    continue
                if self._index.version_chunks(conn, copy.document_id, copy.version, job.to_space):
                    continue
                terms = self._index.version_terms(conn, copy.document_id, copy.version)
                if terms is None:
                    continue
                keys, validity = terms
                chunks += self._index.add_version(
                    conn, job.to_space, copy.document_id, copy.version, job.collection,
                    keys, validity, copy.chunks, at=gate.now,
                )  # fmt: skip
                versions += 1
            return versions, chunks

        versions, chunks = self._ctx.writer.transact(work)
        job.versions += versions
        job.chunks += chunks

    def _switch(self, job: _Job) -> bool:
        """Switch the collection to the new space if it lacks nothing (``False``: a
        version arrived meanwhile; catch it up first)."""

        def work(conn: Connection, gate: WindowGate) -> bool:
            stored = colls.load(conn, job.collection)
            latest = _latest(conn, job.collection)
            if stored.settings.space_id != job.from_space or latest is None:
                raise ConflictError(
                    f"collection '{job.collection}' left space {job.from_space} meanwhile"
                )
            if latest[0]["record_id"] != job.started:
                raise ConflictError(
                    f"collection '{job.collection}': a later re-index "
                    f"({latest[0]['record_id']}) was started meanwhile"
                )
            if self._index.missing_versions(conn, job.collection, job.from_space, job.to_space, 1):
                return False
            new = replace(stored.settings, embedder=job.spec, space_id=job.to_space)
            _, changed = colls.write_change(
                conn, gate, self._index, stored, new, job.by, f"re-index {job.started} completed"
            )
            dropped = self._index.drop_space(conn, job.from_space, collection=job.collection)
            done = ReindexCompleted(
                collection=job.collection,
                started=job.started,
                from_space=job.from_space,
                to_space=job.to_space,
                versions=job.versions,
                chunks=job.chunks,
                dropped_chunks=dropped,
            )
            append_in(conn, [changed, pending(done, None, gate.now)], gate)
            return True

        return self._ctx.writer.transact(work)

    def _fail(self, job: _Job, error: str) -> None:
        def work(conn: Connection, gate: WindowGate) -> None:
            stored = colls.load(conn, job.collection)
            latest = _latest(conn, job.collection)
            removed = 0
            # never the space it is served from, nor what a later run has copied
            ours = latest is not None and latest[0]["record_id"] == job.started
            if ours and stored.settings.space_id != job.to_space:
                removed = self._index.drop_space(conn, job.to_space, collection=job.collection)
            failed = ReindexFailed(
                collection=job.collection,
                started=job.started,
                from_space=job.from_space,
                to_space=job.to_space,
                error=error[:1000],
                removed_chunks=removed,
            )
            append_in(conn, [pending(failed, None, gate.now)], gate)

        try:
            self._ctx.writer.transact(work)
        except Exception:  # the store itself is failing: the log is all that is left
            log.exception("the failure of re-index %s could not be recorded", job.started)

    # ---- reporting ------------------------------------------------------------------

    def status(self, name: str) -> ReindexStatus:
        """The collection's latest re-index, from the ledger and the index."""
        with self._lock:
            job = self._jobs.get(name)
        alive = job is not None and job.thread is not None and job.thread.is_alive()
        with self._ctx.db.read() as conn:
            latest = _latest(conn, name)
            if latest is None:
                return ReindexStatus(name, "none")
            started, finished = latest
            from_space, to_space = str(started["from_space"]), str(started["to_space"])
            base = ReindexStatus(
                name, "", from_space, to_space, str(started["record_id"]),
                None if finished is None else str(finished["record_id"]),
            )  # fmt: skip
            if finished is None:
                ours = alive and job is not None and job.started == base.started
                state = "running" if ours else "interrupted"
                return replace(
                    base,
                    state=state,
                    done=self._index.versions_in(conn, name, to_space),
                    total=self._index.versions_in(conn, name, from_space),
                )
        if finished["kind"] == ReindexFailed.KIND:
            return replace(base, state="failed", error=str(finished["error"]))
        count = int(finished["versions"])
        return replace(base, state="completed", done=count, total=count)


def _latest(conn: Connection, name: str) -> tuple[dict[str, Any], dict[str, Any] | None] | None:
    """The collection's latest ``knowledge_reindex_started`` body and the body of the
    entry that finished it (``None`` while unfinished), each with its ``record_id``
    and ``kind``."""
    rows = conn.execute(
        select(ledger.c.kind, ledger.c.record_id, ledger.c.record)
        .where(ledger.c.kind.in_(_KINDS))
        .order_by(ledger.c.seq.desc())
    )
    finished: dict[str, dict[str, Any]] = {}
    for kind, record_id, record in rows:
        body = dict(json.loads(record)["body"])
        if body.get("collection") != name:
            continue
        body.update(record_id=str(record_id), kind=str(kind))
        if kind == ReindexStarted.KIND:
            return body, finished.get(str(record_id))
        finished[str(body["started"])] = body
    return None
