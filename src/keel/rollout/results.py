"""What the rollout services return: policy changes and activations, rollouts and their
reports, autonomy changes and requests — typed, frozen, and read by field.

Each type is built from its store row (``from_row``) and gives the JSON the HTTP API and
the CLI print (``to_dict``), key for key. Where a row was just written and not read back
its ``id`` (a database counter) is unknown: it is None, and ``to_dict`` leaves it out.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from keel.runtime import pins_of


def _with_id(row_id: int | None, rest: dict[str, Any]) -> dict[str, Any]:
    return rest if row_id is None else {"id": row_id, **rest}


def _json_or_none(text: str | None) -> Any:
    return json.loads(text) if text else None


# ---- policy changes ----------------------------------------------------------------------


@dataclass(frozen=True)
class Approval:
    """One approval of a change's version (``policy_approvals``)."""

    id: int
    change_id: str
    version: str
    approver: str
    role: str
    reason: str
    approved_at: str
    record_id: str  # the policy_approved ledger event
    approver_person: str | None  # the person behind the approver; None on older rows

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Approval:
        return cls(**{name: row[name] for name in cls.__dataclass_fields__})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PolicyChange:
    """A proposed change of a flow's policy (and model pins), as stored."""

    id: str
    flow: str
    # proposed | approved | active, as stored; a change that went live and is no longer in
    # force reads rolled_back or superseded (derived from the activations: ``ended_state``)
    state: str
    version: str
    base_version: str  # the active version it was proposed (or edited) on
    author: str
    editors: tuple[str, ...]  # everyone who wrote a revision, the author first
    reason: str
    created_at: str
    updated_at: str
    models: dict[str, str] | None  # model versions per signal the change pins
    # Approvals of the current version; None where they were not read (a listing), and
    # then absent from to_dict.
    approvals: tuple[Approval, ...] | None = None

    @classmethod
    def from_row(
        cls, row: Mapping[str, Any], approvals: Iterable[Mapping[str, Any]] | None = None
    ) -> PolicyChange:
        return cls(
            id=row["id"],
            flow=row["flow"],
            state=row["state"],
            version=row["version"],
            base_version=row["base_version"],
            author=row["author"],
            editors=tuple(json.loads(row["editors"])),
            reason=row["reason"],
            created_at=row["created_at"],
            updated_at=row["updated_at"],
            models=pins_of(row),
            approvals=None if approvals is None else tuple(map(Approval.from_row, approvals)),
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "id": self.id,
            "flow": self.flow,
            "state": self.state,
            "version": self.version,
            "base_version": self.base_version,
            "author": self.author,
            "editors": list(self.editors),
            "reason": self.reason,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "models": dict(self.models) if self.models is not None else None,
        }
        if self.approvals is not None:
            out["approvals"] = [a.to_dict() for a in self.approvals]
        return out


@dataclass(frozen=True)
class Activation:
    """A policy version put into force on a flow (``flow_activations``)."""

    flow: str
    version: str
    activated_at: str
    activated_by: str
    kind: str  # initial | inferred | activate | rollback | development
    change_id: str | None
    reason: str
    record_id: str | None  # the policy_activated ledger event (none if inferred)
    models: dict[str, str] | None  # model versions pinned; None: the project's files
    id: int | None = None
    # in_force | rolled_back | superseded, set where the whole history was read (``ranked``);
    # None elsewhere, and then absent from to_dict
    status: str | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Activation:
        return cls(
            id=row.get("id"),
            flow=row["flow"],
            version=row["version"],
            activated_at=row["activated_at"],
            activated_by=row["activated_by"],
            kind=row["kind"],
            change_id=row["change_id"],
            reason=row["reason"],
            record_id=row["record_id"],
            models=pins_of(row),
        )

    def to_dict(self) -> dict[str, Any]:
        """The row, with ``models`` as an object (the store keeps it as JSON text)."""
        return _with_id(
            self.id,
            {
                "flow": self.flow,
                "version": self.version,
                "activated_at": self.activated_at,
                "activated_by": self.activated_by,
                "kind": self.kind,
                "change_id": self.change_id,
                "reason": self.reason,
                "record_id": self.record_id,
                "models": dict(self.models) if self.models else None,
            }
            | ({} if self.status is None else {"status": self.status}),
        )


def ranked(activations: Iterable[Activation]) -> list[Activation]:
    """A flow's activations, oldest first, each with its status: the newest is in force; one
    that a rollback ended is rolled back; any other was superseded by the next activation.

    The store keeps activations append-only, so this is derived on every read rather than
    written back: the history and the changes then cannot disagree with what is in force.
    """
    rows = list(activations)
    out = []
    for i, a in enumerate(rows):
        following = rows[i + 1] if i + 1 < len(rows) else None
        if following is None:
            status = "in_force"
        elif following.kind == "rollback":
            status = "rolled_back"
        else:
            status = "superseded"
        out.append(replace(a, status=status))
    return out


def ended_state(change: PolicyChange, history: list[Activation]) -> PolicyChange:
    """The change with the state a reader needs: ``active`` only while the activation it made
    is in force, ``rolled_back`` or ``superseded`` once that activation ended (``history``
    as ``ranked`` returns it)."""
    if change.state != "active":
        return change
    own = [a for a in history if a.change_id == change.id]
    if not own or own[-1].status == "in_force":
        return change
    return replace(change, state=str(own[-1].status))


# ---- rollouts ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Rollout:
    """A candidate version run beside the active one (``rollouts``), bounds parsed."""

    id: str
    flow: str
    mode: str  # shadow | canary
    version: str
    change_id: str | None
    share: float  # canary: share of subjects served (0 for shadow)
    bounds: dict[str, float]  # max_guardrail_hit_rate, max_override_rate, min_decisions
    state: str  # running | stopped | rolled_back | ended
    started_at: str
    started_by: str
    reason: str
    ended_at: str | None
    ended_by: str | None
    end_reason: str | None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Rollout:
        return cls(
            **{name: row[name] for name in cls.__dataclass_fields__ if name != "bounds"},
            bounds=json.loads(row["bounds"]),
        )

    def to_dict(self) -> dict[str, Any]:
        """The row, with ``bounds`` as an object (the store keeps it as JSON text)."""
        return {**asdict(self), "bounds": dict(self.bounds)}


@dataclass(frozen=True)
class ArmFigures:
    """How one arm of a canary did."""

    decisions: int
    guardrail_hits: int
    overrides: int  # overrides, rejections and changes by reviewers
    guardrail_hit_rate: float | None  # None before the first decision
    override_rate: float | None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ShadowReport:
    """How a shadow agreed with the active version."""

    rollout: Rollout
    decisions: int
    agreement: float | None  # None before the first decision
    transitions: dict[str, dict[str, int]]  # {active action: {shadow action: count}}
    # Per protected attribute and group: selection rate and impact ratio, active against
    # candidate (``keel.review.fairness.shadow_groups``); empty without protected fields.
    fairness: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout.to_dict(),
            "decisions": self.decisions,
            "agreement": self.agreement,
            "transitions": {a: dict(row) for a, row in self.transitions.items()},
            "fairness": list(self.fairness),
        }


@dataclass(frozen=True)
class CanaryReport:
    """How a canary's arms did: the candidate's, and the active version's."""

    rollout: Rollout
    candidate: ArmFigures
    active: ArmFigures

    def to_dict(self) -> dict[str, Any]:
        return {
            "rollout": self.rollout.to_dict(),
            "candidate": self.candidate.to_dict(),
            "active": self.active.to_dict(),
        }


RolloutReport = ShadowReport | CanaryReport


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
    requested_person: str | None = None  # the person who asked; None on older rows

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
