"""The ledger: an append-only, hash-chained record of decisions and governance events."""

from keel.ledger.checkpoint import Checkpoint, make_checkpoint
from keel.ledger.records import GENESIS_HASH, RECORD_SCHEMA_VERSION, Entry, chain_hash
from keel.ledger.verify import VerifyReport, verify_ledger
from keel.ledger.writer import LedgerWriter, Pending, WindowGate

__all__ = [
    "GENESIS_HASH",
    "RECORD_SCHEMA_VERSION",
    "Checkpoint",
    "Entry",
    "LedgerWriter",
    "Pending",
    "VerifyReport",
    "WindowGate",
    "chain_hash",
    "make_checkpoint",
    "verify_ledger",
]
