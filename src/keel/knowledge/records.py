"""What the knowledge service returns: documents, ingest and sync results, search hits."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

IngestStatus = Literal["new", "changed", "unchanged"]


@dataclass(frozen=True)
class Document:
    """A document as the service keeps it. ``access`` is the list set on the document
    (``None``: it inherits its collection's default list, resolved when searched);
    ``version`` is the live version's content hash (``None`` once withdrawn)."""

    document_id: str
    collection: str
    source_uri: str
    owner: str
    classification: str
    access: tuple[str, ...] | None
    valid_from: float | None
    valid_until: float | None
    subjects: tuple[str, ...]
    metadata: dict[str, object]
    version: str | None
    revision: int
    state: str  # live | withdrawn


@dataclass(frozen=True)
class VersionRecord:
    """One version a document had: ``version`` is the SHA-256 of its extracted text;
    ``revision`` counts the document's versions from 1 in the order they were ingested."""

    document_id: str
    revision: int
    version: str
    state: str  # live | superseded | withdrawn
    format: str
    bytes_sha256: str
    chars: int
    chunks: int
    record_id: str
    created_at: float
    ended_at: float | None


@dataclass(frozen=True)
class IngestResult:
    """What an ingest did: ``new`` (first version), ``changed`` (a new version superseded
    ``previous_version``) or ``unchanged`` (the content hash is the live version's: nothing
    was written). ``embedded`` chunks were embedded now; ``reused`` took the vector of the
    same text in the previous version."""

    document_id: str
    source_uri: str
    status: IngestStatus
    version: str
    revision: int
    previous_version: str | None = None
    chunks: int = 0
    embedded: int = 0
    reused: int = 0
    record_id: str | None = None  # the ledger entry (None when unchanged)


@dataclass(frozen=True)
class SyncFailure:
    """A file a sync could not ingest, and why; the sync went on with the others."""

    file: str
    error: str


@dataclass(frozen=True)
class SyncResult:
    """A folder sync: one result per file ingested, the documents withdrawn because their
    file is gone, the files that failed, and the files skipped because Keel does not read
    their format."""

    collection: str
    folder: str
    ingested: list[IngestResult] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[SyncFailure] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    record_id: str | None = None

    def count(self, status: str) -> int:
        return sum(1 for r in self.ingested if r.status == status)


@dataclass(frozen=True)
class Withdrawal:
    """A withdrawal or access change and the ledger entry that recorded it."""

    document_id: str
    chunks_removed: int
    record_id: str


@dataclass(frozen=True)
class Revocation:
    """A person's access removed: the documents whose own list named them, the
    collections whose default list did, and the ledger entry."""

    person: str
    documents: list[str]
    defaults_changed: list[str]
    record_id: str


@dataclass(frozen=True)
class Purge:
    """The version records a retention purge deleted, as (document id, revision), and its
    ledger entry (``None`` when nothing was due)."""

    collection: str
    versions: list[tuple[str, int]]
    record_id: str | None


@dataclass(frozen=True)
class SearchHit:
    """One ranked chunk: where it comes from (document, version, exact span and page),
    its scores (``None`` where the chunk was not in that list) and a citation label such
    as ``[1] leave.md p.2 §120-480``."""

    rank: int
    chunk_id: str
    document_id: str
    version: str
    source_uri: str
    text: str
    start: int
    end: int
    page: int | None
    keyword_score: float | None
    vector_score: float | None
    fused: float
    citation: str


@dataclass(frozen=True)
class SearchResult:
    """The hits of one search, best first, and the ledger entry that recorded it.
    ``dropped`` counts hits removed by the re-check (logged as security events)."""

    collection: str
    query_sha256: str
    hits: list[SearchHit]
    dropped: int
    record_id: str
