"""The evidence a flow's trust figures are computed from, checked against the ledger.

Approving an autonomy raise is judged on figures (``keel.review.trust``) read from the
decisions index, the reviews and the outcomes of the flow's decisions in a trailing
window. Before such a judgement, ``check_evidence`` runs deep verification's comparison
restricted to those rows: the flow's ledger entries from the window's start on (decisions,
reviews, breaches, outcomes) are rebuilt, and every decisions row in the window, every
review and outcome of those decisions, must be what they record. Its cost is bounded by
the window's entries, not the chain's. Each entry read must match its hash; that the chain
around them is whole is what ``keel ledger verify`` checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Connection, select

from keel.ledger.rebuild import (
    Found,
    Mismatch,
    Rebuild,
    compare,
    compare_review,
    mismatch,
)
from keel.ledger.records import Entry, chain_hash
from keel.store.schema import decisions, ledger, outcomes, reviews

_KINDS = ("decision", "review", "review_breached", "outcome")
_BATCH = 2000
_CHUNK = 500  # ids per IN (...) query


def _entries(conn: Connection, flow: str, since: str) -> Iterator[Entry]:
    last = 0
    while True:
        batch = conn.execute(
            select(ledger)
            .where(
                ledger.c.kind.in_(_KINDS),
                ledger.c.flow == flow,
                ledger.c.recorded_at >= since,
                ledger.c.seq > last,
            )
            .order_by(ledger.c.seq)
            .limit(_BATCH)
        ).all()
        if not batch:
            return
        for row in batch:
            entry = Entry(*row)
            if chain_hash(entry.prev_hash, entry.record) != entry.hash:
                raise mismatch(
                    "ledger", entry.seq, "record", None, entry.hash,
                    "the entry does not match its hash: it was altered",
                )  # fmt: skip
            yield entry
        last = batch[-1][0]


def _window(conn: Connection, flow: str, since: str, until: str) -> Iterator[dict[str, Any]]:
    query = select(decisions).where(
        decisions.c.flow == flow, decisions.c.recorded_at >= since, decisions.c.recorded_at < until
    )
    for row in conn.execute(query.order_by(decisions.c.seq)):
        yield dict(row._mapping)


def check_evidence(conn: Connection, flow: str, since: str, until: str) -> Mismatch | None:
    """The first row of the flow's trust evidence in [since, until) that disagrees with the
    ledger (None: they all agree). Run it on a chain that verifies."""
    rb = Rebuild(conn, None, whole=False)
    try:
        rb.run(_entries(conn, flow, since))
        rb.settle_waiting()
        recorded = {k: v for k, v in rb.indexed.items() if v["recorded_at"] < until}
        stored = {r["id"]: r for r in _window(conn, flow, since, until)}
        for ident in sorted(stored.keys() | recorded.keys()):
            _pair("decisions", ident, stored.get(ident), recorded.get(ident), "decision")
        ids = sorted(recorded)
        for start in range(0, len(ids), _CHUNK):
            _related(conn, rb, ids[start : start + _CHUNK])
    except Found as found:
        return found.mismatch
    return None


def _pair(
    table: str, ident: str, row: dict[str, Any] | None, want: dict[str, Any] | None, what: str
) -> None:
    """A stored row against its rebuilt one: both there and equal, or neither there."""
    if row is not None and want is None:
        raise mismatch(table, ident, None, ident, None, f"row has no {what} entry behind it")
    if row is None and want is not None:
        raise mismatch(
            table, ident, None, None, ident, f"row is missing: the ledger records {what}"
        )
    if row is not None and want is not None:
        if table == "reviews":
            compare_review(row, want)
        else:
            compare(table, ident, row, want)


def _related(conn: Connection, rb: Rebuild, ids: list[str]) -> None:
    """The reviews and outcomes of the decisions ``ids`` against what the walk rebuilt."""
    for table, expected, what in (
        (reviews, rb.reviews, "waiting decision or review"),
        (outcomes, rb.outcomes, "outcome"),
    ):
        query = select(table).where(table.c.decision_id.in_(ids))
        found = {r.decision_id: dict(r._mapping) for r in conn.execute(query)}
        for ident in ids:
            _pair(table.name, ident, found.get(ident), expected.get(ident), what)
