"""The live periods of a document's versions in the retrieval index.

Each version is live from the instant it was added until a newer version supersedes it;
the superseded version stays in the index, so that a search can ask what was live "as
of" an instant, until it is withdrawn or pruned. A version has one live period: content
that returns after it was superseded comes back as a new version.
"""

from __future__ import annotations

from sqlalchemy import Connection, text

from keel.errors import ConflictError
from keel.index.records import Validity


def supersede(
    conn: Connection,
    document_id: str,
    version: str,
    collection: str,
    validity: Validity,
    at: float,
) -> None:
    """End the live version's period at ``at`` and start ``version``'s there."""
    live = conn.execute(
        text(
            "SELECT version, live_from FROM index_versions "
            "WHERE document_id = :d AND live_until IS NULL"
        ),
        {"d": document_id},
    ).first()
    if live is not None and at < float(live[1]):
        raise ConflictError(
            f"version {version} of document {document_id} cannot become live at {at}: "
            f"the live version {live[0]} became live later, at {live[1]} (is the "
            "clock behind?)",
            {"document_id": document_id, "version": version, "live_from": str(live[1])},
        )
    if live is not None:
        conn.execute(
            text(
                "UPDATE index_versions SET live_until = :at WHERE document_id = :d AND version = :v"
            ),
            {"d": document_id, "v": live[0], "at": at},
        )
    conn.execute(
        text(
            "INSERT INTO index_versions (document_id, version, collection, valid_from, "
            "valid_until, live_from, live_until) VALUES (:d, :v, :c, :f, :u, :at, NULL)"
        ),
        {
            "d": document_id,
            "v": version,
            "c": collection,
            "f": validity.valid_from,
            "u": validity.valid_until,
            "at": at,
        },
    )


def check_reindex(
    conn: Connection,
    space_id: str,
    document_id: str,
    version: str,
    live_until: float | None,
) -> None:
    """Refuse to add a version the index holds again in a space that holds it: a
    version has one live period, so content that returns must come as a new version."""
    held = conn.execute(
        text(
            "SELECT 1 FROM index_chunks WHERE document_id = :d AND version = :v "
            "AND space_id = :s LIMIT 1"
        ),
        {"d": document_id, "v": version, "s": space_id},
    ).first()
    if held is None:
        return
    detail = {"document_id": document_id, "version": version}
    if live_until is None:
        raise ConflictError(
            f"version {version} of document {document_id} is already indexed in space {space_id}",
            detail,
        )
    raise ConflictError(
        f"version {version} of document {document_id} was superseded at {live_until} "
        f"and is still indexed in space {space_id}; a version cannot become live twice: "
        "index the content under a new version id",
        detail,
    )
