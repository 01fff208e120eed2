"""The decision a caller gets back: the result for one case, after it is in the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from keel.ledger.records import Entry


@dataclass(frozen=True)
class Decision:
    """The result for one case, as returned to the caller after it is in the ledger."""

    id: str
    flow: str
    subject_id: str | None
    action: str
    value: float | None
    status: str
    reason: str
    rule: str
    policy_version: str
    autonomy: str
    signals: dict[str, Any]
    failed_signals: dict[str, str]
    guardrail_hits: list[dict[str, Any]]
    fallback: str | None
    recorded_at: str
    seq: int
    hash: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "subject_id": self.subject_id,
            "action": self.action,
            "value": self.value,
            "status": self.status,
            "reason": self.reason,
            "rule": self.rule,
            "policy_version": self.policy_version,
            "autonomy": self.autonomy,
            "signals": self.signals,
            "failed_signals": self.failed_signals,
            "guardrail_hits": self.guardrail_hits,
            "fallback": self.fallback,
            "recorded_at": self.recorded_at,
            "seq": self.seq,
            "hash": self.hash,
        }


def decision_from(entry: Entry, body: Mapping[str, Any], reason: str) -> Decision:
    return Decision(
        id=entry.record_id,
        flow=entry.flow or "",
        subject_id=body.get("subject_id"),
        action=body["action"],
        value=body.get("value"),
        status=body["status"],
        reason=reason,
        rule=body["rule"],
        policy_version=body["policy"]["version"],
        autonomy=body["autonomy"],
        signals=body["signals"],
        failed_signals=body["failed_signals"],
        guardrail_hits=body["guardrails"]["hits"],
        fallback=body.get("fallback"),
        recorded_at=entry.recorded_at,
        seq=entry.seq,
        hash=entry.hash,
    )
