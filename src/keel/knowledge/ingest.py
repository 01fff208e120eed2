"""Writing document versions: one ingest, and the sync of a collection with a folder.

The service (``keel.knowledge.service``) checks the caller's permission and the input;
this module reads, chunks and embeds (``keel.knowledge.prepare``) outside any
transaction, then writes each version in one: the previous version marked superseded, the
index rows (``ChunkIndex.add_version``), the document and version rows and the
``knowledge_document_ingested`` ledger entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, insert, update

from keel.canonical import canonical_json
from keel.context import Context
from keel.embeddings.spaces import Embedder
from keel.errors import ConflictError, InputError, MissingExtraError
from keel.events import DocumentIngested, FolderSynced, pending
from keel.index.base import ChunkIndex
from keel.index.records import Validity
from keel.knowledge import collections as colls
from keel.knowledge.collections import Collection
from keel.knowledge.documents import SUFFIXES
from keel.knowledge.fields import (
    Requested,
    actor_json,
    document_id_for,
    document_of,
    dumps_access,
    existing,
    live_documents,
)
from keel.knowledge.prepare import Extracted, extract, prepare
from keel.knowledge.records import IngestResult, SyncFailure, SyncResult
from keel.knowledge.revocation import Revocations
from keel.knowledge.tables import knowledge_collections, knowledge_documents, knowledge_versions
from keel.ledger.records import new_id
from keel.ledger.writer import WindowGate, append_in
from keel.security.roles import Actor


class Ingester:
    """Writes new document versions and syncs folders, for the knowledge service."""

    def __init__(
        self,
        ctx: Context,
        index: ChunkIndex,
        embedder: Callable[[Mapping[str, Any]], Embedder],
        revocations: Revocations,
    ) -> None:
        self._ctx = ctx
        self._index = index
        self._embedder = embedder
        self._revocations = revocations

    def version(
        self,
        actor: Actor,
        coll: Collection,
        doc_id: str,
        source_uri: str,
        extracted: Extracted,
        wanted: Requested,
        reason: str,
    ) -> IngestResult:
        """Write ``extracted`` as the document's new version, or report it ``unchanged``
        when its hash is the live version's. Chunking and embedding happen here, before
        the write transaction; the transaction holds the superseded version's mark, the
        index rows, the document and version rows and the ledger entry."""
        with self._ctx.db.read() as conn:
            before = existing(conn, coll.name, doc_id)
        if before is not None and before.state == "live" and before.version == extracted.version:
            wanted.refuse_changes(document_of(before))
            return IngestResult(doc_id, source_uri, "unchanged", extracted.version, before.revision)
        revision = (before.revision if before is not None else 0) + 1
        embedder = self._embedder(coll.settings.embedder)
        previous = self._index.live_vectors(doc_id, coll.settings.space_id) if before else {}
        prepared = prepare(extracted, embedder, doc_id, revision, previous)
        current = document_of(before) if before is not None else None
        fields = wanted.resolve(current, actor, coll)

        def work(conn: Connection, gate: WindowGate) -> IngestResult:
            stored = colls.load(conn, coll.name)
            now_row = existing(conn, coll.name, doc_id)
            if (now_row.revision if now_row else 0) != revision - 1:
                raise ConflictError(
                    f"document {doc_id} got another version meanwhile; ingest it again",
                    {"document_id": doc_id},
                )
            effective = (
                fields.access if fields.access is not None else stored.settings.default_access
            )
            previous_version = (
                before.version if before is not None and before.state == "live" else None
            )
            record_id = new_id("evt", gate.now)
            if before is not None:
                conn.execute(
                    update(knowledge_versions)
                    .where(
                        knowledge_versions.c.document_id == doc_id,
                        knowledge_versions.c.state == "live",
                    )
                    .values(state="superseded", ended_at=gate.now)
                )
            self._index.add_version(
                conn,
                coll.settings.space_id,
                doc_id,
                extracted.version,
                coll.name,
                frozenset(effective),
                Validity(fields.valid_from, fields.valid_until),
                prepared.chunks,
            )
            values = {
                "collection": coll.name,
                "source_uri": source_uri,
                "owner": fields.owner,
                "classification": fields.classification,
                "access": dumps_access(fields.access),
                "valid_from": fields.valid_from,
                "valid_until": fields.valid_until,
                "subjects": json.dumps(list(fields.subjects)),
                "metadata": canonical_json(fields.metadata),
                "version": extracted.version,
                "revision": revision,
                "state": "live",
                "updated_at": gate.now,
            }
            if before is None:
                conn.execute(
                    insert(knowledge_documents).values(
                        document_id=doc_id, created_at=gate.now, **values
                    )
                )
            else:
                conn.execute(
                    update(knowledge_documents)
                    .where(knowledge_documents.c.document_id == doc_id)
                    .values(**values)
                )
            conn.execute(
                insert(knowledge_versions).values(
                    document_id=doc_id,
                    revision=revision,
                    version=extracted.version,
                    collection=coll.name,
                    state="live",
                    format=extracted.text.format,
                    bytes_sha256=extracted.bytes_sha256,
                    chars=len(extracted.text.text),
                    chunks=len(prepared.chunks),
                    record_id=record_id,
                    created_at=gate.now,
                    ended_at=None,
                )
            )
            event = DocumentIngested(
                collection=coll.name,
                document=doc_id,
                source_uri=source_uri,
                version=extracted.version,
                revision=revision,
                previous_version=previous_version,
                format=extracted.text.format,
                bytes_sha256=extracted.bytes_sha256,
                chunks=len(prepared.chunks),
                embedded=prepared.embedded,
                reused=prepared.reused,
                owner=fields.owner,
                classification=fields.classification,
                access=None if fields.access is None else list(fields.access),
                valid_from=fields.valid_from,
                valid_until=fields.valid_until,
                subjects=list(fields.subjects),
                metadata_sha256=hashlib.sha256(
                    canonical_json(fields.metadata).encode("utf-8")
                ).hexdigest(),
                by=actor_json(actor),
                reason=reason,
            )
            append_in(conn, [pending(event, None, gate.now, record_id)], gate)
            return IngestResult(
                doc_id,
                source_uri,
                "new" if previous_version is None and before is None else "changed",
                extracted.version,
                revision,
                previous_version,
                len(prepared.chunks),
                prepared.embedded,
                prepared.reused,
                record_id,
            )

        return self._ctx.writer.transact(work)

    def sync(self, actor: Actor, coll: Collection, root: Path) -> SyncResult:
        """Ingest the folder's new and changed files, withdraw the documents whose file
        has gone, and record the sync; an unreadable file is reported, not fatal."""
        collection = coll.name
        result = SyncResult(collection, str(root))
        seen: set[str] = set()
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            relative = file.relative_to(root)
            if any(part.startswith(".") for part in relative.parts):
                continue
            uri = file.as_uri()
            if file.suffix.lower() not in SUFFIXES:
                result.skipped.append(str(relative))
                continue
            seen.add(uri)
            try:
                extracted = extract(file.read_bytes(), uri, None)
                done = self.version(
                    actor,
                    coll,
                    document_id_for(collection, uri),
                    uri,
                    extracted,
                    Requested(),
                    "sync",
                )
            except OSError as error:
                result.failed.append(SyncFailure(str(relative), error.strerror or str(error)))
                continue
            except (InputError, MissingExtraError) as error:
                result.failed.append(SyncFailure(str(relative), error.message))
                continue
            result.ingested.append(done)
        prefix = root.as_uri().rstrip("/") + "/"
        for doc in live_documents(self._ctx.db, collection):
            if doc.source_uri.startswith(prefix) and doc.source_uri not in seen:
                self._revocations.withdraw_document(
                    actor, collection, doc.document_id, "removed from the source folder"
                )
                result.removed.append(doc.document_id)
        return self._record_sync(actor, coll, result)

    def _record_sync(self, actor: Actor, coll: Collection, result: SyncResult) -> SyncResult:
        event = FolderSynced(
            collection=coll.name,
            folder=result.folder,
            added=result.count("new"),
            changed=result.count("changed"),
            unchanged=result.count("unchanged"),
            removed=len(result.removed),
            failed=[{"file": f.file, "error": f.error} for f in result.failed],
            by=actor_json(actor),
        )

        def work(conn: Connection, gate: WindowGate) -> str:
            conn.execute(
                update(knowledge_collections)
                .where(knowledge_collections.c.name == coll.name)
                .values(last_synced_at=gate.now)
            )
            return append_in(conn, [pending(event, None, gate.now)], gate)[0].record_id

        return replace(result, record_id=self._ctx.writer.transact(work))
