"""Verifying the ledger: every link, every hash, and optionally a signed checkpoint.

With ``deep``, the governed side tables are then compared with the chain
(``keel.ledger.deep``): a verified chain says nothing about the rows the engine reads.

A checkpoint covers the chain up to its ``seq``; ``Engine.checkpoint`` then records a
``checkpoint`` event after it (at ``seq + 1`` unless other writes came first). A ledger
verified against the checkpoint must still hold that event, so removing entries from the
end is caught even when only the checkpoint's own event was removed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from sqlalchemy import exc, select

from keel.errors import KeelError, StoreError
from keel.ledger.checkpoint import Checkpoint, make_checkpoint
from keel.ledger.deep import DeepReport, verify_deep
from keel.ledger.records import GENESIS_HASH, chain_hash, iso_time
from keel.protect import Protector
from keel.store.database import Database
from keel.store.schema import ledger, ledger_head

_BATCH = 5000
SIGNER_UNVERIFIED = (
    "unverified: the checkpoint carries its own key; pass --public-key to check who signed it"
)


@dataclass
class VerifyReport:
    ok: bool
    entries: int
    head_seq: int
    head_hash: str
    bad_seq: int | None = None
    problem: str | None = None
    checkpoint: dict[str, Any] = field(default_factory=dict)
    deep: DeepReport | None = None  # the side tables against the chain, when asked for

    def to_dict(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "head_hash": self.head_hash,
            "bad_seq": self.bad_seq,
            "problem": self.problem,
            "checkpoint": self.checkpoint,
            "deep": self.deep.to_dict() if self.deep else None,
        }


def _fail(report: VerifyReport, seq: int, problem: str) -> VerifyReport:
    report.ok = False
    report.bad_seq = seq
    report.problem = problem
    return report


def verify_ledger(
    db: Database,
    checkpoint: Checkpoint | None = None,
    trusted_key: Ed25519PublicKey | None = None,
    deep: bool = False,
    protector: Protector | None = None,
) -> VerifyReport:
    """Walk the chain from the genesis; stop at the first entry that does not verify.

    A ``checkpoint`` must carry a valid signature (by ``trusted_key`` when one is given, else
    by the key it carries, which the report calls unverified): ``CheckpointError`` if not.
    With ``deep``, a chain that verifies is the reference the side tables are compared
    with (personal inputs opened with ``protector``); the first disagreeing row fails it.
    """
    if checkpoint is not None:
        checkpoint.verify_signature(trusted_key)
    try:
        report = _verify(db, checkpoint)
    except exc.SQLAlchemyError as error:
        cause = str(getattr(error, "orig", error)).splitlines()[0]
        raise StoreError(
            f"cannot read the ledger in {db.display_url}: {cause}", {"url": db.display_url}
        ) from error
    if checkpoint is not None:
        report.checkpoint["signer"] = (
            f"verified: signed by the trusted key {checkpoint.public_key}"
            if trusted_key is not None
            else SIGNER_UNVERIFIED
        )
    if deep and report.ok:
        report.deep = verify_deep(db, protector)
        found = report.deep.mismatch
        if found is not None:
            report.ok = False
            report.problem = found.describe()
    return report


def _records_checkpoint(parsed: dict[str, Any], checkpoint: Checkpoint) -> bool:
    """Is the ``checkpoint`` entry ``parsed`` the event ``Engine.checkpoint`` wrote for it?"""
    body = parsed.get("body")
    return isinstance(body, dict) and bool(
        body.get("seq") == checkpoint.seq
        and body.get("head_hash") == checkpoint.head_hash
        and body.get("public_key") == checkpoint.public_key
    )


def _verify(db: Database, checkpoint: Checkpoint | None) -> VerifyReport:
    report = VerifyReport(ok=True, entries=0, head_seq=0, head_hash=GENESIS_HASH)
    expected_seq = 1
    prev = GENESIS_HASH
    checkpoint_hash: str | None = None
    checkpoint_event: int | None = None
    if checkpoint is not None:
        report.checkpoint = {"seq": checkpoint.seq, "hash": checkpoint.head_hash}
    cols = (
        ledger.c.seq,
        ledger.c.kind,
        ledger.c.record_id,
        ledger.c.flow,
        ledger.c.recorded_at,
        ledger.c.record,
        ledger.c.prev_hash,
        ledger.c.hash,
    )
    with db.snapshot() as conn:  # the entries and the head as of one moment
        last = 0
        while True:
            rows = conn.execute(
                select(*cols).where(ledger.c.seq > last).order_by(ledger.c.seq).limit(_BATCH)
            ).all()
            if not rows:
                break
            for seq, kind, record_id, flow, recorded_at, record, prev_hash, digest in rows:
                last = seq
                if seq != expected_seq:
                    missing = f"entry {expected_seq} is missing" if seq > expected_seq else ""
                    return _fail(report, expected_seq, missing or f"unexpected sequence {seq}")
                if prev_hash != prev:
                    return _fail(report, seq, "prev_hash does not match the previous entry's hash")
                if chain_hash(prev, record) != digest:
                    return _fail(
                        report, seq, "hash does not match the record: the entry was altered"
                    )
                try:
                    parsed = json.loads(record)
                except ValueError:
                    return _fail(report, seq, "record is not valid JSON")
                columns = {"kind": kind, "id": record_id, "flow": flow, "recorded_at": recorded_at}
                for key, value in columns.items():
                    if parsed.get(key) != value:
                        return _fail(report, seq, f"column '{key}' differs from the hashed record")
                if checkpoint is not None and seq == checkpoint.seq:
                    checkpoint_hash = digest
                if (
                    checkpoint is not None
                    and checkpoint_event is None
                    and seq > checkpoint.seq
                    and kind == "checkpoint"
                    and _records_checkpoint(parsed, checkpoint)
                ):
                    checkpoint_event = seq
                prev = digest
                expected_seq += 1
                report.entries += 1
        head = conn.execute(select(ledger_head.c.seq, ledger_head.c.hash)).first()
    report.head_seq, report.head_hash = expected_seq - 1, prev
    head_seq, head_hash = (head[0], head[1]) if head else (0, GENESIS_HASH)
    if (head_seq, head_hash) != (report.head_seq, report.head_hash):
        if head_seq > report.head_seq:
            return _fail(
                report,
                report.head_seq + 1,
                f"entries {report.head_seq + 1}..{head_seq} were removed from the end",
            )
        return _fail(report, head_seq, "the chain head record does not match the last entry")
    if checkpoint is not None:
        report.checkpoint["event_seq"] = checkpoint_event
        if checkpoint.seq > report.head_seq:
            return _fail(
                report,
                report.head_seq + 1,
                f"the ledger ends at {report.head_seq} but checkpoint covers {checkpoint.seq}"
                ": entries were removed",
            )
        if checkpoint.seq > 0 and checkpoint_hash != checkpoint.head_hash:
            return _fail(
                report,
                checkpoint.seq,
                "entry differs from the signed checkpoint: the ledger was rewritten",
            )
        if checkpoint_event is None:
            after = checkpoint.seq + 1
            if report.head_seq == checkpoint.seq:
                problem = (
                    f"the ledger ends at {checkpoint.seq}, but the checkpoint's own event was "
                    f"recorded after it: entry {after} was removed from the end"
                )
            else:
                problem = (
                    f"no entry after {checkpoint.seq} records the checkpoint taken there: "
                    "entries after the checkpoint were removed or replaced"
                )
            return _fail(report, after, problem)
    return report


def checkpoint_head(db: Database, key: Ed25519PrivateKey, project: str, now: float) -> Checkpoint:
    """Sign the chain head with ``key``; refused over a ledger that does not verify, since a
    signature would vouch for a chain already broken."""
    report = verify_ledger(db)
    if not report.ok:
        raise KeelError(
            f"refusing to sign a checkpoint over a ledger that does not verify: "
            f"entry {report.bad_seq}: {report.problem}",
            {"bad_seq": report.bad_seq},
        )
    return make_checkpoint(key, project, report.head_seq, report.head_hash, iso_time(now))
