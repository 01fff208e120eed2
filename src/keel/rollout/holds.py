"""Holds on a flow: escalate every case to review, or pause automation.

The governor puts a hold on a flow when an alarm matches one of its rules; a person can
lift it. While ``escalate_all`` holds, a decision that would have been final waits for
review instead; while ``pause`` holds, a decision that would have been acted on or queued
is recorded as ``deferred`` with the policy's fallback action, and the caller tries again
later (as when reviewers are saturated). Shadow and advisory decisions are unchanged:
they act on nothing already.

Lifting needs ``approve_policy`` and a reason, and is refused while an alarm whose
governor rule set a hold is still firing: resolve the alarm first (or let it clear). A
person who stops a flow may name the alarm that prompted it; that alarm is then resolved
by another person (``keel.monitor.alarms``), and the stop released by another person too.
Every change is a ``flow_hold_changed`` ledger event, written in the same transaction as
its row; other processes follow within a second.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from keel.context import Context
from keel.errors import ConflictError, InputError, NotFoundError
from keel.events import FlowHoldChanged, pending
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.reasons import required_reason
from keel.runtime import NO_HOLD, current_hold
from keel.security.persons import refuse_same_person
from keel.security.roles import Permission, Principal
from keel.store.schema import alarms, flow_holds
from keel.telemetry import log
from keel.text import identifier

NONE = NO_HOLD
STOP = "stop"  # the kill switch a person engages: nothing is acted on until released
HOLDS = ("escalate_all", "pause", STOP)
GRAVITY = {NONE: 0, "escalate_all": 1, "pause": 2, STOP: 3}  # never replaced by a milder


@dataclass(frozen=True)
class HoldChange:
    """One change of a flow's hold (a ``flow_holds`` row, its evidence parsed)."""

    id: int | None  # the row's number; None for a change just made (not read back)
    flow: str
    hold: str  # none | escalate_all | pause
    previous: str
    set_by: str
    at: str
    reason: str
    alarm_id: str | None  # the alarm whose governor rule set it
    evidence: dict[str, Any] | None
    record_id: str  # the flow_hold_changed ledger entry
    set_by_person: str | None = None  # the person behind set_by; None for the governor's

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> HoldChange:
        """The change of a ``flow_holds`` row."""
        evidence = json.loads(row["evidence"]) if row["evidence"] else None
        return cls(
            row["id"], row["flow"], row["hold"], row["previous"], row["set_by"], row["at"],
            row["reason"], row["alarm_id"], evidence, row["record_id"], row["set_by_person"],
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        out = {
            "id": self.id,
            "flow": self.flow,
            "hold": self.hold,
            "previous": self.previous,
            "set_by": self.set_by,
            "at": self.at,
            "reason": self.reason,
            "alarm_id": self.alarm_id,
            "evidence": self.evidence,
            "record_id": self.record_id,
            "set_by_person": self.set_by_person,
        }
        if self.id is None:
            del out["id"]
        return out


@dataclass(frozen=True)
class HoldState:
    """The hold in force on a flow, and its changes, newest first."""

    flow: str
    hold: str  # none | escalate_all | pause
    history: list[HoldChange]

    def to_dict(self) -> dict[str, Any]:
        return {
            "flow": self.flow,
            "hold": self.hold,
            "history": [h.to_dict() for h in self.history],
        }


def set_hold_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    hold: str,
    set_by: str,
    reason: str,
    alarm_id: str | None = None,
    evidence: dict[str, Any] | None = None,
    set_by_person: str | None = None,
) -> HoldChange | None:
    """Put ``hold`` in force (``none`` lifts); nothing when that hold or a graver one
    already holds. Returns the change, or ``None``."""
    previous = current_hold(conn, flow)
    if hold == previous or (hold != NONE and GRAVITY[hold] < GRAVITY[previous]):
        return None
    record_id = new_id("evt", gate.now)
    at = iso_time(gate.now)
    change = HoldChange(None, flow, hold, previous, set_by, at, reason, alarm_id, evidence,
                        record_id, set_by_person)  # fmt: skip
    stored = json.dumps(evidence) if evidence is not None else None
    conn.execute(flow_holds.insert().values(**{**change.to_dict(), "evidence": stored}))
    changed = FlowHoldChanged(
        hold=hold,
        previous=previous,
        set_by=set_by,
        at=at,
        reason=reason,
        alarm_id=alarm_id,
        evidence=evidence,
        set_by_person=set_by_person,
    )
    append_in(conn, [pending(changed, flow, gate.now, record_id)], gate)
    return change


def _stopped_by(conn: Connection, flow: str) -> str:
    """The person who stopped the flow (a row older than persons: the principal)."""
    row = conn.execute(
        select(flow_holds.c.set_by, flow_holds.c.set_by_person)
        .where(flow_holds.c.flow == flow, flow_holds.c.hold == STOP)
        .order_by(flow_holds.c.id.desc())
        .limit(1)
    ).one()
    return str(row.set_by_person or row.set_by)


def _firing_alarm(conn: Connection, flow: str, alarm_id: str) -> None:
    """The alarm a stop names: one of the flow's, firing (404 or 409 otherwise)."""
    found = conn.execute(
        select(alarms.c.state).where(alarms.c.id == alarm_id, alarms.c.flow == flow)
    ).first()
    if found is None:
        raise NotFoundError(
            f"flow '{flow}' has no alarm with id '{alarm_id}'", {"flow": flow, "alarm": alarm_id}
        )
    if found.state != "firing":
        raise ConflictError(
            f"alarm {alarm_id} is {found.state}: a stop names a firing alarm",
            {"flow": flow, "alarm": alarm_id},
        )


def holds_set_for(conn: Connection, alarm_id: str) -> list[str]:
    """The persons who set a hold naming ``alarm_id`` (principal ids on older rows; the
    governor's holds name Keel's governor)."""
    rows = conn.execute(
        select(flow_holds.c.set_by, flow_holds.c.set_by_person).where(
            flow_holds.c.alarm_id == alarm_id, flow_holds.c.hold != NONE
        )
    )
    return [str(r.set_by_person or r.set_by) for r in rows]


class Holds:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def show(self, flow: str, principal: Principal) -> HoldState:
        """The hold in force and its history, newest first."""
        self._ctx.registry.permitted(flow, principal)
        with self._ctx.db.read() as conn:
            history = [
                HoldChange.of(r._mapping)
                for r in conn.execute(
                    select(flow_holds)
                    .where(flow_holds.c.flow == flow)
                    .order_by(flow_holds.c.id.desc())
                    .limit(100)
                )
            ]
        return HoldState(flow, history[0].hold if history else NONE, history)

    def stop(
        self, flow: str, principal: Principal, reason: str, alarm: str | None = None
    ) -> HoldChange:
        """Engage the flow's kill switch at once (no second approval to stop): every case
        is recorded ``deferred`` with the policy's fallback action and acts on nothing, on
        every process from its next refresh, until a second person releases it (``lift``).
        ``alarm`` names the firing alarm of the flow that prompted it, if any: another
        person resolves that alarm."""
        self._ctx.registry.current(flow)
        actor = principal.acting(Permission.ACTIVATE_POLICY, flow)
        reason = required_reason(reason, "stopping a flow")
        if alarm is not None:
            identifier(alarm, "alarm")  # 422 for a NUL or control character, never a 5xx

        def work(conn: Connection, gate: WindowGate) -> HoldChange:
            if alarm is not None:
                _firing_alarm(conn, flow, alarm)
            change = set_hold_in(conn, gate, flow, STOP, actor.id, reason, alarm,
                                 set_by_person=actor.person)  # fmt: skip
            if change is None:
                raise ConflictError(f"flow '{flow}' is stopped already", {"flow": flow})
            return change

        change = self._ctx.writer.transact(work)
        self._ctx.registry.refresh(force=True)
        log.warning("flow %s stopped by %s: %s", flow, actor.id, reason)
        return change

    def lift(self, flow: str, principal: Principal, reason: str) -> HoldChange:
        """Lift the flow's hold; refused while an alarm that set it still fires. A stopped
        flow is released by a second person (``activate_policy``), never by whoever
        stopped it; a governor's hold is lifted by an approver (``approve_policy``)."""
        self._ctx.registry.current(flow)
        with self._ctx.db.read() as conn:
            stopped = current_hold(conn, flow) == STOP
        permission = Permission.ACTIVATE_POLICY if stopped else Permission.APPROVE_POLICY
        actor = principal.acting(permission, flow)
        reason = required_reason(reason, "lifting a hold")

        def work(conn: Connection, gate: WindowGate) -> HoldChange:
            held = current_hold(conn, flow)
            if held == NONE:
                raise ConflictError(f"flow '{flow}' is not held", {"flow": flow})
            if held == STOP:
                by = _stopped_by(conn, flow)
                if not stopped:
                    raise ConflictError(
                        f"flow '{flow}' was stopped by {by}: a second person releases it",
                        {"flow": flow, "stopped_by": by},
                    )
                refuse_same_person(
                    actor.person,
                    actor.id,
                    [by],
                    f"the person who stopped flow '{flow}' ({actor.person}) cannot release "
                    "it: a second person releases it",
                    {"flow": flow, "stopped_by": by},
                )
            setters = {
                r.alarm_id
                for r in conn.execute(
                    select(flow_holds.c.alarm_id).where(
                        flow_holds.c.flow == flow, flow_holds.c.alarm_id.is_not(None)
                    )
                )
            }
            firing = conn.execute(
                select(alarms.c.id, alarms.c.monitor).where(
                    alarms.c.id.in_(setters), alarms.c.state == "firing"
                )
            ).fetchall()
            if firing:
                named = ", ".join(f"{a.id} ({a.monitor})" for a in firing)
                raise ConflictError(
                    f"flow '{flow}' is held by alarms still firing: {named}; resolve them "
                    "first (keel alarms resolve ID) or let them clear",
                    {"flow": flow, "alarms": [a.id for a in firing]},
                )
            change = set_hold_in(conn, gate, flow, NONE, actor.id, reason,
                                 set_by_person=actor.person)  # fmt: skip
            if change is None:  # pragma: no cover - held above, in the same transaction
                raise InputError(f"flow '{flow}' is not held", {"flow": flow})
            return change

        change = self._ctx.writer.transact(work)
        self._ctx.registry.refresh(force=True)
        return change
