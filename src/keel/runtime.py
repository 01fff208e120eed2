"""What each flow runs now: ``FlowRegistry`` is the one owner of every flow's running state.

The project's files seed each flow's runtime (its policy, models and autonomy level). Once
the store holds a flow's history, the store decides: the active policy version and the
models it pins, the autonomy level, a governor's hold, and a running shadow or canary
rollout. The registry reads them, compiles and loads what they name, and hands out
``FlowRuntime`` values; nothing else replaces a flow's runtime.

Nothing loaded from the store is believed on its own: each row the registry acts on must
agree with the newest ledger entry of its kind for its flow (``keel.ledger.anchor``), a
stored policy text must hash to its version and a stored model file to its own. A flow
whose rows do not is **held** (``INTEGRITY``): it keeps what it last loaded that verified,
every case is deferred with the problem as its cause, and the monitoring service raises a
critical alarm. The hold lifts by itself once the stored content verifies again; until
then every refresh checks again.

Changes made by other processes are picked up by ``refresh`` at most once per
``REFRESH_S`` of the injected clock; a governance act in this process calls
``refresh(force=True)`` once its transaction has committed. A refresh only reads the store,
and it refuses to run inside a write transaction: work inside ``LedgerWriter.transact``
looks flows up with ``runtime_of``, which never touches the store, so no refresh can ever
wait on the ledger's lock.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from sqlalchemy import Connection, func, select

from keel.errors import IntegrityError, KeelError, NotFoundError
from keel.flows import Autonomy, Flow
from keel.ledger import anchor
from keel.policy.compiler import CompiledPolicy, compile_policy
from keel.policy.model import Policy, policy_from_document
from keel.security.roles import Permission, Principal
from keel.signals.adapters import Model
from keel.signals.artifacts import load_pinned, materialise, pinnable
from keel.signals.loading import ensure_loaded
from keel.signals.runner import SignalResult, SignalRunner
from keel.store.database import Database
from keel.store.schema import (
    autonomy_changes,
    flow_activations,
    flow_holds,
    policy_versions,
    rollouts,
)
from keel.telemetry import log

REFRESH_S = 1.0  # how stale this process's view of other processes' changes may be
NO_HOLD = "none"
INTEGRITY = "integrity"  # the store disagrees with the ledger: nothing is acted on

Clock = Callable[[], float]


@dataclass
class FlowRuntime:
    """A flow with its compiled policy and loaded models, ready to decide."""

    flow: Flow
    policy: CompiledPolicy
    models: dict[str, Model]
    timeouts_ms: dict[str, int]
    hold: str = NO_HOLD  # escalate_all | pause | stop (keel.rollout.holds) | integrity
    integrity: str | None = None  # why the flow is held for integrity, if it is

    def signals(self, runner: SignalRunner, inputs: Mapping[str, Any]) -> SignalResult:
        return runner.run(self.models, self.timeouts_ms, inputs, flow=self.flow.name)

    def signals_many(
        self, runner: SignalRunner, cases: Sequence[Mapping[str, Any]]
    ) -> list[SignalResult]:
        return runner.run_many(self.models, self.timeouts_ms, cases, flow=self.flow.name)


@dataclass(frozen=True)
class Running:
    """A shadow or canary rollout that decisions of its flow go through."""

    id: str
    flow: str
    mode: str
    version: str
    share: float
    runtime: FlowRuntime  # the candidate, at the flow's current autonomy and hold

    def serves(self, subject_id: str | None) -> bool:
        """Is this subject in the canary's share? Always the same answer for a subject."""
        if self.mode != "canary" or subject_id is None:
            return False
        digest = hashlib.sha256(f"{self.id}:{subject_id}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.share


class RefreshInTransactionError(KeelError):
    """A programming error: refreshing would read a state the open transaction may change."""

    code = "refresh_in_transaction"


# ---- the store's running state, read through any connection ---------------------------------


def active_row(conn: Connection, flow: str) -> dict[str, Any] | None:
    """The flow's newest activation (its active policy version and pinned models)."""
    found = conn.execute(
        select(flow_activations)
        .where(flow_activations.c.flow == flow)
        .order_by(flow_activations.c.id.desc())
        .limit(1)
    ).first()
    return dict(found._mapping) if found else None


def pins_of(row: Mapping[str, Any] | None) -> dict[str, str] | None:
    """The model pins an activation or change row holds (None: none recorded)."""
    if row is None or not row.get("models"):
        return None
    pins = row["models"] if isinstance(row["models"], dict) else json.loads(row["models"])
    return pins if isinstance(pins, dict) else None


def current_level(conn: Connection, flow: str) -> str | None:
    found = conn.execute(
        select(autonomy_changes.c.level)
        .where(autonomy_changes.c.flow == flow)
        .order_by(autonomy_changes.c.id.desc())
        .limit(1)
    ).scalar()
    return str(found) if found is not None else None


def current_hold(conn: Connection, flow: str) -> str:
    found = conn.execute(
        select(flow_holds.c.hold)
        .where(flow_holds.c.flow == flow)
        .order_by(flow_holds.c.id.desc())
        .limit(1)
    ).scalar()
    return str(found) if found is not None else NO_HOLD


def running_row(conn: Connection, flow: str) -> dict[str, Any] | None:
    found = conn.execute(
        select(rollouts).where(rollouts.c.flow == flow, rollouts.c.state == "running")
    ).first()
    return dict(found._mapping) if found else None


def _newest(conn: Connection) -> tuple[Any, ...]:
    """What changes when any flow's running state changes, in one cheap read."""
    running = conn.execute(
        select(rollouts.c.id).where(rollouts.c.state == "running").order_by(rollouts.c.id)
    ).scalars()
    return (
        conn.execute(select(func.max(flow_activations.c.id))).scalar(),
        conn.execute(select(func.max(autonomy_changes.c.id))).scalar(),
        conn.execute(select(func.max(flow_holds.c.id))).scalar(),
        tuple(running),
    )


def _newest_row(conn: Connection, table: Any, flow: str) -> dict[str, Any] | None:
    found = conn.execute(
        select(table).where(table.c.flow == flow).order_by(table.c.id.desc()).limit(1)
    ).first()
    return dict(found._mapping) if found else None


def _agree(
    flow: str,
    what: str,
    row: Mapping[str, Any] | None,
    entry: anchor.Anchor | None,
    fields: Mapping[str, Any],
) -> None:
    """``row`` (the table's newest for the flow) must be the ledger's newest ``entry`` of
    its kind, holding the same ``fields`` ({body key: the row's value})."""
    if entry is None:
        if row is not None:
            raise IntegrityError(
                f"flow '{flow}': the {what} in the store has no entry in the ledger",
                {"flow": flow, "table": what},
            )
        return
    if row is None or row.get("record_id") != entry.record_id:
        raise IntegrityError(
            f"flow '{flow}': the newest {what} in the ledger (entry {entry.seq}) is not the "
            "one the store holds: a row was changed, added or removed outside Keel",
            {"flow": flow, "table": what, "seq": entry.seq},
        )
    for key, value in fields.items():
        recorded = entry.body.get(key) or None
        if recorded != (value or None):
            raise IntegrityError(
                f"flow '{flow}': the {what} says {key} {value!r}, its ledger entry "
                f"{entry.seq} says {recorded!r}: the row was changed outside Keel",
                {"flow": flow, "table": what, "seq": entry.seq, "field": key},
            )


def anchored_state(conn: Connection, flow: str) -> tuple[Any, ...]:
    """The flow's active version row, autonomy level, hold and running rollout, each
    checked against the newest ledger entry of its kind: ``IntegrityError`` if one is not
    what the ledger recorded."""
    active = active_row(conn, flow)
    activated = anchor.newest(conn, flow, "policy_activated")
    if activated is None and active is not None and active["kind"] == "inferred":
        pass  # a store older than activation events: its history was inferred, unrecorded
    else:
        models = pins_of(active) if active is not None else None
        fields = {"version": active and active["version"], "models": models}
        _agree(flow, "activation", active, activated, fields)
    level = _newest_row(conn, autonomy_changes, flow)
    _agree(flow, "autonomy level", level, anchor.newest(conn, flow, "autonomy_changed"),
           {"level": level and level["level"]})  # fmt: skip
    hold = _newest_row(conn, flow_holds, flow)
    _agree(flow, "hold", hold, anchor.newest(conn, flow, "flow_hold_changed"),
           {"hold": hold and hold["hold"]})  # fmt: skip
    running = running_row(conn, flow)
    started = anchor.newest(conn, flow, "rollout_started")
    stopped = anchor.newest(conn, flow, "rollout_stopped")
    if started is not None and stopped is not None and stopped.seq > started.seq:
        started = None  # the newest rollout ended: none runs
    if started is None and running is not None:
        raise IntegrityError(
            f"flow '{flow}': rollout {running['id']} runs in the store, but the ledger records "
            "none running: the row was changed outside Keel",
            {"flow": flow, "table": "rollout"},
        )
    if started is not None:
        if running is None:
            raise IntegrityError(
                f"flow '{flow}': the ledger records rollout {started.body.get('id')} running "
                f"(entry {started.seq}), the store none: the row was changed outside Keel",
                {"flow": flow, "table": "rollout", "seq": started.seq},
            )
        fields = {k: running[k] for k in ("id", "mode", "version", "share")}
        _agree(flow, "running rollout", {**running, "record_id": started.record_id}, started,
               fields)  # fmt: skip
    return (
        active,
        str(level["level"]) if level else None,
        str(hold["hold"]) if hold else NO_HOLD,
        running,
    )


class FlowRegistry:
    """Every flow's runtime now, the versions it can run, and what its files hold."""

    def __init__(
        self,
        flows: Mapping[str, FlowRuntime],
        db: Database,
        clock: Clock,
        model_cache: Path,
        in_transaction: Callable[[], bool] = lambda: False,
    ) -> None:
        self._flows = dict(flows)
        self._db = db
        self._clock = clock
        self._model_cache = model_cache
        self._in_transaction = in_transaction
        self._file_versions = {name: rt.policy.version for name, rt in flows.items()}
        self._files = {name: Path(rt.policy.policy.source) for name, rt in flows.items()}
        self._file_levels = {name: rt.flow.autonomy for name, rt in flows.items()}
        self._file_models = {
            name: {
                signal: model.version
                for signal, model in rt.models.items()
                if pinnable(rt.flow.signals[signal])
            }
            for name, rt in flows.items()
        }
        self._compiled: dict[tuple[str, str], FlowRuntime] = {}
        self._pinned: dict[tuple[str, str, str], Model] = {}
        self._running: dict[str, Running] = {}
        self._lock = threading.Lock()
        self._seen: tuple[Any, ...] | None = None
        self._checked: float | None = None
        self._problems: dict[str, str] = {}

    # ---- what runs now (no store access) ---------------------------------------------------

    @property
    def flows(self) -> Mapping[str, FlowRuntime]:
        """Every flow's runtime now (a read-only view that follows refreshes)."""
        return MappingProxyType(self._flows)

    def runtime_of(self, flow: str) -> FlowRuntime:
        """The flow as this process last saw it; never reads the store (safe in a transaction)."""
        runtime = self._flows.get(flow)
        if runtime is None:
            known = ", ".join(sorted(self._flows)) or "none"
            raise NotFoundError(f"unknown flow '{flow}' (flows: {known})", {"flow": flow})
        return runtime

    def current(self, flow: str) -> FlowRuntime:
        """The flow as it decides now: refreshed first if ``REFRESH_S`` has passed."""
        self.refresh()
        return self.runtime_of(flow)

    def permitted(
        self, flow: str, principal: Principal, permission: Permission = Permission.READ_FLOWS
    ) -> FlowRuntime:
        """The flow as it decides now, for a caller with ``permission`` on it: an unknown
        flow is named first (404), then a missing permission (403)."""
        runtime = self.current(flow)
        principal.require(permission, flow)
        return runtime

    def rollout(self, flow: str) -> Running | None:
        """The flow's running rollout, if any."""
        return self._running.get(flow)

    def running(self) -> list[Running]:
        return list(self._running.values())

    def integrity(self) -> dict[str, str]:
        """The flows held because the store disagrees with the ledger: {flow: why}."""
        return dict(self._problems)

    def max_window_s(self) -> int:
        """The longest guardrail window or review-capacity period of any flow now."""
        runtimes = list(self._flows.values())
        windows = [w.window_s for rt in runtimes for w in rt.policy.policy.guardrails.windows]
        windows += [rt.flow.review.capacity.period_s for rt in runtimes if rt.flow.review.capacity]
        return max(windows, default=1)

    # ---- what the files hold ------------------------------------------------------------------

    def file_of(self, flow: str) -> Path:
        """The project file the flow's policy was loaded from."""
        self.runtime_of(flow)
        return self._files[flow]

    def file_version(self, flow: str) -> str:
        self.runtime_of(flow)
        return self._file_versions[flow]

    def file_models(self, flow: str) -> dict[str, str]:
        """The model versions the flow's files name, per pinnable signal."""
        self.runtime_of(flow)
        return dict(self._file_models[flow])

    def file_level(self, flow: str) -> Autonomy:
        self.runtime_of(flow)
        return self._file_levels[flow]

    def file_drift(self) -> dict[str, tuple[str, str]]:
        """Flows whose policy file differs from the active version: {flow: (active, file)}."""
        return {
            flow: (self._flows[flow].policy.version, version)
            for flow, version in self._file_versions.items()
            if self._flows[flow].policy.version != version
        }

    # ---- stored versions ---------------------------------------------------------------------

    def at_version(self, flow: str, version: str) -> FlowRuntime:
        """The flow with a stored policy version compiled (cached per version)."""
        key = (flow, version)
        found = self._compiled.get(key)
        if found is not None:
            return found
        current = self.runtime_of(flow)
        if current.policy.version == version:
            return current
        with self._db.read() as conn:
            doc = conn.execute(
                select(policy_versions.c.document).where(policy_versions.c.version == version)
            ).scalar()
        if doc is None:
            raise NotFoundError(
                f"policy version {version} is not in the store", {"version": version}
            )
        policy = policy_from_document(json.loads(doc), f"<policy {version[:12]}>")
        if policy.version != version:
            raise IntegrityError(
                f"stored policy version {version[:12]} does not match its hash: its text was "
                "changed outside Keel",
                {"version": version},
            )
        compiled = compile_policy(policy, current.flow)
        runtime = FlowRuntime(current.flow, compiled, current.models, current.timeouts_ms)
        self._compiled[key] = runtime
        return runtime

    def policy(self, flow: str, version: str) -> Policy:
        return self.at_version(flow, version).policy.policy

    def model(self, flow: str, signal: str, version: str) -> Model:
        """A pinned model version of the flow's signal, loaded from the store (cached)."""
        key = (flow, signal, version)
        found = self._pinned.get(key)
        if found is None:
            spec = self.runtime_of(flow).flow.signals[signal]
            found = self._pinned[key] = load_pinned(self._db, self._model_cache, spec, version)
        return found

    def load_models(self, flow: str | None = None) -> int:
        """Load every model the flows (or ``flow``) and their running rollouts run now (each
        is otherwise loaded on first use), so that no request pays for it; ``keel serve``
        calls this in each worker before it answers. Returns how many models they run."""
        self.refresh(force=True)
        names = [self.runtime_of(flow).flow.name] if flow is not None else list(self._flows)
        models = [m for name in names for m in self._flows[name].models.values()]
        models += [m for r in self._running.values() if r.flow in names
                   for m in r.runtime.models.values()]  # fmt: skip
        ensure_loaded(models)
        return len(models)

    def model_path(self, version: str) -> Path:
        """A pinned model file on this machine's disk."""
        return materialise(self._db, self._model_cache, version)

    # ---- following the store ------------------------------------------------------------------

    def refresh(self, force: bool = False) -> None:
        """Apply what the store says each flow runs: at once with ``force``, otherwise at
        most once per ``REFRESH_S`` of the clock. Never inside a write transaction."""
        if self._in_transaction():
            raise RefreshInTransactionError(
                "the flow registry refreshes only outside write transactions: inside one, "
                "look flows up with runtime_of and read the store through the transaction"
            )
        now = self._clock()
        if not force and self._fresh(now):
            return
        with self._lock:
            if not force and self._fresh(now):  # another thread refreshed meanwhile
                return
            with self._db.read() as conn:
                newest = _newest(conn)
                if newest == self._seen and not self._problems:
                    self._checked = now
                    return
                state: dict[str, tuple[Any, ...]] = {}
                problems: dict[str, str] = {}
                for flow in self._flows:
                    try:
                        state[flow] = anchored_state(conn, flow)
                    except IntegrityError as error:
                        problems[flow] = error.message
            running: dict[str, Running] = {}
            for flow, (active, level, hold, row) in state.items():
                try:
                    if active is not None:
                        self._apply(flow, active["version"], level, pins_of(active), hold)
                    if row is not None:
                        running[flow] = self._rollout(flow, row)
                except (IntegrityError, NotFoundError) as error:
                    problems[flow] = error.message
            for flow, problem in problems.items():
                self._hold_for_integrity(flow, problem)
            self._running = running
            self._problems = problems
            self._seen = newest
            self._checked = now

    def _hold_for_integrity(self, flow: str, problem: str) -> None:
        """Keep what the flow last ran that verified, and act on none of it."""
        current = self._flows[flow]
        if current.integrity != problem:
            log.error("flow %s is held: %s", flow, problem)
        self._flows[flow] = replace(current, hold=INTEGRITY, integrity=problem)

    def _fresh(self, now: float) -> bool:
        return self._checked is not None and now - self._checked < REFRESH_S

    def _apply(
        self,
        flow: str,
        version: str,
        level: str | None,
        pins: Mapping[str, str] | None,
        hold: str,
    ) -> None:
        current = self._flows[flow]
        autonomy = Autonomy(level) if level else current.flow.autonomy
        running = {s: m.version for s, m in current.models.items()}
        if (
            current.policy.version == version
            and current.flow.autonomy is autonomy
            and current.hold == hold
            and all(running.get(s) == v for s, v in (pins or {}).items())
        ):
            return
        runtime = self.at_version(flow, version)
        if runtime.flow.autonomy is not autonomy:
            runtime = replace(runtime, flow=replace(runtime.flow, autonomy=autonomy))
        models = dict(runtime.models)
        for signal, pinned in (pins or {}).items():
            if signal in models and models[signal].version != pinned:
                models[signal] = self.model(flow, signal, pinned)
        if models != runtime.models:
            runtime = replace(runtime, models=models)
        if runtime.hold != hold or runtime.integrity is not None:
            runtime = replace(runtime, hold=hold, integrity=None)
        self._flows[flow] = runtime
        log.info(
            "flow %s now runs policy %s at autonomy %s (hold: %s)",
            flow, version[:12], autonomy, hold,
        )  # fmt: skip

    def _rollout(self, flow: str, row: Mapping[str, Any]) -> Running:
        current = self._flows[flow]
        candidate = self.at_version(flow, row["version"])
        candidate = replace(
            candidate, flow=current.flow, hold=current.hold, integrity=current.integrity
        )
        return Running(row["id"], flow, row["mode"], row["version"], row["share"], candidate)
