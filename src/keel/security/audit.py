"""The audit trail: every request and every security event, batched into the store.

Events carry who (principal id), what (action), on what (target), how it ended (outcome)
and a small detail mapping; never request bodies, so never personal inputs. They are
written by one background thread in batches (gathered for up to 0.1 s; `flush` and
`close` write at once), optionally copied to a JSON-lines file for a SIEM, and exported
by ``AuditTrail`` (``keel audit export``) to those allowed to read it. A failed write is
counted and logged with the events it lost; it never fails the request that caused it.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy import insert, select

from keel.canonical import canonical_json
from keel.ledger.records import iso_time
from keel.security.roles import Permission, Principal
from keel.store.database import Database
from keel.store.schema import audit_events

log = logging.getLogger("keel.audit")
AUDIT_RECORD_VERSION = 1
GATHER_S = 0.1
MAX_BATCH = 2000


@dataclass(frozen=True)
class AuditEvent:
    time: str
    kind: str  # "request" | "security"
    principal: str
    action: str
    target: str
    outcome: str
    detail: dict[str, Any]

    def row(self) -> dict[str, Any]:
        return {**self.__dict__, "detail": canonical_json(self.detail)}

    def to_json(self) -> str:
        return canonical_json({"schema_version": AUDIT_RECORD_VERSION, **self.__dict__})


class AuditLog:
    def __init__(
        self, db: Database, sink: Path | None = None, clock: Callable[[], float] = time.time
    ) -> None:
        self._db = db
        self._clock = clock
        self._sink: TextIO | None = sink.open("a", encoding="utf-8") if sink else None
        self._queue: queue.SimpleQueue[AuditEvent | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="keel-audit", daemon=True)
        self._flushed = threading.Event()
        self.written = 0
        self.lost = 0
        self._thread.start()

    def record(
        self,
        kind: str,
        principal: str,
        action: str,
        target: str,
        outcome: str,
        detail: dict[str, Any] | None = None,
    ) -> None:
        self._queue.put(
            AuditEvent(
                iso_time(self._clock()), kind, principal, action, target, outcome, detail or {}
            )
        )

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until every event recorded so far is written (or counted as lost)."""
        self._flushed.clear()
        self._queue.put(None)  # a marker: everything queued before it is written first
        self._flushed.wait(timeout)

    def close(self) -> None:
        self.flush()
        if self._sink:
            self._sink.close()

    def _run(self) -> None:
        while True:
            first = self._queue.get()
            batch = [] if first is None else [first]
            marker = first is None
            # Gather for up to GATHER_S: one write transaction per batch, not per request,
            # so the audit trail does not compete with the ledger for the write lock.
            deadline = time.monotonic() + GATHER_S
            while not marker and len(batch) < MAX_BATCH:
                try:
                    item = self._queue.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    break
                if item is None:
                    marker = True
                else:
                    batch.append(item)
            if batch:
                self._write(batch)
            if marker:
                self._flushed.set()

    def _write(self, batch: list[AuditEvent]) -> None:
        try:
            with self._db.write(chain=False) as conn:
                conn.execute(insert(audit_events), [e.row() for e in batch])
            self.written += len(batch)
        except Exception as exc:  # noqa: BLE001 - losing audit events is counted, not raised
            self.lost += len(batch)
            log.error(
                "audit trail write failed, %d events lost (%s); check the database: %s",
                len(batch),
                ", ".join(f"{e.action}:{e.outcome}" for e in batch[:5]),
                exc,
            )
        if self._sink:
            for event in batch:
                self._sink.write(event.to_json() + "\n")
            self._sink.flush()


class AuditTrail:
    """Reads the stored audit trail, for a principal holding ``read_audit`` on every flow
    (an admin, or an auditor with a global grant)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def export(self, principal: Principal, since: str | None = None) -> Iterator[str]:
        """Every stored event (optionally from an ISO time on) as JSON lines, oldest first.

        The permission is checked at the call, before the first line is read.
        """
        principal.require(Permission.READ_AUDIT)
        return self._lines(since)

    def _lines(self, since: str | None) -> Iterator[str]:
        query = select(audit_events).order_by(audit_events.c.id)
        if since:
            query = query.where(audit_events.c.time >= since)
        with self._db.read() as conn:
            for row in conn.execute(query):
                event = AuditEvent(
                    row[1], row[2], row[3], row[4], row[5], row[6], json.loads(row[7])
                )
                yield event.to_json()
