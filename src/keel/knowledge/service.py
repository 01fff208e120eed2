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

import hashlib
import importlib.util
import json
import logging
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any, Literal, TypeVar

from sqlalchemy import Connection, insert, select, update
from sqlalchemy.engine import Row

from keel.canonical import CanonicalFormError, canonical_json
from keel.context import Context
from keel.embeddings import registry
from keel.embeddings.spaces import Embedder
from keel.errors import (
    ConfigError,
    ConflictError,
    InputError,
    IntegrityError,
    MissingExtraError,
    NotFoundError,
)
from keel.events import (
    CollectionChanged,
    CollectionCreated,
    DocumentAccessSet,
    DocumentIngested,
    DocumentWithdrawn,
    FolderSynced,
    PersonAccessRevoked,
    VersionWithdrawn,
    pending,
)
from keel.index.access import check_id, check_validity
from keel.index.backend import open_index
from keel.index.base import ChunkIndex
from keel.index.records import Validity, Weights
from keel.knowledge import collections as colls
from keel.knowledge.collections import KEEP, Collection, CollectionSettings, Keep
from keel.knowledge.documents import SUFFIXES
from keel.knowledge.prepare import Extracted, extract, prepare
from keel.knowledge.records import (
    Document,
    IngestResult,
    Revocation,
    SearchResult,
    SyncFailure,
    SyncResult,
    VersionRecord,
    Withdrawal,
)
from keel.knowledge.search import Searcher
from keel.knowledge.tables import knowledge_collections, knowledge_documents, knowledge_versions
from keel.ledger.records import new_id
from keel.ledger.writer import WindowGate, append_in
from keel.security.audit import AuditLog
from keel.security.persons import person_of
from keel.security.roles import Actor, Permission, Principal

log = logging.getLogger("keel.knowledge")
T = TypeVar("T")

INHERIT: Literal["inherit"] = "inherit"  # a document's access list: the collection's default
MAX_METADATA_BYTES = 16 * 1024  # canonical JSON of one document's metadata
MAX_SUBJECTS = 1000
MAX_SOURCE_CHARS = 2048
MAX_REASON_CHARS = 1000
_EXTRA_MODULES = ("markdown_it", "bs4", "pypdf", "docx", "tokenizers")

Access = Iterable[str] | Literal["inherit"]
EmbedderFactory = Callable[[Mapping[str, Any]], Embedder]


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
            owner=_owner(owner),
            classification=colls.check_classification(classification),
            default_access=colls.check_access(default_access, "the default access list"),
            embedder=spec,
            space_id=self.embedder(spec).space.id,
            retention_days=colls.check_retention(retention_days),
            weights=colls.check_weights(weights if weights is not None else Weights()),
            source_folder=_folder(source_folder),
            sync_limit_s=colls.check_sync_limit(sync_limit_s),
        )
        reason = _reason(reason)

        def work(conn: Connection, gate: WindowGate) -> Collection:
            exists = conn.execute(
                select(knowledge_collections.c.name).where(knowledge_collections.c.name == name)
            ).first()
            if exists is not None:
                raise ConflictError(
                    f"a knowledge collection named '{name}' exists already", {"collection": name}
                )
            event = CollectionCreated(name, settings.to_json(), settings.digest, _by(actor), reason)
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
            new = replace(new, owner=_owner(owner))
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
            new = replace(new, source_folder=_folder(source_folder))
        if not isinstance(sync_limit_s, Keep):
            new = replace(new, sync_limit_s=colls.check_sync_limit(sync_limit_s))
        reason = _reason(reason)
        if new == old:
            return current

        def work(conn: Connection, gate: WindowGate) -> Collection:
            stored = colls.load(conn, name)
            if stored.record_id != current.record_id:
                raise ConflictError(
                    f"collection '{name}' was changed meanwhile; read it again and retry",
                    {"collection": name},
                )
            record_id, item = self._change_in(conn, gate, stored, new, _by(actor), reason)
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
        source_uri = _source(source_uri)
        doc_id = (
            check_id(document_id, "document_id") if document_id else _doc_id(collection, source_uri)
        )
        wanted = _Wanted.check(owner, classification, access, validity, subjects, metadata)
        extracted = extract(data, source_uri, media_type)
        return self._ingest(actor, coll, doc_id, source_uri, extracted, wanted, _reason(reason))

    def ingest_file(
        self,
        principal: Principal,
        collection: str,
        path: str | Path,
        **options: Any,
    ) -> IngestResult:
        """Ingest a file (its ``file://`` URI is the source); options as for ``ingest``."""
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
                done = self._ingest(
                    actor, coll, _doc_id(collection, uri), uri, extracted, _Wanted(), "sync"
                )
            except OSError as error:
                result.failed.append(SyncFailure(str(relative), error.strerror or str(error)))
                continue
            except (InputError, MissingExtraError) as error:
                result.failed.append(SyncFailure(str(relative), error.message))
                continue
            result.ingested.append(done)
        prefix = root.as_uri().rstrip("/") + "/"
        for doc in self._live_documents(collection):
            if doc.source_uri.startswith(prefix) and doc.source_uri not in seen:
                self._withdraw(actor, collection, doc.document_id, "removed from the source folder")
                result.removed.append(doc.document_id)
        return self._record_sync(actor, coll, result)

    def document(self, principal: Principal, collection: str, document_id: str) -> Document:
        """A document's record (``curate_knowledge`` on its collection)."""
        principal.require(Permission.CURATE_KNOWLEDGE, collection=collection)
        with self._ctx.db.read() as conn:
            return _document(self._document_row(conn, collection, document_id))

    def versions(
        self, principal: Principal, collection: str, document_id: str
    ) -> list[VersionRecord]:
        """Every version the document had, oldest first (``curate_knowledge``)."""
        principal.require(Permission.CURATE_KNOWLEDGE, collection=collection)
        with self._ctx.db.read() as conn:
            self._document_row(conn, collection, document_id)
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
        return self._withdraw(actor, collection, document_id, _reason(reason))

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
        reason = _reason(reason)

        def work(conn: Connection, gate: WindowGate) -> Withdrawal:
            doc = self._document_row(conn, collection, document_id)
            row = conn.execute(
                select(knowledge_versions)
                .where(
                    knowledge_versions.c.document_id == document_id,
                    knowledge_versions.c.version == version,
                    knowledge_versions.c.state != "withdrawn",
                )
                .order_by(knowledge_versions.c.revision.desc())
            ).first()
            if row is None:
                raise NotFoundError(
                    f"document {document_id} has no version {version} to withdraw",
                    {"document_id": document_id, "version": version},
                )
            live = row.state == "live"
            removed = self.index.withdraw_document(conn, document_id) if live else 0
            conn.execute(
                update(knowledge_versions)
                .where(
                    knowledge_versions.c.document_id == document_id,
                    knowledge_versions.c.revision == row.revision,
                )
                .values(state="withdrawn", ended_at=row.ended_at or gate.now)
            )
            if live:
                conn.execute(
                    update(knowledge_documents)
                    .where(knowledge_documents.c.document_id == document_id)
                    .values(version=None, state="withdrawn", updated_at=gate.now)
                )
            event = VersionWithdrawn(
                collection, doc.document_id, version, row.revision, live, removed,
                _by(actor), reason,
            )  # fmt: skip
            entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
            return Withdrawal(document_id, removed, entry.record_id)

        return self._ctx.writer.transact(work)

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
        wanted = _access(access)
        reason = _reason(reason)

        def work(conn: Connection, gate: WindowGate) -> Withdrawal:
            doc = self._document_row(conn, collection, document_id)
            previous = _loads_access(doc.access)
            effective = wanted if wanted is not None else coll.settings.default_access
            if doc.state == "live":
                self.index.set_access(conn, document_id, frozenset(effective))
            conn.execute(
                update(knowledge_documents)
                .where(knowledge_documents.c.document_id == document_id)
                .values(access=_dumps_access(wanted), updated_at=gate.now)
            )
            event = DocumentAccessSet(
                collection,
                document_id,
                None if wanted is None else list(wanted),
                None if previous is None else list(previous),
                list(effective),
                _by(actor),
                reason,
            )
            entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
            return Withdrawal(document_id, 0, entry.record_id)

        return self._ctx.writer.transact(work)

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
        who = _owner(person)
        key = f"person:{who}"
        with self._ctx.db.read() as conn:
            targets = [collection] if collection is not None else colls.names(conn)
        actors = {c: principal.acting(Permission.MANAGE_COLLECTION, collection=c) for c in targets}
        loaded = {c: self.collection(principal, c, Permission.MANAGE_COLLECTION) for c in targets}
        reason = _reason(reason)
        by = _by(next(iter(actors.values()))) if actors else _by_principal(principal)

        def work(conn: Connection, gate: WindowGate) -> Revocation:
            items = []
            changed_defaults: list[str] = []
            documents: list[str] = []
            for name in targets:
                stored = colls.load(conn, name)
                if stored.record_id != loaded[name].record_id:
                    raise ConflictError(
                        f"collection '{name}' was changed meanwhile; try again",
                        {"collection": name},
                    )
                if key in stored.settings.default_access:
                    new = replace(
                        stored.settings,
                        default_access=tuple(k for k in stored.settings.default_access if k != key),
                    )
                    _, item = self._change_in(
                        conn, gate, stored, new, by, reason or f"revoke {key}"
                    )
                    items.append(item)
                    changed_defaults.append(name)
                for doc in conn.execute(
                    select(knowledge_documents).where(
                        knowledge_documents.c.collection == name,
                        knowledge_documents.c.access.is_not(None),
                    )
                ).all():
                    keys = _loads_access(doc.access) or ()
                    if key not in keys:
                        continue
                    kept = tuple(k for k in keys if k != key)
                    if doc.state == "live":
                        self.index.set_access(conn, doc.document_id, frozenset(kept))
                    conn.execute(
                        update(knowledge_documents)
                        .where(knowledge_documents.c.document_id == doc.document_id)
                        .values(access=_dumps_access(kept), updated_at=gate.now)
                    )
                    documents.append(doc.document_id)
            event = PersonAccessRevoked(who, targets, documents, changed_defaults, by, reason)
            items.append(pending(event, None, gate.now))
            entries = append_in(conn, items, gate)
            return Revocation(who, documents, changed_defaults, entries[-1].record_id)

        return self._ctx.writer.transact(work)

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

    def _ingest(
        self,
        actor: Actor,
        coll: Collection,
        doc_id: str,
        source_uri: str,
        extracted: Extracted,
        wanted: _Wanted,
        reason: str,
    ) -> IngestResult:
        with self._ctx.db.read() as conn:
            before = self._existing(conn, coll.name, doc_id)
        if before is not None and before.state == "live" and before.version == extracted.version:
            wanted.refuse_changes(_document(before))
            return IngestResult(doc_id, source_uri, "unchanged", extracted.version, before.revision)
        revision = (before.revision if before is not None else 0) + 1
        embedder = self.embedder(coll.settings.embedder)
        previous = self.index.live_vectors(doc_id, coll.settings.space_id) if before else {}
        prepared = prepare(extracted, embedder, doc_id, revision, previous)
        current = _document(before) if before is not None else None
        fields = wanted.resolve(current, actor, coll)

        def work(conn: Connection, gate: WindowGate) -> IngestResult:
            stored = colls.load(conn, coll.name)
            now_row = self._existing(conn, coll.name, doc_id)
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
            self.index.add_version(
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
                "access": _dumps_access(fields.access),
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
                by=_by(actor),
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

        return self._guarded(coll.name, lambda: self._ctx.writer.transact(work))

    def _withdraw(self, actor: Actor, collection: str, document_id: str, reason: str) -> Withdrawal:
        def work(conn: Connection, gate: WindowGate) -> Withdrawal:
            doc = self._document_row(conn, collection, document_id)
            if doc.state == "withdrawn":
                raise ConflictError(
                    f"document {document_id} is withdrawn already", {"document_id": document_id}
                )
            removed = self.index.withdraw_document(conn, document_id)
            conn.execute(
                update(knowledge_versions)
                .where(
                    knowledge_versions.c.document_id == document_id,
                    knowledge_versions.c.state == "live",
                )
                .values(state="withdrawn", ended_at=gate.now)
            )
            conn.execute(
                update(knowledge_documents)
                .where(knowledge_documents.c.document_id == document_id)
                .values(version=None, state="withdrawn", updated_at=gate.now)
            )
            event = DocumentWithdrawn(
                collection, document_id, doc.version, removed, _by(actor), reason
            )
            entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
            return Withdrawal(document_id, removed, entry.record_id)

        return self._ctx.writer.transact(work)

    def _record_sync(self, actor: Actor, coll: Collection, result: SyncResult) -> SyncResult:
        event = FolderSynced(
            collection=coll.name,
            folder=result.folder,
            added=result.count("new"),
            changed=result.count("changed"),
            unchanged=result.count("unchanged"),
            removed=len(result.removed),
            failed=[{"file": f.file, "error": f.error} for f in result.failed],
            by=_by(actor),
        )

        def work(conn: Connection, gate: WindowGate) -> str:
            conn.execute(
                update(knowledge_collections)
                .where(knowledge_collections.c.name == coll.name)
                .values(last_synced_at=gate.now)
            )
            return append_in(conn, [pending(event, None, gate.now)], gate)[0].record_id

        return replace(result, record_id=self._ctx.writer.transact(work))

    def _change_in(
        self,
        conn: Connection,
        gate: WindowGate,
        stored: Collection,
        new: CollectionSettings,
        by: dict[str, str],
        reason: str,
    ) -> tuple[str, Any]:
        """Write a collection's new settings and give inheriting documents the new
        default list; returns the record id and the ledger item to append."""
        old = stored.settings
        record_id = new_id("evt", gate.now)
        inheriting = 0
        if new.default_access != old.default_access:
            for doc_id in conn.execute(
                select(knowledge_documents.c.document_id).where(
                    knowledge_documents.c.collection == stored.name,
                    knowledge_documents.c.access.is_(None),
                    knowledge_documents.c.state == "live",
                )
            ).scalars():
                self.index.set_access(conn, doc_id, frozenset(new.default_access))
                inheriting += 1
        conn.execute(
            update(knowledge_collections)
            .where(knowledge_collections.c.name == stored.name)
            .values(
                settings=new.canonical, digest=new.digest, record_id=record_id, updated_at=gate.now
            )
        )
        before, after = old.to_json(), new.to_json()
        event = CollectionChanged(
            collection=stored.name,
            settings=after,
            digest=new.digest,
            previous_digest=old.digest,
            changed=sorted(k for k in after if after[k] != before[k]),
            inheriting_documents=inheriting,
            by=by,
            reason=reason,
        )
        return record_id, pending(event, None, gate.now, record_id)

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

    def _existing(self, conn: Connection, collection: str, doc_id: str) -> Row[Any] | None:
        row = conn.execute(
            select(knowledge_documents).where(knowledge_documents.c.document_id == doc_id)
        ).first()
        if row is not None and row.collection != collection:
            raise ConflictError(
                f"document id {doc_id} belongs to another collection; choose another id",
                {"document_id": doc_id},
            )
        return row

    def _document_row(self, conn: Connection, collection: str, document_id: str) -> Row[Any]:
        row = conn.execute(
            select(knowledge_documents).where(
                knowledge_documents.c.document_id == document_id,
                knowledge_documents.c.collection == collection,
            )
        ).first()
        if row is None:
            raise NotFoundError(
                f"collection '{collection}' has no document {document_id}",
                {"collection": collection, "document_id": document_id},
            )
        return row

    def _live_documents(self, collection: str) -> list[Document]:
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(knowledge_documents).where(
                    knowledge_documents.c.collection == collection,
                    knowledge_documents.c.state == "live",
                )
            ).all()
        return [_document(r) for r in rows]


class _Wanted:
    """The document attributes an ingest was given (``None``: keep, or the default)."""

    def __init__(
        self,
        owner: str | None = None,
        classification: str | None = None,
        access: tuple[str, ...] | Literal["inherit"] | None = None,
        validity: Validity | None = None,
        subjects: tuple[str, ...] | None = None,
        metadata: dict[str, object] | None = None,
    ) -> None:
        self.owner = owner
        self.classification = classification
        self.access = access
        self.validity = validity
        self.subjects = subjects
        self.metadata = metadata

    @classmethod
    def check(
        cls,
        owner: str | None,
        classification: str | None,
        access: Access | None,
        validity: Validity | None,
        subjects: Iterable[str] | None,
        metadata: Mapping[str, object] | None,
    ) -> _Wanted:
        if validity is not None:
            if not isinstance(validity, Validity):
                raise InputError("validity must be a keel.index.records.Validity")
            check_validity(validity)
        checked_access: tuple[str, ...] | Literal["inherit"] | None = None
        if access is not None:
            resolved = _access(access)
            checked_access = INHERIT if resolved is None else resolved
        return cls(
            None if owner is None else _owner(owner),
            None if classification is None else colls.check_classification(classification),
            checked_access,
            validity,
            None if subjects is None else _subjects(subjects),
            None if metadata is None else _metadata(metadata),
        )

    def refuse_changes(self, doc: Document) -> None:
        """Unchanged content writes nothing: a given value that differs would be lost."""
        stored_validity = Validity(doc.valid_from, doc.valid_until)
        wanted_access = None if self.access == INHERIT else self.access
        checks = (
            ("owner", self.owner, self.owner != doc.owner),
            ("classification", self.classification, self.classification != doc.classification),
            ("access", self.access, wanted_access != doc.access),
            ("validity", self.validity, self.validity != stored_validity),
            ("subjects", self.subjects, self.subjects != doc.subjects),
            ("metadata", self.metadata, self.metadata != doc.metadata),
        )
        differs = [name for name, given, changed in checks if given is not None and changed]
        if differs:
            raise ConflictError(
                f"document {doc.document_id}: the content is unchanged, so no new version is "
                f"made and {', '.join(differs)} cannot change with it; set an access list "
                "with set_access, or ingest changed content",
                {"document_id": doc.document_id, "fields": differs},
            )

    def resolve(self, current: Document | None, actor: Actor, coll: Collection) -> _Fields:
        access: tuple[str, ...] | None
        if self.access == INHERIT:
            access = None
        elif self.access is not None:
            access = self.access
        else:
            access = current.access if current is not None else None
        validity = self.validity or (
            Validity(current.valid_from, current.valid_until) if current else Validity()
        )
        return _Fields(
            owner=self.owner or (current.owner if current else actor.person),
            classification=self.classification
            or (current.classification if current else coll.settings.classification),
            access=access,
            valid_from=validity.valid_from,
            valid_until=validity.valid_until,
            subjects=self.subjects
            if self.subjects is not None
            else (current.subjects if current else ()),
            metadata=self.metadata
            if self.metadata is not None
            else (current.metadata if current else {}),
        )


class _Fields:
    def __init__(
        self,
        owner: str,
        classification: str,
        access: tuple[str, ...] | None,
        valid_from: float | None,
        valid_until: float | None,
        subjects: tuple[str, ...],
        metadata: dict[str, object],
    ) -> None:
        self.owner = owner
        self.classification = classification
        self.access = access
        self.valid_from = valid_from
        self.valid_until = valid_until
        self.subjects = subjects
        self.metadata = metadata


def _document(row: Row[Any]) -> Document:
    return Document(
        document_id=row.document_id,
        collection=row.collection,
        source_uri=row.source_uri,
        owner=row.owner,
        classification=row.classification,
        access=_loads_access(row.access),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        subjects=tuple(json.loads(row.subjects)),
        metadata=json.loads(row.metadata),
        version=row.version,
        revision=row.revision,
        state=row.state,
    )


def _access(access: Access) -> tuple[str, ...] | None:
    """Checked access keys, or ``None`` for ``INHERIT``."""
    if access == INHERIT:
        return None
    return colls.check_access(access, "the access list")


def _loads_access(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def _dumps_access(keys: Sequence[str] | None) -> str | None:
    return None if keys is None else json.dumps(sorted(keys))


def _owner(owner: object) -> str:
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 300:
        raise InputError("an owner is a person's name or e-mail address, at most 300 characters")
    return person_of(owner)


def _folder(folder: str | Path | None) -> str | None:
    if folder is None:
        return None
    if not isinstance(folder, str | Path) or not str(folder).strip():
        raise InputError("source_folder must be a folder path, or None")
    return str(Path(folder).resolve())


def _source(source_uri: object) -> str:
    if not isinstance(source_uri, str) or not source_uri.strip():
        raise InputError("a document needs a source URI or name, such as file:///docs/leave.md")
    if len(source_uri) > MAX_SOURCE_CHARS:
        raise InputError(f"a source URI may have at most {MAX_SOURCE_CHARS} characters")
    return source_uri


def _doc_id(collection: str, source_uri: str) -> str:
    """Stable: the same collection and source always name the same document."""
    digest = hashlib.sha256(f"{collection}\x00{source_uri}".encode()).hexdigest()
    return f"doc_{digest[:40]}"


def _subjects(subjects: Iterable[str]) -> tuple[str, ...]:
    if isinstance(subjects, str):
        raise InputError("subjects must be a list of data-subject ids, not one string")
    out = tuple(sorted(set(subjects)))
    if len(out) > MAX_SUBJECTS:
        raise InputError(f"a document may name at most {MAX_SUBJECTS} data subjects")
    for subject in out:
        check_id(subject, "a data-subject id")
    return out


def _metadata(metadata: Mapping[str, object]) -> dict[str, object]:
    if not isinstance(metadata, Mapping):
        raise InputError("metadata must be a JSON object")
    try:
        text = canonical_json(dict(metadata))
    except (CanonicalFormError, TypeError, ValueError) as error:
        raise InputError(f"metadata must be plain JSON: {error}") from error
    if len(text.encode("utf-8")) > MAX_METADATA_BYTES:
        raise InputError(
            f"metadata is {len(text.encode('utf-8'))} bytes as JSON; at most {MAX_METADATA_BYTES}",
            {"bytes": len(text.encode("utf-8")), "limit": MAX_METADATA_BYTES},
        )
    loaded: dict[str, object] = json.loads(text)
    return loaded


def _reason(reason: object) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InputError(f"a reason is text of at most {MAX_REASON_CHARS} characters")
    return reason


def _by(actor: Actor) -> dict[str, str]:
    return actor.to_dict()


def _by_principal(principal: Principal) -> dict[str, str]:
    return {"id": principal.id, "name": principal.name, "role": "", "person": principal.person}
