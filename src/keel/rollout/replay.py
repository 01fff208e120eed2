"""Replay: what a candidate policy would have decided on the recorded cases of a time range.

For every decision a flow recorded in ``[since, until)``, the candidate policy is evaluated on
the decision's own inputs (personal ones decrypted from the store) and the signals its models
gave then, with the candidate's static guardrails (kill switch, confidence floors, bounds).
The report says how many decisions change and which, the transition matrix (recorded action →
candidate action), the sums of values per action before and after (approved amount,
exposure), how many cases would now wait for review, and — where outcomes are known — how
many decisions the candidate gets right that were wrong, and the reverse, with the outcome
values at stake.

Each decision is judged under the autonomy level recorded with it, so replaying the active
version itself changes nothing, even after the flow's level changed.

Rate and exposure limits, review capacity and holds are not replayed: they depend on the
live traffic around each case (and its order), which a candidate would have shaped
differently. A decision whose recorded result one of them shaped (a rate-limit escalation,
say) is counted under ``not_modelled``, by cause, and left out of every comparison: it is
neither a change nor grey-zone review load.

Where the flow names its bad outcomes (``outcome.positive``), the report gives the
approval-rate against bad-rate trade-off of the recorded and the candidate decisions: the
share given the favourable action, and the share of those with a known outcome that went
bad, with how many have no outcome yet. A candidate change that
pins other model versions has those models re-run on the recorded inputs (one call per model
per chunk of cases); the other signals are what the models said then.

Large ranges are split into slices of the ledger replayed by worker processes in parallel,
each reading its slice straight from the store.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sqlalchemy import text

from keel.context import Context
from keel.decide.draft import settle_status
from keel.errors import ErasedDataError, InputError
from keel.flows import Autonomy, Flow
from keel.keys import load_data_key
from keel.policy.compiler import CompiledPolicy, compile_policy
from keel.policy.guardrails import check_static
from keel.policy.model import policy_from_document
from keel.protect import Protector, Sealed
from keel.review.fairness import GroupTally
from keel.rollout.changes import Changes, may_replay
from keel.security.roles import Principal
from keel.signals.loading import load_model
from keel.signals.runner import SignalResult, SignalRunner
from keel.store.database import open_database

SAMPLE = 100  # changed decisions listed in the report
_FETCH = 2000
PARALLEL_FROM = 20_000  # ranges at least this large are replayed by worker processes
# Guardrails that depend on the traffic around a case: a recorded hit of one is not modelled.
WINDOW_KINDS = frozenset({"rate", "exposure", "review_capacity"})
NOT_REPLAYED = (
    "rate and exposure limits, review capacity and holds (they depend on live traffic; "
    "decisions they shaped are counted as not modelled)"
)

_QUERY = """
SELECT d.id, l.record, p.key_id, p.nonce, p.ciphertext, o.label, o.value
FROM decisions d
JOIN ledger l ON l.seq = d.seq
LEFT JOIN protected_values p ON p.record_id = d.id
LEFT JOIN outcomes o ON o.decision_id = d.id
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
  AND d.seq >= :low AND d.seq < :high
ORDER BY d.seq
"""


@dataclass
class Side:
    """The approval-rate against bad-rate figures of one side (recorded or candidate)."""

    approved: int = 0  # decisions given the favourable action
    with_outcome: int = 0  # of those, with a reported outcome that judges it
    bad: int = 0  # of those, with a bad outcome (outcome.positive)

    def merge(self, other: Side) -> None:
        self.approved += other.approved
        self.with_outcome += other.with_outcome
        self.bad += other.bad

    def count(
        self, action: str, favourable: str, label: str | None, positive: frozenset[str]
    ) -> None:
        """Count one decision (``label``: its reported outcome, if one that judges it)."""
        if action != favourable:
            return
        self.approved += 1
        if label is not None:
            self.with_outcome += 1
            self.bad += label in positive

    def report(self, compared: int) -> dict[str, Any]:
        return {
            "approved": self.approved,
            "approval_rate": self.approved / compared if compared else None,
            "with_outcome": self.with_outcome,
            "no_outcome": self.approved - self.with_outcome,
            "bad": self.bad,
            "bad_rate": self.bad / self.with_outcome if self.with_outcome else None,
        }


def _not_modelled(body: Mapping[str, Any]) -> str | None:
    """Why a recorded result cannot be replayed faithfully (None: it can): a hold on the
    flow, or a guardrail that counts the traffic around the case."""
    if body.get("hold"):
        return "hold"
    for hit in body["guardrails"]["hits"]:
        if hit["kind"] in WINDOW_KINDS:
            return str(hit["kind"])
    return None


@dataclass
class Tally:
    """What one slice of the range adds up to; slices merge into the report."""

    decisions: int = 0
    compared: int = 0  # decisions less those not modelled
    not_modelled: Counter[str] = field(default_factory=Counter)
    recorded_side: Side = field(default_factory=Side)
    candidate_side: Side = field(default_factory=Side)
    changed: int = 0
    transitions: Counter[tuple[str, str]] = field(default_factory=Counter)
    recorded_sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    candidate_sums: defaultdict[str, float] = field(default_factory=lambda: defaultdict(float))
    recorded_review: int = 0
    candidate_review: int = 0
    fallbacks: int = 0
    erased: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    known: int = 0
    recorded_right: int = 0
    candidate_right: int = 0
    fixed: int = 0
    broken: int = 0
    fixed_value: float = 0.0
    broken_value: float = 0.0
    sample: list[dict[str, Any]] = field(default_factory=list)
    fairness: GroupTally = field(default_factory=GroupTally)  # favourable per group

    def merge(self, other: Tally) -> None:
        for name in (
            "decisions",
            "compared",
            "changed",
            "recorded_review",
            "candidate_review",
            "fallbacks",
            "erased",
            "known",
            "recorded_right",
            "candidate_right",
            "fixed",
            "broken",
            "fixed_value",
            "broken_value",
        ):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.transitions.update(other.transitions)
        self.versions.update(other.versions)
        self.not_modelled.update(other.not_modelled)
        self.recorded_side.merge(other.recorded_side)
        self.candidate_side.merge(other.candidate_side)
        for mine, theirs in (
            (self.recorded_sums, other.recorded_sums),
            (self.candidate_sums, other.candidate_sums),
        ):
            for action, total in theirs.items():
                mine[action] += total
        self.sample.extend(other.sample[: max(0, SAMPLE - len(self.sample))])
        self.fairness.merge(other.fairness)


@dataclass(frozen=True)
class _Job:
    """Everything a worker needs to replay one slice, picklable."""

    database_url: str
    keys_dir: str
    flow: Flow
    document: Mapping[str, Any]
    labels: Mapping[str, str | None]
    since: str
    until: str
    low: int
    high: int
    models: Mapping[str, str] = field(default_factory=dict)  # signal → candidate model file
    timeouts_ms: Mapping[str, int] = field(default_factory=dict)


def _replay_slice(job: _Job) -> Tally:
    """Replay one slice of the range (in a worker process, or in the caller's)."""
    policy = policy_from_document(job.document, "<candidate>")
    compiled = compile_policy(policy, job.flow)
    key_id, key = load_data_key(Path(job.keys_dir))
    protector = Protector(key_id, key)
    db = open_database(job.database_url, migrate=False)
    try:
        with db.read() as conn:
            rows = conn.execute(
                text(_QUERY),
                {
                    "flow": job.flow.name,
                    "since": job.since,
                    "until": job.until,
                    "low": job.low,
                    "high": job.high,
                },
            )
            rescore = _rescorer(job) if job.models else None
            return _tally(rows_of(rows), compiled, job.flow, protector, job.labels, rescore)
    finally:
        db.close()


def _rescorer(job: _Job) -> Callable[[list[dict[str, Any]]], list[SignalResult]]:
    """Score cases with the candidate's models (one call per model per chunk)."""
    models = {
        signal: load_model(replace(job.flow.signals[signal], model=path), Path(path).parent)
        for signal, path in job.models.items()
    }
    runner = SignalRunner()

    def rescore(cases: list[dict[str, Any]]) -> list[SignalResult]:
        return runner.run_many(models, job.timeouts_ms, cases, flow=job.flow.name)

    return rescore


def rows_of(result: Any) -> Iterator[list[tuple[Any, ...]]]:
    while True:
        batch = result.fetchmany(_FETCH)
        if not batch:
            return
        yield batch


def _cases(
    chunks: Iterator[list[tuple[Any, ...]]],
    protector: Protector,
    tally: Tally,
    rescore: Callable[[list[dict[str, Any]]], list[SignalResult]] | None,
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any], dict[str, Any], dict[str, str], Any, Any]]:
    """Each replayable case: id, record body, inputs, signals, failed signals, outcome."""
    for chunk in chunks:
        ready = []
        for decision_id, record, key_id, nonce, ciphertext, label, outcome_value in chunk:
            body = json.loads(record)["body"]
            sealed = Sealed(decision_id, key_id, nonce, ciphertext) if key_id else None
            try:
                inputs = protector.join(decision_id, body["inputs"], sealed)
            except ErasedDataError:
                tally.erased += 1  # personal inputs erased on request: cannot be replayed
                continue
            signals = {k: v for k, v in body["signals"].items() if "score" in v}
            case = (decision_id, body, inputs, signals, body["failed_signals"], label,
                    outcome_value)  # fmt: skip
            if rescore is None:
                yield case
            else:
                ready.append(case)
        if ready and rescore is not None:
            for case, result in zip(ready, rescore([c[2] for c in ready]), strict=True):
                signals, failed = case[3], dict(case[4])
                for name in result.values.keys() | result.failed.keys():
                    signals.pop(name, None)
                    failed.pop(name, None)
                signals.update(result.values)
                failed.update(result.failed)
                yield (*case[:4], failed, *case[5:])


def _tally(
    chunks: Iterator[list[tuple[Any, ...]]],
    compiled: CompiledPolicy,
    flow: Flow,
    protector: Protector,
    labels: Mapping[str, str | None],
    rescore: Callable[[list[dict[str, Any]]], list[SignalResult]] | None = None,
) -> Tally:
    tally = Tally()
    guardrails = compiled.policy.guardrails
    kill_switch = guardrails.kill_switch
    favourable = flow.outcome.favourable()
    positive = frozenset(flow.outcome.positive)
    cases = _cases(chunks, protector, tally, rescore)
    for decision_id, body, inputs, signals, failed, label, outcome_value in cases:
        tally.decisions += 1
        tally.versions[body["policy"]["version"]] += 1
        cause = _not_modelled(body)
        if cause is not None:
            tally.not_modelled[cause] += 1
            continue
        tally.compared += 1
        evaluation = compiled.evaluate(inputs, signals, failed, reason=False)
        action, value, review = evaluation.action, evaluation.value, evaluation.review
        static = check_static(guardrails, action, value, signals, flow.money)
        value = static.value
        escalated = False
        for hit in static.hits:
            if hit.kind == "kill_switch" and kill_switch is not None:
                action, value, escalated = kill_switch.action, None, True
                break
            if hit.on_hit == "fallback":
                action, value, review = compiled.policy.fallback.action, None, True
                break
            escalated = escalated or hit.on_hit == "escalate"
        if evaluation.fallback_cause:
            tally.fallbacks += 1
        # The level the decision was made at, not the flow's now: a replay of the version
        # that decided must reproduce the recorded status.
        status = settle_status(Autonomy(body["autonomy"]), review, escalated)
        old_action, old_value = body["action"], body["value"]
        if favourable is not None:
            judging = label if label is not None and labels.get(label) is not None else None
            tally.recorded_side.count(old_action, favourable, judging, positive)
            tally.candidate_side.count(action, favourable, judging, positive)
        tally.transitions[(old_action, action)] += 1
        tally.recorded_sums[old_action] += old_value or 0.0
        tally.candidate_sums[action] += value or 0.0
        tally.recorded_review += body["status"] == "pending_review"
        tally.candidate_review += status == "pending_review"
        tally.fairness.add(flow, inputs, old_action, action)
        changed = old_action != action or not _same_value(old_value, value)
        if changed:
            tally.changed += 1
            if len(tally.sample) < SAMPLE:
                tally.sample.append(
                    {
                        "decision": decision_id,
                        "recorded": {"action": old_action, "value": old_value},
                        "candidate": {"action": action, "value": value, "status": status},
                        "rule": evaluation.rule,
                    }
                )
        right = labels.get(label) if label is not None else None
        if right is not None:
            tally.known += 1
            was, now = old_action == right, action == right
            tally.recorded_right += was
            tally.candidate_right += now
            if now and not was:
                tally.fixed += 1
                tally.fixed_value += outcome_value or 0.0
            elif was and not now:
                tally.broken += 1
                tally.broken_value += outcome_value or 0.0
    return tally


def _same_value(a: float | None, b: float | None) -> bool:
    if a is None or b is None:
        return a is b
    return math.isclose(a, b, rel_tol=1e-9, abs_tol=1e-9)


def replay(
    ctx: Context,
    changes: Changes,
    principal: Principal,
    flow: str,
    candidate: str,
    since: str,
    until: str,
    workers: int | None = None,
    parallel_from: int = PARALLEL_FROM,
) -> dict[str, Any]:
    """Replay the stored policy version ``candidate`` (or a prefix of it, or a change id) on
    ``flow``'s decisions recorded in ``[since, until)``: in ``workers`` processes (default:
    one per CPU) when the range holds at least ``parallel_from`` decisions."""
    started = time.perf_counter()
    runtime = ctx.registry.current(flow)
    may_replay(principal, flow)
    pins: dict[str, str] = {}
    if candidate.startswith("chg_"):
        change = changes.get(candidate, principal)
        if change.flow != flow:
            raise InputError(
                f"change {candidate} is for flow '{change.flow}', not '{flow}'",
                {"candidate": candidate},
            )
        candidate = change.version
        pins = change.models or {}
    running = {s: m.version for s, m in runtime.models.items()}
    changed_models = {
        signal: str(changes.model_path(version))
        for signal, version in pins.items()
        if running.get(signal) != version
    }
    version = changes.resolve(flow, candidate, principal)
    policy = changes.policy(flow, version)
    if since >= until:
        raise InputError(
            f"the range is empty: since {since} is not before until {until}",
            {"since": since, "until": until},
        )
    with ctx.db.read() as conn:
        low, high, count = conn.execute(
            text(
                "SELECT min(seq), max(seq), count(*) FROM decisions "
                "WHERE flow = :flow AND recorded_at >= :since AND recorded_at < :until"
            ),
            {"flow": flow, "since": since, "until": until},
        ).one()
    if not count:
        raise InputError(
            f"flow '{flow}' recorded no decisions between {since} and {until}: nothing to replay",
            {"flow": flow, "since": since, "until": until},
        )
    settings = ctx.settings
    parts = max(1, workers if workers is not None else (os.cpu_count() or 1))
    if count < parallel_from:
        parts = 1
    step = max(1, math.ceil((high + 1 - low) / parts))
    jobs = [
        _Job(
            settings.database_url,
            str(settings.keys_dir),
            runtime.flow,
            dict(policy.document),
            dict(runtime.flow.outcome.labels),
            since,
            until,
            start,
            min(start + step, high + 1),
            changed_models,
            dict(runtime.timeouts_ms),
        )
        for start in range(low, high + 1, step)
    ]
    total = Tally()
    if len(jobs) == 1:
        total.merge(_replay_slice(jobs[0]))
    else:
        with ProcessPoolExecutor(len(jobs)) as pool:
            for part in pool.map(_replay_slice, jobs):
                total.merge(part)
    seconds = time.perf_counter() - started
    report = _report(flow, version, since, until, total, seconds, runtime.flow)
    report["workers"] = len(jobs)
    report["candidate_models"] = {s: pins[s] for s in changed_models}
    if changed_models:
        report["not_replayed"] = NOT_REPLAYED
    return report


def _report(
    flow: str, version: str, since: str, until: str, t: Tally, seconds: float, spec: Flow
) -> dict[str, Any]:
    matrix: dict[str, dict[str, int]] = {}
    for (old, new), n in sorted(t.transitions.items()):
        matrix.setdefault(old, {})[new] = n
    actions = sorted(set(t.recorded_sums) | set(t.candidate_sums))
    known = t.known
    favourable = spec.outcome.favourable()
    tradeoff: dict[str, Any] = {"favourable": favourable, "bad": list(spec.outcome.positive)}
    if favourable is None:
        tradeoff["note"] = (
            "name the bad outcome labels in the flow's outcome.positive (the other labels "
            "calling one action right) to see the approval rate against the bad rate"
        )
    else:
        tradeoff["recorded"] = t.recorded_side.report(t.compared)
        tradeoff["candidate"] = t.candidate_side.report(t.compared)
    return {
        "flow": flow,
        "candidate": version,
        "recorded_versions": dict(t.versions),
        "since": since,
        "until": until,
        "decisions": t.decisions,
        "compared": t.compared,
        "not_modelled": dict(sorted(t.not_modelled.items())),
        "changed": t.changed,
        "changed_share": t.changed / t.compared if t.compared else 0.0,
        "transitions": matrix,
        "sums": {
            a: {
                "recorded": t.recorded_sums.get(a, 0.0),
                "candidate": t.candidate_sums.get(a, 0.0),
                "difference": t.candidate_sums.get(a, 0.0) - t.recorded_sums.get(a, 0.0),
            }
            for a in actions
        },
        "review": {"recorded": t.recorded_review, "candidate": t.candidate_review},
        "candidate_fallbacks": t.fallbacks,
        "erased": t.erased,
        "outcomes": {
            "known": known,
            "recorded_right": t.recorded_right,
            "candidate_right": t.candidate_right,
            "recorded_accuracy": t.recorded_right / known if known else None,
            "candidate_accuracy": t.candidate_right / known if known else None,
            "fixed": t.fixed,
            "broken": t.broken,
            "fixed_value": t.fixed_value,
            "broken_value": t.broken_value,
            "value_means": spec.outcome.value,
        },
        "tradeoff": tradeoff,
        "changed_sample": t.sample,
        "fairness": t.fairness.report(spec),
        "not_replayed": f"{NOT_REPLAYED}; models the candidate does not change (their "
        "recorded signals are used)",
        "seconds": round(seconds, 3),
        "per_second": round(t.decisions / seconds) if seconds > 0 else None,
    }
