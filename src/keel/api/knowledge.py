"""Knowledge collections over HTTP: collections, documents and their versions, access
lists, a person's revocation, and governed search.

Every route calls ``keel.knowledge.service.Knowledge`` with the caller's principal, which
checks the permission on the collection (``create_collection``, ``manage_collection``,
``curate_knowledge``, ``search_knowledge``): HTTP, the CLI and Python answer the same
question the same way. A caller without the permission gets 403 whether the collection
exists or not. A server without the ``knowledge`` extra answers 503 ``missing_extra``.

Extraction, chunking and embedding are CPU work: the routes are plain functions, which
FastAPI runs in its threadpool, and the upload awaits the file and then ingests in the
threadpool, so the event loop keeps serving other requests meanwhile.

A document is uploaded as ``multipart/form-data`` (RFC 7578), the standard form for files:
the file in the part ``file``, its settings in the other parts. Its body may be up to
``keel.api.app.MAX_DOCUMENT_BYTES``; a larger one is refused with 413.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, File, Form, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from keel.api.auth import current_principal, engine_of
from keel.api.decisions import ERRORS
from keel.api.knowledge_models import (
    AccessIn,
    CollectionChangeIn,
    CollectionIn,
    CollectionOut,
    DocumentOut,
    IngestOut,
    ReindexIn,
    ReindexOut,
    RevocationIn,
    RevocationOut,
    SearchIn,
    SearchOut,
    VersionOut,
    WithdrawalOut,
)
from keel.errors import InputError
from keel.index.records import Validity, Weights
from keel.knowledge import views
from keel.security.roles import Principal
from keel.text import free_text, identifier

if TYPE_CHECKING:
    from keel.knowledge.service import Knowledge

router = APIRouter(prefix="/v1/collections", responses={**ERRORS, 409: ERRORS[404]})
# What PATCH changes as sent; weights are converted, and the first three may not be null.
SETTINGS = (
    "owner", "classification", "default_access", "retention_days", "source_folder",
    "sync_limit_s",
)  # fmt: skip
Caller = Annotated[Principal, Depends(current_principal)]
INHERIT = "inherit"  # an access list: the collection's default (the service's INHERIT)


def _knowledge(request: Request) -> Knowledge:
    """The engine's knowledge service (503 ``missing_extra`` without the extra)."""
    return engine_of(request).knowledge


# ---- collections -------------------------------------------------------------------------


@router.post("", response_model=CollectionOut, status_code=201, name="create_collection")
def create_collection(body: CollectionIn, principal: Caller, request: Request) -> Any:
    """Create a collection (``create_collection``, a global grant). Its documents inherit
    ``default_access`` unless they set their own list."""
    _check_text(body)
    made = _knowledge(request).create_collection(
        principal,
        body.name,
        owner=body.owner,
        classification=body.classification,
        default_access=body.default_access,
        embedder=body.embedder,
        retention_days=body.retention_days,
        weights=Weights(**body.weights.model_dump()) if body.weights else None,
        source_folder=body.source_folder,
        sync_limit_s=body.sync_limit_s,
        reason=body.reason,
    )
    return views.collection_json(made)


@router.get("", response_model=list[CollectionOut], name="list_collections")
def list_collections(principal: Caller, request: Request) -> Any:
    """The collections the caller may search, by name."""
    return [views.collection_json(c) for c in _knowledge(request).collections(principal)]


@router.get("/{collection}", response_model=CollectionOut, name="get_collection")
def get_collection(collection: str, principal: Caller, request: Request) -> Any:
    """A collection's settings, verified against the ledger entry that recorded them."""
    return views.collection_json(_knowledge(request).collection(principal, collection))


@router.patch("/{collection}", response_model=CollectionOut, name="change_collection")
def change_collection(
    collection: str, body: CollectionChangeIn, principal: Caller, request: Request
) -> Any:
    """Change a collection's settings (``manage_collection``): only the fields sent
    change. A new default access list reaches every document that inherits it at once."""
    _check_text(body)
    sent = body.model_fields_set
    changes: dict[str, Any] = {name: getattr(body, name) for name in SETTINGS if name in sent}
    for name in ("owner", "classification", "default_access"):
        if name in changes and changes[name] is None:
            raise InputError(f"{name} cannot be null: leave it out to keep it", {"field": name})
    if "weights" in sent:
        if body.weights is None:
            raise InputError("weights cannot be null: leave it out to keep them")
        changes["weights"] = Weights(**body.weights.model_dump())
    changed = _knowledge(request).change_collection(
        principal, collection, reason=body.reason, **changes
    )
    return views.collection_json(changed)


# ---- documents ---------------------------------------------------------------------------


@router.post(
    "/{collection}/documents", response_model=IngestOut, status_code=201, name="add_document"
)
async def add_document(
    collection: str,
    file: Annotated[UploadFile, File(description="The document: txt, md, html, pdf or docx.")],
    principal: Caller,
    request: Request,
    source_uri: Annotated[
        str | None,
        Form(max_length=2048, description="Where it comes from (default: the file's name)."),
    ] = None,
    document_id: Annotated[
        str | None,
        Form(max_length=128, description="Default: derived from the collection and source."),
    ] = None,
    owner: Annotated[str | None, Form(max_length=300)] = None,
    classification: Annotated[str | None, Form(max_length=40)] = None,
    access: Annotated[
        list[str] | None,
        Form(
            description='Access keys (repeat the field), or "inherit"; default: the '
            "document's current list (a new one inherits the collection's)."
        ),
    ] = None,
    valid_from: Annotated[str | None, Form(description="ISO 8601 time.")] = None,
    valid_until: Annotated[str | None, Form(description="ISO 8601 time.")] = None,
    subjects: Annotated[
        list[str] | None, Form(description="Ids of the data subjects it is about (repeat).")
    ] = None,
    metadata: Annotated[str | None, Form(description="A JSON object.")] = None,
    reason: Annotated[str, Form(max_length=1000)] = "",
) -> Any:
    """Upload one document (``curate_knowledge``) as ``multipart/form-data``: the file in
    the field ``file``; optional fields ``source_uri``, ``document_id``, ``owner``,
    ``classification``, ``access`` and ``subjects`` (repeated), ``valid_from`` and
    ``valid_until`` (ISO 8601), ``metadata`` (a JSON object) and ``reason``. At most 32 MiB
    (413 beyond). Content whose text is the live version's is ``unchanged`` and writes
    nothing; other content makes a new version and supersedes the live one (201 either
    way, with ``status`` saying which)."""
    knowledge = _knowledge(request)
    source = source_uri or file.filename or ""
    for name, value in (
        ("source_uri", source),
        ("document_id", document_id),
        ("owner", owner),
        ("classification", classification),
        ("reason", reason),
    ):
        if value is not None:
            free_text(value, name) if name == "reason" else identifier(value, name)
    for name, values in (("access", access), ("subjects", subjects)):
        for value in values or []:
            identifier(value, name)
    keys: Any = None
    if access:
        keys = INHERIT if access == [INHERIT] else access
    validity = None
    if valid_from is not None or valid_until is not None:
        validity = Validity(_epoch("valid_from", valid_from), _epoch("valid_until", valid_until))
    data = await file.read()
    result = await run_in_threadpool(
        knowledge.ingest,
        principal,
        collection,
        source,
        data,
        media_type=file.content_type if file.content_type != "application/octet-stream" else None,
        document_id=document_id,
        owner=owner,
        classification=classification,
        access=keys,
        validity=validity,
        subjects=subjects,
        metadata=_metadata(metadata),
        reason=reason,
    )
    return asdict(result)


@router.get("/{collection}/documents", response_model=list[DocumentOut], name="list_documents")
def list_documents(
    collection: str,
    principal: Caller,
    request: Request,
    include_withdrawn: Annotated[bool, Query(description="Also the withdrawn documents.")] = False,
) -> Any:
    """The collection's documents by source (``curate_knowledge``): the live ones, and
    with ``include_withdrawn`` the withdrawn ones too."""
    knowledge = _knowledge(request)
    found = knowledge.documents(principal, collection, include_withdrawn=include_withdrawn)
    return [views.document_json(d) for d in found]


@router.get(
    "/{collection}/documents/{document_id}", response_model=DocumentOut, name="get_document"
)
def get_document(collection: str, document_id: str, principal: Caller, request: Request) -> Any:
    """A document's record (``curate_knowledge``): source, owner, access list, validity,
    data subjects, metadata and live version."""
    return views.document_json(_knowledge(request).document(principal, collection, document_id))


@router.get(
    "/{collection}/documents/{document_id}/versions",
    response_model=list[VersionOut],
    name="document_versions",
)
def document_versions(
    collection: str, document_id: str, principal: Caller, request: Request
) -> Any:
    """Every version the document had, oldest first (``curate_knowledge``)."""
    return [
        views.version_json(v)
        for v in _knowledge(request).versions(principal, collection, document_id)
    ]


ReasonQuery = Annotated[str, Query(max_length=1000, description="Why, in words.")]


@router.delete(
    "/{collection}/documents/{document_id}",
    response_model=WithdrawalOut,
    name="withdraw_document",
)
def withdraw_document(
    collection: str, document_id: str, principal: Caller, request: Request, reason: ReasonQuery = ""
) -> Any:
    """Withdraw a document (``curate_knowledge``): its chunks leave the index in the
    transaction of the ledger entry, so no search returns them once this has answered.
    Its record and versions stay, marked withdrawn."""
    knowledge = _knowledge(request)
    return asdict(knowledge.withdraw_document(principal, collection, document_id, reason))


@router.delete(
    "/{collection}/documents/{document_id}/versions/{version}",
    response_model=WithdrawalOut,
    name="withdraw_version",
)
def withdraw_version(
    collection: str,
    document_id: str,
    version: str,
    principal: Caller,
    request: Request,
    reason: ReasonQuery = "",
) -> Any:
    """Withdraw one version (``curate_knowledge``). Withdrawing the live version takes the
    document out of search until a new version is uploaded."""
    knowledge = _knowledge(request)
    done = knowledge.withdraw_version(principal, collection, document_id, version, reason)
    return asdict(done)


@router.put(
    "/{collection}/documents/{document_id}/access",
    response_model=WithdrawalOut,
    name="set_document_access",
)
def set_document_access(
    collection: str, document_id: str, body: AccessIn, principal: Caller, request: Request
) -> Any:
    """Set a document's access list, or ``"inherit"`` the collection's default
    (``curate_knowledge``); searches use the new list from this answer on."""
    _check_text(body)
    knowledge = _knowledge(request)
    done = knowledge.set_access(principal, collection, document_id, body.access, body.reason)
    return asdict(done)


@router.post("/{collection}/revocations", response_model=RevocationOut, name="revoke_person_access")
def revoke_person(collection: str, body: RevocationIn, principal: Caller, request: Request) -> Any:
    """Remove a person's own access key from every access list of the collection, its
    default list included (``manage_collection``). Groups and roles the person holds are
    revoked where they are granted (their API keys)."""
    _check_text(body)
    done = _knowledge(request).revoke_person(principal, body.person, collection, body.reason)
    return asdict(done)


# ---- search ------------------------------------------------------------------------------


@router.post("/{collection}/search", response_model=SearchOut, name="search_collection")
def search(collection: str, body: SearchIn, principal: Caller, request: Request) -> Any:
    """The ``k`` chunks that best match ``query`` among the documents the caller may read
    (``search_knowledge``; documents whose access list shares a key with the caller's
    person, groups or roles on the collection). Each hit has its keyword, vector and
    fused scores, its document, version, exact span and a citation label; the search is
    recorded in the ledger (who, the query's SHA-256, the chunks returned). With ``as_of``
    (ISO 8601), the versions that were live and valid at that instant, under today's
    access lists."""
    _check_text(body)
    as_of = _epoch("as_of", body.as_of)
    result = _knowledge(request).search(principal, collection, body.query, body.k, as_of=as_of)
    return views.search_json(result, as_of)


# ---- re-index ----------------------------------------------------------------------------


@router.post(
    "/{collection}/reindex", response_model=ReindexOut, status_code=202, name="start_reindex"
)
def start_reindex(collection: str, body: ReindexIn, principal: Caller, request: Request) -> Any:
    """Move the collection to the embedding space of ``embedder`` (``manage_collection``).
    The re-index runs in the background of this server: searches go on in the old space
    until the new one holds every version, then the collection switches in one
    transaction. Answers 202 with the status as it starts; ``GET`` the same path for how
    far it is. Posting again resumes an interrupted re-index."""
    _check_text(body)
    status = _knowledge(request).reindex(principal, collection, body.embedder, body.reason)
    return status.to_dict()


@router.get("/{collection}/reindex", response_model=ReindexOut, name="reindex_status")
def reindex_status(collection: str, principal: Caller, request: Request) -> Any:
    """Where the collection's latest re-index stands (``manage_collection``): ``none``,
    ``running``, ``completed``, ``failed`` or ``interrupted``, with the versions done."""
    return _knowledge(request).reindex_status(principal, collection).to_dict()


# ---- helpers -----------------------------------------------------------------------------


FREE_TEXT = ("reason", "query", "metadata")  # fields whose text may break lines


def _check_text(body: BaseModel) -> None:
    """Every string of a body holds printable text only (a reason may break lines), so
    nothing a terminal or a log acts on reaches the store."""
    try:
        for name, value in body.model_dump().items():
            _walk_text(value, name, name in FREE_TEXT)
    except RecursionError:
        raise InputError("the body is nested too deeply to check") from None


def _walk_text(value: object, where: str, free: bool) -> None:
    if isinstance(value, str):
        free_text(value, where) if free else identifier(value, where)
    elif isinstance(value, dict):
        for key, item in value.items():
            identifier(str(key), where)
            _walk_text(item, f"{where}.{key}", free)
    elif isinstance(value, list):
        for item in value:
            _walk_text(item, where, free)


def _epoch(name: str, text: str | None) -> float | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        return moment.timestamp()
    except (ValueError, OverflowError):
        raise InputError(
            f"{name} must be an ISO 8601 time such as 2026-11-24T10:00:00Z, got {text[:40]!r}",
            {"field": name},
        ) from None


def _metadata(text: str | None) -> dict[str, object] | None:
    if text is None:
        return None
    try:
        loaded = json.loads(text)
        if isinstance(loaded, dict):
            _walk_text(loaded, "metadata", True)
    except (ValueError, RecursionError) as error:
        why = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise InputError(f"metadata must be a JSON object: {why}", {"field": "metadata"}) from None
    if not isinstance(loaded, dict):
        raise InputError("metadata must be a JSON object", {"field": "metadata"})
    return loaded
