"""Keel: the governed decision layer between AI models and the actions a business takes.

import keel
with keel.open("my-project") as engine:
    decision = engine.decide("credit_limit", inputs, subject_id="cust-42")
    engine.explain(decision.id)
"""

import typing

from keel.canonical import canonical_json
from keel.errors import (
    BatchIncompleteError,
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

if typing.TYPE_CHECKING:
    from keel.engine import Decision, Engine, open_engine

    open = open_engine

# The engine brings SQLAlchemy, NumPy and the CEL compiler: it is imported on first use, so
# that `import keel.cli` (and `keel --help`) stays fast.
_FROM_ENGINE = {
    "Decision": "Decision",
    "Engine": "Engine",
    "open": "open_engine",
    "open_engine": "open_engine",
}

__all__ = [
    "BatchIncompleteError",
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


def __getattr__(name: str) -> object:
    if name not in _FROM_ENGINE:
        raise AttributeError(f"module 'keel' has no attribute {name!r}")
    from keel import engine  # noqa: PLC0415

    value = getattr(engine, _FROM_ENGINE[name])
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_FROM_ENGINE})
