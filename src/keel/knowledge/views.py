"""The JSON forms of the knowledge service's records, as HTTP answers them and the CLI
prints them: times as ISO 8601 (UTC), every other field as the record holds it."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from keel.knowledge.collections import Collection
from keel.knowledge.records import Document, SearchResult, VersionRecord
from keel.ledger.records import iso_time


def _time(ts: float | None) -> str | None:
    return None if ts is None else iso_time(ts)


def collection_json(coll: Collection) -> dict[str, Any]:
    """A collection's name, settings, the ledger entry that recorded them, and its times."""
    out = coll.settings.to_json()
    out.update(
        name=coll.name,
        record_id=coll.record_id,
        created_at=iso_time(coll.created_at),
        updated_at=iso_time(coll.updated_at),
        last_synced_at=_time(coll.last_synced_at),
    )
    return out


def document_json(doc: Document) -> dict[str, Any]:
    out = asdict(doc)
    out.update(valid_from=_time(doc.valid_from), valid_until=_time(doc.valid_until))
    return out


def version_json(version: VersionRecord) -> dict[str, Any]:
    out = asdict(version)
    out.update(created_at=iso_time(version.created_at), ended_at=_time(version.ended_at))
    return out


def search_json(result: SearchResult, as_of: float | None) -> dict[str, Any]:
    """A search's hits, its ledger entry, the embedding space it read and the instant it
    searched (``as_of``: null when it searched the versions live now)."""
    out = asdict(result)
    out["as_of"] = _time(as_of)
    return out
