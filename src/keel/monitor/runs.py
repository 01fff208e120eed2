"""Monitor runs, on demand and on the flow's schedule, and what they leave behind.

A run reads the flow's current window and the baseline before it (``monitoring.window``,
``monitoring.baseline``), judges every watched monitor (``keel.monitor.monitors``), and in
one transaction records the run and opens, updates or resolves alarms, the governor acting
on them (``keel.monitor.alarms``). Only after the commit are notices logged and sent to the
flow's webhooks, and retraining requests delivered.

Scheduled runs end on a multiple of ``monitoring.every`` since the epoch; the run of each
period claims its slot in ``monitor_runs``, so any number of server workers run each
period once. A window with too few decisions is a ``skipped`` run (with the reason), a
crash a ``failed`` one: both are recorded, logged and counted, never silent.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select, update
from sqlalchemy.exc import IntegrityError

from keel.context import Context
from keel.errors import InputError, KeelError, NotFoundError
from keel.flows.monitoring import DRIFT, MonitoringSpec
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate
from keel.monitor import alarms as alarm_life
from keel.monitor.deliver import post, run_command
from keel.monitor.monitors import Limits, look_limits, run_monitor, window_tables
from keel.monitor.windows import Window
from keel.reasons import required_reason
from keel.security.roles import Permission, Principal, flows_for, visible_to
from keel.store.schema import alarms, monitor_runs
from keel.telemetry import log

SCHEDULER = "keel-scheduler"
STATES = ("firing", "resolved")


class Monitoring:
    """Monitor runs (on demand and scheduled), their alarms, and resolving alarms."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

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
        spec = self.spec(flow)  # an unknown flow is named first
        principal.require(permission, flow)
        return spec

    # ---- running -----------------------------------------------------------------------

    def run(self, flow: str, principal: Principal, until: float | None = None) -> dict[str, Any]:
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

    def run_due(self) -> list[dict[str, Any]]:
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
    ) -> dict[str, Any] | None:
        ctx = self._ctx
        spec = self.spec(flow)
        current, baseline = self.windows(flow, until)
        row = {
            "id": new_id("mon", ctx.clock()),
            "flow": flow,
            "slot": slot,
            "trigger": trigger,
            "requested_by": by,
            "started_at": iso_time(ctx.clock()),
            "state": "running",
            "current_since": current.since,
            "current_until": current.until,
            "baseline_since": baseline.since,
        }
        try:
            with ctx.db.write() as conn:
                conn.execute(monitor_runs.insert().values(**row))
        except IntegrityError:
            return None  # another worker claimed this period
        try:
            result = run_monitor(ctx, flow, current, baseline, Limits.of(spec))
        except InputError as refused:
            if "window" in refused.detail:  # too little traffic to judge: not a fault
                return self._finish(row, "skipped", note=refused.message)
            self._finish(row, "failed", note=refused.message)
            raise
        except Exception as failed:
            self._finish(row, "failed", note=f"{type(failed).__name__}: {failed}")
            raise
        result["id"] = row["id"]
        evidence = _evidence(result)

        def work(conn: Connection, gate: WindowGate) -> tuple[list[alarm_life.Notice], list[str]]:
            notices, suppressed = alarm_life.settle_in(conn, gate, flow, spec, result, evidence)
            conn.execute(
                update(monitor_runs)
                .where(monitor_runs.c.id == row["id"])
                .values(
                    state="judged",
                    finished_at=iso_time(gate.now),
                    breaches=json.dumps(result["breaches"]),
                    result=json.dumps(result, default=str),
                )
            )
            return notices, suppressed

        try:
            notices, suppressed = ctx.writer.transact(work)
        except KeelError as failed:
            self._finish(row, "failed", note=str(failed))
            raise
        if any(n.actions for n in notices):
            ctx.registry.refresh(force=True)  # the governor's acts hold from the next decision
        ctx.metrics.monitor_runs.labels(flow, "judged").inc()
        for monitor in suppressed:
            ctx.metrics.alarms_suppressed.labels(flow, monitor).inc()
        deliveries = self._deliver(flow, spec, notices)
        run = {**row, "state": "judged", "breaches": result["breaches"], "result": result}
        run["alarms"] = [
            {"kind": n.kind, **{k: n.alarm[k] for k in ("id", "monitor", "severity", "summary")},
             "actions": n.actions}
            for n in notices
        ]  # fmt: skip
        run["deliveries"] = deliveries
        return run

    def _finish(self, row: dict[str, Any], state: str, note: str) -> dict[str, Any]:
        ctx = self._ctx
        done = {**row, "state": state, "note": note, "finished_at": iso_time(ctx.clock())}
        with ctx.db.write() as conn:
            conn.execute(
                update(monitor_runs)
                .where(monitor_runs.c.id == row["id"])
                .values(state=state, note=note, finished_at=done["finished_at"])
            )
        ctx.metrics.monitor_runs.labels(row["flow"], state).inc()
        log.warning("monitor run %s of flow %s %s: %s", row["id"], row["flow"], state, note)
        return {**done, "breaches": [], "result": None}

    # ---- telling people ----------------------------------------------------------------

    def _deliver(
        self, flow: str, spec: MonitoringSpec, notices: list[alarm_life.Notice]
    ) -> list[dict[str, Any]]:
        ctx = self._ctx
        environ = ctx.settings.environ
        runtime = ctx.registry.runtime_of(flow)
        out: list[dict[str, Any]] = []

        def sent(alarm_id: str, kind: str, failure: str, result: dict[str, Any]) -> None:
            out.append({"alarm": alarm_id, "kind": kind, **result})
            if not result["ok"]:
                ctx.metrics.delivery_failures.labels(flow, failure).inc()

        for notice in notices:
            alarm = notice.alarm
            if notice.kind == "alarm_raised":
                ctx.metrics.alarms.labels(flow, alarm["monitor"], alarm["severity"]).inc()
            for action in notice.actions:
                ctx.metrics.governor_actions.labels(flow, action["action"]).inc()
            say = log.info if notice.kind == "alarm_resolved" else log.warning
            say("%s: flow=%s alarm=%s monitor=%s severity=%s %s actions=%s", notice.kind, flow,
                alarm["id"], alarm["monitor"], alarm["severity"], alarm["summary"],
                [a["action"] for a in notice.actions])  # fmt: skip
            payload = {
                "kind": notice.kind,
                "flow": flow,
                "owner": runtime.flow.owner.email,
                "alarm": {k: alarm[k] for k in ("id", "monitor", "severity", "state",
                                                "summary", "opened_at", "evidence")},
                "actions": notice.actions,
                "sent_at": iso_time(ctx.clock()),
            }  # fmt: skip
            for hook in spec.notify:
                sent(alarm["id"], notice.kind, "webhook", post(hook, payload, environ))
            if notice.retrain and spec.retrain is not None:
                request = {**payload, "kind": "retraining_requested",
                           "models": {s: m.version for s, m in runtime.models.items()}}  # fmt: skip
                if spec.retrain.webhook is not None:
                    answer = post(spec.retrain.webhook, request, environ)
                    sent(alarm["id"], "retrain", "retrain", answer)
                if spec.retrain.command:
                    ran = run_command(spec.retrain.command, request,
                                      ctx.settings.project_dir, environ)  # fmt: skip
                    sent(alarm["id"], "retrain", "retrain", ran)
        return out

    # ---- reading and resolving -----------------------------------------------------------

    def runs(self, flow: str, principal: Principal, limit: int = 20) -> list[dict[str, Any]]:
        """The flow's recent monitor runs, newest first, with every figure they computed."""
        self._readable(flow, principal)
        with self._ctx.db.read() as conn:
            rows = conn.execute(
                select(monitor_runs)
                .where(monitor_runs.c.flow == flow)
                .order_by(monitor_runs.c.started_at.desc())
                .limit(limit)
            ).fetchall()
        out = []
        for r in rows:
            run = dict(r._mapping)
            run["breaches"] = json.loads(run["breaches"]) if run["breaches"] else []
            run["result"] = json.loads(run["result"]) if run["result"] else None
            out.append(run)
        return out

    def alarms(
        self,
        principal: Principal,
        flow: str | None = None,
        state: str | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Alarms, newest first: of ``flow``, or of every flow the caller reads; in one state."""
        if state is not None and state not in STATES:
            raise InputError(
                f"unknown alarm state '{state}' (one of {', '.join(STATES)})", {"state": state}
            )
        if flow is not None:
            self.spec(flow)  # an unknown flow is named
        flows = flows_for(principal, Permission.READ_FLOWS, flow, self._ctx.registry.flows)
        query = select(alarms).order_by(alarms.c.opened_at.desc()).limit(limit)
        query = query.where(alarms.c.flow.in_(flows))
        if state is not None:
            query = query.where(alarms.c.state == state)
        with self._ctx.db.read() as conn:
            return [alarm_life.alarm_row(r) for r in conn.execute(query)]

    def alarm(self, alarm_id: str, principal: Principal) -> dict[str, Any]:
        """One alarm with its evidence and what the governor did (an alarm on a flow the
        caller may not read does not exist for it)."""
        with self._ctx.db.read() as conn:
            found = conn.execute(select(alarms).where(alarms.c.id == alarm_id)).first()
        if found is None:
            raise NotFoundError(f"no alarm with id '{alarm_id}'", {"alarm_id": alarm_id})
        alarm = alarm_life.alarm_row(found)
        visible_to(principal, Permission.READ_FLOWS, alarm["flow"], "alarm", alarm_id)
        return alarm

    def resolve(self, alarm_id: str, principal: Principal, reason: str) -> dict[str, Any]:
        """Resolve a firing alarm by hand, with a reason (the flow's holds and autonomy
        stay as the governor left them)."""
        flow = self.alarm(alarm_id, principal)["flow"]
        actor = principal.acting(Permission.CHANGE_AUTONOMY, flow)
        reason = required_reason(reason, "resolving an alarm")
        notice = alarm_life.resolve(self._ctx, alarm_id, actor.id, reason)
        if flow in self._ctx.registry.flows:
            self._deliver(flow, self.spec(flow), [notice])
        return notice.alarm


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
    return out
