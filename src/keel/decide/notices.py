"""Adverse-action notices for recorded decisions: who may read one, what is in force, and
the notice rendered from the flow's template (``keel.explain.notice`` says what it states).

Reading a notice takes what reading the decision's explanation takes (``read_decisions``
on the flow; a flow the caller may not read answers 404), and, as there, personal inputs a
template shows stay ``‹protected›`` for a reader without ``read_personal``. Over HTTP,
the audit trail records each request like any other; nothing is written to the ledger, as
for explanations.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from keel.context import Context
from keel.decide.explanations import Explanations
from keel.errors import ConflictError
from keel.explain.attributions import Attributions, attribute
from keel.explain.notice import (
    InForce,
    Notice,
    adverse_kind,
    build_notice,
    principal_reasons,
    render_notice,
    shown_inputs,
)
from keel.policy.text import format_value
from keel.security.roles import Permission, Principal
from keel.signals.adapters import Model
from keel.signals.runner import SignalRunner, feature_row
from keel.store.schema import reviews

SETTLED = ("final",)  # statuses whose action is in force without a review


class Notices:
    def __init__(self, ctx: Context, runner: SignalRunner, explanations: Explanations) -> None:
        self._ctx = ctx
        self._runner = runner
        self._explanations = explanations

    def notice(self, decision_id: str, principal: Principal) -> tuple[Notice, list[str]]:
        """The notice of an adverse decision, and notes on what it could not use.

        ``ConflictError`` when the decision is not adverse, has no action in force yet
        (it waits for review, is advisory, shadow or deferred), or its flow gives no
        notices.
        """
        self._explanations.readable(decision_id, principal)
        entry = self._ctx.entry(decision_id)
        body = entry.body
        flow_name = entry.flow or ""
        runtime = self._ctx.registry.runtime_of(flow_name)
        flow = runtime.flow
        spec = flow.notice
        if spec is None:
            raise ConflictError(
                f"flow '{flow_name}' gives no notices: add a 'notice' section naming its "
                "adverse actions to the flow file",
                {"flow": flow_name, "decision": decision_id},
            )
        in_force = self._in_force(decision_id, entry.recorded_at, body)
        inputs = self._ctx.inputs_of(decision_id, body)
        requested = inputs.get(spec.request) if spec.request else None
        kind = adverse_kind(spec, in_force, requested)
        if kind is None:
            # In the request field's format and the flow's locale: "12.000 €", not "12000".
            fmt = flow.fields[spec.request].format if spec.request else "number"
            shown = (
                ""
                if in_force.value is None
                else f" {format_value(in_force.value, fmt, flow.money)}"
            )
            asked = (
                f", requested {format_value(requested, fmt, flow.money)}"
                if requested is not None
                else ""
            )
            raise ConflictError(
                f"decision {decision_id} is not adverse ({in_force.action}{shown}{asked}): "
                "no notice. Notices are given for the flow's notice.adverse_actions and for "
                "values below the request.",
                {"decision": decision_id, "action": in_force.action},
            )
        at = self._ctx.registry.at_version(flow_name, body["policy"]["version"])
        attributions, notes = self._attributions(runtime.models, body, inputs)
        reasons = principal_reasons(
            flow, spec, at.policy.policy, body, in_force, kind, attributions
        )
        scores = {k: v["score"] for k, v in body["signals"].items() if "score" in v}
        personal = principal.can(Permission.READ_PERSONAL, flow_name)
        masked = frozenset() if personal else frozenset(flow.protected_fields())
        notice = build_notice(
            flow,
            decision_id,
            kind,
            in_force,
            requested,
            reasons,
            scores,
            body.get("subject_id"),
            shown_inputs(flow, inputs, masked),
        )
        return notice, notes

    def render(self, decision_id: str, principal: Principal, fmt: str = "text") -> str:
        """The notice as text or HTML, from the flow's template or Keel's default."""
        notice, _ = self.notice(decision_id, principal)
        flow = self._ctx.registry.runtime_of(notice.flow).flow
        return render_notice(notice, fmt, self._ctx.settings.project_dir, flow.money.locale)

    def _in_force(self, decision_id: str, recorded_at: str, body: Mapping[str, Any]) -> InForce:
        with self._ctx.db.read() as conn:
            row = conn.execute(
                select(
                    reviews.c.state,
                    reviews.c.resolution,
                    reviews.c.final_action,
                    reviews.c.final_value,
                    reviews.c.resolved_at,
                ).where(reviews.c.decision_id == decision_id)
            ).first()
        if row is not None and row.state == "resolved":
            return InForce(row.final_action, row.final_value, row.resolved_at, row.resolution)
        if body["status"] not in SETTLED:
            raise ConflictError(
                f"decision {decision_id} has no action in force yet ({body['status']}): a "
                "notice is given once the decision is final or its review is resolved",
                {"decision": decision_id, "status": body["status"]},
            )
        return InForce(body["action"], body.get("value"), recorded_at)

    def _attributions(
        self, models: Mapping[str, Model], body: Mapping[str, Any], inputs: Mapping[str, Any]
    ) -> tuple[dict[str, Attributions], list[str]]:
        """Each scoring model's attributions for the case, when it still runs; notes say
        which could not be used, so a notice with fewer model reasons is never a mystery."""
        found: dict[str, Attributions] = {}
        notes = []
        for name, meta in body["signals"].items():
            model = models.get(name)
            if model is None or "score" not in meta:
                continue
            if model.version != meta["version"]:
                notes.append(f"model for {name} changed since the decision; its reasons omitted")
                continue
            attrs = attribute(model, feature_row(model, inputs))
            if attrs.method == "none":
                notes.append(f"no attributions from {name}: {attrs.note}")
            found[name] = attrs
        return found, notes
