"""Keel's exceptions: one root, a shallow tree, and messages that say what to do.

    KeelError
    ├── ConfigError            keel.yaml, environment, project layout
    ├── DefinitionError        a flow or policy file is invalid (carries every problem found)
    ├── InputError             a decision request does not match the flow's schema
    ├── NotFoundError          unknown flow, decision or record
    ├── ModelError             a model file cannot be loaded (corrupt, wrong format, missing extra)
    ├── MissingExtraError      an optional dependency is not installed
    ├── StoreError             the database cannot be opened, migrated, read or written
    │   └── LedgerWriteError   a ledger append failed; the decision was not returned
    ├── BatchIncompleteError   a file of cases stopped part-way; says what is recorded
    ├── IntegrityError         a stored row disagrees with the ledger entry behind it
    └── ErasedDataError        the personal data a request needs has been erased

Every error has a stable ``code`` (used as the error code over HTTP) and a ``detail``
mapping with machine-readable context (flow, rule, field, file, position).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any


class KeelError(Exception):
    """Root of every error Keel raises on purpose."""

    code = "keel_error"

    def __init__(self, message: str, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = dict(detail or {})

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "detail": self.detail}


class ConfigError(KeelError):
    """keel.yaml, the environment or the project's layout is wrong: named with the file and
    key. Met when a project is opened; a running server answers 503 if it ever is."""

    code = "config_error"


@dataclass(frozen=True)
class Problem:
    """One thing wrong in a definition file, with where it is."""

    file: str
    where: str
    message: str
    line: int | None = None
    column: int | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        position = f":{self.line}" if self.line is not None else ""
        if self.column is not None:
            position += f":{self.column}"
        return f"{self.file}{position}: {self.where}: {self.message}"


class DefinitionError(KeelError):
    """A flow or policy is invalid; ``problems`` lists every problem found, not only the first."""

    code = "invalid_definition"

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        lines = "\n".join(f"  - {p}" for p in self.problems)
        count = len(self.problems)
        noun = "problem" if count == 1 else "problems"
        super().__init__(
            f"{count} {noun} in the project definition:\n{lines}",
            {"problems": [_problem_dict(p) for p in self.problems]},
        )


def _problem_dict(p: Problem) -> dict[str, Any]:
    out: dict[str, Any] = {"file": p.file, "where": p.where, "message": p.message}
    if p.line is not None:
        out["line"] = p.line
    if p.column is not None:
        out["column"] = p.column
    return out


class InputError(KeelError):
    """A request's inputs do not match the flow's schema; nothing was recorded."""

    code = "invalid_input"


class NotFoundError(KeelError):
    """No such flow, decision, review, change or record — or one the caller may not see,
    answered the same so that nobody can probe for it."""

    code = "not_found"


class ConflictError(KeelError):
    """The request is valid but the record's state forbids it (already resolved, claimed by
    someone else, a second conflicting report)."""

    code = "conflict"


class ModelError(KeelError):
    """A model file cannot be loaded (corrupt, wrong format, missing): a server-side fault,
    503."""

    code = "model_error"


class MissingExtraError(KeelError):
    """An optional dependency is not installed; the message names the extra to install
    (``pip install 'keel[extra]'``). A server-side fault, 503."""

    code = "missing_extra"

    def __init__(self, extra: str, purpose: str) -> None:
        super().__init__(
            f"{purpose} needs the optional dependency group 'keel[{extra}]': "
            f"install it with  pip install 'keel[{extra}]'",
            {"extra": extra},
        )


class StoreError(KeelError):
    """The database cannot be opened, migrated, read or written: nothing was changed, and
    the request may be tried again (503)."""

    code = "store_error"


class IntegrityError(KeelError):
    """A row the engine would act on disagrees with the ledger entry that introduced it
    (or has none): the store was changed outside Keel. The engine acts on none of it."""

    code = "integrity_failed"


class LedgerWriteError(StoreError):
    """The ledger could not be written, so the decision was not made."""

    code = "ledger_write_failed"


class BatchIncompleteError(KeelError):
    """Deciding a file of cases stopped at a chunk that could not be recorded: the chunks
    before it are recorded, it and the rest are not; the detail says where to go on."""

    code = "batch_incomplete"


class ErasedDataError(KeelError):
    """The personal data a request needs was erased: the decision's record stays, its
    sealed inputs are gone (410)."""

    code = "data_erased"
