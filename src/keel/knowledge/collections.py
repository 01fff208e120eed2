"""Knowledge collections: their settings, how they are checked, and how a stored row is
verified against the ledger entry that recorded it.

A collection's settings are one value, :class:`CollectionSettings`. Its canonical JSON is
stored in the row and its SHA-256 (the *digest*) is written in the ledger entry of the
create or change, in the same transaction. When the service loads a collection it hashes
the stored settings again and compares them with the digest the named ledger entry holds:
a row changed outside Keel is refused (``IntegrityError``), not acted on.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from sqlalchemy import Connection, select, update

from keel.canonical import canonical_json
from keel.errors import InputError, IntegrityError, NotFoundError
from keel.events import CollectionChanged, pending
from keel.index.access import check_keys
from keel.index.base import ChunkIndex
from keel.index.records import Weights
from keel.knowledge.tables import knowledge_collections, knowledge_documents
from keel.ledger.records import new_id
from keel.ledger.writer import Pending, WindowGate
from keel.store.schema import ledger

NAME = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")
CLASSIFICATIONS = ("public", "internal", "confidential", "restricted")
MAX_RETENTION_DAYS = 36_500
RECORDING_KINDS = ("knowledge_collection_created", "knowledge_collection_changed")


class Keep(Enum):
    """A setting a change leaves as it is (the default of every ``change_collection``
    argument), told apart from ``None``, which some settings take as a value."""

    KEEP = "keep"


KEEP = Keep.KEEP


@dataclass(frozen=True)
class CollectionSettings:
    """What a collection is: its accountable owner (a person), classification, the
    access list its documents inherit unless they set their own, the embedder (as
    ``keel.embeddings.registry.embedder_for`` takes it) and the id of its space, how many
    days a superseded or withdrawn version's record is kept (``None``: for ever), the
    fusion weights of its searches, and the folder it is synced from, with the most
    seconds allowed between syncs (for freshness alarms)."""

    owner: str
    classification: str
    default_access: tuple[str, ...]
    embedder: Mapping[str, Any]
    space_id: str
    retention_days: int | None = None
    weights: Weights = field(default_factory=Weights)
    source_folder: str | None = None
    sync_limit_s: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "owner": self.owner,
            "classification": self.classification,
            "default_access": list(self.default_access),
            "embedder": dict(self.embedder),
            "space_id": self.space_id,
            "retention_days": self.retention_days,
            "weights": {
                "keyword": self.weights.keyword,
                "vector": self.weights.vector,
                "rrf_k": self.weights.rrf_k,
                "candidates": self.weights.candidates,
            },
            "source_folder": self.source_folder,
            "sync_limit_s": self.sync_limit_s,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CollectionSettings:
        weights = data["weights"]
        return cls(
            owner=data["owner"],
            classification=data["classification"],
            default_access=tuple(data["default_access"]),
            embedder=dict(data["embedder"]),
            space_id=data["space_id"],
            retention_days=data["retention_days"],
            weights=Weights(
                float(weights["keyword"]),
                float(weights["vector"]),
                float(weights["rrf_k"]),
                int(weights["candidates"]),
            ),
            source_folder=data["source_folder"],
            sync_limit_s=data["sync_limit_s"],
        )

    @property
    def canonical(self) -> str:
        return canonical_json(self.to_json())

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical JSON: what the ledger entry records."""
        return hashlib.sha256(self.canonical.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Collection:
    """A collection as stored and verified: its name, settings, the ledger entry that
    recorded them, and when it was created, changed and last synced (epoch seconds)."""

    name: str
    settings: CollectionSettings
    record_id: str
    created_at: float
    updated_at: float
    last_synced_at: float | None

    @property
    def default_access(self) -> frozenset[str]:
        return frozenset(self.settings.default_access)


def check_name(name: object) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise InputError(
            f"{name!r} is not a collection name: lower-case letters, digits, '_' and '-', "
            "starting with a letter or digit, at most 64 characters",
            {"collection": str(name)[:80]},
        )
    return name


def check_classification(value: object) -> str:
    if value not in CLASSIFICATIONS:
        raise InputError(
            f"classification must be one of {', '.join(CLASSIFICATIONS)}, not {value!r}",
            {"classification": str(value)[:40], "accepted": list(CLASSIFICATIONS)},
        )
    return str(value)


def check_access(keys: Iterable[str], what: str) -> tuple[str, ...]:
    """Access keys, checked (``keel.index.access.check_keys``) and sorted."""
    return tuple(sorted(check_keys(keys, what)))


def check_retention(days: object) -> int | None:
    if days is None:
        return None
    if isinstance(days, bool) or not isinstance(days, int) or not 1 <= days <= MAX_RETENTION_DAYS:
        raise InputError(
            f"retention_days must be a whole number of days from 1 to {MAX_RETENTION_DAYS}, "
            "or None to keep every version's record for ever",
            {"retention_days": str(days)[:40]},
        )
    return days


def check_weights(weights: object) -> Weights:
    if not isinstance(weights, Weights):
        raise InputError("weights must be a keel.index.records.Weights")
    numbers = (weights.keyword, weights.vector, weights.rrf_k)
    if not all(math.isfinite(w) and w >= 0 for w in numbers) or weights.rrf_k <= 0:
        raise InputError("fusion weights must be finite and >= 0, and rrf_k > 0")
    if weights.keyword == 0 and weights.vector == 0:
        raise InputError("at least one fusion weight must be above 0")
    if isinstance(weights.candidates, bool) or not 1 <= weights.candidates <= 1000:
        raise InputError("candidates must be from 1 to 1000")
    return weights


def check_sync_limit(seconds: object) -> float | None:
    if seconds is None:
        return None
    if (
        isinstance(seconds, bool)
        or not isinstance(seconds, int | float)
        or not math.isfinite(seconds)
        or seconds <= 0
    ):
        raise InputError(
            "sync_limit_s must be a positive number of seconds, or None for no limit",
            {"sync_limit_s": str(seconds)[:40]},
        )
    return float(seconds)


def load(conn: Connection, name: str) -> Collection:
    """The collection ``name``, verified against its ledger entry; ``NotFoundError`` if
    there is none, ``IntegrityError`` if the row disagrees with the ledger."""
    row = conn.execute(
        select(knowledge_collections).where(knowledge_collections.c.name == name)
    ).first()
    if row is None:
        raise NotFoundError(f"no knowledge collection named '{name}'", {"collection": name})
    try:
        settings = CollectionSettings.from_json(json.loads(row.settings))
    except (ValueError, KeyError, TypeError) as error:
        raise IntegrityError(
            f"collection '{name}': its stored settings cannot be read ({error}); it was "
            "changed outside Keel",
            {"collection": name},
        ) from error
    recorded = conn.execute(
        select(ledger.c.kind, ledger.c.record).where(ledger.c.record_id == row.record_id)
    ).first()
    body = json.loads(recorded.record)["body"] if recorded is not None else {}
    if (
        recorded is None
        or recorded.kind not in RECORDING_KINDS
        or body.get("collection") != name
        or body.get("digest") != settings.digest
    ):
        raise IntegrityError(
            f"collection '{name}': its stored settings do not match the ledger entry "
            f"{row.record_id} that should have recorded them; the row was changed outside "
            "Keel. Restore it from the ledger entry's settings, or change the collection "
            "again through Keel",
            {"collection": name, "record_id": row.record_id},
        )
    return Collection(
        name,
        settings,
        row.record_id,
        float(row.created_at),
        float(row.updated_at),
        None if row.last_synced_at is None else float(row.last_synced_at),
    )


def names(conn: Connection) -> list[str]:
    return list(
        conn.execute(
            select(knowledge_collections.c.name).order_by(knowledge_collections.c.name)
        ).scalars()
    )


def write_change(
    conn: Connection,
    gate: WindowGate,
    index: ChunkIndex,
    stored: Collection,
    new: CollectionSettings,
    by: dict[str, str],
    reason: str,
) -> tuple[str, Pending]:
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
            index.set_access(conn, doc_id, frozenset(new.default_access))
            inheriting += 1
    conn.execute(
        update(knowledge_collections)
        .where(knowledge_collections.c.name == stored.name)
        .values(settings=new.canonical, digest=new.digest, record_id=record_id, updated_at=gate.now)
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
