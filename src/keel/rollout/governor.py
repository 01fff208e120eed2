"""The governor: what a flow's ``governor:`` rules do when an alarm is raised or grows graver.

Each matching rule acts inside the transaction that records the alarm, and what it did is
kept with the alarm and in the ledger: ``lower_autonomy`` (an ``autonomy_changed`` event by
``keel-governor``, the alarm's figures as evidence), ``escalate_all`` and ``pause``
(``flow_hold_changed``), ``retrain`` (a ``retraining_requested`` event; the webhook or
command runs after the commit). The governor only ever lowers; raising back goes through
an approval, refused while an alarm on the flow fires: a raise on the ``earned_autonomy``
criteria, or a restore whose evidence is the resolution of the alarm that caused the
lowering (``keel.rollout.autonomy``).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection

from keel.events import RetrainingRequested, pending
from keel.flows.monitoring import MonitoringSpec, Rule
from keel.ledger.records import new_id
from keel.ledger.writer import WindowGate, append_in
from keel.rollout.autonomy import GOVERNOR, lower_in
from keel.rollout.holds import set_hold_in

__all__ = ["GOVERNOR", "govern_in"]


def govern_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    spec: MonitoringSpec,
    alarm: dict[str, Any],
) -> tuple[list[dict[str, Any]], bool]:
    """Take every matching rule's action; returns what was done, and whether to retrain."""
    done: list[dict[str, Any]] = []
    retrain = False
    evidence = {"alarm": alarm["id"], "monitor": alarm["monitor"],
                "severity": alarm["severity"], "figures": alarm["evidence"]}  # fmt: skip
    why = f"governor: alarm {alarm['id']} ({alarm['severity']}): {alarm['summary']}"
    for rule in spec.governor:
        if not rule.matches(alarm["monitor"], alarm["severity"]):
            continue
        entry: dict[str, Any] = {"action": rule.action, "rule": _rule_text(rule)}
        if rule.action == "lower_autonomy" and rule.level is not None:
            change = lower_in(conn, gate, flow, rule.level, GOVERNOR, why, evidence)
            entry.update(
                {"to": rule.level, "from": change.previous, "record": change.record_id}
                if change is not None
                else {"to": rule.level, "skipped": f"already at {rule.level} or lower"}
            )
        elif rule.action in ("escalate_all", "pause"):
            held = set_hold_in(conn, gate, flow, rule.action, GOVERNOR, why, alarm["id"],
                               evidence)  # fmt: skip
            entry.update(
                {"record": held.record_id, "from": held.previous}
                if held is not None
                else {"skipped": "held already (this hold or a graver one)"}
            )
        elif rule.action == "retrain" and spec.retrain is not None:
            requested = RetrainingRequested(
                alarm=alarm["id"],
                monitor=alarm["monitor"],
                webhook=spec.retrain.webhook.name if spec.retrain.webhook else None,
                command=list(spec.retrain.command) or None,
                evidence=evidence,
            )
            record_id = new_id("evt", gate.now)
            append_in(conn, [pending(requested, flow, gate.now, record_id)], gate)
            entry["record"] = record_id
            retrain = True
        done.append(entry)
    return done, retrain


def _rule_text(rule: Rule) -> str:
    on = ", ".join(rule.alarms) or "any alarm"
    to = f" to {rule.level}" if rule.level else ""
    return f"{on} at {rule.severity} or graver → {rule.action}{to}"
