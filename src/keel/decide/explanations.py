"""Reading recorded decisions and explaining them: why, what if, and what would change them.

A decision is explained with the policy version that made it (the registry compiles stored
versions on demand) and, for attributions, the model that scored it when it still runs.
Simulations (what-if, counterfactuals) consume no guardrail window.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from keel.context import Context
from keel.decide.draft import Draft, draft, guarded_reason, masked_view
from keel.decide.record import Decision, decision_from
from keel.errors import InputError, NotFoundError
from keel.explain.attributions import Attributions, attribute
from keel.explain.counterfactual import CounterfactualSearch, search_counterfactuals
from keel.explain.narrative import explain_record
from keel.ledger import reader
from keel.ledger.records import Entry
from keel.ledger.windows import WindowState
from keel.ledger.writer import WindowGate
from keel.policy.text import render
from keel.runtime import FlowRuntime
from keel.security.persons import person_of
from keel.security.roles import Permission, Principal, flows_for, visible_to
from keel.signals.rows import RowError
from keel.signals.runner import SignalResult, SignalRunner, feature_row
from keel.store.schema import decisions
from keel.text import article, free_text, identifier


class Explanations:
    def __init__(self, ctx: Context, runner: SignalRunner) -> None:
        self._ctx = ctx
        self._runner = runner

    # ---- reading ---------------------------------------------------------------------------

    def entries(
        self,
        principal: Principal,
        limit: int = 20,
        flow: str | None = None,
        kind: str | None = None,
    ) -> list[Entry]:
        """The newest ``limit`` ledger entries, oldest first (for those who verify it)."""
        principal.require(Permission.VERIFY_LEDGER)
        return reader.newest(self._ctx.db, limit, flow, kind)

    def readable(self, decision_id: str, principal: Principal) -> str:
        """The decision's flow, if the caller may read it; otherwise it does not exist.

        Readers of the flow may read any of its decisions. So may the person who asked for
        this one, while they may still decide on the flow: a calling service must be able
        to tell its customer why, without reading anyone else's decisions. Anyone else is
        answered as for an unknown id (404), so nobody can probe for decisions.
        """
        flow = reader.decision_flow(self._ctx.db, decision_id)
        if not self._requested(decision_id, flow, principal):
            visible_to(principal, Permission.READ_DECISIONS, flow, "decision", decision_id)
        return flow

    def _requested(self, decision_id: str, flow: str, principal: Principal) -> bool:
        """Whether ``principal`` is the person who asked for the decision and may still
        decide on its flow (rows recorded before persons were kept name the principal)."""
        if not principal.can(Permission.DECIDE, flow):
            return False
        body = self._ctx.entry(decision_id).body
        person = body.get("requested_person")
        if person is not None:
            return bool(person_of(person) == principal.person)
        return bool(body.get("requested_by") == principal.id)

    def decision(self, decision_id: str, principal: Principal) -> Decision:
        """A recorded decision as the ledger holds it (personal inputs stay masked)."""
        self.readable(decision_id, principal)
        entry, body = self._decision_entry(decision_id)
        return decision_from(entry, body, body["reason"])

    def list_decisions(
        self,
        principal: Principal,
        flow: str | None = None,
        *,
        action: str | None = None,
        status: str | None = None,
        subject_id: str | None = None,
        since: str | None = None,
        until: str | None = None,
        before_seq: int | None = None,
        limit: int = 100,
    ) -> list[dict[str, Any]]:
        """Index rows of the decisions the caller may read (of ``flow``, or of every flow it
        reads), newest first, filtered; page with before_seq."""
        for name, value in (("action", action), ("status", status), ("subject_id", subject_id)):
            if value is not None:
                identifier(value, name)
        if flow is not None:
            self._ctx.registry.runtime_of(flow)  # an unknown flow is named
        registry = self._ctx.registry.flows
        flows = flows_for(principal, Permission.READ_DECISIONS, flow, registry)
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
        with self._ctx.db.read() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _decision_entry(self, decision_id: str) -> tuple[Entry, dict[str, Any]]:
        entry = self._ctx.entry(decision_id)
        if entry.kind != "decision":
            raise NotFoundError(f"'{decision_id}' is {article(entry.kind)} event, not a decision")
        return entry, entry.body

    def _recorded(self, decision_id: str) -> tuple[Entry, dict[str, Any], FlowRuntime]:
        """A decision, its body, and its flow at the policy version that made it."""
        entry, body = self._decision_entry(decision_id)
        registry = self._ctx.registry
        registry.current(entry.flow or "")
        return entry, body, registry.at_version(entry.flow or "", body["policy"]["version"])

    # ---- explaining ------------------------------------------------------------------------

    def explain(self, decision_id: str, principal: Principal) -> dict[str, Any]:
        """Why a decision was made: rule trace, guardrails, model attributions, in sentences.

        For a reader without ``read_personal`` on the flow, personal and sensitive inputs
        stay ``‹protected›`` everywhere in the explanation: the inputs, the values the rules
        compared, the reason and the attribution sentences.
        """
        flow = self.readable(decision_id, principal)
        # The person who asked sent these inputs: showing them back reveals nothing new.
        reveal_personal = principal.can(Permission.READ_PERSONAL, flow) or self._requested(
            decision_id, flow, principal
        )
        entry, body, at = self._recorded(decision_id)
        runtime = self._ctx.registry.runtime_of(entry.flow or "")
        inputs = self._ctx.inputs_of(decision_id, body)
        hidden = frozenset() if reveal_personal else frozenset(runtime.flow.protected_fields())
        shown = masked_view(inputs, list(hidden)) if hidden else inputs
        reason = _reason(at, body, inputs) if not hidden else body["reason"]
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
            try:
                found = attribute(model, feature_row(model, inputs))
            except RowError as exc:  # the recorded inputs no longer hold it (erased)
                notes.append(f"attributions for {name}: not available — {exc}")
                continue
            if found.method == "none":
                notes.append(f"attributions for {name}: {found.note}")
            attributions[name] = found
        return {
            "decision": decision_from(entry, body, reason).to_dict(),
            "inputs": shown,
            "why": explain_record(runtime.flow, body, trace, reason, attributions, hidden),
            "trace": trace,
            "guardrails": body["guardrails"],
            "attributions": {k: v.to_dict(hidden) for k, v in attributions.items()},
            "notes": notes,
        }

    def _simulate(
        self,
        runtime: FlowRuntime,
        inputs: Mapping[str, Any],
        params: Mapping[str, Any] | None = None,
        signals: SignalResult | None = None,
    ) -> Draft:
        """Evaluate a case without recording it (window guardrails are not consumed)."""
        clean = runtime.flow.validate_input(inputs)
        d = draft(runtime, self._runner, "simulation", None, clean, clean, params, signals)
        d.finalize(WindowGate(WindowState(), self._ctx.clock()))
        return d

    def _personal(self, decision_id: str, principal: Principal) -> None:
        # Re-evaluating means reading the recorded personal inputs back: allowed to those who
        # may see personal inputs, and to the person who sent them.
        flow = self.readable(decision_id, principal)
        if not self._requested(decision_id, flow, principal):
            principal.require(Permission.READ_PERSONAL, flow)

    def what_if(
        self,
        decision_id: str,
        principal: Principal,
        changes: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Re-evaluate a recorded decision with changed inputs or parameters; show what changes.

        The recorded policy version is used; models are re-run on the changed inputs.
        Window limits are not consumed and not re-checked (they depend on traffic, not the case).
        """
        self._personal(decision_id, principal)
        _, body, runtime = self._recorded(decision_id)
        inputs = self._ctx.inputs_of(decision_id, body)
        changes = dict(changes or {})
        params = _same_types(dict(params or {}), runtime.policy.policy.params)
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
        self,
        decision_id: str,
        principal: Principal,
        target: str | None = None,
        max_results: int = 3,
    ) -> CounterfactualSearch:
        """Small changes to actionable fields that would have changed the action, cheapest
        first; when there are none, why."""
        self._personal(decision_id, principal)
        _, body, runtime = self._recorded(decision_id)
        inputs = self._ctx.inputs_of(decision_id, body)
        if target is not None and target not in runtime.policy.policy.actions:
            raise InputError(f"unknown target action '{target}'", {"target": target})
        now = self._simulate(runtime, inputs).result

        def simulate(case: Mapping[str, Any]) -> tuple[str, float | None]:
            result = self._simulate(runtime, case).result
            return result["action"], result["value"]

        return search_counterfactuals(
            runtime.flow, inputs, now["action"], simulate, target, max_results, now["rule"]
        )


def _reason(runtime: FlowRuntime, body: Mapping[str, Any], inputs: Mapping[str, Any]) -> str:
    policy = runtime.policy.policy
    rule = body["rule"]
    template = runtime.policy.reason_template(rule)
    if template is None:
        return str(body["reason"])  # a hold's reason is fixed text, recorded as told
    signals = {k: v for k, v in body["signals"].items() if "score" in v}
    values = {"input": inputs, "signals": signals, "params": policy.params, "value": body["value"]}
    base = render(template, values, runtime.flow)
    hits = body["guardrails"]["hits"]
    return guarded_reason(base, body["action"], body["status"], rule, hits)


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
        try:
            value = float(given) if isinstance(current, float) and type(given) is int else given
        except OverflowError:
            value = given  # a whole number too large for a float: refused just below
        if type(value) is not type(current):
            raise InputError(
                f"parameter '{name}' is {article(type(current).__name__)}, got {value!r}",
                {"param": name},
            )
        if isinstance(value, float) and not math.isfinite(value):
            raise InputError(
                f"parameter '{name}' must be a finite number, got {value!r}", {"param": name}
            )
        if isinstance(value, str):
            free_text(value, f"params.{name}")
        out[name] = value
    return out
