"""Retention: the records of superseded and withdrawn versions are kept for the
collection's ``retention_days`` after they ended, then purged, with a ledger entry that
names each one. The ledger entries of their ingest and withdrawal stay (the chain must
verify); the index holds no chunks of them already.
"""

from __future__ import annotations

from sqlalchemy import Connection, delete, select

from keel.context import Context
from keel.events import VersionsPurged, pending
from keel.knowledge.collections import Collection
from keel.knowledge.fields import actor_json
from keel.knowledge.records import Purge
from keel.knowledge.tables import knowledge_versions
from keel.ledger.writer import WindowGate, append_in
from keel.security.roles import Actor

DAY_S = 86_400.0


def purge(ctx: Context, coll: Collection, actor: Actor) -> Purge:
    """Delete the version records of ``coll`` that ended more than its retention ago
    (none when its retention is ``None``: kept for ever), in one transaction with the
    ``knowledge_versions_purged`` entry; nothing is written when nothing is due."""
    days = coll.settings.retention_days
    if days is None:
        return Purge(coll.name, [], None)

    def work(conn: Connection, gate: WindowGate) -> Purge:
        cutoff = gate.now - days * DAY_S
        due = conn.execute(
            select(
                knowledge_versions.c.document_id,
                knowledge_versions.c.revision,
                knowledge_versions.c.version,
            )
            .where(
                knowledge_versions.c.collection == coll.name,
                knowledge_versions.c.state != "live",
                knowledge_versions.c.ended_at < cutoff,
            )
            .order_by(knowledge_versions.c.document_id, knowledge_versions.c.revision)
        ).all()
        if not due:
            return Purge(coll.name, [], None)
        for document_id, revision, _ in due:
            conn.execute(
                delete(knowledge_versions).where(
                    knowledge_versions.c.document_id == document_id,
                    knowledge_versions.c.revision == revision,
                )
            )
        purged = [{"document": d, "revision": r, "version": v} for d, r, v in due]
        event = VersionsPurged(coll.name, days, purged, actor_json(actor))
        entry = append_in(conn, [pending(event, None, gate.now)], gate)[0]
        return Purge(coll.name, [(str(d), int(r)) for d, r, _ in due], entry.record_id)

    return ctx.writer.transact(work)
