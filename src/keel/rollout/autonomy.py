"""Earned autonomy: a flow's autonomy level goes up only with evidence and an approval.

The flow file seeds the level. After that:

- **lowering** (to any lower level) is always allowed to those who may change autonomy
  (owner, approver, admin), takes effect at once and is recorded;
- **raising** needs evidence criteria from the flow's ``earned_autonomy`` section for the
  target level — measured over the trailing window from the flow's own record (resolved
  reviews, agreement, guardrail hits, outcome accuracy). A request whose criteria are not
  met is refused with the list of unmet ones; one whose criteria are met waits for an
  approver who is another person than the requester (whatever key or token either holds),
  and the criteria are checked again when approved;
- **restoring** what the governor took away is a raise whose evidence is the resolution
  of the alarm that caused the lowering (``restore=ALARM_ID``): only to the level the
  governor lowered the flow from, only for its most recent governor lowering not restored
  yet, only while no alarm on the flow fires, and approved by a person who neither
  requested it nor resolved the alarm. A flow with no ``earned_autonomy`` criteria is not
  trapped at the level an alarm left it at.

Each change is an ``autonomy_changed`` ledger event (with the evidence for raises), each
request an ``autonomy_requested`` one. Every decision records the level it was made at.
Other processes follow a change within a second.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select, update

from keel.context import Context
from keel.errors import ConflictError, InputError, IntegrityError, NotFoundError
from keel.events import AutonomyChanged, AutonomyRequested, pending
from keel.flows import Autonomy, Criteria
from keel.ledger import anchor
from keel.ledger.anchor import refused
from keel.ledger.evidence import check_evidence
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.reasons import required_reason
from keel.review.trust import trust_metrics
from keel.rollout.results import (
    AutonomyChange,
    AutonomyRequest,
    AutonomyRequestResult,
    AutonomyState,
)
from keel.runtime import current_level
from keel.security.persons import refuse_same_person
from keel.security.roles import Permission, Principal, visible_to
from keel.store.schema import alarms, autonomy_changes, autonomy_requests, ledger

GOVERNOR = "keel-governor"  # the principal id the governor's changes are recorded under
ORDER = [a.value for a in Autonomy]  # lowest to highest


def _level(text: str) -> str:
    if text not in ORDER:
        raise InputError(
            f"unknown autonomy level '{text}' (levels, lowest first: {', '.join(ORDER)})",
            {"field": "level"},
        )
    return text


class AutonomyControl:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    # ---- reading ---------------------------------------------------------------------

    def show(self, flow: str, principal: Principal) -> AutonomyState:
        """The level in force, its history (oldest first) and open raise requests."""
        runtime = self._ctx.registry.permitted(flow, principal)
        with self._ctx.db.read() as conn:
            history = tuple(
                AutonomyChange.from_row(dict(r._mapping))
                for r in conn.execute(
                    select(autonomy_changes)
                    .where(autonomy_changes.c.flow == flow)
                    .order_by(autonomy_changes.c.id)
                )
            )
            requests = tuple(
                AutonomyRequest.from_row(dict(r._mapping))
                for r in conn.execute(
                    select(autonomy_requests).where(
                        autonomy_requests.c.flow == flow, autonomy_requests.c.state == "open"
                    )
                )
            )
        return AutonomyState(flow, runtime.flow.autonomy.value, history, requests)

    def _flow_of(self, request_id: str) -> str:
        with self._ctx.db.read() as conn:
            flow = conn.execute(
                select(autonomy_requests.c.flow).where(autonomy_requests.c.id == request_id)
            ).scalar()
        if flow is None:
            raise NotFoundError(
                f"no autonomy request with id '{request_id}'", {"request_id": request_id}
            )
        return str(flow)

    def evidence(
        self, flow: str, level: str, principal: Principal
    ) -> tuple[dict[str, Any], list[str]]:
        """The figures raising ``flow`` to ``level`` is judged on, and the unmet criteria."""
        self._ctx.registry.permitted(flow, principal)
        return self._evidence(flow, _level(level))

    def _check_evidence(self, flow: str, level: str, now: float) -> None:
        """The reviews, outcomes and decisions the trust figures will be read from, compared
        with the ledger over the criteria's window: a raise is never judged on forged rows."""
        criteria = self._ctx.registry.current(flow).flow.earned_autonomy.get(level)
        if criteria is None:
            return  # refused for want of criteria: nothing is judged
        since, until = iso_time(now - criteria.over_s), iso_time(now)
        with self._ctx.db.snapshot() as conn:
            bad = check_evidence(conn, flow, since, until)
        if bad is not None:
            self._ctx.metrics.integrity_refusals.labels(flow, "autonomy_approval").inc()
            raise refused(
                bad.table, bad.key,
                f"the evidence for raising flow '{flow}' to '{level}' disagrees with the "
                f"ledger: {bad.describe()}",
                {"flow": flow, "level": level, "mismatch": bad.to_dict()},
            )  # fmt: skip

    def _evidence(
        self, flow: str, level: str, now: float | None = None
    ) -> tuple[dict[str, Any], list[str]]:
        criteria = self._ctx.registry.current(flow).flow.earned_autonomy.get(level)
        if criteria is None:
            listed = ", ".join(self._ctx.registry.current(flow).flow.earned_autonomy) or "none"
            return {}, [
                f"the flow defines no evidence criteria for '{level}' "
                f"(earned_autonomy lists: {listed})"
            ]
        now = self._ctx.clock() if now is None else now
        since, until = iso_time(now - criteria.over_s), iso_time(now)
        total = trust_metrics(self._ctx, flow, since, until)["total"]
        figures = {
            "since": since,
            "until": until,
            "reviewed": total["reviews_resolved"],
            "agreement": total["review_agreement"],
            "guardrail_hits": total["guardrail_hits"],
            "outcomes": total["outcomes_known"],
            "outcome_accuracy": total["outcome_accuracy"],
            "criteria": _criteria_dict(criteria),
        }
        unmet = _unmet(criteria, figures)
        with self._ctx.db.read() as conn:
            firing = conn.execute(
                select(alarms.c.id, alarms.c.monitor, alarms.c.severity).where(
                    alarms.c.flow == flow, alarms.c.state == "firing"
                )
            ).fetchall()
        figures["alarms_firing"] = [a.id for a in firing]
        unmet += [f"alarm {a.id} ({a.monitor}, {a.severity}) is firing" for a in firing]
        return figures, unmet

    # ---- acting ----------------------------------------------------------------------

    def request(
        self, flow: str, level: str, principal: Principal, reason: str, restore: str | None = None
    ) -> AutonomyRequestResult:
        """Lower at once (``applied``), or open a request to raise (``request``; refused if
        the evidence falls short). With ``restore`` (an alarm id) the raise undoes the
        governor's lowering over that alarm, and its resolution is the evidence."""
        current = self._ctx.registry.current(flow).flow.autonomy.value
        actor = principal.acting(Permission.CHANGE_AUTONOMY, flow)
        level, reason = _level(level), required_reason(reason, "an autonomy change")
        if level == current:
            raise ConflictError(
                f"flow '{flow}' is at '{level}' already", {"flow": flow, "level": level}
            )
        if restore is not None and ORDER.index(level) < ORDER.index(current):
            raise ConflictError(
                f"a restore raises flow '{flow}'; '{level}' is below its level '{current}'",
                {"flow": flow, "level": level, "restore": restore},
            )
        if ORDER.index(level) < ORDER.index(current):

            def lower(conn: Connection, gate: WindowGate) -> AutonomyChange:
                return change_level_in(
                    conn, gate, flow, level, current, "lower", actor.id, None, reason, None,
                    persons=(actor.person, None),
                )  # fmt: skip

            change = self._ctx.writer.transact(lower)
            self._ctx.registry.refresh(force=True)
            return AutonomyRequestResult(applied=change)
        if restore is None:
            evidence, unmet = self._evidence(flow, level)
        else:
            with self._ctx.db.read() as conn:
                evidence, unmet = restore_evidence(conn, flow, level, restore)
        if unmet:
            raise ConflictError(
                f"raising flow '{flow}' to '{level}' is refused: {'; '.join(unmet)}",
                {"flow": flow, "level": level, "unmet": unmet, "evidence": evidence},
            )

        def open_request(conn: Connection, gate: WindowGate) -> AutonomyRequest:
            request_id = new_id("aut", gate.now)
            row: dict[str, Any] = {
                "id": request_id,
                "flow": flow,
                "level": level,
                "state": "open",
                "requested_by": actor.id,
                "reason": reason,
                "evidence": json.dumps(evidence),
                "created_at": iso_time(gate.now),
                "decided_at": None,
                "decided_by": None,
                "requested_person": actor.person,
            }
            conn.execute(autonomy_requests.insert().values(**row))
            requested = AutonomyRequested(
                request=request_id,
                from_level=current,
                to_level=level,
                by=actor.to_dict(),
                reason=reason,
                evidence=evidence,
            )
            append_in(conn, [pending(requested, flow, gate.now)], gate)
            return AutonomyRequest(**{**row, "evidence": evidence})

        return AutonomyRequestResult(request=self._ctx.writer.transact(open_request))

    def approve(self, request_id: str, principal: Principal, reason: str) -> AutonomyChange:
        """Approve a raise (not one's own); the evidence is checked again now."""
        flow = self._flow_of(request_id)
        visible_to(principal, Permission.READ_FLOWS, flow, "autonomy request", request_id)
        approver = principal.acting(Permission.APPROVE_POLICY, flow)
        reason = required_reason(reason, "an approval")
        with self._ctx.db.read() as conn:
            found = conn.execute(
                select(autonomy_requests).where(autonomy_requests.c.id == request_id)
            ).first()
        if found is None:
            raise NotFoundError(
                f"no autonomy request with id '{request_id}'", {"request_id": request_id}
            )
        req = dict(found._mapping)
        if req["state"] != "open":
            raise ConflictError(
                f"autonomy request {request_id} was {req['state']} at {req['decided_at']}",
                {"request_id": request_id},
            )
        try:
            with self._ctx.db.read() as conn:
                _request_agrees(conn, req)  # four eyes reads its requester: vouch first
        except IntegrityError:
            self._ctx.metrics.integrity_refusals.labels(req["flow"], "autonomy_approval").inc()
            raise
        requested = req["requested_person"] or req["requested_by"]
        refuse_same_person(
            approver.person,
            approver.id,
            [requested],
            f"the person who requested autonomy raise {request_id} ({approver.person}) cannot "
            "approve it",
            {"request_id": request_id},
        )
        flow, level = req["flow"], req["level"]
        restore = json.loads(req["evidence"]).get("restore")
        if restore is not None:
            with self._ctx.db.read() as conn:
                evidence, unmet = restore_evidence(conn, flow, level, restore["alarm"])
            refuse_same_person(
                approver.person,
                approver.id,
                [restore["resolved_person"] or restore["resolved_by"]],
                f"the person who resolved alarm {restore['alarm']} ({approver.person}) cannot "
                f"approve the restore it is the evidence for ({request_id})",
                {"request_id": request_id, "alarm_id": restore["alarm"]},
            )
        else:
            now = self._ctx.clock()
            self._check_evidence(flow, level, now)
            evidence, unmet = self._evidence(flow, level, now)
        if unmet:
            raise ConflictError(
                f"raising flow '{flow}' to '{level}' is refused now: {'; '.join(unmet)}",
                {"flow": flow, "level": level, "unmet": unmet, "evidence": evidence},
            )

        def apply(conn: Connection, gate: WindowGate) -> AutonomyChange:
            state = conn.execute(
                select(autonomy_requests.c.state).where(autonomy_requests.c.id == request_id)
            ).scalar()
            if state != "open":
                raise ConflictError(f"autonomy request {request_id} is {state}", {})
            previous = current_level(conn, flow)
            conn.execute(
                update(autonomy_requests)
                .where(autonomy_requests.c.id == request_id)
                .values(state="approved", decided_at=iso_time(gate.now), decided_by=approver.id)
            )
            why = f"{req['reason']} (approved: {reason})"
            return change_level_in(
                conn, gate, flow, level, previous, "raise", req["requested_by"], approver.id,
                why, evidence, persons=(req["requested_person"], approver.person),
            )  # fmt: skip

        change = self._ctx.writer.transact(apply)
        self._ctx.registry.refresh(force=True)
        return change


def _request_agrees(conn: Connection, req: dict[str, Any]) -> None:
    """An ``autonomy_requests`` row against the ``autonomy_requested`` entry recorded with
    it (same flow and time, naming it): who asked, for which level, and why."""
    found = conn.execute(
        select(ledger.c.record_id, ledger.c.record).where(
            ledger.c.kind == "autonomy_requested",
            ledger.c.flow == req["flow"],
            ledger.c.recorded_at == req["created_at"],
        )
    )
    ids = [r.record_id for r in found if json.loads(r.record)["body"].get("request") == req["id"]]
    at = anchor.entry(conn, ids[0]) if ids else None
    if at is None:
        raise anchor.refused(
            "autonomy_requests", req["id"],
            f"no autonomy_requested entry of flow '{req['flow']}' at {req['created_at']} "
            "stands behind it",
            {"flow": req["flow"]},
        )  # fmt: skip
    by = at.body["by"]
    recorded = {"level": at.body["to"], "requested_by": by["id"],
                "requested_person": by.get("person"), "reason": at.body["reason"]}  # fmt: skip
    anchor.agree("autonomy_requests", req["id"], req, recorded, at)
    # the evidence says whether the request is a restore, and whose resolution it rests on
    evidence = {"evidence": json.loads(req["evidence"])}
    anchor.agree("autonomy_requests", req["id"], evidence, {"evidence": at.body["evidence"]}, at)


def restore_evidence(
    conn: Connection, flow: str, level: str, alarm_id: str
) -> tuple[dict[str, Any], list[str]]:
    """The evidence for restoring ``flow`` to ``level`` after the governor lowered it over
    ``alarm_id``, and what stands in the way (empty: the restore may go ahead).

    The lowering, the alarm's resolution and the restores already made are read from rows
    each checked against its ledger entry, so a restore never rests on a forged row."""
    found = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()
    if found is None or found.flow != flow:
        raise NotFoundError(
            f"flow '{flow}' has no alarm with id '{alarm_id}'", {"alarm_id": alarm_id}
        )
    alarm = found._mapping
    changes = [
        dict(r._mapping)
        for r in conn.execute(
            select(autonomy_changes)
            .where(autonomy_changes.c.flow == flow)
            .order_by(autonomy_changes.c.id)
        )
    ]
    restored = {
        json.loads(c["evidence"])["restore"]["lowered"]
        for c in changes
        if c["kind"] == "raise" and c["evidence"] and "restore" in json.loads(c["evidence"])
    }
    lowerings = [
        c for c in changes
        if c["kind"] == "lower" and c["requested_by"] == GOVERNOR
        and c["record_id"] not in restored
    ]  # fmt: skip
    if not lowerings:
        return {}, [f"flow '{flow}' has no governor lowering left to restore"]
    latest = lowerings[-1]
    lowered_by = json.loads(latest["evidence"])["alarm"]
    if lowered_by != alarm_id:
        return {}, [
            f"the most recent governor lowering of flow '{flow}' not yet restored was over "
            f"alarm {lowered_by}, not {alarm_id}"
        ]
    _vouch(conn, "autonomy_changes", latest["record_id"], latest,
           {"level": "level", "previous": "previous", "requested_by": "requested_by"})  # fmt: skip
    unmet = []
    if level != latest["previous"]:
        unmet.append(
            f"the governor lowered flow '{flow}' from '{latest['previous']}' over alarm "
            f"{alarm_id}: a restore goes back to '{latest['previous']}' only"
        )
    current = current_level(conn, flow)
    if current != latest["level"]:
        unmet.append(
            f"flow '{flow}' is at '{current}', not at '{latest['level']}' where the governor "
            "left it: it changed since"
        )
    firing = conn.execute(
        select(alarms.c.id, alarms.c.monitor, alarms.c.severity).where(
            alarms.c.flow == flow, alarms.c.state == "firing"
        )
    ).fetchall()
    unmet += [f"alarm {a.id} ({a.monitor}, {a.severity}) is firing" for a in firing]
    resolution = _resolution(conn, flow, alarm_id) if alarm["state"] == "resolved" else None
    evidence: dict[str, Any] = {
        "restore": {
            "alarm": alarm_id,
            "monitor": alarm["monitor"],
            "lowered": latest["record_id"],
            "from": latest["previous"],
            "to": latest["level"],
            "resolution": resolution.record_id if resolution else None,
            "resolved_at": alarm["resolved_at"],
            "resolved_by": alarm["resolved_by"],
            "resolved_person": resolution.body.get("by_person") if resolution else None,
            "resolve_reason": alarm["resolve_reason"],
        },
        "alarms_firing": [a.id for a in firing],
    }
    return evidence, unmet


def _resolution(conn: Connection, flow: str, alarm_id: str) -> anchor.Anchor:
    """The ``alarm_resolved`` entry of ``alarm_id``, checked, and agreeing with its row."""
    found = conn.execute(
        select(ledger.c.record_id, ledger.c.record)
        .where(ledger.c.kind == "alarm_resolved", ledger.c.flow == flow)
        .order_by(ledger.c.seq)
    )
    ids = [r.record_id for r in found if json.loads(r.record)["body"].get("alarm") == alarm_id]
    at = anchor.entry(conn, ids[-1]) if ids else None
    if at is None:
        raise anchor.refused(
            "alarms", alarm_id, "no alarm_resolved entry stands behind its resolution",
            {"flow": flow},
        )  # fmt: skip
    row = dict(conn.execute(select(alarms).where(alarms.c.id == alarm_id)).one()._mapping)
    recorded = {"resolved_by": at.body["by"], "resolve_reason": at.body["reason"]}
    anchor.agree("alarms", alarm_id, row, recorded, at)
    return at


def _vouch(
    conn: Connection, table: str, record_id: str, row: dict[str, Any], columns: dict[str, str]
) -> None:
    """Refuse unless ``row`` agrees with its ledger entry in ``columns`` (row column: body
    field)."""
    at = anchor.entry(conn, record_id)
    if at is None:
        raise anchor.refused(table, record_id, "no ledger entry stands behind it", {})
    recorded = {column: at.body[key] for column, key in columns.items()}
    anchor.agree(table, record_id, row, recorded, at)


def lower_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    level: str,
    by: str,
    reason: str,
    evidence: dict[str, Any],
) -> AutonomyChange | None:
    """Lower ``flow`` to ``level`` inside a transaction (the governor); nothing when it is
    at that level or lower already (a flow is seeded with a level before it decides)."""
    current = current_level(conn, flow)
    if current is None or ORDER.index(level) >= ORDER.index(current):
        return None
    return change_level_in(conn, gate, flow, level, current, "lower", by, None, reason, evidence)


def change_level_in(
    conn: Connection,
    gate: WindowGate,
    flow: str,
    level: str,
    previous: str | None,
    kind: str,
    requested_by: str,
    approved_by: str | None,
    reason: str,
    evidence: dict[str, Any] | None,
    persons: tuple[str | None, str | None] = (None, None),
) -> AutonomyChange:
    """Record a level change; ``persons`` are the persons behind ``requested_by`` and
    ``approved_by`` (None for Keel's own acts: seeding, the governor)."""
    record_id = new_id("evt", gate.now)
    at = iso_time(gate.now)
    row: dict[str, Any] = {
        "flow": flow,
        "level": level,
        "previous": previous,
        "kind": kind,
        "requested_by": requested_by,
        "approved_by": approved_by,
        "changed_at": at,
        "reason": reason,
        "evidence": json.dumps(evidence) if evidence is not None else None,
        "record_id": record_id,
    }
    conn.execute(autonomy_changes.insert().values(**row))
    changed = AutonomyChanged(
        level=level,
        previous=previous,
        kind=kind,
        requested_by=requested_by,
        approved_by=approved_by,
        changed_at=at,
        reason=reason,
        evidence=evidence,
        requested_person=persons[0],
        approved_person=persons[1],
    )
    append_in(conn, [pending(changed, flow, gate.now, record_id)], gate)
    return AutonomyChange(**{**row, "evidence": evidence})


def _criteria_dict(c: Criteria) -> dict[str, Any]:
    return {
        "over_s": c.over_s,
        "min_reviewed": c.min_reviewed,
        "min_agreement": c.min_agreement,
        "max_guardrail_hits": c.max_guardrail_hits,
        "min_outcomes": c.min_outcomes,
        "min_outcome_accuracy": c.min_outcome_accuracy,
    }


def _unmet(c: Criteria, f: dict[str, Any]) -> list[str]:
    unmet = []
    days = f"in the last {c.over_s / 86400:g} days"
    if f["reviewed"] < c.min_reviewed:
        unmet.append(f"{f['reviewed']} reviewed cases {days}, at least {c.min_reviewed} needed")
    if c.min_agreement is not None and (f["agreement"] or 0.0) < c.min_agreement:
        shown = "none" if f["agreement"] is None else f"{f['agreement']:.1%}"
        unmet.append(f"agreement {shown} {days}, at least {c.min_agreement:.1%} needed")
    if c.max_guardrail_hits is not None and f["guardrail_hits"] > c.max_guardrail_hits:
        unmet.append(
            f"{f['guardrail_hits']} decisions hit a guardrail {days}, "
            f"at most {c.max_guardrail_hits} allowed"
        )
    if f["outcomes"] < c.min_outcomes:
        unmet.append(f"{f['outcomes']} outcomes known {days}, at least {c.min_outcomes} needed")
    if (
        c.min_outcome_accuracy is not None
        and (f["outcome_accuracy"] or 0.0) < c.min_outcome_accuracy
    ):
        shown = "none" if f["outcome_accuracy"] is None else f"{f['outcome_accuracy']:.1%}"
        unmet.append(
            f"outcome accuracy {shown} {days}, at least {c.min_outcome_accuracy:.1%} needed"
        )
    return unmet
