"""Deep verification of the delivery outbox: every ``deliveries`` row stands for a notice
its ledger entry caused.

``keel.monitor.outbox`` writes a row in the transaction that records its cause: an alarm
raised, repeated, escalated or resolved (an alarm notice to each ``notify`` webhook), or a
retraining request (one row per target the ``retraining_requested`` entry names). The row
carries the cause's time, flow and alarm, and a payload built from the alarm the entry
records; a forged payload would tell the owner (or a retraining pipeline) something Keel
never recorded. The sending state (tries, lease, last error) is the outbox's own
bookkeeping and is listed in ``keel.ledger.deep.UNCHECKED``.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from keel.ledger.rebuild import Found, Rebuild, compare, mismatch, parse_json, rows
from keel.store.schema import deliveries

ALARM_NOTICE, RETRAINING_REQUEST = "alarm_notice", "retraining_request"
_TABLE = "deliveries"


def _flat(payload: Any, keys: list[str]) -> dict[str, Any]:
    """``payload``'s values at dotted ``keys`` (``alarm.severity``); None where absent."""
    out: dict[str, Any] = {}
    for key in keys:
        value: Any = payload
        for part in key.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        out[f"payload.{key}"] = value
    return out


def _unbacked(row: dict[str, Any], what: str) -> Found:
    return mismatch(_TABLE, row["id"], None, row["id"], None, f"row has no {what} entry behind it")


def _expected(rb: Rebuild, row: dict[str, Any], payload: Any) -> dict[str, Any]:
    """What the row's cause recorded, under the row's (flattened) column names."""
    key = (row["flow"], str(row["alarm_id"]), row["created_at"])
    told = rb.notices.get(key, {})
    if row["kind"] == RETRAINING_REQUEST:
        request = rb.retrains.get(key)
        cause = next(iter(told.values()), None)
        if request is None or cause is None:
            raise _unbacked(row, "retraining_requested")
        if row["target"] not in request["targets"]:
            raise mismatch(
                _TABLE, row["id"], "target", row["target"], request["targets"],
                "the retraining_requested entry names no such target",
            )  # fmt: skip
        return {**cause, "kind": "retraining_requested", "alarm.monitor": request["monitor"]}
    if row["kind"] != ALARM_NOTICE:
        raise mismatch(_TABLE, row["id"], "kind", row["kind"], ALARM_NOTICE, "unknown kind")
    kind = payload.get("kind") if isinstance(payload, dict) else None
    cause = told.get(str(kind))
    if cause is None:
        raise _unbacked(row, f"{kind} alarm")
    return cause


def check_deliveries(conn: Connection, rb: Rebuild) -> None:
    """Each row against the entry that caused it; each retraining request's targets and each
    ``delivery_retried`` entry against the rows."""
    sent: set[tuple[str, str, str, str]] = set()
    oldest: str | None = None
    for row in rows(conn, deliveries, deliveries.c.id):
        payload = parse_json(row["payload"])
        want = _expected(rb, row, payload)
        stored = _flat(payload, list(want))
        compare(_TABLE, row["id"], stored, {f"payload.{k}": v for k, v in want.items()})
        retried = rb.retried.pop(row["id"], None)
        if retried is not None:
            compare(_TABLE, row["id"], row, {k: retried[k] for k in
                                             ("flow", "kind", "target", "alarm_id")})  # fmt: skip
        sent.add((row["flow"], str(row["alarm_id"]), row["created_at"], row["target"]))
        oldest = min(oldest or row["created_at"], row["created_at"])
        rb.count(_TABLE)
    for (flow, alarm, at), request in rb.retrains.items():
        # A request naming its webhook by name went through the outbox; one with only a
        # command did if the outbox held rows by then (deliveries are never deleted).
        if not request["named"] and (oldest is None or at < oldest):
            continue
        for target in request["targets"]:
            if (flow, alarm, at, target) not in sent:
                raise mismatch(
                    _TABLE, f"{flow}/{alarm}@{at}", None, None, target,
                    f"row is missing: the ledger records a retraining request to {target}",
                )  # fmt: skip
    for delivery, retried in rb.retried.items():
        raise mismatch(
            _TABLE, delivery, None, None, retried["record_id"],
            "row is missing: a delivery_retried entry sent it back to the outbox",
        )  # fmt: skip
