"""The engine: one open Keel project, a façade that wires the services to one ``Context``.

The engine holds no logic of its own: deciding is ``keel.decide``, people and outcomes
``keel.review``, safe change ``keel.rollout``, watching ``keel.monitor``. Each service is
built from the context alone; the engine only starts them in order and closes them.

Every service method that acts or reads governed data takes the acting ``Principal`` and
checks it. The engine's own shortcuts (``decide``, ``explain``…) act as ``by`` when given,
otherwise as the principal the engine was opened for: the local operator by default
(``local:<user>``, an admin: whoever opens the project holds its store and keys; every OS
user is the one person ``local-operator`` for separation of duties).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from keel.config import Settings, load_settings
from keel.context import Context, build_context
from keel.decide.batch import DEFAULT_CHUNK, BatchSummary, Progress, decide_path
from keel.decide.decider import Decider
from keel.decide.draft import Status, settle_status
from keel.decide.explanations import Explanations
from keel.decide.notices import Notices
from keel.decide.record import Decision
from keel.events import CheckpointTaken, pending
from keel.explain.counterfactual import CounterfactualSearch
from keel.keys import load_signing_key
from keel.ledger.checkpoint import Checkpoint
from keel.ledger.records import Entry
from keel.ledger.verify import VerifyReport, checkpoint_head, verify_ledger
from keel.ledger.writer import LedgerWriter
from keel.models_inventory import ModelInventory
from keel.monitor.outbox import Deliveries, Delivery
from keel.project import Project, load_project
from keel.protect import Protector
from keel.review.fairness import Fairness
from keel.review.outcomes import Outcomes
from keel.review.queue import ReviewBreach, Reviews
from keel.review.trust import Trust
from keel.rollout.autonomy import AutonomyControl
from keel.rollout.canary import Rollouts
from keel.rollout.changes import Changes
from keel.rollout.holds import Holds
from keel.rollout.results import Rollout
from keel.runtime import FlowRuntime
from keel.security.roles import Permission, Principal, local_operator
from keel.signals.runner import SignalRunner
from keel.store.database import Database, open_database
from keel.telemetry import Metrics

if TYPE_CHECKING:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    from keel.knowledge.service import Knowledge
    from keel.monitor.runs import Monitoring, MonitorRun, RunAlarm


@dataclass(frozen=True)
class ScheduledWork:
    """What one round of the timed work did."""

    review_breaches: list[ReviewBreach]  # recorded now, once each
    rollbacks: list[Rollout]  # canaries stopped past their bounds
    monitor_runs: list[MonitorRun]  # scheduled runs made
    integrity_alarms: list[RunAlarm]  # raised for flows held for integrity, or resolved
    deliveries: list[Delivery]  # outbox deliveries tried (first tries of new ones included)
    freshness_alarms: list[RunAlarm]  # raised for collections not synced in time, or resolved


class Engine:
    """An open project. Thread-safe: decide from as many threads as you like."""

    def __init__(
        self,
        settings: Settings,
        project: Project,
        db: Database,
        clock: Callable[[], float] = time.time,
        principal: Principal | None = None,
    ) -> None:
        self.project = project
        self.operator = principal or local_operator()
        self.ctx: Context = build_context(settings, project.flows, db, clock)
        self.runner = SignalRunner()
        self.decider = Decider(self.ctx, self.runner)
        self.explanations = Explanations(self.ctx, self.runner)
        self.notices = Notices(self.ctx, self.runner, self.explanations)
        self.reviews = Reviews(self.ctx)
        self.outcomes = Outcomes(self.ctx)
        self.trust = Trust(self.ctx)
        self.fairness = Fairness(self.ctx)
        self.autonomy = AutonomyControl(self.ctx)
        self.holds = Holds(self.ctx)
        self.changes = Changes(self.ctx)
        self.rollouts = Rollouts(self.ctx, self.changes)
        self.deliveries = Deliveries(self.ctx)
        self.models = ModelInventory(self.ctx)
        self.changes.seed(self.operator)  # the store decides (the files, in development mode)
        self.models.record_cards()  # each model file's card, with its version, once
        if self.ctx.registry.integrity():  # the store disagrees with the ledger: say so now
            self.monitoring.check_integrity()

    # ---- lifecycle -----------------------------------------------------------------------

    def close(self) -> None:
        if "knowledge" in self.__dict__:  # its audit log, if it was ever opened
            self._knowledge_audit.close()
        self.decider.close()
        self.runner.close()
        self.ctx.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    @cached_property
    def monitoring(self) -> Monitoring:
        """Monitor runs, alarms and the governor (loaded on first use: NumPy and SciPy)."""
        from keel.monitor.runs import Monitoring  # noqa: PLC0415 - NumPy and SciPy on demand

        return Monitoring(self.ctx, self.deliveries)

    @cached_property
    def knowledge(self) -> Knowledge:
        """Knowledge collections: documents, versions, governed search and revocation
        (loaded on first use; ``MissingExtraError`` naming ``knowledge`` without its
        packages). Re-check drops go to an audit log of this engine's own."""
        from keel.knowledge.service import Knowledge, require_extra  # noqa: PLC0415 - the knowledge extra on demand
        from keel.security.audit import AuditLog  # noqa: PLC0415

        require_extra()
        self._knowledge_audit = AuditLog(self.db, clock=self.clock)
        return Knowledge(self.ctx, audit=self._knowledge_audit)

    def run_scheduled(self) -> ScheduledWork:
        """The work a server does on its timers, done once now: review deadline breaches,
        canary bounds, integrity alarms, monitor runs whose period is due, outbox
        deliveries whose try is due, and knowledge collections' freshness (for an
        application that embeds the engine, or a cron job)."""
        monitored = any(rt.flow.monitoring.every_s for rt in self.flows.values())
        return ScheduledWork(
            review_breaches=self.reviews.sweep(),
            rollbacks=self.rollouts.check_running(),
            monitor_runs=self.monitoring.run_due() if monitored else [],
            integrity_alarms=self.monitoring.check_integrity(),
            deliveries=self.deliveries.dispatch_due(),
            freshness_alarms=self.monitoring.check_freshness(),
        )

    # ---- what the context holds ----------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.ctx.settings

    @property
    def db(self) -> Database:
        return self.ctx.db

    @property
    def clock(self) -> Callable[[], float]:
        return self.ctx.clock

    @property
    def metrics(self) -> Metrics:
        return self.ctx.metrics

    @property
    def writer(self) -> LedgerWriter:
        return self.ctx.writer

    @property
    def protector(self) -> Protector:
        return self.ctx.protector

    @property
    def flows(self) -> Mapping[str, FlowRuntime]:
        """Every flow as this process runs it now (read-only)."""
        return self.ctx.registry.flows

    def load_models(self, flow: str | None = None) -> int:
        """Load every model the flows (or ``flow``) run now instead of on first use
        (``keel serve`` does, so no request pays for it); raises ``ModelError`` or
        ``IntegrityError`` naming the signal and file. Returns how many models they run."""
        return self.ctx.registry.load_models(flow)

    def runtime(self, flow: str) -> FlowRuntime:
        """The flow as it decides now (changes made elsewhere are seen within a second)."""
        return self.ctx.registry.current(flow)

    def flow(self, name: str, by: Principal | None = None) -> FlowRuntime:
        """A flow's definition and what it runs, for a caller who may read it."""
        runtime = self.ctx.registry.current(name)
        self._who(by).require(Permission.READ_FLOWS, name)
        return runtime

    def readable_flows(self, by: Principal | None = None) -> list[FlowRuntime]:
        """The flows the caller may read, by name."""
        names = self._who(by).flows_with(Permission.READ_FLOWS, sorted(self.flows))
        return [self.flows[n] for n in names]

    def metrics_text(self, by: Principal | None = None) -> bytes:
        """The Prometheus exposition of this engine's metrics (``read_metrics``)."""
        self._who(by).require(Permission.READ_METRICS)
        return self.metrics.exposition()

    def _who(self, by: Principal | None) -> Principal:
        return by if by is not None else self.operator

    # ---- deciding ------------------------------------------------------------------------

    def decide(
        self,
        flow: str,
        inputs: Mapping[str, Any],
        subject_id: str | None = None,
        by: Principal | None = None,
    ) -> Decision:
        """Decide one case; it is in the ledger before this returns.

        ``by`` is who asks (default: the engine's principal); a flow with four-eyes reviews
        keeps that principal from reviewing this decision.
        """
        return self.decider.decide(self._who(by), flow, inputs, subject_id)

    def submit(
        self,
        flow: str,
        inputs: Mapping[str, Any],
        subject_id: str | None = None,
        by: Principal | None = None,
    ) -> Future[Decision]:
        """Validate one case now (raising ``InputError`` at once) and decide it in the next
        combined batch; the future resolves once the decision is in the ledger."""
        return self.decider.submit(self._who(by), flow, inputs, subject_id)

    def decide_many(
        self,
        flow: str,
        cases: Sequence[Mapping[str, Any]],
        subject_ids: Sequence[str | None] | None = None,
        by: Principal | None = None,
    ) -> list[Decision]:
        """Decide a batch atomically: every case is valid and recorded, or none is."""
        return self.decider.decide_many(self._who(by), flow, cases, subject_ids)

    def decide_file(
        self,
        flow: str,
        path: Path,
        out: Path | None = None,
        subject_column: str | None = None,
        chunk_size: int = DEFAULT_CHUNK,
        skip: int = 0,
        progress: Progress | None = None,
        by: Principal | None = None,
    ) -> BatchSummary:
        """Decide every case of a CSV or Parquet file after checking every row (a file with
        a bad row records nothing), recorded ``chunk_size`` cases at a time, each decided
        chunk written to a new ``out`` file. See ``keel.decide.batch``."""
        return decide_path(
            self.decider,
            self._who(by),
            flow,
            path,
            out,
            subject_column,
            chunk_size,
            skip,
            progress,
        )

    # ---- reading and explaining --------------------------------------------------------------

    def entry(self, record_id: str) -> Entry:
        return self.ctx.entry(record_id)

    def entries(
        self,
        limit: int = 20,
        flow: str | None = None,
        kind: str | None = None,
        by: Principal | None = None,
    ) -> list[Entry]:
        """The newest ``limit`` entries, oldest first."""
        return self.explanations.entries(self._who(by), limit, flow, kind)

    def decision(self, decision_id: str, by: Principal | None = None) -> Decision:
        return self.explanations.decision(decision_id, self._who(by))

    def list_decisions(
        self, flow: str | None = None, by: Principal | None = None, **filters: Any
    ) -> list[dict[str, Any]]:
        """Index rows of the decisions the caller may read, newest first (``Explanations``)."""
        return self.explanations.list_decisions(self._who(by), flow, **filters)

    def explain(self, decision_id: str, by: Principal | None = None) -> dict[str, Any]:
        return self.explanations.explain(decision_id, self._who(by))

    def notice(self, decision_id: str, fmt: str = "text", by: Principal | None = None) -> str:
        """The adverse-action notice of a decision, as text or HTML (``Notices``)."""
        return self.notices.render(decision_id, self._who(by), fmt)

    def what_if(
        self,
        decision_id: str,
        changes: Mapping[str, Any] | None = None,
        params: Mapping[str, Any] | None = None,
        by: Principal | None = None,
    ) -> dict[str, Any]:
        return self.explanations.what_if(decision_id, self._who(by), changes, params)

    def counterfactuals(
        self,
        decision_id: str,
        target: str | None = None,
        max_results: int = 3,
        by: Principal | None = None,
    ) -> CounterfactualSearch:
        return self.explanations.counterfactuals(decision_id, self._who(by), target, max_results)

    # ---- safe change ---------------------------------------------------------------------------

    def replay(
        self,
        flow: str,
        candidate: str,
        since: str,
        until: str,
        workers: int | None = None,
        parallel_from: int | None = None,
        by: Principal | None = None,
    ) -> dict[str, Any]:
        """What the stored policy version (or change) ``candidate`` would have decided on the
        flow's decisions recorded in ``[since, until)`` (see ``keel.rollout.replay``)."""
        from keel.rollout import replay  # noqa: PLC0415 - worker processes on demand

        threshold = replay.PARALLEL_FROM if parallel_from is None else parallel_from
        return replay.replay(
            self.ctx, self.changes, self._who(by), flow, candidate, since, until, workers, threshold
        )

    # ---- the ledger --------------------------------------------------------------------------

    def verify(
        self,
        checkpoint: Checkpoint | None = None,
        by: Principal | None = None,
        trusted_key: Ed25519PublicKey | None = None,
        deep: bool = False,
    ) -> VerifyReport:
        """Verify the chain, and against ``checkpoint`` (signed by ``trusted_key`` if given);
        with ``deep``, every governed side table against the chain too."""
        self._who(by).require(Permission.VERIFY_LEDGER)
        return verify_ledger(self.db, checkpoint, trusted_key, deep, self.ctx.protector)

    def checkpoint(self, by: Principal | None = None) -> Checkpoint:
        """Sign the current chain head, and record that a checkpoint was taken."""
        self._who(by).require(Permission.CHECKPOINT_LEDGER)
        now = self.clock()
        cp = checkpoint_head(
            self.db, load_signing_key(self.settings.keys_dir), self.settings.name, now
        )
        taken = CheckpointTaken(seq=cp.seq, head_hash=cp.head_hash, public_key=cp.public_key)
        self.writer.append([pending(taken, None, now)])
        return cp


def open_engine(
    project_dir: str | Path = ".",
    environ: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
    principal: Principal | None = None,
) -> Engine:
    """Open the Keel project in ``project_dir``: load and check it, open and migrate its store.
    The engine's shortcuts act as ``principal`` (default: the local operator)."""
    settings = load_settings(project_dir, environ)
    project = load_project(settings)
    db = open_database(settings.database_url)
    try:
        return Engine(settings, project, db, clock, principal)
    except Exception:
        db.close()
        raise


__all__ = ["Decision", "Engine", "Status", "open_engine", "settle_status"]
