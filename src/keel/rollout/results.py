"""What the rollout services return: autonomy changes and requests — typed, frozen, and
read by field.

Each type is built from its store row (``from_row``) and gives the JSON the HTTP API and
the CLI print (``to_dict``), key for key. Where a row was just written and not read back
its ``id`` (a database counter) is unknown: it is None, and ``to_dict`` leaves it out.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any


def _with_id(row_id: int | None, rest: dict[str, Any]) -> dict[str, Any]:
    return rest if row_id is None else {"id": row_id, **rest}


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


# ---- autonomy ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AutonomyChange:
    """A flow's autonomy level changed (``autonomy_changes``), evidence parsed."""

    flow: str
    level: str
    previous: str | None
    kind: str  # initial | raise | lower
    requested_by: str
    approved_by: str | None
    changed_at: str
    reason: str
    evidence: dict[str, Any] | None  # the figures and criteria a raise was judged on
    record_id: str  # the autonomy_changed ledger event
    id: int | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AutonomyChange:
        return cls(
            id=row.get("id"),
            flow=row["flow"],
            level=row["level"],
            previous=row["previous"],
            kind=row["kind"],
            requested_by=row["requested_by"],
            approved_by=row["approved_by"],
            changed_at=row["changed_at"],
            reason=row["reason"],
            evidence=_json_or_none(row["evidence"]),
            record_id=row["record_id"],
        )

    def to_dict(self) -> dict[str, Any]:
        return _with_id(
            self.id,
            {
                "flow": self.flow,
                "level": self.level,
                "previous": self.previous,
                "kind": self.kind,
                "requested_by": self.requested_by,
                "approved_by": self.approved_by,
                "changed_at": self.changed_at,
                "reason": self.reason,
                "evidence": self.evidence,
                "record_id": self.record_id,
            },
        )


@dataclass(frozen=True)
class AutonomyRequest:
    """A request to raise a flow's autonomy, waiting for (or given) an approval."""

    id: str
    flow: str
    level: str
    state: str  # open | approved
    requested_by: str
    reason: str
    evidence: dict[str, Any]  # the figures the request was judged on
    created_at: str
    decided_at: str | None
    decided_by: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> AutonomyRequest:
        return cls(
            **{name: row[name] for name in cls.__dataclass_fields__ if name != "evidence"},
            evidence=_json_or_none(row["evidence"]),
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class AutonomyRequestResult:
    """What asking for a level did: a lowering ``applied`` at once, or a raise
    ``request`` opened for an approver — exactly one of them."""

    applied: AutonomyChange | None = None
    request: AutonomyRequest | None = None

    def __post_init__(self) -> None:
        if (self.applied is None) == (self.request is None):
            raise ValueError("an autonomy request result holds exactly one of applied and request")

    def to_dict(self) -> dict[str, Any]:
        held = {"applied": self.applied, "request": self.request}
        return {key: value.to_dict() for key, value in held.items() if value is not None}


@dataclass(frozen=True)
class AutonomyState:
    """A flow's autonomy level in force, its history (oldest first) and open requests."""

    flow: str
    level: str
    history: tuple[AutonomyChange, ...]
    open_requests: tuple[AutonomyRequest, ...]

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "level": self.level,
            "history": [h.to_dict() for h in self.history],
            "open_requests": [r.to_dict() for r in self.open_requests],
        }
