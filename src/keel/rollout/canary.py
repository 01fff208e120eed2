"""Shadow and canary rollouts: a candidate policy version beside the active one, live.

- **Shadow**: every decision of the flow is also evaluated by the candidate, on the same
  inputs and signals; what the candidate would have done is recorded with the decision
  (never acted on), and the rollout's report gives the agreement.
- **Canary**: a share of subjects — sticky: a subject is always in or always out, by a hash
  of the rollout and the subject id — is decided by the candidate, which must be an
  approved change. Decisions without a subject id stay with the active version. If the
  canary's guardrail-hit rate or override rate (overrides, rejections and changes of its
  decisions by reviewers) goes past its bounds once it has decided ``min_decisions``
  cases, it is stopped automatically: a ``rollout_stopped`` ledger event with the figures,
  a warning and a count (``keel_rollout_rollbacks``).

At most one rollout runs per flow. Starting and stopping are ledger events; activating or
rolling back the flow's policy ends a running rollout. Each decision records the rollout
and arm it went through; the decisions index keeps them for the reports.
"""

from __future__ import annotations

import json
from typing import Any

from sqlalchemy import Connection, select, text

from keel.context import Context
from keel.errors import ConflictError, InputError, NotFoundError
from keel.events import RolloutStarted, pending
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import WindowGate, append_in
from keel.reasons import required_reason
from keel.review.fairness import shadow_groups
from keel.rollout.changes import Changes, end_running_in
from keel.rollout.options import OptionProblems
from keel.rollout.results import (
    ArmFigures,
    CanaryReport,
    Rollout,
    RolloutReport,
    ShadowReport,
)
from keel.runtime import running_row
from keel.security.roles import Permission, Principal, visible_to
from keel.store.schema import rollouts
from keel.telemetry import log

MODES = ("shadow", "canary")
DEFAULT_BOUNDS = {"max_guardrail_hit_rate": 0.05, "max_override_rate": 0.10, "min_decisions": 50}
CHECK_S = 1.0  # how often a server checks running canaries against their bounds


class Rollouts:
    """Starting, stopping and judging rollouts; the registry applies them to decisions."""

    def __init__(self, ctx: Context, changes: Changes) -> None:
        self._ctx = ctx
        self._changes = changes

    # ---- acting ------------------------------------------------------------------------

    def start(
        self,
        flow: str,
        mode: str,
        candidate: str,
        principal: Principal,
        reason: str,
        share: float = 0.0,
        bounds: dict[str, float] | None = None,
    ) -> Rollout:
        """Start a shadow (any stored version) or a canary (an approved change)."""
        self._ctx.registry.current(flow)
        actor = principal.acting(Permission.ACTIVATE_POLICY, flow)
        # Every option is checked before any is acted on, and all problems reported at once.
        problems = OptionProblems()
        if mode not in MODES:
            problems.add("mode", f"mode must be shadow or canary, got {mode!r}")
        reason = problems.check("reason", lambda: required_reason(reason, "a rollout")) or ""
        limits = {**DEFAULT_BOUNDS, **(bounds or {})}
        for key, value in limits.items():
            if key not in DEFAULT_BOUNDS:
                problems.add(
                    f"bounds.{key}", f"unknown bound '{key}' (bounds: {', '.join(DEFAULT_BOUNDS)})"
                )
                continue
            top = None if key == "min_decisions" else 1.0
            if not isinstance(value, int | float) or value < 0 or (top and value > top):
                problems.add(
                    f"bounds.{key}", f"bound {key} must be a number from 0 to {top or 'any'}"
                )
        if mode == "canary":
            if not 0 < share < 1:
                problems.add(
                    "share", f"a canary serves a share between 0 and 1 (exclusive), got {share!r}"
                )
            if not candidate.startswith("chg_"):
                problems.add(
                    "candidate", "a canary serves real traffic: give an approved change (chg_…)"
                )
        problems.raise_any()
        change_id = None
        if mode == "canary":
            change = self._changes.get(candidate, principal)
            if change.flow != flow:
                raise InputError(f"change {candidate} is for flow '{change.flow}'")
            if change.state != "approved":
                raise ConflictError(
                    f"change {candidate} is {change.state}, not approved: a canary needs "
                    "an approved change",
                    {"change_id": candidate},
                )
            change_id, version = candidate, change.version
        else:
            share = 0.0
            if candidate.startswith("chg_"):
                change_id, version = candidate, self._changes.get(candidate, principal).version
            else:
                version = self._changes.resolve(flow, candidate, principal)
        if version == self._ctx.registry.current(flow).policy.version:
            raise ConflictError(f"version {version[:12]} is the active one already", {})

        def work(conn: Connection, gate: WindowGate) -> Rollout:
            busy = running_row(conn, flow)
            if busy is not None:
                raise ConflictError(
                    f"a {busy['mode']} rollout ({busy['id']}) runs on flow '{flow}' already: "
                    "stop it first",
                    {"rollout": busy["id"]},
                )
            row: dict[str, Any] = {
                "id": new_id("rol", gate.now),
                "flow": flow,
                "mode": mode,
                "version": version,
                "change_id": change_id,
                "share": float(share),
                "bounds": json.dumps(limits),
                "state": "running",
                "started_at": iso_time(gate.now),
                "started_by": actor.id,
                "reason": reason,
                "ended_at": None,
                "ended_by": None,
                "end_reason": None,
            }
            conn.execute(rollouts.insert().values(**row))
            started = RolloutStarted(
                id=row["id"], mode=mode, version=version, change_id=change_id,
                share=row["share"], reason=reason, bounds=limits, by=actor.to_dict(),
            )  # fmt: skip
            append_in(conn, [pending(started, flow, gate.now)], gate)
            return Rollout.from_row(row)

        rollout = self._ctx.writer.transact(work)
        self._ctx.registry.refresh(force=True)
        return rollout

    def stop(self, flow: str, principal: Principal, reason: str) -> Rollout:
        self._ctx.registry.current(flow)
        actor = principal.acting(Permission.ACTIVATE_POLICY, flow)
        reason = required_reason(reason, "stopping a rollout")

        def work(conn: Connection, gate: WindowGate) -> Rollout:
            ended = end_running_in(conn, gate, flow, "stopped", actor.id, reason, actor.person)
            if ended is None:
                raise NotFoundError(f"no rollout runs on flow '{flow}'", {"flow": flow})
            return ended

        stopped = self._ctx.writer.transact(work)
        self._ctx.registry.refresh(force=True)
        return stopped

    def check_running(self) -> list[Rollout]:
        """Judge every running canary against its bounds (scheduled work: a server does it
        every ``CHECK_S``; never a side effect of reading). Returns the stops made."""
        with self._ctx.db.read() as conn:
            running = conn.execute(
                select(rollouts.c.id).where(
                    rollouts.c.state == "running", rollouts.c.mode == "canary"
                )
            ).scalars()
            ids = [str(i) for i in running]
        stops = [self.check(rollout_id) for rollout_id in ids]
        return [s for s in stops if s is not None]

    def check(self, rollout_id: str) -> Rollout | None:
        """Stop a running canary whose figures passed its bounds; returns the stop, if any.
        Keel's own scheduled work: no caller's permission is involved."""
        report = self._report(rollout_id)
        rollout = report.rollout
        if rollout.state != "running" or not isinstance(report, CanaryReport):
            return None
        bounds, canary = rollout.bounds, report.candidate
        if canary.decisions < bounds["min_decisions"]:
            return None
        breaches = [
            f"{name} {rate:.1%} is above the bound {bounds[bound]:.1%}"
            for name, rate, bound in (
                ("guardrail-hit rate", canary.guardrail_hit_rate, "max_guardrail_hit_rate"),
                ("override rate", canary.override_rate, "max_override_rate"),
            )
            if rate is not None and rate > bounds[bound]
        ]
        if not breaches:
            return None
        reason = f"automatic rollback after {canary.decisions} decisions: {'; '.join(breaches)}"
        flow = rollout.flow

        def work(conn: Connection, gate: WindowGate) -> Rollout | None:
            current = running_row(conn, flow)
            if current is None or current["id"] != rollout_id:
                return None  # another process stopped it first
            return end_running_in(conn, gate, flow, "rolled_back", "keel", reason)

        stopped = self._ctx.writer.transact(work)
        if stopped is not None:
            self._ctx.metrics.rollbacks.labels(flow).inc()
            log.warning("canary %s on flow %s rolled back: %s", rollout_id, flow, reason)
            self._ctx.registry.refresh(force=True)
        return stopped

    # ---- reading -----------------------------------------------------------------------

    def _readable(self, flow: str, principal: Principal) -> None:
        self._ctx.registry.permitted(flow, principal)

    def get(self, rollout_id: str, principal: Principal) -> Rollout:
        rollout = self._get(rollout_id)
        visible_to(principal, Permission.READ_FLOWS, rollout.flow, "rollout", rollout_id)
        return rollout

    def _get(self, rollout_id: str) -> Rollout:
        with self._ctx.db.read() as conn:
            found = conn.execute(select(rollouts).where(rollouts.c.id == rollout_id)).first()
        if found is None:
            raise NotFoundError(f"no rollout with id '{rollout_id}'", {"rollout": rollout_id})
        return Rollout.from_row(dict(found._mapping))

    def recent(self, flow: str, principal: Principal, limit: int = 20) -> list[RolloutReport]:
        """Reports of the flow's rollouts, newest first."""
        self._readable(flow, principal)
        with self._ctx.db.read() as conn:
            ids = conn.execute(
                select(rollouts.c.id)
                .where(rollouts.c.flow == flow)
                .order_by(rollouts.c.started_at.desc())
                .limit(limit)
            ).scalars()
            found = [str(i) for i in ids]
        return [self._report(i) for i in found]

    def current(self, flow: str, principal: Principal) -> Rollout:
        """The flow's running rollout, or its latest one."""
        self._readable(flow, principal)
        with self._ctx.db.read() as conn:
            found = conn.execute(
                select(rollouts.c.id)
                .where(rollouts.c.flow == flow)
                .order_by(rollouts.c.started_at.desc())
                .limit(1)
            ).scalar()
        if found is None:
            raise NotFoundError(f"flow '{flow}' has had no rollout", {"flow": flow})
        return self._get(str(found))

    def report(self, rollout_id: str, principal: Principal) -> RolloutReport:
        """How the candidate did: agreement for a shadow; per arm rates for a canary."""
        self.get(rollout_id, principal)
        return self._report(rollout_id)

    def _report(self, rollout_id: str) -> RolloutReport:
        rollout = self._get(rollout_id)
        params = {"id": rollout_id}
        arms: dict[str, dict[str, int]] = {}
        agreement: dict[str, dict[str, int]] = {}
        with self._ctx.db.read() as conn:
            for arm, n, hits in conn.execute(
                text(
                    "SELECT arm, count(*), sum(CASE WHEN guardrail_hits > 0 THEN 1 ELSE 0 END) "
                    "FROM decisions WHERE rollout = :id GROUP BY arm"
                ),
                params,
            ):
                arms[arm] = {"decisions": int(n), "guardrail_hits": int(hits or 0), "overrides": 0}
            for arm, n in conn.execute(
                text(
                    "SELECT d.arm, count(*) FROM reviews r JOIN decisions d "
                    "ON d.id = r.decision_id WHERE d.rollout = :id AND r.state = 'resolved' "
                    "AND (r.kind = 'override' OR r.resolution IN ('reject', 'change')) "
                    "GROUP BY d.arm"
                ),
                params,
            ):
                arms.setdefault(arm, {"decisions": 0, "guardrail_hits": 0, "overrides": 0})
                arms[arm]["overrides"] = int(n)
            if rollout.mode == "shadow":
                for action, shadow, n in conn.execute(
                    text(
                        "SELECT action, shadow_action, count(*) FROM decisions "
                        "WHERE rollout = :id GROUP BY action, shadow_action"
                    ),
                    params,
                ):
                    agreement.setdefault(action, {})[shadow] = int(n)
        if rollout.mode == "canary":
            return CanaryReport(
                rollout, _figures(arms.get("candidate")), _figures(arms.get("active"))
            )
        total = sum(n for row in agreement.values() for n in row.values())
        same = sum(agreement.get(a, {}).get(a, 0) for a in agreement)
        flow = self._ctx.registry.current(rollout.flow).flow
        groups = tuple(shadow_groups(self._ctx, flow, rollout_id))
        return ShadowReport(rollout, total, same / total if total else None, agreement, groups)


def _figures(counts: dict[str, int] | None) -> ArmFigures:
    """An arm's figures from its counts (none: the arm decided nothing yet)."""
    found = counts or {"decisions": 0, "guardrail_hits": 0, "overrides": 0}
    n = found["decisions"]
    return ArmFigures(
        decisions=n,
        guardrail_hits=found["guardrail_hits"],
        overrides=found["overrides"],
        guardrail_hit_rate=found["guardrail_hits"] / n if n else None,
        override_rate=found["overrides"] / n if n else None,
    )
