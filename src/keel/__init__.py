"""Keel: the governed decision layer between AI models and the actions a business takes.

import keel
with keel.open("my-project") as engine:
    decision = engine.decide("credit_limit", inputs, subject_id="cust-42")
    engine.explain(decision.id)
"""

from keel.canonical import canonical_json
from keel.engine import Decision, Engine, open_engine
from keel.errors import (
    ConfigError,
    DefinitionError,
    ErasedDataError,
    InputError,
    KeelError,
    LedgerWriteError,
    MissingExtraError,
    ModelError,
    NotFoundError,
    StoreError,
)

open = open_engine

__all__ = [
    "ConfigError",
    "Decision",
    "DefinitionError",
    "Engine",
    "ErasedDataError",
    "InputError",
    "KeelError",
    "LedgerWriteError",
    "MissingExtraError",
    "ModelError",
    "NotFoundError",
    "StoreError",
    "canonical_json",
    "open",
    "open_engine",
]
__version__ = "0.1.0"
