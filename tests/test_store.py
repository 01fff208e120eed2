"""Migrations and the decision index, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config

from keel import open_engine
from keel.errors import StoreError
from keel.store.database import MIGRATIONS_DIR, WriteQueue, open_database
from tests.conftest import run_sql


def index_rows(db_url: str) -> list[tuple[Any, ...]]:
    return run_sql(
        db_url, "select id, seq, flow, subject_id, action, status from decisions order by seq"
    )


def test_every_decision_has_an_index_row(
    project: Path, env: dict[str, str], db_url: str, low_risk: dict[str, Any]
) -> None:
    with open_engine(project, environ=env) as engine:
        one = engine.decide("credit_limit", low_risk, subject_id="s-1")
        many = engine.decide_many("credit_limit", [{**low_risk, "delinquencies_2y": 4}] * 2)
    rows = index_rows(db_url)
    assert rows[0] == (one.id, one.seq, "credit_limit", "s-1", "approve", "final")
    assert [r[4] for r in rows[1:]] == ["decline", "decline"] and rows[1][0] == many[0].id


def test_upgrade_backfills_the_index_from_the_ledger(
    project: Path, env: dict[str, str], db_url: str, low_risk: dict[str, Any]
) -> None:
    with open_engine(project, environ=env) as engine:
        decision = engine.decide("credit_limit", low_risk, subject_id="s-9")
    db = open_database(db_url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    with db.engine.connect() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0001")
        conn.commit()
    db.close()
    with open_engine(project, environ=env) as engine:  # migrates back to the newest schema
        assert engine.verify().ok
    assert index_rows(db_url) == [
        (decision.id, decision.seq, "credit_limit", "s-9", "approve", "final")
    ]


def test_sqlite_writers_take_turns_and_a_stuck_writer_is_named(tmp_path: Path) -> None:
    db = open_database(f"sqlite:///{tmp_path / 'keel.db'}")
    assert db.queue is not None and db.queue.path == tmp_path / "keel.db.lock"
    # Another process (another open of the lock file) is in the middle of a write.
    other = WriteQueue(db.queue.path)
    blocked = WriteQueue(db.queue.path, timeout_s=0.2)
    locked = pytest.raises(StoreError, match=r"database is locked: .*keel\.db\.lock")
    with other.turn(), locked, blocked.turn():
        pass  # pragma: no cover - never reached
    with db.write() as conn:  # free again: the turn is taken at once
        conn.exec_driver_sql("select 1")
    for queue in (other, blocked):
        queue.close()
    db.close()
