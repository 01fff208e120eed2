"""Group-committed, serialised ledger appends.

Callers on any thread hand ``Pending`` entries to one writer thread, which takes every
entry waiting, opens one write transaction (holding the database's write lock, so other
processes wait), reads the chain head, brings guardrail windows up to date with what other
processes consumed, builds each record — window guardrails are decided here, under the
lock — chains and inserts them, and commits. Each caller gets its entries back only after
the commit; if the commit fails, every caller in the batch gets ``LedgerWriteError`` and
the decision is not returned.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Table

from keel.batching import BatchWorker
from keel.canonical import canonical_json
from keel.errors import KeelError, LedgerWriteError
from keel.ledger.records import (
    GENESIS_HASH,
    RECORD_SCHEMA_VERSION,
    Entry,
    chain_hash,
    iso_time,
)
from keel.ledger.windows import Limit, UsageRow, WindowState
from keel.store.database import Database

PRUNE_EVERY_S = 600.0
R = TypeVar("R")


class NestedTransactionError(LedgerWriteError):
    """A programming error caught before it could hang the writer: a transaction's work
    asked for another transaction (or an append) on the same thread."""

    code = "nested_transaction"


class WindowGate:
    """What a record builder sees of the guardrail windows inside the write transaction."""

    def __init__(self, state: WindowState, now: float) -> None:
        self.state = state
        self.now = now
        self.rows: list[UsageRow] = []

    def check(self, flow: str, limit: Limit, segment: str, amount: float) -> tuple[bool, float]:
        return self.state.check(flow, limit, segment, amount, self.now)

    def consume(self, flow: str, limit: Limit, segment: str, amount: float) -> None:
        step = 1.0 if limit.kind == "rate" else amount
        row = UsageRow(flow, limit.name, segment, self.now, step)
        self.state.consume(row)
        self.rows.append(row)


@dataclass
class Pending:
    """An entry to append; its body comes from ``build`` inside the write transaction.
    Built by ``keel.events`` only: the writer never looks inside a body."""

    kind: str
    record_id: str
    flow: str | None
    build: Callable[[WindowGate], dict[str, Any]]
    rows: tuple[tuple[Table, dict[str, Any]], ...] = ()  # written in the same transaction
    # Rows that depend on the entry (index rows, a review task), in the same transaction.
    derive: Callable[[Entry, dict[str, Any]], list[tuple[Table, dict[str, Any]]]] | None = None


@dataclass
class _Group:
    items: Sequence[Pending]
    future: Future[list[Entry]] = field(default_factory=Future)


class LedgerWriter:
    def __init__(
        self,
        db: Database,
        max_batch: int,
        max_window_s: Callable[[], int],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self._max_window_s = max_window_s
        self._clock = clock
        self._windows = WindowState()
        self._last_usage_id: int | None = None
        self._last_prune = 0.0
        # One connection kept for appends (no pool checkout per batch), and the lock that
        # lets a caller commit on its own thread (``append(here=True)``) between batches.
        self._conn: Connection | None = None
        self._lock = threading.Lock()
        self._owner: int | None = None  # the thread inside a write transaction, if any
        self.batches = 0
        self.entries = 0
        self._worker: BatchWorker[_Group] = BatchWorker(
            "keel-ledger-writer",
            self._commit,
            max_batch,
            size=lambda group: len(group.items),
            closed_error=lambda: LedgerWriteError("the ledger is closed; open the engine again"),
        )

    def append(self, items: Sequence[Pending], here: bool = False) -> list[Entry]:
        """Append ``items`` atomically, after everything submitted before; block until committed.

        ``here=True`` commits on the calling thread instead of handing the items to the
        writer thread: for a caller that has already gathered a batch (the combiner), the
        hand-off would only add a thread switch to every decision's latency.
        """
        if not items:
            return []
        self._refuse_nested("append")
        group = _Group(items)
        if here:
            self._commit([group])
        else:
            self._worker.put(group)
        return group.future.result()

    def in_transaction(self) -> bool:
        """Is the calling thread inside one of this writer's write transactions?"""
        return self._owner == threading.get_ident()

    def _refuse_nested(self, what: str) -> None:
        # The lock is not re-entrant, and waiting for it from inside would wait forever.
        if self.in_transaction():
            raise NestedTransactionError(
                f"{what} called inside a write transaction on the same thread: the work of "
                "a transaction appends with append_in and calls no other service"
            )

    def close(self) -> None:
        self._worker.close()
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _connection(self) -> Connection:
        if self._conn is None:
            self._conn = self._db.engine.connect()
        return self._conn

    def transact(self, work: Callable[[Connection, WindowGate], R]) -> R:
        """Run ``work`` in one write transaction under the ledger's lock, windows in sync.

        For changes that must read the store and append in one step (a review checks the
        queue row, appends its entry and consumes guardrail windows). ``work`` appends with
        ``append_in``; a ``KeelError`` it raises rolls everything back and reaches the
        caller as it is; any other failure becomes ``LedgerWriteError``.
        """
        self._refuse_nested("transact")
        with self._lock:
            self._owner = threading.get_ident()
            try:
                result = self._in_transaction(work)
            finally:
                self._owner = None
        self.batches += 1
        return result

    def _in_transaction(self, work: Callable[[Connection, WindowGate], R]) -> R:
        """Run ``work``; on failure raise the ``KeelError`` the caller should see."""
        gate: WindowGate | None = None
        try:
            with self._db.write(using=self._connection()) as conn:
                now = self._clock()
                self._sync_windows(conn, now)
                gate = WindowGate(self._windows, now)
                result = work(conn, gate)
                if gate.rows:
                    _many(conn, _insert_sql("guardrail_usage", UsageRow._fields), gate.rows)
                    self._last_usage_id = _one(conn, "SELECT max(id) FROM guardrail_usage")[0]
                self._prune(conn, now)
        except Exception as exc:
            # A KeelError from the work is a refusal (a resolved review, a bad value): the
            # transaction rolled back and the connection is sound. Anything else may have
            # broken the connection: the next transaction opens a fresh one.
            refused = isinstance(exc, KeelError) and not isinstance(exc, LedgerWriteError)
            if not refused or gate is None or gate.rows:
                # What was consumed in memory was never committed: rebuild from the store.
                self._windows.clear()
                self._last_usage_id = None
            if refused:
                raise
            self._discard_connection()
            raise LedgerWriteError(
                f"the ledger could not be written, so nothing was recorded: {exc}",
                {"cause": type(exc).__name__},
            ) from exc
        return result

    def _commit(self, groups: list[_Group]) -> None:
        items = [i for g in groups for i in g.items]
        with self._lock:
            self._owner = threading.get_ident()
            try:
                entries = self._in_transaction(lambda conn, gate: append_in(conn, items, gate))
            except KeelError as error:  # every failure reaches every waiting caller
                for group in groups:
                    group.future.set_exception(error)
                return
            finally:
                self._owner = None
        self.batches += 1
        start = 0
        for group in groups:
            self.entries += len(group.items)
            group.future.set_result(entries[start : start + len(group.items)])
            start += len(group.items)

    def _discard_connection(self) -> None:
        # After a failure the connection may be broken (a restarted server, a lost socket):
        # the next batch opens a fresh one.
        if self._conn is not None:
            try:
                self._conn.invalidate()
            finally:
                self._conn = None

    def _sync_windows(self, conn: Connection, now: float) -> None:
        columns = "SELECT id, flow, guardrail, segment, ts, amount FROM guardrail_usage"
        if self._last_usage_id is None:
            where, bound = "ts > ?", now - self._max_window_s()
        else:
            where, bound = "id > ?", self._last_usage_id
        rows = _all(conn, f"{columns} WHERE {where} ORDER BY id", (bound,))
        self._windows.load(UsageRow(r[1], r[2], r[3], r[4], r[5]) for r in rows)
        if rows:
            self._last_usage_id = rows[-1][0]
        elif self._last_usage_id is None:
            self._last_usage_id = _one(conn, "SELECT max(id) FROM guardrail_usage")[0] or 0

    def _prune(self, conn: Connection, now: float) -> None:
        if now - self._last_prune < PRUNE_EVERY_S:
            return
        self._last_prune = now
        # Usage older than twice the longest window can no longer count against any limit.
        cutoff = now - 2 * self._max_window_s()
        _run(conn, "DELETE FROM guardrail_usage WHERE ts < ?", (cutoff,))


def append_alone(db: Database, items: Sequence[Pending], now: float) -> list[Entry]:
    """Append ``items`` in one write transaction of their own, for a process that holds no
    ``LedgerWriter`` (a CLI command that opens the store without the flows and models).

    Only for entries that take no guardrail window capacity: the windows are not loaded, so
    an item that consumed some is refused and nothing is written.
    """
    with db.write() as conn:
        gate = WindowGate(WindowState(), now)
        entries = append_in(conn, items, gate)
        if gate.rows:
            raise LedgerWriteError(
                "an entry appended without the ledger writer consumed guardrail window "
                "capacity; append it through the engine",
                {"kinds": sorted({i.kind for i in items})},
            )
    return entries


def append_in(conn: Connection, items: Sequence[Pending], gate: WindowGate) -> list[Entry]:
    """Append ``items`` to the chain inside ``conn``'s write transaction (the lock is held)."""
    head = _one(conn, "SELECT seq, hash FROM ledger_head WHERE id = 1")
    seq, prev = (head[0], head[1]) if head else (0, GENESIS_HASH)
    entries: list[Entry] = []
    extra: dict[Table, list[dict[str, Any]]] = {}
    recorded_at = iso_time(gate.now)
    for item in items:
        seq += 1
        entry, body = _entry(item, seq, prev, recorded_at, gate)
        prev = entry.hash
        entries.append(entry)
        for table, row in item.rows:
            extra.setdefault(table, []).append(row)
        if item.derive is not None:
            for table, row in item.derive(entry, body):
                extra.setdefault(table, []).append(row)
    # An Entry is a tuple in the ledger table's column order.
    _many(conn, _insert_sql("ledger", Entry._fields), entries)
    for table, rows in extra.items():
        columns = [c.name for c in table.columns]
        _many(conn, _insert_sql(table.name, columns), [tuple(r[c] for c in columns) for r in rows])
    if head:
        _run(conn, "UPDATE ledger_head SET seq = ?, hash = ? WHERE id = 1", (seq, prev))
    else:
        _run(conn, "INSERT INTO ledger_head (id, seq, hash) VALUES (1, ?, ?)", (seq, prev))
    return entries


def _entry(
    item: Pending, seq: int, prev: str, recorded_at: str, gate: WindowGate
) -> tuple[Entry, dict[str, Any]]:
    body = item.build(gate)
    record = canonical_json(
        {
            "schema_version": RECORD_SCHEMA_VERSION,
            "kind": item.kind,
            "id": item.record_id,
            "flow": item.flow,
            "recorded_at": recorded_at,
            "body": body,
        }
    )
    entry = Entry(
        seq,
        item.kind,
        item.record_id,
        item.flow,
        recorded_at,
        record,
        prev,
        chain_hash(prev, record),
    )
    return entry, body


# The writer's statements go to the driver's cursor, inside the transaction SQLAlchemy
# opened on the same connection: through SQLAlchemy each costs 20-80 µs more, which is
# more than SQLite takes to run it, and every decision waits for all of them. Markers are
# written '?' and adapted per driver.


def _cursor(conn: Connection, sql: str) -> tuple[Any, str]:
    marked = sql if conn.dialect.paramstyle == "qmark" else sql.replace("?", "%s")
    return conn.connection.cursor(), marked


def _run(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    cursor, marked = _cursor(conn, sql)
    cursor.execute(marked, params)
    return cursor


def _many(conn: Connection, sql: str, rows: Sequence[Sequence[Any]]) -> None:
    cursor, marked = _cursor(conn, sql)
    cursor.executemany(marked, rows)


def _one(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Any:
    return _run(conn, sql, params).fetchone()


def _all(conn: Connection, sql: str, params: Sequence[Any] = ()) -> Sequence[Any]:
    rows: Sequence[Any] = _run(conn, sql, params).fetchall()
    return rows


def _insert_sql(table: str, columns: Sequence[str]) -> str:
    """An INSERT for the driver's executemany, columns in the order of the row tuples."""
    names, marks = ", ".join(columns), ", ".join(["?"] * len(columns))
    return f"INSERT INTO {table} ({names}) VALUES ({marks})"  # noqa: S608 - our schema's names
