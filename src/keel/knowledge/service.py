"""The knowledge service: collections, documents and their versions, governed search and
revocation, each change recorded in the ledger in the transaction that makes it.

``Knowledge`` is built from a ``Context`` (the engine exposes it as ``engine.knowledge``).
Every method takes the ``Principal`` acting and checks its permission on the collection
itself, so the Python API, the CLI and HTTP enforce one matrix:

- create a collection: ``create_collection`` (a global grant);
- change one, revoke a person's access: ``manage_collection`` on it;
- ingest, sync, withdraw, set a document's access list: ``curate_knowledge`` on it;
- search: ``search_knowledge`` on it, and then only documents whose access list shares a
  key with ``Principal.access_keys``.

A permission is checked before the collection is looked up, so a caller without it gets
403 whether the collection exists or not. Reading, chunking and embedding happen before a
write transaction opens; the write transaction then holds the ledger entry, the
knowledge rows and the index rows together, so a withdrawal is out of every search from
the moment it returns.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection, insert, select

from keel.canonical import canonical_json
from keel.context import Context
from keel.embeddings import registry
from keel.embeddings.spaces import Embedder
from keel.errors import ConfigError, ConflictError, InputError, IntegrityError, MissingExtraError
from keel.events import CollectionCreated, pending
from keel.index.access import check_id
from keel.index.backend import open_index
from keel.index.base import ChunkIndex
from keel.index.records import Validity, Weights
from keel.knowledge import collections as colls
from keel.knowledge import retention
from keel.knowledge.collections import KEEP, Collection, CollectionSettings, Keep
from keel.knowledge.fields import (
    INHERIT,
    MAX_METADATA_BYTES,
    Access,
    Requested,
    access_list,
    actor_json,
    check_folder,
    check_owner,
    check_reason,
    check_source,
    document_id_for,
    document_of,
    document_row,
    principal_json,
)
from keel.knowledge.ingest import Ingester
from keel.knowledge.prepare import extract
from keel.knowledge.records import (
    Document,
    IngestResult,
    Purge,
    Revocation,
    SearchResult,
    SyncResult,
    VersionRecord,
    Withdrawal,
)
from keel.knowledge.revocation import Revocations
from keel.knowledge.search import Searcher
from keel.knowledge.tables import knowledge_collections, knowledge_documents, knowledge_versions
from keel.ledger.records import new_id
from keel.ledger.writer import WindowGate, append_in
from keel.security.audit import AuditLog
from keel.security.roles import Permission, Principal

log = logging.getLogger("keel.knowledge")
T = TypeVar("T")
_EXTRA_MODULES = ("markdown_it", "bs4", "pypdf", "docx", "tokenizers")
EmbedderFactory = Callable[[Mapping[str, Any]], Embedder]
__all__ = ["INHERIT", "KEEP", "MAX_METADATA_BYTES", "Knowledge", "require_extra"]


def require_extra() -> None:
    """Refuse, naming the ``knowledge`` extra, where its packages are not installed."""
    if any(importlib.util.find_spec(name) is None for name in _EXTRA_MODULES):
        raise MissingExtraError("knowledge", "knowledge collections")


class Knowledge:
    """Collections, documents, search and revocation, recorded in the ledger."""

    def __init__(
        self,
        ctx: Context,
        index: ChunkIndex | None = None,
        audit: AuditLog | None = None,
        embedder_for: EmbedderFactory = registry.embedder_for,
    ) -> None:
        self._ctx = ctx
        self.index = index or open_index(ctx.db)
        self._embedder_for = embedder_for
        self._embedders: dict[str, Embedder] = {}
        self._lock = threading.Lock()
        self._searcher = Searcher(ctx, self.index, audit, self.embedder)
        self._revocations = Revocations(ctx, self.index)
        self._ingester = Ingester(ctx, self.index, self.embedder, self._revocations)

    # ---- collections ---------------------------------------------------------------------

    def create_collection(
        self,
        principal: Principal,
        name: str,
        *,
        owner: str,
        classification: str,
        default_access: Iterable[str],
        embedder: Mapping[str, Any] | None = None,
        retention_days: int | None = None,
        weights: Weights | None = None,
        source_folder: str | Path | None = None,
        sync_limit_s: float | None = None,
        reason: str = "",
    ) -> Collection:
        """Create a collection (``create_collection``, a global grant). ``default_access``
        is required: the access keys (``person:…``, ``group:…``, ``role:…``) of the
        documents that set no list of their own; an empty list lets nobody read them.
        ``embedder`` defaults to the embedded all-MiniLM-L6-v2 (int8 ONNX)."""
        actor = principal.acting(Permission.CREATE_COLLECTION)
        colls.check_name(name)
        spec = dict(embedder if embedder is not None else registry.DEFAULT)
        settings = CollectionSettings(
            owner=check_owner(owner),
            classification=colls.check_classification(classification),
            default_access=colls.check_access(default_access, "the default access list"),
            embedder=spec,
            space_id=self.embedder(spec).space.id,
            retention_days=colls.check_retention(retention_days),
            weights=colls.check_weights(weights if weights is not None else Weights()),
            source_folder=check_folder(source_folder),
            sync_limit_s=colls.check_sync_limit(sync_limit_s),
        )
        reason = check_reason(reason)

        def work(conn: Connection, gate: WindowGate) -> Collection:
            exists = conn.execute(
                select(knowledge_collections.c.name).where(knowledge_collections.c.name == name)
            ).first()
            if exists is not None:
                raise ConflictError(
                    f"a knowledge collection named '{name}' exists already", {"collection": name}
                )
            event = CollectionCreated(
                name, settings.to_json(), settings.digest, actor_json(actor), reason
            )
            record_id = new_id("evt", gate.now)
            conn.execute(
                insert(knowledge_collections).values(
                    name=name,
                    settings=settings.canonical,
                    digest=settings.digest,
                    record_id=record_id,
                    created_at=gate.now,
                    updated_at=gate.now,
                    last_synced_at=None,
                )
            )
            append_in(conn, [pending(event, None, gate.now, record_id)], gate)
            return Collection(name, settings, record_id, gate.now, gate.now, None)

        return self._ctx.writer.transact(work)

    def change_collection(
        self,
        principal: Principal,
        name: str,
        *,
        owner: str | Keep = KEEP,
        classification: str | Keep = KEEP,
        default_access: Iterable[str] | Keep = KEEP,
        embedder: Mapping[str, Any] | Keep = KEEP,
        retention_days: int | Keep | None = KEEP,
        weights: Weights | Keep = KEEP,
        source_folder: str | Path | Keep | None = KEEP,
        sync_limit_s: float | Keep | None = KEEP,
        reason: str = "",
    ) -> Collection:
        """Change a collection's settings (``manage_collection`` on it); what is not given
        stays. A new default access list reaches every document that inherits it in the
        same transaction. A new embedding space is refused: moving a collection to another
        space is a re-index, which this version of Keel does not run yet."""
        actor = principal.acting(Permission.MANAGE_COLLECTION, collection=name)
        current = self.collection(principal, name, permission=Permission.MANAGE_COLLECTION)
        old = current.settings
        new = old
        if not isinstance(owner, Keep):
            new = replace(new, owner=check_owner(owner))
        if not isinstance(classification, Keep):
            new = replace(new, classification=colls.check_classification(classification))
        if not isinstance(default_access, Keep):
            new = replace(
                new, default_access=colls.check_access(default_access, "the default access list")
            )
        if not isinstance(embedder, Keep):
            new = replace(new, embedder=self._same_space(name, old, dict(embedder)))
        if not isinstance(retention_days, Keep):
            new = replace(new, retention_days=colls.check_retention(retention_days))
        if not isinstance(weights, Keep):
            new = replace(new, weights=colls.check_weights(weights))
        if not isinstance(source_folder, Keep):
            new = replace(new, source_folder=check_folder(source_folder))
        if not isinstance(sync_limit_s, Keep):
            new = replace(new, sync_limit_s=colls.check_sync_limit(sync_limit_s))
        reason = check_reason(reason)
        if new == old:
            return current

        def work(conn: Connection, gate: WindowGate) -> Collection:
            stored = colls.load(conn, name)
            if stored.record_id != current.record_id:
                raise ConflictError(
                    f"collection '{name}' was changed meanwhile; read it again and retry",
                    {"collection": name},
                )
            record_id, item = colls.write_change(
                conn, gate, self.index, stored, new, actor_json(actor), reason
            )
            append_in(conn, [item], gate)
            return replace(stored, settings=new, record_id=record_id, updated_at=gate.now)

        return self._guarded(name, lambda: self._ctx.writer.transact(work))

    def collection(
        self,
        principal: Principal,
        name: str,
        permission: Permission = Permission.SEARCH_KNOWLEDGE,
    ) -> Collection:
        """A collection's settings, verified against the ledger, for a caller with
        ``permission`` on it (403 without; 404 for an unknown name)."""
        principal.require(permission, collection=name)
        colls.check_name(name)

        def read() -> Collection:
            with self._ctx.db.read() as conn:
                return colls.load(conn, name)

        return self._guarded(name, read)

    def collections(self, principal: Principal) -> list[Collection]:
        """The collections the caller may search, by name."""
        with self._ctx.db.read() as conn:
            visible = [
                n
                for n in colls.names(conn)
                if principal.can(Permission.SEARCH_KNOWLEDGE, collection=n)
            ]
        return [self.collection(principal, n) for n in visible]

    def embedder(self, spec: Mapping[str, Any]) -> Embedder:
        """The embedder ``spec`` names, built once per process (loading a model takes
        seconds); a bad spec is an ``InputError`` naming the key."""
        key = canonical_json(dict(spec))
        with self._lock:
            if key not in self._embedders:
                try:
                    self._embedders[key] = self._embedder_for(spec)
                except ConfigError as error:
                    raise InputError(error.message, error.detail) from error
            return self._embedders[key]

    # ---- documents -----------------------------------------------------------------------

    def ingest(
        self,
        principal: Principal,
        collection: str,
        source_uri: str,
        data: bytes,
        *,
        media_type: str | None = None,
        document_id: str | None = None,
        owner: str | None = None,
        classification: str | None = None,
        access: Access | None = None,
        validity: Validity | None = None,
        subjects: Iterable[str] | None = None,
        metadata: Mapping[str, object] | None = None,
        reason: str = "",
    ) -> IngestResult:
        """Ingest one document from its bytes (``curate_knowledge``).

        The format comes from ``media_type`` or the suffix of ``source_uri``. The
        document id is ``document_id`` or derived from the collection and source URI, so
        ingesting the same source again finds the same document. Content whose hash is the
        live version's is ``unchanged`` and writes nothing; other content makes a new
        version and supersedes the live one.

        Arguments left ``None`` keep the document's current value (a new document: the
        caller's person as owner, the collection's classification, ``access`` inheriting
        the collection's default list, no validity, subjects or metadata). ``access`` is a
        list of access keys or ``INHERIT``. With unchanged content, any given value that
        differs is refused: change an access list with ``set_access``.
        """
        actor = principal.acting(Permission.CURATE_KNOWLEDGE, collection=collection)
        coll = self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        source_uri = check_source(source_uri)
        doc_id = (
            check_id(document_id, "document_id")
            if document_id is not None
            else document_id_for(collection, source_uri)
        )
        wanted = Requested.check(owner, classification, access, validity, subjects, metadata)
        extracted = extract(data, source_uri, media_type)
        return self._guarded(
            collection,
            lambda: self._ingester.version(
                actor, coll, doc_id, source_uri, extracted, wanted, check_reason(reason)
            ),
        )

    def ingest_file(
        self,
        principal: Principal,
        collection: str,
        path: str | Path,
        **options: Any,
    ) -> IngestResult:
        """Ingest a file (its ``file://`` URI is the source); options as for ``ingest``.
        The permission is checked before the file is opened."""
        principal.require(Permission.CURATE_KNOWLEDGE, collection=collection)
        file = Path(path)
        try:
            data = file.read_bytes()
        except OSError as error:
            raise InputError(
                f"{file}: cannot be read ({error.strerror or error})", {"file": str(file)}
            ) from error
        return self.ingest(principal, collection, file.resolve().as_uri(), data, **options)

    def sync(
        self, principal: Principal, collection: str, folder: str | Path | None = None
    ) -> SyncResult:
        """Bring a collection in line with a folder (``curate_knowledge``): files that are
        new or whose text changed are ingested, unchanged ones left alone, and documents
        whose file has gone are withdrawn. A file that cannot be read is reported in
        ``failed`` and the sync goes on. ``folder`` defaults to the collection's source
        folder."""
        actor = principal.acting(Permission.CURATE_KNOWLEDGE, collection=collection)
        coll = self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        chosen = folder if folder is not None else coll.settings.source_folder
        if chosen is None:
            raise InputError(
                f"collection '{collection}' has no source folder: name the folder to sync",
                {"collection": collection},
            )
        root = Path(chosen).resolve()
        if not root.is_dir():
            raise InputError(f"{root} is not a folder", {"folder": str(root)})
        return self._guarded(collection, lambda: self._ingester.sync(actor, coll, root))

    def document(self, principal: Principal, collection: str, document_id: str) -> Document:
        """A document's record (``curate_knowledge`` on its collection)."""
        principal.require(Permission.CURATE_KNOWLEDGE, collection=collection)
        with self._ctx.db.read() as conn:
            return document_of(document_row(conn, collection, document_id))

    def documents(
        self, principal: Principal, collection: str, *, include_withdrawn: bool = False
    ) -> list[Document]:
        """The collection's documents by source URI (``curate_knowledge``): the live ones,
        and with ``include_withdrawn`` the withdrawn ones too."""
        principal.require(Permission.CURATE_KNOWLEDGE, collection=collection)
        self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        with self._ctx.db.read() as conn:
            query = select(knowledge_documents).where(
                knowledge_documents.c.collection == collection
            )
            if not include_withdrawn:
                query = query.where(knowledge_documents.c.state == "live")
            rows = conn.execute(
                query.order_by(knowledge_documents.c.source_uri, knowledge_documents.c.document_id)
            ).all()
        return [document_of(r) for r in rows]

    def versions(
        self, principal: Principal, collection: str, document_id: str
    ) -> list[VersionRecord]:
        """Every version the document had, oldest first (``curate_knowledge``)."""
        principal.require(Permission.CURATE_KNOWLEDGE, collection=collection)
        with self._ctx.db.read() as conn:
            document_row(conn, collection, document_id)
            rows = conn.execute(
                select(knowledge_versions)
                .where(knowledge_versions.c.document_id == document_id)
                .order_by(knowledge_versions.c.revision)
            ).all()
        return [
            VersionRecord(
                r.document_id, r.revision, r.version, r.state, r.format, r.bytes_sha256,
                r.chars, r.chunks, r.record_id, r.created_at, r.ended_at,
            )
            for r in rows
        ]  # fmt: skip

    # ---- revocation ----------------------------------------------------------------------

    def withdraw_document(
        self, principal: Principal, collection: str, document_id: str, reason: str = ""
    ) -> Withdrawal:
        """Withdraw a document (``curate_knowledge``): every chunk leaves the index in the
        transaction of its ledger entry; its record and versions stay, marked withdrawn."""
        actor = principal.acting(Permission.CURATE_KNOWLEDGE, collection=collection)
        self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        return self._revocations.withdraw_document(
            actor, collection, document_id, check_reason(reason)
        )

    def withdraw_version(
        self,
        principal: Principal,
        collection: str,
        document_id: str,
        version: str,
        reason: str = "",
    ) -> Withdrawal:
        """Withdraw one version of a document (``curate_knowledge``). Withdrawing the live
        version takes the document out of search until a new version is ingested (the
        superseded one is not brought back: its chunks are no longer indexed)."""
        actor = principal.acting(Permission.CURATE_KNOWLEDGE, collection=collection)
        self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        reason = check_reason(reason)
        return self._revocations.withdraw_version(actor, collection, document_id, version, reason)

    def set_access(
        self,
        principal: Principal,
        collection: str,
        document_id: str,
        access: Access,
        reason: str = "",
    ) -> Withdrawal:
        """Set a document's access list (``curate_knowledge``): access keys, or
        ``INHERIT`` for the collection's default. The index holds the new list from the
        transaction of the ledger entry on."""
        actor = principal.acting(Permission.CURATE_KNOWLEDGE, collection=collection)
        coll = self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        wanted = access_list(access)
        reason = check_reason(reason)
        return self._revocations.set_access(actor, coll, document_id, wanted, reason)

    def revoke_person(
        self,
        principal: Principal,
        person: str,
        collection: str | None = None,
        reason: str = "",
    ) -> Revocation:
        """Remove ``person:<person>`` from every access list in ``collection`` (or, with
        ``None``, every collection), the collections' default lists included
        (``manage_collection`` on each). Groups and roles the person holds are not
        touched: they are revoked where they are granted."""
        who = check_owner(person)
        with self._ctx.db.read() as conn:
            targets = [collection] if collection is not None else colls.names(conn)
        actors = {c: principal.acting(Permission.MANAGE_COLLECTION, collection=c) for c in targets}
        loaded = {c: self.collection(principal, c, Permission.MANAGE_COLLECTION) for c in targets}
        reason = check_reason(reason)
        by = actor_json(next(iter(actors.values()))) if actors else principal_json(principal)

        return self._guarded(
            collection or "*",
            lambda: self._revocations.revoke_person(by, who, targets, loaded, reason),
        )

    def purge_versions(self, principal: Principal, collection: str) -> Purge:
        """Delete the records of superseded and withdrawn versions that ended more than
        the collection's ``retention_days`` ago (``curate_knowledge``); recorded in the
        ledger with each version it deleted. Nothing is purged while the retention is
        ``None``."""
        actor = principal.acting(Permission.CURATE_KNOWLEDGE, collection=collection)
        coll = self.collection(principal, collection, Permission.CURATE_KNOWLEDGE)
        return retention.purge(self._ctx, coll, actor)

    # ---- search --------------------------------------------------------------------------

    def search(
        self,
        principal: Principal,
        collection: str,
        query: str,
        k: int = 10,
        *,
        now: float | None = None,
    ) -> SearchResult:
        """The ``k`` chunks of ``collection`` that best match ``query`` among the documents
        the caller may read (``search_knowledge``; the documents whose access list shares
        a key with ``principal.access_keys(collection)``, valid at ``now``). Every hit is
        re-checked before it is returned, and the search is recorded in the ledger by the
        SHA-256 of its query."""
        principal.require(Permission.SEARCH_KNOWLEDGE, collection=collection)
        coll = self.collection(principal, collection)
        return self._searcher.search(principal, coll, query, k, now)

    # ---- inside ----------------------------------------------------------------------------

    def _same_space(
        self, name: str, old: CollectionSettings, spec: dict[str, Any]
    ) -> dict[str, Any]:
        space = self.embedder(spec).space.id
        if space != old.space_id:
            raise ConflictError(
                f"collection '{name}': moving from embedding space {old.space_id} to {space} "
                "is a re-index, which Keel does not run yet; create a new collection in the "
                "new space and ingest the documents there",
                {"collection": name, "space_id": old.space_id, "requested": space},
            )
        return spec

    def _guarded(self, name: str, call: Callable[[], T]) -> T:
        """Run ``call``; a collection row that disagrees with the ledger is counted and
        logged before the refusal reaches the caller."""
        try:
            return call()
        except IntegrityError as error:
            self._ctx.metrics.knowledge_integrity_refusals.labels(name).inc()
            log.error("integrity: %s", error.message)
            raise
