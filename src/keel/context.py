"""What every service is built from: settings, store, ledger writer, clock, metrics, the
protector of personal data, and the registry of what each flow runs now.

Services take a ``Context`` and nothing else of the engine: each names what it uses, and
none can reach another service through it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from keel.config import Settings
from keel.keys import load_data_key
from keel.ledger import reader
from keel.ledger.records import Entry
from keel.ledger.writer import LedgerWriter
from keel.protect import Protector, Sealed
from keel.runtime import FlowRegistry, FlowRuntime
from keel.store.database import Database
from keel.store.schema import protected_values
from keel.telemetry import Metrics

Clock = Callable[[], float]


@dataclass(frozen=True)
class Context:
    settings: Settings
    db: Database
    writer: LedgerWriter
    clock: Clock
    metrics: Metrics
    protector: Protector
    registry: FlowRegistry

    def entry(self, record_id: str) -> Entry:
        """A ledger entry by its record id (``NotFoundError`` if there is none)."""
        return reader.entry(self.db, record_id)

    def inputs_of(self, decision_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        """A decision's inputs with its personal values unsealed."""
        with self.db.read() as conn:
            row = conn.execute(
                select(protected_values).where(protected_values.c.record_id == decision_id)
            ).first()
        sealed = Sealed(row[0], row[1], row[2], row[3]) if row else None
        return self.protector.join(decision_id, body["inputs"], sealed)

    def close(self) -> None:
        self.writer.close()
        self.db.close()


def build_context(
    settings: Settings, flows: Mapping[str, FlowRuntime], db: Database, clock: Clock
) -> Context:
    """Wire a context over an open database; the registry starts from the project's flows."""
    key_id, key = load_data_key(settings.keys_dir)
    # The writer asks the registry for the longest guardrail window (which changes with the
    # active policies), and the registry asks the writer whether a transaction is open.
    writer = LedgerWriter(
        db,
        settings.ledger_max_batch,
        lambda: registry.max_window_s(),  # noqa: PLW0108 - registry is bound just below
        clock,
    )
    registry = FlowRegistry(
        flows, db, clock, settings.keys_dir.parent / "models", writer.in_transaction
    )
    return Context(settings, db, writer, clock, Metrics(), Protector(key_id, key), registry)
