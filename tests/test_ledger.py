"""Tampering with the database directly is detected, and the first bad entry named."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from keel import Engine, open_engine
from keel.canonical import canonical_json
from keel.keys import public_key_from_text
from keel.ledger import GENESIS_HASH, chain_hash
from keel.ledger.checkpoint import CheckpointError, load_checkpoint
from tests.conftest import run_sql


@dataclass
class Ledger:
    project: Path
    env: dict[str, str]
    url: str


@pytest.fixture
def filled(
    engine: Engine, project: Path, env: dict[str, str], db_url: str, low_risk: dict[str, Any]
) -> Ledger:
    for i in range(7):  # after the policy registration, activation and autonomy level
        engine.decide("credit_limit", {**low_risk, "requested_limit": 1000.0 + i})
    assert engine.verify().entries == 10
    return Ledger(project, env, db_url)


def sql(ledger: Ledger, *statements: str, **params: object) -> list[tuple[object, ...]]:
    return run_sql(ledger.url, *statements, params=params)


def verify(ledger: Ledger, checkpoint: Any = None, trusted_key: Any = None) -> Any:
    with open_engine(ledger.project, environ=ledger.env) as engine:
        return engine.verify(checkpoint, trusted_key=trusted_key)


def test_intact_ledger_verifies(filled: Ledger) -> None:
    report = verify(filled)
    assert report.ok and report.entries == 10 and report.head_seq == 10


def test_edited_record_is_named(filled: Ledger) -> None:
    sql(
        filled,
        "update ledger set record = replace(record, '\"approve\"', '\"decline\"') where seq = 5",
    )
    report = verify(filled)
    assert not report.ok and report.bad_seq == 5 and "altered" in report.problem


def test_edited_column_copy_is_named(filled: Ledger) -> None:
    sql(filled, "update ledger set flow = 'other' where seq = 4")
    report = verify(filled)
    assert report.bad_seq == 4 and "column 'flow'" in report.problem


def test_deleted_record_is_named(filled: Ledger) -> None:
    sql(filled, "delete from ledger where seq = 6")
    report = verify(filled)
    assert report.bad_seq == 6 and "missing" in report.problem


def test_inserted_record_is_named(filled: Ledger) -> None:
    # Shift entries 7.. up by one and insert a forged, self-consistent entry at 7.
    sql(
        filled,
        "update ledger set seq = seq + 100 where seq >= 7",
        "update ledger set seq = seq - 99 where seq >= 107",
    )
    prev = str(sql(filled, "select hash from ledger where seq = 6")[0][0])
    record = canonical_json(
        {
            "schema_version": 1,
            "kind": "decision",
            "id": "dec_forged",
            "flow": "credit_limit",
            "recorded_at": "2026-01-01T00:00:00.000000Z",
            "body": {"action": "approve"},
        }
    )
    sql(
        filled,
        "insert into ledger values (7, 'decision', 'dec_forged', 'credit_limit', "
        "'2026-01-01T00:00:00.000000Z', :record, :prev, :hash)",
        record=record,
        prev=prev,
        hash=chain_hash(prev, record),
    )
    report = verify(filled)
    assert report.bad_seq == 8 and "prev_hash" in report.problem


def test_reordered_records_are_named(filled: Ledger) -> None:
    sql(
        filled,
        "update ledger set seq = 1000 where seq = 3",
        "update ledger set seq = 3 where seq = 4",
        "update ledger set seq = 4 where seq = 1000",
    )
    report = verify(filled)
    assert report.bad_seq == 3


def test_truncation_needs_a_checkpoint_or_the_head(filled: Ledger) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        checkpoint = engine.checkpoint()
    sql(filled, "delete from ledger where seq >= 9")
    report = verify(filled)
    assert report.bad_seq == 9 and "removed from the end" in report.problem
    sql(filled, "update ledger_head set seq = 8, hash = (select hash from ledger where seq = 8)")
    assert verify(filled).ok  # the chain alone cannot see a consistent truncation...
    report = verify(filled, checkpoint)
    assert not report.ok and "removed" in report.problem  # ...the checkpoint can


def test_removing_only_the_checkpoint_event_is_named(filled: Ledger) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        checkpoint = engine.checkpoint()
    assert checkpoint.seq == 10 and verify(filled, checkpoint).checkpoint["event_seq"] == 11
    sql(
        filled,
        "delete from ledger where seq = 11",
        "update ledger_head set seq = 10, hash = (select hash from ledger where seq = 10)",
    )
    assert verify(filled).ok  # the chain alone is consistent...
    report = verify(filled, checkpoint)  # ...but the checkpoint recorded entry 11
    assert not report.ok and report.bad_seq == 11
    assert "entry 11 was removed from the end" in report.problem


def test_cut_back_and_regrown_after_a_checkpoint_is_named(
    filled: Ledger, low_risk: dict[str, Any]
) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        checkpoint = engine.checkpoint()
    sql(
        filled,
        "delete from ledger where seq = 11",
        "update ledger_head set seq = 10, hash = (select hash from ledger where seq = 10)",
    )
    with open_engine(filled.project, environ=filled.env) as engine:
        engine.decide("credit_limit", low_risk)  # a new entry 11 hides the gap
    report = verify(filled, checkpoint)
    assert not report.ok and report.bad_seq == 11
    assert "no entry after 10 records the checkpoint" in report.problem


def test_growth_after_a_checkpoint_verifies(filled: Ledger, low_risk: dict[str, Any]) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        first = engine.checkpoint()
        for _ in range(3):
            engine.decide("credit_limit", low_risk)
        second = engine.checkpoint()
        engine.decide("credit_limit", low_risk)
    assert (first.seq, second.seq) == (10, 14)
    for checkpoint, event_seq in ((first, 11), (second, 15)):
        report = verify(filled, checkpoint)
        assert report.ok and report.head_seq == 16
        assert report.checkpoint["event_seq"] == event_seq


def test_checkpoint_signer_is_reported(filled: Ledger) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        checkpoint = engine.checkpoint()
    report = verify(filled, checkpoint)
    assert report.ok and report.checkpoint["signer"].startswith("unverified: ")
    assert "--public-key" in report.checkpoint["signer"]
    trusted = public_key_from_text(checkpoint.public_key)
    report = verify(filled, checkpoint, trusted)
    assert report.ok and report.checkpoint["signer"].startswith("verified: ")
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(CheckpointError, match="signed by another key"):
        verify(filled, checkpoint, other)


def test_full_rewrite_is_caught_by_checkpoint(filled: Ledger) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        checkpoint = engine.checkpoint()
    rows = sql(filled, "select seq, record from ledger order by seq")
    prev = GENESIS_HASH
    for seq, record in rows:
        data = json.loads(str(record))
        if data["kind"] == "decision":
            data["body"]["action"] = "decline"
        text = canonical_json(data)
        digest = chain_hash(prev, text)
        sql(
            filled,
            "update ledger set record = :text, prev_hash = :prev, hash = :digest where seq = :seq",
            text=text,
            prev=prev,
            digest=digest,
            seq=seq,
        )
        prev = digest
    sql(filled, "update ledger_head set hash = :prev", prev=prev)
    assert verify(filled).ok  # internally consistent...
    report = verify(filled, checkpoint)
    assert not report.ok and "rewritten" in report.problem


def test_checkpoint_signature(filled: Ledger, tmp_path: Path) -> None:
    with open_engine(filled.project, environ=filled.env) as engine:
        checkpoint = engine.checkpoint()
    checkpoint.verify_signature()
    path = tmp_path / "cp.json"
    data = checkpoint.to_dict()
    data["seq"] = 3
    path.write_text(json.dumps(data))
    with pytest.raises(CheckpointError, match="signature is not valid"):
        load_checkpoint(path).verify_signature()
    path.write_text("{not json")
    with pytest.raises(CheckpointError, match="not a Keel checkpoint"):
        load_checkpoint(path)
