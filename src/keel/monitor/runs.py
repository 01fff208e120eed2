"""Monitor runs, on demand and on the flow's schedule, and what they leave behind.

A run reads the flow's current window and the baseline before it (``monitoring.window``,
``monitoring.baseline``), judges every watched monitor (``keel.monitor.monitors``), and in
one transaction records the run and opens, updates or resolves alarms, the governor acting
on them (``keel.monitor.alarms``), and puts the notices for the flow's webhooks and the
retraining requests in the delivery outbox (``keel.monitor.outbox``). After the commit
they are logged and tried once; the outbox tries failed ones again on its schedule.

Scheduled runs end on a multiple of ``monitoring.every`` since the epoch; the run of each
period claims its slot in ``monitor_runs``, so any number of server workers run each
period once. A window with too few decisions is a ``skipped`` run (with the reason), a
crash a ``failed`` one: both are recorded, logged and counted, never silent.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, RowMapping, select, update
from sqlalchemy.exc import IntegrityError

from keel.context import Context
from keel.errors import InputError, KeelError, NotFoundError
from keel.flows.monitoring import DRIFT, RETRAIN_COMMAND, MonitoringSpec
from keel.knowledge import collections as colls
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate
from keel.monitor import alarms as alarm_life
from keel.monitor import outbox
from keel.monitor.freshness import stale_collections
from keel.monitor.monitors import Limits, look_limits, run_monitor, window_tables
from keel.monitor.performance import performance_evidence
from keel.monitor.windows import Window
from keel.reasons import required_reason
from keel.security.roles import Permission, Principal, flows_for, visible_to
from keel.store.schema import alarms, monitor_runs
from keel.telemetry import log

SCHEDULER = "keel-scheduler"
STATES = ("firing", "resolved")


@dataclass(frozen=True)
class RunAlarm:
    """What a run did to one alarm (raised, repeated, escalated or resolved it), and what
    the governor did about it."""

    kind: str  # alarm_raised | alarm_repeated | alarm_escalated | alarm_resolved
    id: str
    monitor: str
    severity: str
    summary: str
    actions: list[dict[str, Any]]

    @classmethod
    def of(cls, notice: alarm_life.Notice) -> RunAlarm:
        alarm = notice.alarm
        return cls(notice.kind, alarm.id, alarm.monitor, alarm.severity, alarm.summary,
                   notice.actions)  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "monitor": self.monitor,
                "severity": self.severity, "summary": self.summary,
                "actions": self.actions}  # fmt: skip


@dataclass(frozen=True)
class MonitorRun:
    """One monitor run of a flow (a ``monitor_runs`` row, its figures parsed).

    A run judged by this call also carries the alarms it moved and the deliveries of their
    notices after a first try (``alarms``, ``deliveries``); one read back, skipped or failed
    has ``None`` there."""

    id: str
    flow: str
    slot: int | None  # scheduled runs: floor(epoch seconds / every)
    trigger: str  # schedule | on_demand
    requested_by: str
    started_at: str
    finished_at: str | None
    state: str  # running | judged | skipped | failed
    current_since: str
    current_until: str
    baseline_since: str
    breaches: list[str]  # the monitors that breached
    result: dict[str, Any] | None  # every figure the run computed (``run_monitor``)
    note: str | None  # why a run was skipped or failed
    alarms: list[RunAlarm] | None = None
    deliveries: list[dict[str, Any]] | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> MonitorRun:
        """The run of a ``monitor_runs`` row."""
        return cls(
            row["id"], row["flow"], row["slot"], row["trigger"], row["requested_by"],
            row["started_at"], row["finished_at"], row["state"], row["current_since"],
            row["current_until"], row["baseline_since"],
            json.loads(row["breaches"]) if row["breaches"] else [],
            json.loads(row["result"]) if row["result"] else None,
            row["note"],
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON. A run judged by this call gives its alarms and deliveries in
        place of ``finished_at`` and ``note`` (the shape the API has always answered)."""
        out: dict[str, Any] = {
            "id": self.id,
            "flow": self.flow,
            "slot": self.slot,
            "trigger": self.trigger,
            "requested_by": self.requested_by,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "state": self.state,
            "current_since": self.current_since,
            "current_until": self.current_until,
            "baseline_since": self.baseline_since,
            "breaches": self.breaches,
            "result": self.result,
            "note": self.note,
        }
        if self.alarms is not None:
            del out["finished_at"], out["note"]
            out["alarms"] = [a.to_dict() for a in self.alarms]
            out["deliveries"] = self.deliveries
        return out


class Monitoring:
    """Monitor runs (on demand and scheduled), their alarms, and resolving alarms."""

    def __init__(self, ctx: Context, deliveries: outbox.Deliveries) -> None:
        self._ctx = ctx
        self._deliveries = deliveries

    def spec(self, flow: str) -> MonitoringSpec:
        return self._ctx.registry.current(flow).flow.monitoring

    def windows(
        self,
        flow: str,
        until: float,
        window_s: float | None = None,
        baseline_s: float | None = None,
    ) -> tuple[Window, Window]:
        """The current window ending at ``until`` and the baseline right before it, of the
        flow's lengths unless given."""
        spec = self.spec(flow)
        since = until - (window_s or spec.window_s)
        current = Window(iso_time(since), iso_time(until))
        before = baseline_s or spec.baseline_s
        return current, Window(iso_time(since - before), current.since)

    # ---- looking (nothing recorded) ----------------------------------------------------

    def look(
        self,
        flow: str,
        principal: Principal,
        until: float | None = None,
        window_s: float | None = None,
        baseline_s: float | None = None,
        max_change: float | None = None,
        max_ratio: float | None = None,
        methods: list[str] | None = None,
    ) -> dict[str, Any]:
        """The flow's drift and behaviour in its last window against the baseline before it,
        judged by its monitoring section or by the limits given; records nothing. Needs
        ``read_decisions`` on the flow (the windows hold its decisions)."""
        spec = self._readable(flow, principal, Permission.READ_DECISIONS)
        end = self._ctx.clock() if until is None else until
        current, baseline = self.windows(flow, end, window_s, baseline_s)
        limits = look_limits(spec, max_change, max_ratio)
        return run_monitor(self._ctx, flow, current, baseline, limits, methods)

    def tables(
        self,
        flow: str,
        principal: Principal,
        until: float | None = None,
        window_s: float | None = None,
        baseline_s: float | None = None,
    ) -> tuple[Window, Window, dict[str, Any], dict[str, Any]]:
        """The flow's current window and the baseline before it, with their drift columns
        (inputs, signal scores, action): ``(current, baseline, baseline table, current
        table)``. Needs ``read_decisions`` on the flow."""
        self._readable(flow, principal, Permission.READ_DECISIONS)
        end = self._ctx.clock() if until is None else until
        current, baseline = self.windows(flow, end, window_s, baseline_s)
        before, now = window_tables(self._ctx, flow, current, baseline)
        return current, baseline, before, now

    def _readable(
        self, flow: str, principal: Principal, permission: Permission = Permission.READ_FLOWS
    ) -> MonitoringSpec:
        return self._ctx.registry.permitted(flow, principal, permission).flow.monitoring

    # ---- running -----------------------------------------------------------------------

    def run(self, flow: str, principal: Principal, until: float | None = None) -> MonitorRun:
        """Run the flow's monitors now (alarms and governor included) and return the run.
        Needs ``change_autonomy``: a run may raise alarms the governor acts on.

        A window with too few decisions gives a ``skipped`` run, returned like any other."""
        self.spec(flow)
        actor = principal.acting(Permission.CHANGE_AUTONOMY, flow)
        end = self._ctx.clock() if until is None else until
        run = self._run(flow, end, "on_demand", actor.id, None)
        if run is None:  # pragma: no cover - only scheduled runs claim slots
            raise InputError("the run was not started", {"flow": flow})
        return run

    def due(self) -> list[tuple[str, int, int]]:
        """Scheduled flows as ``(flow, slot, every_s)`` whose current slot has no run."""
        now = self._ctx.clock()
        wanted = []
        for name, runtime in self._ctx.registry.flows.items():
            every = runtime.flow.monitoring.every_s
            if every is not None:
                wanted.append((name, int(now // every), every))
        if not wanted:
            return []
        with self._ctx.db.read() as conn:
            taken = {
                (r.flow, r.slot)
                for r in conn.execute(
                    select(monitor_runs.c.flow, monitor_runs.c.slot).where(
                        monitor_runs.c.slot.in_([slot for _, slot, _ in wanted])
                    )
                )
            }
        return [w for w in wanted if (w[0], w[1]) not in taken]

    def run_due(self) -> list[MonitorRun]:
        """Run every scheduled flow whose period has not been run; returns the runs made."""
        done = []
        for flow, slot, every in self.due():
            try:
                run = self._run(flow, float(slot * every), "schedule", SCHEDULER, slot)
            except Exception:  # noqa: BLE001 - one flow's failure must not stop the others
                log.exception("scheduled monitor run of flow %s failed", flow)
                continue
            if run is not None:
                done.append(run)
        return done

    def _run(
        self, flow: str, until: float, trigger: str, by: str, slot: int | None
    ) -> MonitorRun | None:
        ctx = self._ctx
        spec = self.spec(flow)
        current, baseline = self.windows(flow, until)
        run = MonitorRun(
            id=new_id("mon", ctx.clock()), flow=flow, slot=slot, trigger=trigger,
            requested_by=by, started_at=iso_time(ctx.clock()), finished_at=None,
            state="running", current_since=current.since, current_until=current.until,
            baseline_since=baseline.since, breaches=[], result=None, note=None,
        )  # fmt: skip
        try:
            with ctx.db.write() as conn:
                conn.execute(
                    monitor_runs.insert().values(
                        id=run.id, flow=flow, slot=slot, trigger=trigger, requested_by=by,
                        started_at=run.started_at, state=run.state,
                        current_since=run.current_since, current_until=run.current_until,
                        baseline_since=run.baseline_since,
                    )
                )  # fmt: skip
        except IntegrityError:
            return None  # another worker claimed this period
        try:
            result = run_monitor(ctx, flow, current, baseline, Limits.of(spec))
        except InputError as refused:
            if "window" in refused.detail:  # too little traffic to judge: not a fault
                return self._finish(run, "skipped", note=refused.message)
            self._finish(run, "failed", note=refused.message)
            raise
        except Exception as failed:
            self._finish(run, "failed", note=f"{type(failed).__name__}: {failed}")
            raise
        result["id"] = run.id
        evidence = _evidence(result)
        runtime = ctx.registry.runtime_of(flow)

        def work(
            conn: Connection, gate: WindowGate
        ) -> tuple[list[alarm_life.Notice], list[str], str, list[str]]:
            notices, suppressed = alarm_life.settle_in(conn, gate, flow, spec, result, evidence)
            outgoing = _outgoing(flow, spec, runtime.flow.owner.email, runtime.models, notices)
            queued = outbox.enqueue_in(conn, gate.now, flow, outgoing)
            finished = iso_time(gate.now)
            conn.execute(
                update(monitor_runs)
                .where(monitor_runs.c.id == run.id)
                .values(
                    state="judged",
                    finished_at=finished,
                    breaches=json.dumps(result["breaches"]),
                    result=json.dumps(result, default=str),
                )
            )
            return notices, suppressed, finished, queued

        try:
            notices, suppressed, finished, queued = ctx.writer.transact(work)
        except KeelError as failed:
            self._finish(run, "failed", note=str(failed))
            raise
        if any(n.actions for n in notices):
            ctx.registry.refresh(force=True)  # the governor's acts hold from the next decision
        ctx.metrics.monitor_runs.labels(flow, "judged").inc()
        for monitor in suppressed:
            ctx.metrics.alarms_suppressed.labels(flow, monitor).inc()
        self._tell(flow, notices)
        deliveries = [d.to_dict(payload=False) for d in self._deliveries.send_now(queued)]
        return replace(
            run, finished_at=finished, state="judged", breaches=result["breaches"], result=result,
            alarms=[RunAlarm.of(n) for n in notices], deliveries=deliveries,
        )  # fmt: skip

    def check_integrity(self) -> list[RunAlarm]:
        """Raise a critical alarm for every flow the registry holds because its stored rows
        disagree with the ledger, and resolve it once they verify again (scheduled work;
        writes only when something changed)."""
        ctx = self._ctx
        registry = ctx.registry
        registry.refresh()
        problems = registry.integrity()
        ctx.metrics.integrity_held.set(len(problems))
        with ctx.db.read() as conn:
            firing = alarm_life.integrity_firing_in(conn)
        if set(firing) == set(problems):
            return []
        flows = list(registry.flows)

        def work(conn: Connection, gate: WindowGate) -> tuple[list[alarm_life.Notice], list[str]]:
            notices = alarm_life.settle_integrity_in(conn, gate, problems, flows)
            queued: list[str] = []
            for flow in flows:
                mine = [n for n in notices if n.alarm.flow == flow]
                if mine:
                    runtime = registry.runtime_of(flow)  # memory only: safe in a transaction
                    outgoing = _outgoing(flow, runtime.flow.monitoring, runtime.flow.owner.email,
                                         runtime.models, mine)  # fmt: skip
                    queued.extend(outbox.enqueue_in(conn, gate.now, flow, outgoing))
            return notices, queued

        notices, queued = ctx.writer.transact(work)
        for flow in flows:
            mine = [n for n in notices if n.alarm.flow == flow]
            if mine:
                self._tell(flow, mine)
        self._deliveries.send_now(queued)
        return [RunAlarm.of(n) for n in notices]

    def check_freshness(self) -> list[RunAlarm]:
        """Raise a warning for every knowledge collection whose source folder was not
        synced within its ``sync_limit_s`` (by the engine's clock), and resolve it once a
        sync brings it within again (scheduled work; writes only when something changed).
        The alarm's subject is ``collection:<name>``; it has no webhooks of a flow to
        notify, so it is counted, logged, recorded in the ledger and listed."""
        ctx = self._ctx
        with ctx.db.read() as conn:
            stale = stale_collections(conn, ctx.clock())
            firing = alarm_life.freshness_firing_in(conn)
        if set(firing) == set(stale):
            return []

        def work(conn: Connection, gate: WindowGate) -> list[alarm_life.Notice]:
            return alarm_life.settle_freshness_in(conn, gate, stale_collections(conn, gate.now))

        notices = ctx.writer.transact(work)
        for notice in notices:
            self._tell(notice.alarm.flow, [notice])
        return [RunAlarm.of(n) for n in notices]

    def _finish(self, run: MonitorRun, state: str, note: str) -> MonitorRun:
        ctx = self._ctx
        done = replace(run, state=state, note=note, finished_at=iso_time(ctx.clock()))
        with ctx.db.write() as conn:
            conn.execute(
                update(monitor_runs)
                .where(monitor_runs.c.id == run.id)
                .values(state=state, note=note, finished_at=done.finished_at)
            )
        ctx.metrics.monitor_runs.labels(run.flow, state).inc()
        log.warning("monitor run %s of flow %s %s: %s", run.id, run.flow, state, note)
        return done

    # ---- telling people ----------------------------------------------------------------

    def _tell(self, flow: str, notices: list[alarm_life.Notice]) -> None:
        """Count and log what a committed transaction did to alarms."""
        metrics = self._ctx.metrics
        for notice in notices:
            alarm = notice.alarm
            if notice.kind == "alarm_raised":
                metrics.alarms.labels(flow, alarm.monitor, alarm.severity).inc()
            for action in notice.actions:
                metrics.governor_actions.labels(flow, action["action"]).inc()
            say = log.info if notice.kind == "alarm_resolved" else log.warning
            say("%s: flow=%s alarm=%s monitor=%s severity=%s %s actions=%s", notice.kind, flow,
                alarm.id, alarm.monitor, alarm.severity, alarm.summary,
                [a["action"] for a in notice.actions])  # fmt: skip

    # ---- reading and resolving -----------------------------------------------------------

    def runs(self, flow: str, principal: Principal, limit: int = 20) -> list[MonitorRun]:
        """The flow's recent monitor runs, newest first, with every figure they computed."""
        self._readable(flow, principal)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(monitor_runs)
                .where(monitor_runs.c.flow == flow)
                .order_by(monitor_runs.c.started_at.desc())
                .limit(limit)
            ).fetchall()
        return [MonitorRun.of(r._mapping) for r in rows]

    def alarms(
        self,
        principal: Principal,
        flow: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[alarm_life.Alarm]:
        """Alarms, newest first: of ``flow``, or of every flow the caller reads; in one state."""
        if state is not None and state not in STATES:
            raise InputError(
                f"unknown alarm state '{state}' (one of {', '.join(STATES)})", {"state": state}
            )
        if flow is not None:
            self.spec(flow)  # an unknown flow is named
        subjects = flows_for(principal, Permission.READ_FLOWS, flow, self._ctx.registry.flows)
        query = select(alarms).order_by(alarms.c.opened_at.desc()).limit(limit)
        if state is not None:
            query = query.where(alarms.c.state == state)
        with self._ctx.db.read() as conn:
            if flow is None:  # and the collections whose curators may see their alarms
                subjects += [
                    alarm_life.collection_subject(name)
                    for name in colls.names(conn)
                    if principal.can(Permission.CURATE_KNOWLEDGE, collection=name)
                ]
            query = query.where(alarms.c.flow.in_(subjects))
            return [alarm_life.alarm_row(r._mapping) for r in conn.execute(query)]

    def alarm(self, alarm_id: str, principal: Principal) -> alarm_life.Alarm:
        """One alarm with its evidence and what the governor did (an alarm on a flow the
        caller may not read does not exist for it)."""
        with self._ctx.db.read() as conn:
            found = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()
        if found is None:
            raise NotFoundError(f"no alarm with id '{alarm_id}'", {"alarm_id": alarm_id})
        alarm = alarm_life.alarm_row(found._mapping)
        collection = alarm_life.collection_of(alarm)
        if collection is None:
            visible_to(principal, Permission.READ_FLOWS, alarm.flow, "alarm", alarm_id)
        elif not principal.can(Permission.CURATE_KNOWLEDGE, collection=collection):
            raise NotFoundError(f"no alarm with id '{alarm_id}'", {"alarm_id": alarm_id})
        return alarm

    def resolve(self, alarm_id: str, principal: Principal, reason: str) -> alarm_life.Alarm:
        """Resolve a firing alarm by hand, with a reason (the flow's holds and autonomy
        stay as the governor left them)."""
        found = self.alarm(alarm_id, principal)
        flow, collection = found.flow, alarm_life.collection_of(found)
        actor = (
            principal.acting(Permission.CHANGE_AUTONOMY, flow)
            if collection is None
            else principal.acting(Permission.MANAGE_COLLECTION, collection=collection)
        )
        reason = required_reason(reason, "resolving an alarm")
        runtime = self._ctx.registry.flows.get(flow)
        queued: list[str] = []

        def enqueue(conn: Connection, gate: WindowGate, notice: alarm_life.Notice) -> None:
            if runtime is not None:  # a flow gone from the project has nobody to tell
                spec, owner = runtime.flow.monitoring, runtime.flow.owner.email
                outgoing = _outgoing(flow, spec, owner, runtime.models, [notice])
                queued.extend(outbox.enqueue_in(conn, gate.now, flow, outgoing))

        notice = alarm_life.resolve(self._ctx, alarm_id, actor, reason, enqueue)
        self._tell(flow, [notice])
        self._deliveries.send_now(queued)
        return notice.alarm


def _outgoing(
    flow: str,
    spec: MonitoringSpec,
    owner: str,
    models: Mapping[str, Any],
    notices: list[alarm_life.Notice],
) -> list[outbox.Outgoing]:
    """The notices for each of the flow's webhooks, and the retraining requests, to deliver.

    The payload holds the alarm's figures, never a case's values; the outbox adds the
    delivery's id and the time it is sent."""
    out: list[outbox.Outgoing] = []
    for notice in notices:
        alarm = notice.alarm
        payload = {
            "kind": notice.kind,
            "flow": flow,
            "owner": owner,
            "alarm": {"id": alarm.id, "monitor": alarm.monitor, "severity": alarm.severity,
                      "state": alarm.state, "summary": alarm.summary,
                      "opened_at": alarm.opened_at, "evidence": alarm.evidence},
            "actions": notice.actions,
        }  # fmt: skip
        out.extend(outbox.Outgoing(outbox.ALARM_NOTICE, hook.name, alarm.id, payload)
                   for hook in spec.notify)  # fmt: skip
        if notice.retrain and spec.retrain is not None:
            request = {**payload, "kind": "retraining_requested",
                       "models": {s: m.version for s, m in models.items()}}  # fmt: skip
            targets = [spec.retrain.webhook.name] if spec.retrain.webhook is not None else []
            targets += [RETRAIN_COMMAND] if spec.retrain.command else []
            out.extend(outbox.Outgoing(outbox.RETRAINING_REQUEST, target, alarm.id, request)
                       for target in targets)  # fmt: skip
    return out


def _evidence(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Per monitor, the figures an alarm keeps (windows, values, limit)."""
    windows = {
        "current": {k: result["current"][k] for k in ("since", "until", "decisions")},
        "baseline": {k: result["baseline"][k] for k in ("since", "until", "decisions")},
    }
    out: dict[str, dict[str, Any]] = {}
    for check in result["behaviour"]:
        out[check["figure"]] = {
            "windows": windows,
            **{k: check[k] for k in ("baseline", "current", "change", "limit", "severity")},
        }
    if result["drift_check"] is not None:
        drifted = result["drift_check"]["drifted"]
        columns = {}
        for name in drifted:
            entry = result["drift"]["columns"][name]
            chosen = next(s for s in entry["statistics"] if s["method"] == entry["method"])
            columns[name] = {k: chosen.get(k) for k in ("method", "value", "p_value",
                                                        "threshold")}  # fmt: skip
        out[DRIFT] = {"windows": windows, "drifted": drifted, "columns": columns,
                      "limit": result["drift_check"]["min_columns"]}  # fmt: skip
    if result.get("fairness") is not None:
        out["fairness"] = {"windows": windows, **result["fairness"]}
    out.update(performance_evidence(result))
    return out
