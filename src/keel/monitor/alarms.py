"""Alarms from monitor verdicts; the governor (``keel.rollout.governor``) acts on them.

One alarm per flow and monitor fires at a time (deduplication): a breach while it fires is
the same alarm seen again. Its life, inside the transaction that records the run:

- **raised** — the first breach opens it (``alarm_raised`` ledger event) and notifies;
- **seen again** — notifies again (``alarm_repeated``) only when the cool-down since the
  last notice has passed or the severity grew (``alarm_escalated``); otherwise it is
  counted as suppressed;
- **resolved** — after ``clear_after`` clean runs in a row (a run in the band between the
  limit and ``clear_below`` times it resets the count) or by a person with a reason
  (``alarm_resolved``) — never by the person who stopped the flow over it (four eyes).

When an alarm is raised or escalated, each governor rule that matches it acts, in the same
transaction, and what it did is kept with the alarm and in the ledger: ``lower_autonomy``
(an ``autonomy_changed`` event by ``keel-governor``, the alarm's figures as evidence),
``escalate_all`` and ``pause`` (``flow_hold_changed``), ``retrain`` (a
``retraining_requested`` event; the webhook or command runs after the commit). The
governor only ever lowers; raising back goes through the earned-autonomy approval, which
refuses while an alarm on the flow fires. Repeats never act again: with the cool-down and
``clear_after``, that is the hysteresis that keeps a flow from flapping at a threshold.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import Connection, RowMapping, select, update

from keel.context import Context
from keel.errors import ConflictError, NotFoundError
from keel.events import AlarmEscalated, AlarmRaised, AlarmRepeated, AlarmResolved, pending
from keel.flows.monitoring import PERFORMANCE, SEVERITIES, MonitoringSpec
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.monitor.performance import performance_summary
from keel.monitor.windows import moment
from keel.review.fairness import fairness_summary
from keel.rollout.governor import govern_in
from keel.rollout.holds import holds_set_for
from keel.security.persons import refuse_same_person
from keel.security.roles import Actor
from keel.store.schema import alarms

FIRING, RESOLVED = "firing", "resolved"


@dataclass(frozen=True)
class Alarm:
    """One alarm on a flow's monitor (an ``alarms`` row, its evidence and actions parsed)."""

    id: str
    flow: str
    monitor: str
    severity: str
    state: str  # firing | resolved
    opened_at: str
    last_seen_at: str
    notified_at: str
    runs: int  # runs that found the breach
    suppressed: int  # of those, not notified (cool-down)
    clean_runs: int  # consecutive clean runs since
    summary: str
    evidence: dict[str, Any]  # the figures of the latest breach
    actions: list[dict[str, Any]]  # what the governor did about it
    resolved_at: str | None
    resolved_by: str | None
    resolve_reason: str | None
    record_id: str  # the alarm_raised ledger entry

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "flow": self.flow,
            "monitor": self.monitor,
            "severity": self.severity,
            "state": self.state,
            "opened_at": self.opened_at,
            "last_seen_at": self.last_seen_at,
            "notified_at": self.notified_at,
            "runs": self.runs,
            "suppressed": self.suppressed,
            "clean_runs": self.clean_runs,
            "summary": self.summary,
            "evidence": self.evidence,
            "actions": self.actions,
            "resolved_at": self.resolved_at,
            "resolved_by": self.resolved_by,
            "resolve_reason": self.resolve_reason,
            "record_id": self.record_id,
        }

    def row(self) -> dict[str, Any]:
        """The ``alarms`` row (evidence and actions as JSON text)."""
        return {
            **self.to_dict(),
            "evidence": json.dumps(self.evidence),
            "actions": json.dumps(self.actions),
        }


@dataclass
class Notice:
    """Something to tell the owner once the transaction has committed."""

    kind: str  # alarm_raised | alarm_repeated | alarm_escalated | alarm_resolved
    alarm: Alarm
    retrain: bool = False  # a retrain rule matched: send the request
    actions: list[dict[str, Any]] = field(default_factory=list)


def alarm_row(row: Mapping[str, Any] | RowMapping) -> Alarm:
    """The alarm of an ``alarms`` row."""
    values = {**row, "evidence": json.loads(row["evidence"]), "actions": json.loads(row["actions"])}
    return Alarm(**values)


def firing_in(conn: Connection, flow: str) -> list[Alarm]:
    rows = conn.execute(
        select(alarms)
        .where(alarms.c.flow == flow, alarms.c.state == FIRING)
        .order_by(alarms.c.opened_at)
    )
    return [alarm_row(r._mapping) for r in rows]


def summary_of(monitor: str, evidence: dict[str, Any]) -> str:
    """One line for the owner: what moved, from what to what, against which limit."""
    if monitor == "fairness":
        return fairness_summary(evidence)
    if monitor == "drift":
        drifted = evidence.get("drifted", [])
        return f"{len(drifted)} column(s) drifted: {', '.join(drifted[:8])}" + (
            "…" if len(drifted) > 8 else ""
        )
    if monitor in PERFORMANCE:
        return performance_summary(monitor, evidence)
    before, now, limit = evidence.get("baseline"), evidence.get("current"), evidence.get("limit")
    if monitor == "latency_p99_ms":
        return f"latency p99 {before:.1f} ms → {now:.1f} ms (limit ×{limit:g})"
    return f"{monitor.replace('_', ' ')} {before:.1%} → {now:.1%} (limit ±{limit:.1%})"


def settle_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    spec: MonitoringSpec,
    run: dict[str, Any],
    evidence: dict[str, dict[str, Any]],
) -> tuple[list[Notice], list[str]]:
    """Open, update or resolve the flow's alarms from one judged run; the governor acts.

    Returns what to notify once committed, and the monitors whose notice was suppressed."""
    now = iso_time(gate.now)
    notices: list[Notice] = []
    suppressed: list[str] = []
    current = {a.monitor: a for a in firing_in(conn, flow)}
    for monitor, verdict in run["verdicts"].items():
        found = current.get(monitor)
        check = spec.checks[monitor]
        if verdict == "breach":
            figures = {**evidence[monitor], "run": run["id"]}
            if found is None:
                notices.append(_raise_in(conn, gate, flow, spec, monitor, check.severity, figures))
                continue
            alarm = replace(
                found, last_seen_at=now, runs=found.runs + 1, clean_runs=0, evidence=figures,
                summary=summary_of(monitor, figures),
            )  # fmt: skip
            graver = SEVERITIES.index(check.severity) > SEVERITIES.index(found.severity)
            cooled = gate.now - moment(found.notified_at).timestamp() >= spec.cooldown_s
            if graver or cooled:
                kind = "alarm_escalated" if graver else "alarm_repeated"
                alarm = replace(alarm, severity=check.severity, notified_at=now)
                actions: list[dict[str, Any]] = []
                retrain = False
                if graver:
                    actions, retrain = govern_in(conn, gate, flow, spec, alarm.to_dict())
                    alarm = replace(alarm, actions=[*found.actions, *actions])
                seen = (AlarmEscalated if graver else AlarmRepeated)(
                    alarm=found.id, monitor=monitor, severity=check.severity,
                    summary=alarm.summary, evidence=figures, actions=actions,
                )  # fmt: skip
                append_in(conn, [pending(seen, flow, gate.now)], gate)
                notices.append(Notice(kind, alarm, retrain, actions))
            else:
                alarm = replace(alarm, suppressed=found.suppressed + 1)
                suppressed.append(monitor)
            conn.execute(update(alarms).where(alarms.c.id == found.id).values(**alarm.row()))
        elif found is not None and verdict in ("clean", "band"):
            clean = found.clean_runs + 1 if verdict == "clean" else 0
            if clean >= spec.clear_after:
                why = f"{clean} clean run(s) in a row"
                notices.append(_resolve_in(conn, gate, found, "keel", why))
            else:
                conn.execute(update(alarms).where(alarms.c.id == found.id).values(clean_runs=clean))
    return notices, suppressed


def _raise_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    spec: MonitoringSpec,
    monitor: str,
    severity: str,
    figures: dict[str, Any],
) -> Notice:
    now = iso_time(gate.now)
    record_id = new_id("evt", gate.now)
    alarm = Alarm(
        id=new_id("alm", gate.now), flow=flow, monitor=monitor, severity=severity, state=FIRING,
        opened_at=now, last_seen_at=now, notified_at=now, runs=1, suppressed=0, clean_runs=0,
        summary=summary_of(monitor, figures), evidence=figures, actions=[], resolved_at=None,
        resolved_by=None, resolve_reason=None, record_id=record_id,
    )  # fmt: skip
    actions, retrain = govern_in(conn, gate, flow, spec, alarm.to_dict())
    alarm = replace(alarm, actions=actions)
    conn.execute(alarms.insert().values(**alarm.row()))
    raised = AlarmRaised(
        alarm=alarm.id, monitor=monitor, severity=severity, summary=alarm.summary,
        evidence=figures, actions=actions,
    )  # fmt: skip
    append_in(conn, [pending(raised, flow, gate.now, record_id)], gate)
    return Notice("alarm_raised", alarm, retrain, actions)


def _resolve_in(
    conn: Connection,
    gate: WindowGate,
    alarm: Alarm,
    by: str,
    reason: str,
    by_person: str | None = None,
) -> Notice:
    now = iso_time(gate.now)
    conn.execute(
        update(alarms)
        .where(alarms.c.id == alarm.id)
        .values(state=RESOLVED, resolved_at=now, resolved_by=by, resolve_reason=reason)
    )
    resolved_event = AlarmResolved(
        alarm=alarm.id, monitor=alarm.monitor, by=by, reason=reason,
        opened_at=alarm.opened_at, runs=alarm.runs, by_person=by_person,
    )  # fmt: skip
    append_in(conn, [pending(resolved_event, alarm.flow, gate.now)], gate)
    resolved = replace(alarm, state=RESOLVED, resolved_at=now, resolved_by=by,
                       resolve_reason=reason)  # fmt: skip
    return Notice("alarm_resolved", resolved)


def resolve(
    ctx: Context,
    alarm_id: str,
    by: Actor,
    reason: str,
    then: Callable[[Connection, WindowGate, Notice], None] | None = None,
) -> Notice:
    """A person resolves a firing alarm (the governor's actions stay as they are); not the
    person who set a hold over it (four eyes). ``then`` runs in the same transaction (the
    notice's deliveries are enqueued there)."""

    def work(conn: Connection, gate: WindowGate) -> Notice:
        found = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()
        if found is None:
            raise NotFoundError(f"no alarm with id '{alarm_id}'", {"alarm_id": alarm_id})
        alarm = alarm_row(found._mapping)
        if alarm.state != FIRING:
            raise ConflictError(
                f"alarm {alarm_id} was resolved at {alarm.resolved_at} by {alarm.resolved_by}",
                {"alarm_id": alarm_id},
            )
        refuse_same_person(
            by.person,
            by.id,
            holds_set_for(conn, alarm_id),
            f"the person who set a hold on flow '{alarm.flow}' over alarm {alarm_id} "
            f"({by.person}) cannot resolve it",
            {"alarm_id": alarm_id, "flow": alarm.flow},
        )
        notice = _resolve_in(conn, gate, alarm, by.id, reason, by.person)
        if then is not None:
            then(conn, gate, notice)
        return notice

    return ctx.writer.transact(work)


# ---- integrity: the store disagrees with the ledger ------------------------------------------

INTEGRITY = "integrity"  # the monitor name of an integrity alarm (no monitor spec runs it)


def integrity_firing_in(conn: Connection) -> dict[str, Alarm]:
    """The firing integrity alarm of every flow that has one."""
    rows = conn.execute(
        select(alarms).where(alarms.c.monitor == INTEGRITY, alarms.c.state == FIRING)
    )
    return {str(r.flow): alarm_row(r._mapping) for r in rows}


def settle_integrity_in(
    conn: Connection, gate: WindowGate, problems: Mapping[str, str], flows: list[str]
) -> list[Notice]:
    """Raise a critical alarm for each flow held for integrity that has none firing, and
    resolve those of flows whose stored content verifies again."""
    notices = []
    firing = integrity_firing_in(conn)
    for flow in flows:
        problem, alarm = problems.get(flow), firing.get(flow)
        if problem is not None and alarm is None:
            notices.append(_raise_integrity_in(conn, gate, flow, problem))
        elif problem is None and alarm is not None:
            why = "the stored content verifies against the ledger again"
            notices.append(_resolve_in(conn, gate, alarm, "keel", why))
    return notices


def _raise_integrity_in(conn: Connection, gate: WindowGate, flow: str, problem: str) -> Notice:
    now = iso_time(gate.now)
    record_id = new_id("evt", gate.now)
    held = {"action": "integrity_hold", "detail": "every case is deferred until it verifies"}
    alarm = Alarm(
        id=new_id("alm", gate.now), flow=flow, monitor=INTEGRITY, severity="critical",
        state=FIRING, opened_at=now, last_seen_at=now, notified_at=now, runs=1, suppressed=0,
        clean_runs=0, summary=f"the store disagrees with the ledger: {problem}",
        evidence={"problem": problem}, actions=[held], resolved_at=None, resolved_by=None,
        resolve_reason=None, record_id=record_id,
    )  # fmt: skip
    conn.execute(alarms.insert().values(**alarm.row()))
    raised = AlarmRaised(
        alarm=alarm.id, monitor=INTEGRITY, severity=alarm.severity, summary=alarm.summary,
        evidence=alarm.evidence, actions=alarm.actions,
    )  # fmt: skip
    append_in(conn, [pending(raised, flow, gate.now, record_id)], gate)
    return Notice("alarm_raised", alarm, False, alarm.actions)


# ---- freshness: a knowledge collection's source folder not synced within its limit ------

FRESHNESS = "freshness"  # the monitor name of a freshness alarm
COLLECTION_SUBJECT = "collection:"  # an alarm's subject (``flow``) when it is a collection
_SUBJECT_CHARS = 64  # the width of alarms.flow


def collection_subject(name: str) -> str:
    """The subject an alarm about a knowledge collection names in place of a flow,
    ``collection:<name>``: no flow name has a colon, so the two never meet. The column
    holds 64 characters: a longer name is cut and told apart by its hash (the alarm's
    evidence names the collection in full)."""
    subject = f"{COLLECTION_SUBJECT}{name}"
    if len(subject) <= _SUBJECT_CHARS:
        return subject
    digest = hashlib.sha256(name.encode("utf-8")).hexdigest()[:8]
    return f"{subject[: _SUBJECT_CHARS - 9]}~{digest}"


def collection_of(alarm: Alarm) -> str | None:
    """The knowledge collection an alarm is about, or ``None`` for a flow's alarm."""
    if not alarm.flow.startswith(COLLECTION_SUBJECT):
        return None
    return str(alarm.evidence["collection"])


def freshness_firing_in(conn: Connection) -> dict[str, Alarm]:
    """The firing freshness alarm of every collection that has one, by collection."""
    rows = conn.execute(
        select(alarms).where(alarms.c.monitor == FRESHNESS, alarms.c.state == FIRING)
    )
    found = [alarm_row(r._mapping) for r in rows]
    return {str(collection_of(a)): a for a in found}


def settle_freshness_in(
    conn: Connection, gate: WindowGate, stale: Mapping[str, dict[str, Any]]
) -> list[Notice]:
    """Raise a warning for each stale collection that has none firing, and resolve those
    of collections synced within their limit again (or whose limit or folder is gone)."""
    notices = []
    firing = freshness_firing_in(conn)
    for name in sorted(set(stale) - set(firing)):
        notices.append(_raise_freshness_in(conn, gate, name, stale[name]))
    for name in sorted(set(firing) - set(stale)):
        why = "the source folder was synced within its limit"
        notices.append(_resolve_in(conn, gate, firing[name], "keel", why))
    return notices


def _raise_freshness_in(
    conn: Connection, gate: WindowGate, name: str, evidence: dict[str, Any]
) -> Notice:
    now = iso_time(gate.now)
    record_id = new_id("evt", gate.now)
    synced = evidence["last_synced_at"]
    alarm = Alarm(
        id=new_id("alm", gate.now), flow=collection_subject(name), monitor=FRESHNESS,
        severity="warning", state=FIRING, opened_at=now, last_seen_at=now, notified_at=now,
        runs=1, suppressed=0, clean_runs=0,
        summary=f"collection '{name}': its source folder was "
        + (f"last synced at {synced}" if synced else "never synced")
        + f", more than {evidence['sync_limit_s']:g} s ago",
        evidence=evidence, actions=[], resolved_at=None, resolved_by=None,
        resolve_reason=None, record_id=record_id,
    )  # fmt: skip
    conn.execute(alarms.insert().values(**alarm.row()))
    raised = AlarmRaised(
        alarm=alarm.id, monitor=FRESHNESS, severity=alarm.severity, summary=alarm.summary,
        evidence=alarm.evidence, actions=alarm.actions,
    )  # fmt: skip
    # the ledger entry names the subject where a flow's names the flow: deep verification
    # rebuilds the alarms table from it
    append_in(conn, [pending(raised, alarm.flow, gate.now, record_id)], gate)
    return Notice("alarm_raised", alarm)
