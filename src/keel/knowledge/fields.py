"""A document's fields as an ingest gives them, checked, and as the store keeps them.

An ingest's arguments are a :class:`Requested`: each left ``None`` keeps the document's
current value, or takes the default for a new document. :meth:`Requested.resolve` turns
it into the :class:`Fields` a new version is written with. ``INHERIT`` as an access list
means the collection's default list, resolved when the document is searched.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, select
from sqlalchemy.engine import Row

from keel.canonical import CanonicalFormError, canonical_json
from keel.errors import ConflictError, InputError, NotFoundError
from keel.index.access import check_id, check_validity
from keel.index.records import Validity
from keel.knowledge import collections as colls
from keel.knowledge.collections import Collection
from keel.knowledge.records import Document
from keel.knowledge.tables import knowledge_documents
from keel.security.persons import person_of
from keel.security.roles import Actor, Principal
from keel.store.database import Database

INHERIT: Literal["inherit"] = "inherit"  # a document's access list: the collection's default
MAX_METADATA_BYTES = 16 * 1024  # canonical JSON of one document's metadata
MAX_SUBJECTS = 1000
MAX_SOURCE_CHARS = 2048
MAX_REASON_CHARS = 1000

Access = Iterable[str] | Literal["inherit"]


class Requested:
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
    ) -> Requested:
        if validity is not None:
            if not isinstance(validity, Validity):
                raise InputError("validity must be a keel.index.records.Validity")
            check_validity(validity)
        checked_access: tuple[str, ...] | Literal["inherit"] | None = None
        if access is not None:
            resolved = access_list(access)
            checked_access = INHERIT if resolved is None else resolved
        return cls(
            None if owner is None else check_owner(owner),
            None if classification is None else colls.check_classification(classification),
            checked_access,
            validity,
            None if subjects is None else check_subjects(subjects),
            None if metadata is None else check_metadata(metadata),
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

    def resolve(self, current: Document | None, actor: Actor, coll: Collection) -> Fields:
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
        return Fields(
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


class Fields:
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


def document_of(row: Row[Any]) -> Document:
    return Document(
        document_id=row.document_id,
        collection=row.collection,
        source_uri=row.source_uri,
        owner=row.owner,
        classification=row.classification,
        access=loads_access(row.access),
        valid_from=row.valid_from,
        valid_until=row.valid_until,
        subjects=tuple(json.loads(row.subjects)),
        metadata=json.loads(row.metadata),
        version=row.version,
        revision=row.revision,
        state=row.state,
    )


def access_list(access: Access) -> tuple[str, ...] | None:
    """Checked access keys, or ``None`` for ``INHERIT``."""
    if access == INHERIT:
        return None
    return colls.check_access(access, "the access list")


def loads_access(text: str | None) -> tuple[str, ...] | None:
    return None if text is None else tuple(json.loads(text))


def dumps_access(keys: Sequence[str] | None) -> str | None:
    return None if keys is None else json.dumps(sorted(keys))


def check_owner(owner: object) -> str:
    if not isinstance(owner, str) or not owner.strip() or len(owner) > 300:
        raise InputError("an owner is a person's name or e-mail address, at most 300 characters")
    return person_of(owner)


def check_folder(folder: str | Path | None) -> str | None:
    if folder is None:
        return None
    if not isinstance(folder, str | Path) or not str(folder).strip():
        raise InputError("source_folder must be a folder path, or None")
    return str(Path(folder).resolve())


def check_source(source_uri: object) -> str:
    if not isinstance(source_uri, str) or not source_uri.strip():
        raise InputError("a document needs a source URI or name, such as file:///docs/leave.md")
    if len(source_uri) > MAX_SOURCE_CHARS:
        raise InputError(f"a source URI may have at most {MAX_SOURCE_CHARS} characters")
    return source_uri


def document_id_for(collection: str, source_uri: str) -> str:
    """Stable: the same collection and source always name the same document."""
    digest = hashlib.sha256(f"{collection}\x00{source_uri}".encode()).hexdigest()
    return f"doc_{digest[:40]}"


def check_subjects(subjects: Iterable[str]) -> tuple[str, ...]:
    if isinstance(subjects, str):
        raise InputError("subjects must be a list of data-subject ids, not one string")
    out = tuple(sorted(set(subjects)))
    if len(out) > MAX_SUBJECTS:
        raise InputError(f"a document may name at most {MAX_SUBJECTS} data subjects")
    for subject in out:
        check_id(subject, "a data-subject id")
    return out


def check_metadata(metadata: Mapping[str, object]) -> dict[str, object]:
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


def check_reason(reason: object) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON_CHARS:
        raise InputError(f"a reason is text of at most {MAX_REASON_CHARS} characters")
    return reason


def actor_json(actor: Actor) -> dict[str, str]:
    return actor.to_dict()


def principal_json(principal: Principal) -> dict[str, str]:
    return {"id": principal.id, "name": principal.name, "role": "", "person": principal.person}


# ---- reading the stored rows ----


def existing(conn: Connection, collection: str, doc_id: str) -> Row[Any] | None:
    row = conn.execute(
        select(knowledge_documents).where(knowledge_documents.c.document_id == doc_id)
    ).first()
    if row is not None and row.collection != collection:
        raise ConflictError(
            f"document id {doc_id} belongs to another collection; choose another id",
            {"document_id": doc_id},
        )
    return row


def document_row(conn: Connection, collection: str, document_id: str) -> Row[Any]:
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


def live_documents(db: Database, collection: str) -> list[Document]:
    with db.read() as conn:
        rows = conn.execute(
            select(knowledge_documents).where(
                knowledge_documents.c.collection == collection,
                knowledge_documents.c.state == "live",
            )
        ).all()
    return [document_of(r) for r in rows]
