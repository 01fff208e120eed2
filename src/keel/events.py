"""The ledger event catalogue: every kind of entry Keel appends, each defined once, here.

Each kind is a frozen dataclass with a fixed ``KIND`` and a ``VERSION``; its fields are the
body the ledger hashes, under the same names (a field that is a Python keyword carries its
ledger name in ``metadata={"key": ...}``; a field marked ``"omit_none"`` is left out of the
body while it is ``None``). A change to a kind's fields is a new ``VERSION``. The README's
ledger section lists every kind with its fields, and a test keeps it complete.

The ledger writer appends ``Pending`` items and does not look inside them; only this
module builds them (``pending`` for a body fixed now, ``deferred`` for a decision, whose
body is settled inside the write transaction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from sqlalchemy import Table

from keel.ledger.records import Entry, new_id
from keel.ledger.writer import Pending, WindowGate

Rows = tuple[tuple[Table, dict[str, Any]], ...]
Derive = Callable[[Entry, dict[str, Any]], list[tuple[Table, dict[str, Any]]]]
Json = dict[str, Any]


def _person() -> Any:
    """A body field naming the person behind a principal id (four eyes:
    ``keel.security.persons``); left out where Keel itself acted. A new field each time:
    dataclasses name the field object they are given."""
    return field(default=None, metadata={"omit_none": True})


# ---- decisions and what people do with them --------------------------------------------------


@dataclass(frozen=True)
class DecisionRecorded:
    """One decided case: inputs (personal ones sealed apart), signals, the rule trace, the
    guardrails, the action and status, every version it depended on, and the deadline of a
    case that waits for a person."""

    KIND: ClassVar[str] = "decision"
    VERSION: ClassVar[int] = 3
    subject_id: str | None
    requested_by: str | None
    inputs: Json
    autonomy: str
    owner: str
    policy: Json  # {name, version}
    signals: Json  # per signal: score/label, model, version, latency
    failed_signals: Json
    rule: str
    proposed: Json  # {action, value} the rules proposed
    action: str
    value: float | None
    status: str
    reason: str
    fallback: str | None
    guardrails: Json  # {checked, hits}
    trace: list[Any]
    timings: Json  # {model_ms, decide_ms}
    hold: str | None = field(default=None, metadata={"omit_none": True})
    rollout: Json | None = field(default=None, metadata={"omit_none": True})
    requested_person: str | None = _person()  # v2: four eyes
    # v3: {due_at} of a case that waits for a person (null: no deadline), so a forged
    # deadline in the queue is found; left out of a case that does not wait.
    queue: Json | None = field(default=None, metadata={"omit_none": True})
    record_version: int = 1


@dataclass(frozen=True)
class ReviewResolved:
    """A person approved, rejected or changed a decision (an override included)."""

    KIND: ClassVar[str] = "review"
    VERSION: ClassVar[int] = 2
    decision: str
    decision_seq: int
    kind: str  # escalation | advisory | override
    resolution: str  # approve | reject | change
    proposed: Json
    action: str
    value: float | None
    reason: str
    reviewer: Json  # {id, name, role, person}
    requested_by: str | None
    opened_at: str
    due_at: str | None
    late: bool
    windows: Json  # {consumed, exceeded}
    requested_person: str | None = field(default=None, metadata={"omit_none": True})  # v2


@dataclass(frozen=True)
class ReviewBreached:
    """A review still waited past its deadline."""

    KIND: ClassVar[str] = "review_breached"
    VERSION: ClassVar[int] = 1
    decision: str
    decision_seq: int
    kind: str
    state: str
    claimed_by: str | None
    opened_at: str
    due_at: str
    noticed_at: str


@dataclass(frozen=True)
class OutcomeReported:
    """What really happened after a decision."""

    KIND: ClassVar[str] = "outcome"
    VERSION: ClassVar[int] = 1
    decision: str
    decision_seq: int
    label: str
    value: float | None
    observed_at: str
    reported_by: str
    source: str


# ---- policy versions and changes ---------------------------------------------------------------


@dataclass(frozen=True)
class PolicyRegistered:
    """A policy version was stored for the first time."""

    KIND: ClassVar[str] = "policy_registered"
    VERSION: ClassVar[int] = 1
    policy: str
    version: str
    flow: str
    source: str


@dataclass(frozen=True)
class PolicyProposed:
    """A change was opened: a policy version and/or model files proposed for a flow."""

    KIND: ClassVar[str] = "policy_proposed"
    VERSION: ClassVar[int] = 1
    change: str
    version: str
    base_version: str
    models: dict[str, str] | None
    base_models: dict[str, str] | None
    author: Json
    reason: str


@dataclass(frozen=True)
class PolicyEdited:
    """A proposed change got a new version; its approvals are void."""

    KIND: ClassVar[str] = "policy_edited"
    VERSION: ClassVar[int] = 1
    change: str
    from_version: str
    version: str
    editor: Json
    reason: str
    voided_approvals: list[str]


@dataclass(frozen=True)
class PolicyApproved:
    """Someone who wrote no revision of a change approved its current version."""

    KIND: ClassVar[str] = "policy_approved"
    VERSION: ClassVar[int] = 1
    change: str
    version: str
    approver: Json
    reason: str
    approvals: int
    needed: int


@dataclass(frozen=True)
class PolicyActivated:
    """A version went into force: the first one, an approved change, a rollback, or, in
    development mode, a changed policy or model file (`mode` and `files` say so)."""

    KIND: ClassVar[str] = "policy_activated"
    VERSION: ClassVar[int] = 2
    version: str
    previous: str | None
    kind: str  # initial | activate | rollback | development
    change: str | None
    by: Json
    reason: str
    models: dict[str, str] | None
    previous_models: dict[str, str] | None
    # "development" on every activation a development-mode project makes; left out otherwise
    mode: str | None = field(default=None, metadata={"omit_none": True})
    # the project files a development-mode activation put into force: [{path, sha256}]
    files: list[Json] | None = field(default=None, metadata={"omit_none": True})


@dataclass(frozen=True)
class ModelCardRecorded:
    """The card beside a model file was recorded with the model version: its SHA-256 and
    its keys, so a card edited later is a new record, never a silent change."""

    KIND: ClassVar[str] = "model_card_recorded"
    VERSION: ClassVar[int] = 1
    signal: str
    model: str  # the model version, "sha256:…"
    file: str  # the model file's name
    card: str  # SHA-256 of the card file
    fields: Json  # the card's keys as written


# ---- autonomy, holds and rollouts --------------------------------------------------------------


@dataclass(frozen=True)
class AutonomyRequested:
    """A raise of a flow's autonomy was asked for, with the evidence it meets."""

    KIND: ClassVar[str] = "autonomy_requested"
    VERSION: ClassVar[int] = 1
    request: str
    from_level: str = field(metadata={"key": "from"})
    to_level: str = field(metadata={"key": "to"})
    by: Json = field(default_factory=dict)
    reason: str = ""
    evidence: Json = field(default_factory=dict)


@dataclass(frozen=True)
class AutonomyChanged:
    """A flow's autonomy level changed: seeded, lowered, or raised on approval."""

    KIND: ClassVar[str] = "autonomy_changed"
    VERSION: ClassVar[int] = 2
    level: str
    previous: str | None
    kind: str  # initial | lower | raise
    requested_by: str
    approved_by: str | None
    changed_at: str
    reason: str
    evidence: Json | None
    requested_person: str | None = _person()  # v2: None for Keel's own
    approved_person: str | None = _person()  # v2


@dataclass(frozen=True)
class FlowHoldChanged:
    """A hold (escalate every case, or pause automation) was put on a flow or lifted."""

    KIND: ClassVar[str] = "flow_hold_changed"
    VERSION: ClassVar[int] = 2
    hold: str  # none | escalate_all | pause
    previous: str
    set_by: str
    at: str
    reason: str
    alarm_id: str | None
    evidence: Json | None
    set_by_person: str | None = _person()  # v2: None for the governor's


@dataclass(frozen=True)
class RolloutStarted:
    """A shadow or canary rollout of a candidate version started."""

    KIND: ClassVar[str] = "rollout_started"
    VERSION: ClassVar[int] = 1
    id: str
    mode: str  # shadow | canary
    version: str
    change_id: str | None
    share: float
    reason: str
    bounds: Json
    by: Json


@dataclass(frozen=True)
class RolloutStopped:
    """A rollout ended: stopped, ended by an activation, or rolled back past its bounds."""

    KIND: ClassVar[str] = "rollout_stopped"
    VERSION: ClassVar[int] = 2
    rollout: str
    mode: str
    version: str
    state: str  # stopped | ended | rolled_back
    by: str
    reason: str
    by_person: str | None = _person()  # v2: None when Keel rolled it back


# ---- monitors and the governor -------------------------------------------------------------


@dataclass(frozen=True)
class AlarmRaised:
    """A monitor breached its limit and an alarm opened; the governor's acts with it."""

    KIND: ClassVar[str] = "alarm_raised"
    VERSION: ClassVar[int] = 1
    alarm: str
    monitor: str
    severity: str
    summary: str
    evidence: Json
    actions: list[Json]  # what the governor did


@dataclass(frozen=True)
class AlarmRepeated(AlarmRaised):
    """A firing alarm seen again past its cool-down."""

    KIND: ClassVar[str] = "alarm_repeated"


@dataclass(frozen=True)
class AlarmEscalated(AlarmRaised):
    """A firing alarm seen again, graver."""

    KIND: ClassVar[str] = "alarm_escalated"


@dataclass(frozen=True)
class AlarmResolved:
    """A firing alarm was resolved: after clean runs, or by a person with a reason."""

    KIND: ClassVar[str] = "alarm_resolved"
    VERSION: ClassVar[int] = 2
    alarm: str
    monitor: str
    by: str
    reason: str
    opened_at: str
    runs: int
    by_person: str | None = _person()  # v2: None when clean runs resolved it


@dataclass(frozen=True)
class RetrainingRequested:
    """A governor rule asked for the flow's models to be retrained: by the webhook of that
    name (version 1 kept its URL), the command, or both."""

    KIND: ClassVar[str] = "retraining_requested"
    VERSION: ClassVar[int] = 2
    alarm: str
    monitor: str
    webhook: str | None  # its name (version 1: its URL, which may carry credentials)
    command: list[str] | None
    evidence: Json


@dataclass(frozen=True)
class DeliveryRetried:
    """A person sent a dead-lettered alarm notice or retraining request back to the outbox."""

    KIND: ClassVar[str] = "delivery_retried"
    VERSION: ClassVar[int] = 1
    delivery: str
    kind: str  # alarm_notice | retraining_request
    target: str  # the webhook's name in the flow file
    alarm: str | None
    attempts: int  # tries before it was dead-lettered
    last_error: str | None
    by: str
    reason: str
    by_person: str | None = _person()  # the person behind ``by``


# ---- the ledger itself -------------------------------------------------------------------------


@dataclass(frozen=True)
class CheckpointTaken:
    """The chain head was signed (the checkpoint itself is kept outside the ledger)."""

    KIND: ClassVar[str] = "checkpoint"
    VERSION: ClassVar[int] = 1
    seq: int
    head_hash: str
    public_key: str


@dataclass(frozen=True)
class ProjectModeChanged:
    """The project left development mode: from now on policy and model files reach its
    flows only through approved changes, and development mode is refused."""

    KIND: ClassVar[str] = "project_mode_changed"
    VERSION: ClassVar[int] = 1
    mode: str
    previous: str
    by: Json  # who ran the first command in the new mode: {id, name, person}


# ---- knowledge collections ---------------------------------------------------------------------


@dataclass(frozen=True)
class CollectionCreated:
    """A knowledge collection was created with its settings (owner, classification, default
    access list, embedding space, retention, fusion weights, source folder); ``digest`` is
    the SHA-256 of their canonical JSON, which the stored row must match."""

    KIND: ClassVar[str] = "knowledge_collection_created"
    VERSION: ClassVar[int] = 1
    collection: str
    settings: Json
    digest: str
    by: Json  # {id, name, role, person}
    reason: str


@dataclass(frozen=True)
class CollectionChanged:
    """A collection's settings changed (``changed`` names the keys); documents that inherit
    the default access list got the new one in the same transaction."""

    KIND: ClassVar[str] = "knowledge_collection_changed"
    VERSION: ClassVar[int] = 1
    collection: str
    settings: Json
    digest: str
    previous_digest: str
    changed: list[str]
    inheriting_documents: int
    by: Json
    reason: str


@dataclass(frozen=True)
class DocumentIngested:
    """A new version of a document was indexed: its content hash, the version it
    superseded (if any), its chunks, its access list (``null``: the collection's default)
    and the data subjects it is about. The metadata is recorded by its digest only."""

    KIND: ClassVar[str] = "knowledge_document_ingested"
    VERSION: ClassVar[int] = 1
    collection: str
    document: str
    source_uri: str
    version: str
    revision: int
    previous_version: str | None
    format: str
    bytes_sha256: str
    chunks: int
    embedded: int  # chunks whose vector was computed now
    reused: int  # chunks whose vector was reused from the previous version
    owner: str
    classification: str
    access: list[str] | None
    valid_from: float | None
    valid_until: float | None
    subjects: list[str]
    metadata_sha256: str
    by: Json
    reason: str


@dataclass(frozen=True)
class VersionWithdrawn:
    """One version of a document was withdrawn; when it was the live one, its chunks left
    the index in the same transaction and the document has no live version."""

    KIND: ClassVar[str] = "knowledge_version_withdrawn"
    VERSION: ClassVar[int] = 1
    collection: str
    document: str
    version: str
    revision: int
    was_live: bool
    chunks_removed: int
    by: Json
    reason: str


@dataclass(frozen=True)
class DocumentWithdrawn:
    """A document was withdrawn: every chunk of it left the index in the same transaction."""

    KIND: ClassVar[str] = "knowledge_document_withdrawn"
    VERSION: ClassVar[int] = 1
    collection: str
    document: str
    version: str | None
    chunks_removed: int
    by: Json
    reason: str


@dataclass(frozen=True)
class DocumentAccessSet:
    """A document's access list was set (``null``: inherit the collection's default); the
    index holds the effective list from the same transaction."""

    KIND: ClassVar[str] = "knowledge_access_set"
    VERSION: ClassVar[int] = 1
    collection: str
    document: str
    access: list[str] | None
    previous: list[str] | None
    effective: list[str]
    by: Json
    reason: str


@dataclass(frozen=True)
class PersonAccessRevoked:
    """``person:<person>`` was removed from the access lists of documents (and the default
    lists of collections) that named it; each changed collection also has its own
    ``knowledge_collection_changed`` entry."""

    KIND: ClassVar[str] = "knowledge_person_revoked"
    VERSION: ClassVar[int] = 1
    person: str
    collections: list[str]
    documents: list[str]
    defaults_changed: list[str]
    by: Json
    reason: str


@dataclass(frozen=True)
class VersionsPurged:
    """The records of superseded or withdrawn versions were deleted once the collection's
    retention had passed since they ended; ``versions`` names each one."""

    KIND: ClassVar[str] = "knowledge_versions_purged"
    VERSION: ClassVar[int] = 1
    collection: str
    retention_days: int
    versions: list[Json]  # [{document, revision, version}]
    by: Json


@dataclass(frozen=True)
class FolderSynced:
    """A collection's source folder was synced: the documents added, changed, unchanged,
    withdrawn because their file went, and the files that could not be read."""

    KIND: ClassVar[str] = "knowledge_folder_synced"
    VERSION: ClassVar[int] = 1
    collection: str
    folder: str
    added: int
    changed: int
    unchanged: int
    removed: int
    failed: list[Json]  # [{file, error}]
    by: Json


@dataclass(frozen=True)
class KnowledgeSearched:
    """A search of a collection: who asked, the SHA-256 of the query text (never the text),
    and the chunks returned with their versions; ``dropped`` counts hits the re-check
    removed because access or the live version changed while the search ran."""

    KIND: ClassVar[str] = "knowledge_searched"
    VERSION: ClassVar[int] = 1
    collection: str
    principal: str
    person: str
    query_sha256: str
    k: int
    results: list[Json]  # [{chunk, document, version}]
    dropped: int


Event = (
    DecisionRecorded
    | ReviewResolved
    | ReviewBreached
    | OutcomeReported
    | PolicyRegistered
    | PolicyProposed
    | PolicyEdited
    | PolicyApproved
    | PolicyActivated
    | ModelCardRecorded
    | AutonomyRequested
    | AutonomyChanged
    | FlowHoldChanged
    | RolloutStarted
    | RolloutStopped
    | AlarmRaised
    | AlarmResolved
    | RetrainingRequested
    | DeliveryRetried
    | CheckpointTaken
    | ProjectModeChanged
    | CollectionCreated
    | CollectionChanged
    | DocumentIngested
    | VersionWithdrawn
    | DocumentWithdrawn
    | DocumentAccessSet
    | PersonAccessRevoked
    | VersionsPurged
    | FolderSynced
    | KnowledgeSearched
)

CATALOGUE: tuple[type[Any], ...] = (
    DecisionRecorded,
    ReviewResolved,
    ReviewBreached,
    OutcomeReported,
    PolicyRegistered,
    PolicyProposed,
    PolicyEdited,
    PolicyApproved,
    PolicyActivated,
    ModelCardRecorded,
    AutonomyRequested,
    AutonomyChanged,
    FlowHoldChanged,
    RolloutStarted,
    RolloutStopped,
    AlarmRaised,
    AlarmRepeated,
    AlarmEscalated,
    AlarmResolved,
    RetrainingRequested,
    DeliveryRetried,
    CheckpointTaken,
    ProjectModeChanged,
    CollectionCreated,
    CollectionChanged,
    DocumentIngested,
    VersionWithdrawn,
    DocumentWithdrawn,
    DocumentAccessSet,
    PersonAccessRevoked,
    VersionsPurged,
    FolderSynced,
    KnowledgeSearched,
)
BY_KIND: dict[str, type[Any]] = {cls.KIND: cls for cls in CATALOGUE}


_LAYOUTS: dict[type[Any], tuple[tuple[str, str, bool], ...]] = {
    cls: tuple(
        (f.name, f.metadata.get("key", f.name), bool(f.metadata.get("omit_none")))
        for f in fields(cls)
    )
    for cls in CATALOGUE
}  # per kind: (attribute, ledger key, omitted while None), in declaration order


def _layout(cls: type[Any]) -> tuple[tuple[str, str, bool], ...]:
    return _LAYOUTS[cls]


def body_keys(cls: type[Any]) -> list[str]:
    """The ledger keys of a kind's body (what the README documents)."""
    return [key for _, key, _ in _layout(cls)]


def body(event: Event) -> Json:
    """The JSON object the ledger hashes for ``event`` (shallow: values are used as they are)."""
    out: Json = {}
    for name, key, omit in _layout(type(event)):
        value = getattr(event, name)
        if value is None and omit:
            continue
        out[key] = value
    return out


def pending(
    event: Event,
    flow: str | None,
    now: float,
    record_id: str | None = None,
    rows: Rows = (),
) -> Pending:
    """``event`` ready to append, with rows written in the same transaction."""
    fixed = body(event)
    return Pending(event.KIND, record_id or new_id("evt", now), flow, lambda _gate: fixed, rows)


def deferred(
    record_id: str,
    flow: str,
    build: Callable[[WindowGate], Json],
    rows: Rows = (),
    derive: Derive | None = None,
) -> Pending:
    """A decision whose record is settled by ``build`` inside the write transaction (window
    guardrails are decided there): ``build`` returns ``body(DecisionRecorded(...))``.
    ``derive`` gives rows that depend on the entry."""
    return Pending(DecisionRecorded.KIND, record_id, flow, build, rows, derive)


def catalogue_markdown() -> str:
    """The table of every event kind the README's ledger section shows (a test compares)."""
    lines = ["| kind | version | body fields | what it records |", "|---|---|---|---|"]
    for cls in CATALOGUE:
        keys = ", ".join(f"`{k}`" + (" (if any)" if omit else "") for _, k, omit in _layout(cls))
        what = (cls.__doc__ or "").strip().split("\n\n")[0].replace("\n", " ")
        lines.append(f"| `{cls.KIND}` | {cls.VERSION} | {keys} | {' '.join(what.split())} |")
    return "\n".join(lines) + "\n"
