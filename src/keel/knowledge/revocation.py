"""Revocation: withdrawing documents and versions, setting access lists, and removing a
person from every access list. Each changes the index rows in the transaction that
appends its ledger entry, so from the moment it returns no search can return what it
removed; a search already running loses it at the re-check (``keel.knowledge.search``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from sqlalchemy import Connection, select, update

from keel.context import Context
from keel.errors import ConflictError, NotFoundError
from keel.events import (
    DocumentAccessSet,
    DocumentWithdrawn,
    PersonAccessRevoked,
    VersionWithdrawn,
    pending,
)
from keel.index.base import ChunkIndex
from keel.knowledge import collections as colls
from keel.knowledge.collections import Collection
from keel.knowledge.fields import actor_json, document_row, dumps_access, loads_access
from keel.knowledge.records import Revocation, Withdrawal
from keel.knowledge.tables import knowledge_documents, knowledge_versions
from keel.ledger.writer import WindowGate, append_in
from keel.security.roles import Actor


class Revocations:
    """Withdrawals and access changes, each in one transaction with its ledger entry."""

    def __init__(self, ctx: Context, index: ChunkIndex) -> None:
        self._ctx = ctx
        self._index = index

    def withdraw_document(
        self, actor: Actor, collection: str, document_id: str, reason: str
    ) -> Withdrawal:
        """Take every chunk of the document out of the index and mark it and its live
        version withdrawn, with the ledger entry, in one transaction."""

        def work(conn: Connection, gate: WindowGate) -> Withdrawal:
            doc = document_row(conn, collection, document_id)
            if doc.state == "withdrawn":
                raise ConflictError(
                    f"document {document_id} is withdrawn already", {"document_id": document_id}
                )
            removed = self._index.withdraw_document(conn, document_id)
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
                collection, document_id, doc.version, removed, actor_json(actor), reason
            )
            entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
            return Withdrawal(document_id, removed, entry.record_id)

        return self._ctx.writer.transact(work)

    def withdraw_version(
        self, actor: Actor, collection: str, document_id: str, version: str, reason: str
    ) -> Withdrawal:
        """Mark one version withdrawn; when it is the live one, its chunks leave the index
        in the same transaction and the document has no live version."""

        def work(conn: Connection, gate: WindowGate) -> Withdrawal:
            doc = document_row(conn, collection, document_id)
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
            removed = self._index.withdraw_document(conn, document_id) if live else 0
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
                actor_json(actor), reason,
            )  # fmt: skip
            entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
            return Withdrawal(document_id, removed, entry.record_id)

        return self._ctx.writer.transact(work)

    def set_access(
        self,
        actor: Actor,
        coll: Collection,
        document_id: str,
        wanted: tuple[str, ...] | None,
        reason: str,
    ) -> Withdrawal:
        """Store the document's list (``None``: inherit) and put the effective list in the
        index, with the ledger entry, in one transaction."""
        collection = coll.name

        def work(conn: Connection, gate: WindowGate) -> Withdrawal:
            doc = document_row(conn, collection, document_id)
            previous = loads_access(doc.access)
            effective = wanted if wanted is not None else coll.settings.default_access
            if doc.state == "live":
                self._index.set_access(conn, document_id, frozenset(effective))
            conn.execute(
                update(knowledge_documents)
                .where(knowledge_documents.c.document_id == document_id)
                .values(access=dumps_access(wanted), updated_at=gate.now)
            )
            event = DocumentAccessSet(
                collection,
                document_id,
                None if wanted is None else list(wanted),
                None if previous is None else list(previous),
                list(effective),
                actor_json(actor),
                reason,
            )
            entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
            return Withdrawal(document_id, 0, entry.record_id)

        return self._ctx.writer.transact(work)

    def revoke_person(
        self,
        by: dict[str, str],
        who: str,
        targets: list[str],
        loaded: Mapping[str, Collection],
        reason: str,
    ) -> Revocation:
        """Remove ``person:<who>`` from the default lists of ``targets`` and the lists of
        their documents, in one transaction with the ledger entries; ``loaded`` are the
        collections as the caller checked them (a change since is a conflict)."""
        key = f"person:{who}"

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
                    _, item = colls.write_change(
                        conn, gate, self._index, stored, new, by, reason or f"revoke {key}"
                    )
                    items.append(item)
                    changed_defaults.append(name)
                for doc in conn.execute(
                    select(knowledge_documents).where(
                        knowledge_documents.c.collection == name,
                        knowledge_documents.c.access.is_not(None),
                    )
                ).all():
                    keys = loads_access(doc.access) or ()
                    if key not in keys:
                        continue
                    kept = tuple(k for k in keys if k != key)
                    if doc.state == "live":
                        self._index.set_access(conn, doc.document_id, frozenset(kept))
                    conn.execute(
                        update(knowledge_documents)
                        .where(knowledge_documents.c.document_id == doc.document_id)
                        .values(access=dumps_access(kept), updated_at=gate.now)
                    )
                    documents.append(doc.document_id)
            event = PersonAccessRevoked(who, targets, documents, changed_defaults, by, reason)
            items.append(pending(event, None, gate.now))
            entries = append_in(conn, items, gate)
            return Revocation(who, documents, changed_defaults, entries[-1].record_id)

        return self._ctx.writer.transact(work)
