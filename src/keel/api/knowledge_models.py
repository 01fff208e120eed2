"""Request and response bodies of the knowledge API (``keel.api.knowledge``): the OpenAPI
contract for collections, documents, access lists and search. Unknown fields are
rejected; the service checks every value again."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from keel.api.models import Strict

MAX_TEXT = 1000  # a reason
MAX_NAME = 300  # an owner, a person
MAX_KEY = 320  # one access key


class WeightsIn(Strict):
    keyword: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="Keyword list.")
    vector: float = Field(default=1.0, ge=0, allow_inf_nan=False, description="Vector list.")
    rrf_k: float = Field(
        default=5.0, gt=0, allow_inf_nan=False, description="Reciprocal-rank fusion's k."
    )
    candidates: int = Field(
        default=100, ge=1, le=1000, description="How deep each list is read before fusion."
    )
    method: Literal["rrf", "minmax", "zscore"] = Field(
        default="rrf",
        description="rrf: reciprocal rank; minmax or zscore: each list's scores normalised, "
        "then weighted.",
    )


class CollectionIn(Strict):
    name: str = Field(
        min_length=1,
        max_length=64,
        description="Lower-case letters, digits, '_' and '-'; starts with a letter or digit.",
    )
    owner: str = Field(
        min_length=1, max_length=MAX_NAME, description="The accountable person (name or e-mail)."
    )
    classification: Literal["public", "internal", "confidential", "restricted"]
    default_access: list[str] = Field(
        max_length=1000,
        description="Access keys (person:…, group:…, role:…) of the documents that set no "
        "list of their own. Empty: nobody may read them.",
    )
    embedder: dict[str, Any] | None = Field(
        default=None,
        description='The embedding model, e.g. {"kind": "onnx-int8"} (the default).',
    )
    retention_days: int | None = Field(
        default=None,
        ge=1,
        le=36_500,
        description="Days a superseded or withdrawn version's record is kept (null: for ever).",
    )
    weights: WeightsIn | None = Field(default=None, description="Fusion weights of searches.")
    source_folder: str | None = Field(
        default=None, max_length=4096, description="The folder `keel knowledge sync` reads."
    )
    sync_limit_s: float | None = Field(
        default=None,
        gt=0,
        allow_inf_nan=False,
        description="Most seconds allowed between syncs of the source folder.",
    )
    reason: str = Field(default="", max_length=MAX_TEXT, description="Why, in words.")


class CollectionChangeIn(Strict):
    """Only the fields sent change; a field sent as null clears it where it may be null."""

    owner: str | None = Field(default=None, min_length=1, max_length=MAX_NAME)
    classification: Literal["public", "internal", "confidential", "restricted"] | None = None
    default_access: list[str] | None = Field(default=None, max_length=1000)
    retention_days: int | None = Field(default=None, ge=1, le=36_500)
    weights: WeightsIn | None = None
    source_folder: str | None = Field(default=None, max_length=4096)
    sync_limit_s: float | None = Field(default=None, gt=0, allow_inf_nan=False)
    reason: str = Field(default="", max_length=MAX_TEXT, description="Why, in words.")


class CollectionOut(Strict):
    name: str
    owner: str = Field(description="The accountable person, normalised.")
    classification: str
    default_access: list[str]
    embedder: dict[str, Any]
    space_id: str = Field(description="The embedding space every vector of it belongs to.")
    retention_days: int | None
    weights: WeightsIn
    source_folder: str | None
    sync_limit_s: float | None
    record_id: str = Field(description="The ledger entry that recorded these settings.")
    created_at: str
    updated_at: str
    last_synced_at: str | None


class DocumentOut(Strict):
    document_id: str
    collection: str
    source_uri: str
    owner: str
    classification: str
    access: list[str] | None = Field(
        description="The document's own access list; null: it inherits the collection's."
    )
    valid_from: str | None
    valid_until: str | None
    subjects: list[str] = Field(description="Ids of the data subjects it is about.")
    metadata: dict[str, Any]
    version: str | None = Field(description="The live version's content hash; null: withdrawn.")
    revision: int
    state: str = Field(description="live or withdrawn.")


class VersionOut(Strict):
    document_id: str
    revision: int = Field(description="The document's versions counted from 1.")
    version: str = Field(description="SHA-256 of the extracted text.")
    state: str = Field(description="live, superseded or withdrawn.")
    format: str
    bytes_sha256: str = Field(description="SHA-256 of the file as received.")
    chars: int
    chunks: int
    record_id: str = Field(description="The ledger entry of its ingest.")
    created_at: str
    ended_at: str | None


class IngestOut(Strict):
    document_id: str
    source_uri: str
    status: Literal["new", "changed", "unchanged"]
    version: str
    revision: int
    previous_version: str | None
    chunks: int
    embedded: int = Field(description="Chunks embedded now.")
    reused: int = Field(description="Chunks whose vector the previous version had.")
    record_id: str | None = Field(description="The ledger entry; null when unchanged.")


class WithdrawalOut(Strict):
    document_id: str
    chunks_removed: int = Field(description="Chunks taken out of the index.")
    record_id: str = Field(description="The ledger entry that recorded it.")


class AccessIn(Strict):
    access: list[str] | Literal["inherit"] = Field(
        description='Access keys (person:…, group:…, role:…), or "inherit" for the '
        "collection's default list."
    )
    reason: str = Field(default="", max_length=MAX_TEXT, description="Why, in words.")


class RevocationIn(Strict):
    person: str = Field(
        min_length=1, max_length=MAX_NAME, description="The person whose access is removed."
    )
    reason: str = Field(default="", max_length=MAX_TEXT, description="Why, in words.")


class RevocationOut(Strict):
    person: str
    documents: list[str] = Field(description="Documents whose own list named the person.")
    defaults_changed: list[str] = Field(description="Collections whose default list did.")
    record_id: str


class SearchIn(Strict):
    query: str = Field(min_length=1, max_length=8192, description="The text to search for.")
    k: int = Field(default=10, ge=1, le=1000, description="How many chunks to return.")
    as_of: str | None = Field(
        default=None,
        max_length=64,
        description="Search the versions that were live and valid at this instant (ISO 8601, "
        "e.g. 2026-11-30T12:00:00Z; default: now). Access is always the current list.",
    )


class HitOut(Strict):
    rank: int
    chunk_id: str
    document_id: str
    version: str = Field(description="The version the chunk belongs to (content hash).")
    source_uri: str
    text: str
    start: int = Field(description="Character offset of the chunk in the extracted text.")
    end: int
    page: int | None = Field(description="PDF page, where there is one.")
    keyword_score: float | None = Field(
        description="BM25 on SQLite, ts_rank_cd on PostgreSQL; null: not a keyword hit."
    )
    vector_score: float | None = Field(description="Cosine similarity; null: not a vector hit.")
    fused: float = Field(description="Reciprocal-rank fusion of the two lists.")
    citation: str = Field(description="A label such as [1] leave.md §120-480.")


class SearchOut(Strict):
    collection: str
    query_sha256: str = Field(description="What the ledger records of the query.")
    hits: list[HitOut]
    dropped: int = Field(description="Hits removed by the re-check (security events).")
    record_id: str = Field(description="The ledger entry that recorded this search.")
    space_id: str = Field(description="The embedding space every hit was found in.")
    as_of: str | None = Field(description="The instant searched (ISO 8601); null: now.")


class ReindexIn(Strict):
    embedder: dict[str, Any] = Field(
        description='The new embedding model, e.g. {"kind": "onnx-int8", "max_tokens": 128}.'
    )
    reason: str = Field(default="", max_length=MAX_TEXT, description="Why, in words.")


class ReindexOut(Strict):
    collection: str
    state: str = Field(
        description="none, running, completed, failed or interrupted (started, never "
        "finished, and not running in this server: start it again to resume)."
    )
    from_space: str | None = Field(description="The embedding space it moves from.")
    to_space: str | None = Field(description="The embedding space it moves to.")
    started: str | None = Field(description="The knowledge_reindex_started ledger entry.")
    finished: str | None = Field(description="Its completed or failed ledger entry.")
    done: int = Field(description="Versions in the new space.")
    total: int = Field(description="Versions to copy.")
    error: str | None = Field(description="Why it failed, if it did.")
