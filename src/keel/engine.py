"""The engine: one open Keel project — decide, explain, what-if, and the ledger."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from functools import cached_property, partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Table, select

from keel.canonical import canonical_json
from keel.combine import Combiner
from keel.config import Settings, load_settings
from keel.decide import (
    WAITING,
    Draft,
    FlowRuntime,
    Status,
    draft,
    masked_view,
    settle_status,
)
from keel.decision import Decision, decision_from
from keel.errors import InputError, KeelError, LedgerWriteError, NotFoundError
from keel.explain.attributions import Attributions, attribute
from keel.explain.counterfactual import Counterfactual, search_counterfactuals
from keel.explain.narrative import explain_record
from keel.keys import load_data_key, load_signing_key
from keel.ledger import reader
from keel.ledger.checkpoint import Checkpoint, make_checkpoint
from keel.ledger.records import Entry, iso_time, new_id
from keel.ledger.verify import VerifyReport, verify_ledger
from keel.ledger.writer import LedgerWriter, Pending, WindowGate, append_in, event
from keel.outcomes import Outcomes
from keel.policy.guardrails import WindowState
from keel.policy.text import render
from keel.project import Project, load_project
from keel.protect import Protector, Sealed
from keel.review import Reviews, open_review_row
from keel.rollout.autonomy import AutonomyControl
from keel.rollout.canary import Rollouts, Running
from keel.rollout.changes import Changes
from keel.rollout.holds import Holds
from keel.signals.runner import SignalResult, SignalRunner, feature_row
from keel.store.database import Database, open_database
from keel.store.schema import decisions, policy_versions, protected_values, reviews
from keel.telemetry import Metrics, log

if TYPE_CHECKING:
    from keel.monitor.runs import Monitoring

MAX_SUBJECT_ID = 128


class Engine:
    """An open project. Thread-safe: decide from as many threads as you like."""

    def __init__(
        self,
        settings: Settings,
        project: Project,
        db: Database,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.project = project
        self.db = db
        self.clock = clock
        self.metrics = Metrics()
        key_id, key = load_data_key(settings.keys_dir)
        self.protector = Protector(key_id, key)
        self.runner = SignalRunner()
        self.writer = LedgerWriter(db, settings.ledger_max_batch, self._max_window_s, clock)
        # The combiner's thread commits its own batches: a hand-off would only add latency.
        self.combiner = Combiner(self.runner, self._draft, partial(self._record, here=True))
        self.reviews = Reviews(self)
        self.outcomes = Outcomes(self)
        self._register_policies()
        self.autonomy = AutonomyControl(self)
        self.holds = Holds(self)
        self.changes = Changes(self)
        self.changes.start()
        self.rollouts = Rollouts(self)
        self.rollouts.refresh(force=True)  # the store's active versions decide, not the files

    # ---- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        self.combiner.close()
        self.writer.close()
        self.runner.close()
        self.db.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @cached_property
    def monitoring(self) -> Monitoring:
        """Monitor runs, alarms and the governor (loaded on first use: NumPy and SciPy)."""
        from keel.monitor.runs import Monitoring  # noqa: PLC0415

        return Monitoring(self)

    @property
    def flows(self) -> dict[str, FlowRuntime]:
        return self.project.flows

    def _max_window_s(self) -> int:
        windows = [
            w.window_s for rt in self.flows.values() for w in rt.policy.policy.guardrails.windows
        ]
        windows += [
            rt.flow.review.capacity.period_s
            for rt in self.flows.values()
            if rt.flow.review.capacity is not None
        ]
        return max(windows, default=1)

    def _register_policies(self) -> None:
        """Store each active policy version once, with a ledger event, before any decision."""
        for runtime in self.flows.values():
            policy = runtime.policy.policy
            with self.db.write() as conn:
                exists = conn.execute(
                    select(policy_versions.c.version).where(
                        policy_versions.c.version == policy.version
                    )
                ).first()
                if exists:
                    continue
                now = self.clock()
                row = {
                    "version": policy.version,
                    "name": policy.name,
                    "document": canonical_json(policy.document),
                    "created_at": iso_time(now),
                }
                body = {
                    "policy": policy.name,
                    "version": policy.version,
                    "flow": runtime.flow.name,
                    "source": Path(policy.source).name,
                }
                rows = ((policy_versions, row),)
                registered = event("policy_registered", runtime.flow.name, body, now, rows=rows)
                append_in(conn, [registered], WindowGate(WindowState(), now))

    def runtime(self, flow: str, refresh: bool = True) -> FlowRuntime:
        """The flow as it decides now (activations elsewhere are seen within a second)."""
        if refresh:
            self.changes.refresh()
            self.rollouts.refresh()
        runtime = self.flows.get(flow)
        if runtime is None:
            known = ", ".join(sorted(self.flows)) or "none"
            raise NotFoundError(f"unknown flow '{flow}' (flows: {known})", {"flow": flow})
        return runtime

    # ---- deciding ------------------------------------------------------------------------

    def _validate(
        self, runtime: FlowRuntime, inputs: Any, subject_id: str | None
    ) -> dict[str, Any]:
        if subject_id is not None and (
            not isinstance(subject_id, str) or not 0 < len(subject_id) <= MAX_SUBJECT_ID
        ):
            raise InputError(
                f"subject_id must be a string of 1 to {MAX_SUBJECT_ID} characters",
                {"flow": runtime.flow.name, "field": "subject_id"},
            )
        try:
            return runtime.flow.validate_input(inputs)
        except InputError:
            self.metrics.rejected.labels(runtime.flow.name, "invalid_input").inc()
            raise

    def _draft(
        self,
        runtime: FlowRuntime,
        clean: dict[str, Any],
        subject_id: str | None,
        requested_by: str | None,
        signals: SignalResult,
    ) -> Draft:
        decision_id = new_id("dec", self.clock())
        stored, sealed = self.protector.split(decision_id, clean, runtime.flow.protected_fields())
        rollout = self.rollouts.running.get(runtime.flow.name)
        serving = runtime
        if rollout is not None and rollout.serves(subject_id):
            serving = rollout.runtime  # the canary decides this subject
        d = draft(serving, self.runner, decision_id, subject_id, clean, stored, signals=signals)
        d.sealed = sealed
        d.requested_by = requested_by
        if rollout is not None:
            d.beside = _beside(rollout, serving is rollout.runtime, self.runner, clean, signals)
        return d

    def _record(self, drafts: Sequence[Draft], here: bool = False) -> list[Decision]:
        pending = []
        for d in drafts:
            rows = ((protected_values, d.sealed.row()),) if d.sealed else ()
            pending.append(
                Pending(
                    "decision",
                    d.decision_id,
                    d.runtime.flow.name,
                    d.finalize,
                    rows,
                    derive=self._derived_rows,
                )
            )
        try:
            entries = self.writer.append(pending, here=here)
        except LedgerWriteError:
            self.metrics.ledger_failures.inc()
            log.error("ledger write failed; %d decisions were not returned", len(drafts))
            raise
        # d.body is what the ledger hashed: no need to parse the record back.
        out = [
            decision_from(entry, d.body, d.result["reason"])
            for d, entry in zip(drafts, entries, strict=True)
        ]
        self._count(out, drafts[0].started)
        return out

    def _count(self, decisions: list[Decision], started: float) -> None:
        seconds = time.perf_counter() - started
        by_flow: dict[str, list[Decision]] = {}
        for decision in decisions:  # a combined batch may hold several flows
            by_flow.setdefault(decision.flow, []).append(decision)
        for flow, group in by_flow.items():
            self.metrics.decided(flow, [(d.action, d.status) for d in group], seconds)
            for decision in group:
                if decision.failed_signals or decision.fallback or decision.guardrail_hits:
                    self._count_exceptions(flow, decision)

    def _count_exceptions(self, flow: str, decision: Decision) -> None:
        for name, cause in decision.failed_signals.items():
            self.metrics.signal_failures.labels(flow, name, cause.split(" ")[0]).inc()
        if decision.fallback:
            self.metrics.fallbacks.labels(flow, decision.fallback.split(":")[0]).inc()
            log.warning(
                "fallback taken: flow=%s decision=%s cause=%s", flow, decision.id, decision.fallback
            )
        for hit in decision.guardrail_hits:
            self.metrics.guardrail_hits.labels(flow, hit["name"], hit["on_hit"]).inc()

    def _derived_rows(
        self, entry: Entry, body: dict[str, Any]
    ) -> list[tuple[Table, dict[str, Any]]]:
        rows = [(decisions, _index_row(entry, body))]
        if body["status"] in WAITING:
            settings = self.flows[str(entry.flow)].flow.review
            rows.append((reviews, open_review_row(entry, body, settings, self.clock())))
        return rows

    def decide(
        self,
        flow: str,
        inputs: Mapping[str, Any],
        subject_id: str | None = None,
        requested_by: str | None = None,
    ) -> Decision:
        """Decide one case; it is in the ledger before this returns.

        ``requested_by`` names who asked (the API passes the caller's principal); a flow
        with four-eyes reviews keeps that principal from reviewing this decision.
        """
        return self.submit(flow, inputs, subject_id, requested_by).result()

    def submit(
        self,
        flow: str,
        inputs: Mapping[str, Any],
        subject_id: str | None = None,
        requested_by: str | None = None,
    ) -> Future[Decision]:
        """Validate one case now (raising ``InputError`` at once) and decide it in the next
        combined batch; the future resolves once the decision is in the ledger."""
        runtime = self.runtime(flow)
        clean = self._validate(runtime, inputs, subject_id)
        return self.combiner.submit(runtime, clean, subject_id, requested_by)

    def decide_many(
        self,
        flow: str,
        cases: Sequence[Mapping[str, Any]],
        subject_ids: Sequence[str | None] | None = None,
        requested_by: str | None = None,
    ) -> list[Decision]:
        """Decide a batch atomically: every case is valid and recorded, or none is."""
        runtime = self.runtime(flow)
        if subject_ids is not None and len(subject_ids) != len(cases):
            raise InputError("subject_ids must have one entry per case", {"flow": flow})
        subjects = list(subject_ids) if subject_ids is not None else [None] * len(cases)
        clean = []
        for i, case in enumerate(cases):
            try:
                clean.append(self._validate(runtime, case, subjects[i]))
            except InputError as exc:
                raise InputError(f"case {i}: {exc.message}", {**exc.detail, "index": i}) from exc
        signals = runtime.signals_many(self.runner, clean)  # one model call for the batch
        drafts = [
            self._draft(runtime, c, s, requested_by, sig)
            for c, s, sig in zip(clean, subjects, signals, strict=True)
        ]
        return self._record(drafts)

    # ---- reading ---------------------------------------------------------------------------

    def entry(self, record_id: str) -> Entry:
        return reader.entry(self.db, record_id)

    def entries(
        self, limit: int = 20, flow: str | None = None, kind: str | None = None
    ) -> list[Entry]:
        """The newest ``limit`` entries, oldest first."""
        return reader.newest(self.db, limit, flow, kind)

    def decision(self, decision_id: str) -> Decision:
        """A recorded decision as the ledger holds it (personal inputs stay masked)."""
        entry, body = self._decision_entry(decision_id)
        return decision_from(entry, body, body["reason"])

    def flow_of(self, decision_id: str) -> str:
        """The flow a decision belongs to (for authorisation before reading it)."""
        with self.db.read() as conn:
            flow = conn.execute(
                select(decisions.c.flow).where(decisions.c.id == decision_id)
            ).scalar()
        if flow is None:
            raise NotFoundError(f"no decision with id '{decision_id}'", {"id": decision_id})
        return str(flow)

    def list_decisions(
        self,
        flows: Sequence[str],
        *,
        action: str | None = None,
        status: str | None = None,
        subject_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Index rows of decisions in ``flows``, newest first, filtered; page with before_seq."""
        if not flows:
            return []
        query = select(decisions).where(decisions.c.flow.in_(list(flows)))
        for column, value in (
            (decisions.c.action, action),
            (decisions.c.status, status),
            (decisions.c.subject_id, subject_id),
        ):
            if value is not None:
                query = query.where(column == value)
        if since is not None:
            query = query.where(decisions.c.recorded_at >= since)
        if until is not None:
            query = query.where(decisions.c.recorded_at < until)
        if before_seq is not None:
            query = query.where(decisions.c.seq < before_seq)
        query = query.order_by(decisions.c.seq.desc()).limit(limit)
        with self.db.read() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _decision_entry(self, decision_id: str) -> tuple[Entry, dict[str, Any]]:
        entry = self.entry(decision_id)
        if entry.kind != "decision":
            raise NotFoundError(f"'{decision_id}' is a {entry.kind} event, not a decision")
        return entry, entry.body

    def restored_inputs(self, decision_id: str, body: Mapping[str, Any]) -> dict[str, Any]:
        with self.db.read() as conn:
            row = conn.execute(
                select(protected_values).where(protected_values.c.record_id == decision_id)
            ).first()
        sealed = Sealed(row[0], row[1], row[2], row[3]) if row else None
        return self.protector.join(decision_id, body["inputs"], sealed)

    def _policy_at(self, runtime: FlowRuntime, version: str) -> FlowRuntime:
        return self.changes.runtime_of(runtime.flow.name, version)

    # ---- explaining --------------------------------------------------------------------------

    def explain(self, decision_id: str, reveal_personal: bool = True) -> dict[str, Any]:
        """Why a decision was made: rule trace, guardrails, model attributions, in sentences.

        With ``reveal_personal=False`` (a reader without the right to see personal data),
        personal and sensitive inputs stay ``‹protected›`` everywhere in the explanation:
        the inputs, the values the rules compared, the reason and the attribution sentences.
        """
        entry, body = self._decision_entry(decision_id)
        runtime = self.runtime(entry.flow or "")
        inputs = self.restored_inputs(decision_id, body)
        at = self._policy_at(runtime, body["policy"]["version"])
        hidden = frozenset() if reveal_personal else frozenset(runtime.flow.protected_fields())
        shown = masked_view(inputs, list(hidden)) if hidden else inputs
        reason = self._reason(at, body, inputs) if not hidden else body["reason"]
        signals = {k: v for k, v in body["signals"].items() if "score" in v}
        trace = at.policy.trace_details(body["trace"], body["rule"], shown, signals)
        attributions: dict[str, Attributions] = {}
        notes = []
        for name, meta in body["signals"].items():
            model = runtime.models.get(name)
            if model is None or "score" not in meta:
                continue
            if model.version != meta["version"]:
                notes.append(f"model for {name} changed since the decision; attributions omitted")
                continue
            attributions[name] = attribute(model, feature_row(model, inputs))
        return {
            "decision": decision_from(entry, body, reason).to_dict(),
            "inputs": shown,
            "why": explain_record(runtime.flow, body, trace, reason, attributions, hidden),
            "trace": trace,
            "guardrails": body["guardrails"],
            "attributions": {k: v.to_dict(hidden) for k, v in attributions.items()},
            "notes": notes,
        }

    def _reason(
        self, runtime: FlowRuntime, body: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> str:
        policy = runtime.policy.policy
        rule = body["rule"]
        if rule == "kill_switch" and policy.guardrails.kill_switch is not None:
            return policy.guardrails.kill_switch.reason
        template = {"default": policy.default.reason, "fallback": policy.fallback.reason}.get(rule)
        if template is None:
            found = next((r for r in policy.rules if r.name == rule), None)
            template = found.reason if found else body["reason"]
        signals = {k: v for k, v in body["signals"].items() if "score" in v}
        values = {
            "input": inputs,
            "signals": signals,
            "params": policy.params,
            "value": body["value"],
        }
        return render(template, values, runtime.flow)

    def _simulate(
        self,
        runtime: FlowRuntime,
        inputs: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        signals: SignalResult | None = None,
    ) -> Draft:
        """Evaluate a case without recording it (window guardrails are not consumed)."""
        clean = runtime.flow.validate_input(inputs)
        d = draft(runtime, self.runner, "simulation", None, clean, clean, params, signals)
        d.finalize(WindowGate(WindowState(), self.clock()))
        return d

    def what_if(
        self,
        decision_id: str,
        changes: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Re-evaluate a recorded decision with changed inputs or parameters; show what changes.

        The recorded policy version is used; models are re-run on the changed inputs.
        Window limits are not consumed and not re-checked (they depend on traffic, not the case).
        """
        entry, body = self._decision_entry(decision_id)
        runtime = self._policy_at(self.runtime(entry.flow or ""), body["policy"]["version"])
        inputs = self.restored_inputs(decision_id, body)
        changes = dict(changes or {})
        params = dict(params or {})
        params = _same_types(params, runtime.policy.policy.params)
        before = self._simulate(runtime, inputs)
        after = self._simulate(runtime, {**inputs, **changes}, params)
        fields = ("action", "value", "status", "rule", "reason")
        old = {k: before.result[k] for k in fields}
        new = {k: after.result[k] for k in fields}
        return {
            "decision": decision_id,
            "changes": changes,
            "params": params,
            "recorded": {k: body[k] for k in ("action", "value", "status", "rule")},
            "before": old,
            "after": new,
            "changed": sorted(k for k in fields if old[k] != new[k] and k != "reason"),
            "signals_after": after.signals.values,
        }

    def counterfactuals(
        self, decision_id: str, target: str | None = None, max_results: int = 3
    ) -> list[Counterfactual]:
        """Small changes to actionable fields that would have changed the action."""
        entry, body = self._decision_entry(decision_id)
        runtime = self._policy_at(self.runtime(entry.flow or ""), body["policy"]["version"])
        inputs = self.restored_inputs(decision_id, body)
        if target is not None and target not in runtime.policy.policy.actions:
            raise InputError(f"unknown target action '{target}'", {"target": target})
        current = self._simulate(runtime, inputs).result["action"]

        def simulate(case: Mapping[str, Any]) -> tuple[str, float | None]:
            result = self._simulate(runtime, case).result
            return result["action"], result["value"]

        return search_counterfactuals(runtime.flow, inputs, current, simulate, target, max_results)

    # ---- safe change ---------------------------------------------------------------------------

    def replay(
        self,
        flow: str,
        candidate: str,
        since: str,
        until: str,
        workers: int | None = None,
        parallel_from: int | None = None,
    ) -> dict[str, Any]:
        """What the stored policy version (or change) ``candidate`` would have decided on the
        flow's decisions recorded in ``[since, until)`` (see ``keel.rollout.replay``)."""
        from keel.rollout import replay  # noqa: PLC0415 - it imports the engine's parts

        threshold = replay.PARALLEL_FROM if parallel_from is None else parallel_from
        return replay.replay(self, flow, candidate, since, until, workers, threshold)

    # ---- the ledger --------------------------------------------------------------------------

    def verify(self, checkpoint: Checkpoint | None = None) -> VerifyReport:
        return verify_ledger(self.db, checkpoint)

    def checkpoint(self) -> Checkpoint:
        """Sign the current chain head, and record that a checkpoint was taken."""
        report = self.verify()
        if not report.ok:
            raise KeelError(
                f"refusing to sign a checkpoint over a ledger that does not verify: "
                f"entry {report.bad_seq}: {report.problem}",
                {"bad_seq": report.bad_seq},
            )
        key = load_signing_key(self.settings.keys_dir)
        now = self.clock()
        cp = make_checkpoint(
            key, self.settings.name, report.head_seq, report.head_hash, iso_time(now)
        )
        body = {"seq": cp.seq, "head_hash": cp.head_hash, "public_key": cp.public_key}
        self.writer.append([event("checkpoint", None, body, now)])
        return cp


def _index_row(entry: Entry, body: dict[str, Any]) -> dict[str, Any]:
    """The decisions-table row of a decision entry: what the API filters on."""
    rollout = body.get("rollout")
    return {
        "id": entry.record_id,
        "seq": entry.seq,
        "flow": entry.flow,
        "subject_id": body.get("subject_id"),
        "action": body["action"],
        "status": body["status"],
        "recorded_at": entry.recorded_at,
        "policy_version": body["policy"]["version"],
        "guardrail_hits": len(body["guardrails"]["hits"]),
        "fallback": 1 if body["fallback"] else 0,
        "rollout": rollout["id"] if rollout else None,
        "arm": rollout["arm"] if rollout else None,
        "shadow_action": rollout.get("action") if rollout else None,
    }


def _beside(
    rollout: Running,
    served: bool,
    runner: SignalRunner,
    inputs: dict[str, Any],
    signals: SignalResult,
) -> dict[str, Any]:
    """What a decision records of the rollout beside it: its arm, and in shadow, what the
    candidate would have done with the same inputs and signals (never acted on)."""
    if rollout.mode == "canary":
        arm = "candidate" if served else "active"
        return {"id": rollout.id, "mode": "canary", "arm": arm, "version": rollout.version}
    shadow = draft(rollout.runtime, runner, "shadow", None, inputs, inputs, signals=signals)
    return {
        "id": rollout.id,
        "mode": "shadow",
        "arm": "shadow",
        "version": rollout.version,
        "action": shadow.action,
        "value": shadow.value,
        "rule": shadow.rule,
        "review": shadow.review,
    }


def _same_types(changes: Mapping[str, Any], params: Mapping[str, Any]) -> dict[str, Any]:
    """What-if parameters must exist and keep their type (an int may stand for a float)."""
    out: dict[str, Any] = {}
    for name, given in changes.items():
        if name not in params:
            known = ", ".join(sorted(params))
            raise InputError(
                f"unknown parameter '{name}' in what-if (parameters: {known})", {"param": name}
            )
        current = params[name]
        value = float(given) if isinstance(current, float) and type(given) is int else given
        if type(value) is not type(current):
            raise InputError(
                f"parameter '{name}' is a {type(current).__name__}, got {value!r}",
                {"param": name},
            )
        out[name] = value
    return out


def open_engine(
    project_dir: str | Path = ".",
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> Engine:
    """Open the Keel project in ``project_dir``: load and check it, open and migrate its store."""
    settings = load_settings(project_dir, environ)
    project = load_project(settings)
    db = open_database(settings.database_url)
    try:
        return Engine(settings, project, db, clock)
    except Exception:
        db.close()
        raise


__all__ = ["Decision", "Engine", "Status", "open_engine", "settle_status"]
