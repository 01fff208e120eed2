"""Ledger record format v1 and the chain hash.

Every entry's ``record`` is canonical JSON (see ``keel.canonical``) of::

    {"schema_version": 1, "kind": ..., "id": ..., "flow": ... | null,
     "recorded_at": "2026-11-24T10:00:00.123456Z", "body": {...}}

and ``hash = SHA-256(prev_hash_hex || record)`` in hex, with the genesis ``prev_hash`` being
64 zeros. Changing, removing, inserting or reordering any entry breaks the chain after it.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, NamedTuple

from keel.errors import InputError

RECORD_SCHEMA_VERSION = 1
GENESIS_HASH = "0" * 64


def chain_hash(prev_hash: str, record_text: str) -> str:
    return hashlib.sha256((prev_hash + record_text).encode("utf-8")).hexdigest()


def new_id(prefix: str, now: float | None = None) -> str:
    """A time-ordered id: 48 bits of milliseconds, then 64 random bits."""
    millis = int((time.time() if now is None else now) * 1000)
    return f"{prefix}_{millis:012x}{os.urandom(8).hex()}"


def iso_time(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_instant(name: str, text: str | None) -> str | None:
    """An ISO 8601 time as the ledger writes it (UTC, microseconds), or ``InputError`` naming it."""
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InputError(
            f"{name} must be an ISO 8601 time such as 2026-11-24T10:00:00Z, got {text!r}",
            {"field": name},
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return iso_time(moment.timestamp())


REPORT_DAYS = 30  # the range reports cover when the caller names none


def report_range(now: float, since: str | None, until: str | None) -> tuple[str, str]:
    """The range ``[since, until)`` a report covers, as the ledger writes times: ``until``
    defaults to ``now``, ``since`` to ``REPORT_DAYS`` days before ``until``. The CLI and
    the HTTP API default the same way."""
    end = parse_instant("until", until) or iso_time(now)
    start = parse_instant("since", since)
    if start is None:
        moment = datetime.fromisoformat(end.replace("Z", "+00:00")).timestamp()
        start = iso_time(moment - REPORT_DAYS * 86_400)
    return start, end


class Entry(NamedTuple):
    """One committed ledger entry (a tuple in column order: cheap to make by the thousand)."""

    seq: int
    kind: str
    record_id: str
    flow: str | None
    recorded_at: str
    record: str
    prev_hash: str
    hash: str

    @property
    def body(self) -> dict[str, Any]:
        body = json.loads(self.record)["body"]
        return body if isinstance(body, dict) else {}

    def to_dict(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "kind": self.kind,
            "id": self.record_id,
            "flow": self.flow,
            "recorded_at": self.recorded_at,
            "hash": self.hash,
            "prev_hash": self.prev_hash,
            "body": self.body,
        }


def decision_index_row(entry: Entry, body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``decisions`` row a decision entry stands for: written with the entry, and what
    deep verification expects of the table."""
    rollout = body.get("rollout")
    return {
        "id": entry.record_id,
        "seq": entry.seq,
        "flow": entry.flow,
        "subject_id": body.get("subject_id"),
        "action": body["action"],
        "status": body["status"],
        "recorded_at": entry.recorded_at,
        "policy_version": body["policy"]["version"],
        "guardrail_hits": len(body["guardrails"]["hits"]),
        "fallback": 1 if body["fallback"] else 0,
        "rollout": rollout["id"] if rollout else None,
        "arm": rollout["arm"] if rollout else None,
        "shadow_action": rollout.get("action") if rollout else None,
    }
