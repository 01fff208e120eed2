"""The project's mode, as the ledger records it: development, then production, never back.

``keel.yaml`` names the mode (``keel.config.MODES``); the ledger is what it was. A project
is in development mode from its first start if its ledger is empty then: every activation
it makes carries ``mode: development``. The first start in production mode after that
records a ``project_mode_changed`` event (who, when). From then on, and in any store whose
ledger holds an activation made outside development mode, development mode is refused:
four eyes, once in force, cannot be switched off by editing a file.
"""

from __future__ import annotations

import json

from sqlalchemy import Connection, select

from keel.config import DEVELOPMENT, PRODUCTION
from keel.errors import ConfigError
from keel.events import ProjectModeChanged, pending
from keel.ledger.writer import WindowGate, append_in
from keel.security.roles import Principal
from keel.store.schema import ledger


def _activation_modes(conn: Connection) -> set[str | None]:
    """The mode of every policy activation in the ledger (None: made in production)."""
    records = conn.execute(
        select(ledger.c.record).where(ledger.c.kind == "policy_activated")
    ).scalars()
    return {json.loads(record)["body"].get("mode") for record in records}


def _left_development(conn: Connection) -> str | None:
    """When the ledger recorded the project leaving development mode (None: never)."""
    found = conn.execute(
        select(ledger.c.recorded_at)
        .where(ledger.c.kind == ProjectModeChanged.KIND)
        .order_by(ledger.c.seq)
        .limit(1)
    ).scalar()
    return str(found) if found is not None else None


def settle_mode_in(conn: Connection, gate: WindowGate, mode: str, by: Principal) -> None:
    """Check ``mode`` (from keel.yaml) against the ledger inside the start-up transaction:
    refuse development mode after production history; record leaving development mode."""
    left = _left_development(conn)
    modes = _activation_modes(conn)
    if mode == DEVELOPMENT:
        if left is not None or None in modes:
            since = f"since {left}" if left else "(its activations were made in production mode)"
            raise ConfigError(
                f"keel.yaml says mode: development, but this project's ledger records it in "
                f"production mode {since}: a project cannot return to development mode. Set "
                "mode: production, or start a new store for development (a new database_url; "
                "the old ledger stays the record)",
                {"key": "mode"},
            )
        return
    if left is None and DEVELOPMENT in modes:
        changed = ProjectModeChanged(
            mode=PRODUCTION,
            previous=DEVELOPMENT,
            by={"id": by.id, "name": by.name, "person": by.person},
        )
        append_in(conn, [pending(changed, None, gate.now)], gate)
