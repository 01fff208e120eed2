"""Reading ledger entries: by id, and the newest ones, optionally by flow and kind; the
flow a decision belongs to (from its index), for authorisation before reading it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from sqlalchemy import Select, exc, func, inspect, select

from keel.errors import NotFoundError, StoreError
from keel.ledger.records import Entry
from keel.store.database import Database
from keel.store.schema import decisions, ledger


def require_ledger(db: Database) -> None:
    """Raise a clear ``StoreError`` unless ``db`` holds a Keel ledger (without creating one)."""
    try:
        present = inspect(db.engine).has_table("ledger")
    except exc.SQLAlchemyError as error:
        cause = str(getattr(error, "orig", error)).splitlines()[0]
        raise StoreError(
            f"cannot read database {db.display_url}: {cause}", {"url": db.display_url}
        ) from error
    if not present:
        raise StoreError(
            f"no Keel ledger in {db.display_url}: nothing has been recorded there yet "
            "(check database_url in keel.yaml or KEEL_DATABASE_URL)",
            {"url": db.display_url},
        )


def entry(db: Database, record_id: str) -> Entry:
    with db.read() as conn:
        row = conn.execute(select(ledger).where(ledger.c.record_id == record_id)).first()
    if row is None:
        raise NotFoundError(f"no ledger entry with id '{record_id}'", {"id": record_id})
    return Entry(*row)


def newest(
    db: Database, limit: int = 20, flow: str | None = None, kind: str | None = None
) -> list[Entry]:
    """The newest ``limit`` entries, oldest first."""
    query = _only(select(ledger).order_by(ledger.c.seq.desc()).limit(limit), flow, kind)
    with db.read() as conn:
        rows = conn.execute(query).all()
    return [Entry(*r) for r in reversed(rows)]


def _only(query: Select[Any], flow: str | None, kind: str | None) -> Select[Any]:
    """``query`` kept to one flow's and/or one kind's entries, where given."""
    if flow:
        query = query.where(ledger.c.flow == flow)
    if kind:
        query = query.where(ledger.c.kind == kind)
    return query


def head_seq(db: Database) -> int:
    """The sequence number of the newest entry (0 for an empty ledger)."""
    with db.read() as conn:
        return int(conn.execute(select(func.max(ledger.c.seq))).scalar() or 0)


def entries_from(
    db: Database,
    first_seq: int = 1,
    flow: str | None = None,
    kind: str | None = None,
    batch: int = 5000,
) -> Iterator[Entry]:
    """Every entry from ``first_seq`` up to the head as it stood when the walk began,
    oldest first, read ``batch`` at a time (short reads, so writers never wait on it)."""
    head = head_seq(db)
    last = first_seq - 1
    while last < head:
        query = _only(
            select(ledger)
            .where(ledger.c.seq > last, ledger.c.seq <= head)
            .order_by(ledger.c.seq)
            .limit(batch),
            flow,
            kind,
        )
        with db.read() as conn:
            rows = conn.execute(query).all()
        if not rows:
            return
        for row in rows:
            yield Entry(*row)
        last = rows[-1].seq


def decision_flow(db: Database, decision_id: str) -> str:
    """The flow of a recorded decision (``NotFoundError`` for an unknown id)."""
    with db.read() as conn:
        flow = conn.execute(select(decisions.c.flow).where(decisions.c.id == decision_id)).scalar()
    if flow is None:
        raise NotFoundError(f"no decision with id '{decision_id}'", {"id": decision_id})
    return str(flow)
