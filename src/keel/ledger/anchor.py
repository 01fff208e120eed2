"""The ledger entries behind what the engine loads: found, checked, and compared.

The engine acts on rows of side tables (the active policy version, the model files it
pins, the autonomy level, a hold, a running rollout). Each was written in the same
transaction as a ledger entry, and the entry is the record: a row is believed only if the
newest entry of its kind for its flow names it, with the same content.

An entry is checked on its own as far as that can be done cheaply: its hash covers its
record and its predecessor's hash, the next entry (or the chain head) links to it, and the
columns the engine searches on agree with the hashed record. A consistent rewrite of the
whole chain after it is beyond a local check; ``keel ledger verify`` against a signed
checkpoint catches that.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, select

from keel.errors import IntegrityError
from keel.ledger.records import chain_hash
from keel.store.schema import ledger, ledger_head
from keel.telemetry import log

_COLS = (
    ledger.c.seq,
    ledger.c.kind,
    ledger.c.record_id,
    ledger.c.flow,
    ledger.c.record,
    ledger.c.prev_hash,
    ledger.c.hash,
)


@dataclass(frozen=True)
class Anchor:
    """A ledger entry that checked out: its position, id and hashed body."""

    seq: int
    record_id: str
    kind: str
    flow: str | None
    body: dict[str, Any]


def _checked(conn: Connection, row: Any) -> Anchor:
    seq, kind, record_id, flow, record, prev_hash, digest = row
    where = f"ledger entry {seq} ({kind} {record_id})"
    if chain_hash(prev_hash, record) != digest:
        raise IntegrityError(
            f"{where} does not match its hash: the entry was altered", {"seq": seq}
        )
    following = conn.execute(select(ledger.c.prev_hash).where(ledger.c.seq == seq + 1)).scalar()
    if following is None:
        head = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).first()
        if head is None or (head[0], head[1]) != (seq, digest):
            raise IntegrityError(
                f"{where} is not linked to the chain: the head names another entry", {"seq": seq}
            )
    elif following != digest:
        raise IntegrityError(
            f"{where} is not linked to the chain: entry {seq + 1} follows another hash",
            {"seq": seq},
        )
    try:
        parsed = json.loads(record)
    except ValueError:
        raise IntegrityError(f"{where} is not valid JSON", {"seq": seq}) from None
    if (parsed.get("kind"), parsed.get("id"), parsed.get("flow")) != (kind, record_id, flow):
        raise IntegrityError(f"{where}: its columns differ from its hashed record", {"seq": seq})
    body = parsed.get("body")
    if not isinstance(body, dict):
        raise IntegrityError(f"{where} has no body", {"seq": seq})
    return Anchor(seq, record_id, kind, flow, body)


def newest(conn: Connection, flow: str, kind: str) -> Anchor | None:
    """The newest entry of ``kind`` for ``flow``, checked (None: the ledger has none)."""
    found = conn.execute(
        select(*_COLS)
        .where(ledger.c.kind == kind, ledger.c.flow == flow)
        .order_by(ledger.c.seq.desc())
        .limit(1)
    ).first()
    return _checked(conn, found) if found is not None else None


def entry(conn: Connection, record_id: str) -> Anchor | None:
    """The entry with ``record_id``, checked (None: no such entry)."""
    found = conn.execute(select(*_COLS).where(ledger.c.record_id == record_id)).first()
    return _checked(conn, found) if found is not None else None


def refused(table: str, key: str, problem: str, detail: Mapping[str, Any]) -> IntegrityError:
    """The error for an act refused because the row it reads disagrees with the ledger;
    logged here, so every refusal is (the caller counts it)."""
    message = (
        f"{table} row {key}: {problem}; the store was changed outside Keel, so nothing was "
        "done (find every such row with 'keel ledger verify --deep')"
    )
    log.error("integrity: %s", message)
    return IntegrityError(message, {"table": table, "key": key, **detail})


def agree(
    table: str, key: str, stored: Mapping[str, Any], recorded: Mapping[str, Any], at: Anchor
) -> None:
    """Refuse (``IntegrityError``) at the first column of ``stored`` that differs from what
    the entry ``at`` records in ``recorded``."""
    for column, value in recorded.items():
        if stored[column] != value:
            raise refused(
                table, key,
                f"column {column} is {stored[column]!r} but ledger entry {at.seq} "
                f"({at.kind} {at.record_id}) records {value!r}",
                {"column": column, "seq": at.seq},
            )  # fmt: skip
