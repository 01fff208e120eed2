"""Replay throughput: a candidate policy over 1,000,000 recorded decisions, against the
normal decide path evaluating the same cases one by one, in the same run.

    make bench-replay      # or: .venv/bin/python bench/replay.py [--decisions 1000000]

The recorded decisions come from the demo's seeded applicant generator through the real
engine (10-rule policy, personal inputs sealed, a fifth of them with a reported outcome),
kept in bench/.data/ so later runs reuse them. The candidate moves two thresholds. The
decide path is timed on a sample of the same cases (one ``decide`` call each, as a caller
would make them, each in the ledger before it returns) and its rate projected to the
whole range; the ratio compares the two rates.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from keel.engine import open_engine
from keel.ledger.records import iso_time
from keel.review.outcomes import OutcomeReport
from keel.scaffold import generate_applicants
from keel.scaffold.applicants import case_inputs
from keel.security.roles import Grant, Principal, Role
from run import make_project

FLOW = "credit_limit"
BATCH = 1000
GOAL_S = 60.0
OUTCOME_SHARE = 5  # one decision in five gets its outcome reported
CANDIDATE = (
    ("  decline_risk: 0.45\n", "  decline_risk: 0.40\n"),
    ("  review_risk: 0.22\n", "  review_risk: 0.25\n"),
)


def build(root: Path, n: int) -> tuple[Path, str, str]:
    """A project with ``n`` recorded decisions (reused when already built)."""
    marker = root / f"built-{n}.txt"
    project = root / "bench-project"
    if marker.exists():
        since, until = marker.read_text().split()
        return project, since, until
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    make_project(root)
    applicants = generate_applicants(n, seed=11)
    started = time.perf_counter()
    with open_engine(project, environ={}) as engine:
        since = iso_time(engine.clock())
        reports = []
        for start in range(0, n, BATCH):
            chunk = applicants[start : start + BATCH]
            decided = engine.decide_many(FLOW, [case_inputs(a) for a in chunk])
            for i, (decision, applicant) in enumerate(zip(decided, chunk, strict=True)):
                if (start + i) % OUTCOME_SHARE == 0:
                    label = "defaulted" if applicant["defaulted"] else "repaid"
                    value = (decision.value or 0.0) if applicant["defaulted"] else None
                    reports.append(OutcomeReport(decision.id, label, value))
            if len(reports) >= 50_000:
                engine.outcomes.report_many(reports, engine.operator, "bench")
                reports = []
            if (start // BATCH) % 100 == 0:
                print(f"  recorded {start + len(chunk):,} decisions", flush=True)
        if reports:
            engine.outcomes.report_many(reports, engine.operator, "bench")
        until = iso_time(engine.clock() + 1)
    print(f"  built {n:,} decisions in {time.perf_counter() - started:,.0f} s", flush=True)
    marker.write_text(f"{since} {until}")
    return project, since, until


def candidate(engine: object, project: Path) -> str:
    text = (project / "policies" / "credit_limit.yaml").read_text()
    for old, new in CANDIDATE:
        assert old in text, old
        text = text.replace(old, new)
    author = Principal("bench:author", "Bench", "bench", (Grant(Role.POLICY_AUTHOR),))
    for change in engine.changes.changes(FLOW, author):  # type: ignore[attr-defined]
        if change.reason == "bench candidate":
            return str(change.version)
    return str(engine.changes.propose(FLOW, text, author, "bench candidate").version)  # type: ignore[attr-defined]


def decide_path(project: Path, root: Path, sample: int) -> float:
    """Decisions per second through ``engine.decide`` one at a time, on a scratch copy."""
    scratch = root / "scratch"
    shutil.rmtree(scratch, ignore_errors=True)
    shutil.copytree(project, scratch, ignore=shutil.ignore_patterns("keel.db*"))
    cases = [case_inputs(a) for a in generate_applicants(sample, seed=11)]
    with open_engine(scratch, environ={}) as engine:
        for case in cases[:200]:  # warm up
            engine.decide(FLOW, case)
        started = time.perf_counter()
        for case in cases:
            engine.decide(FLOW, case)
        seconds = time.perf_counter() - started
    shutil.rmtree(scratch, ignore_errors=True)
    return sample / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=1_000_000)
    parser.add_argument("--sample", type=int, default=10_000, help="decide-path sample size")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data" / "replay")
    args = parser.parse_args()
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    project, since, until = build(args.data, args.decisions)
    with open_engine(project, environ={}) as engine:
        version = candidate(engine, project)
        report = engine.replay(FLOW, version, since, until, workers=args.workers)
    seconds = report["seconds"]
    replay_rate = report["decisions"] / seconds
    decide_rate = decide_path(project, args.data, args.sample)
    projected = report["decisions"] / decide_rate
    print()
    print(
        f"replay: {report['decisions']:,} decisions in {seconds:,.1f} s "
        f"({replay_rate:,.0f}/s, {report['workers']} processes); goal < {GOAL_S:.0f} s: "
        f"{'met' if seconds < GOAL_S else 'NOT met'}"
    )
    print(
        f"decide path, one by one: {decide_rate:,.0f}/s on {args.sample:,} of the same cases "
        f"→ {projected:,.0f} s for all {report['decisions']:,}"
    )
    print(
        f"ratio: replay takes {seconds / projected:.3f}× the decide path's time "
        f"({replay_rate / decide_rate:,.1f}× the rate)"
    )
    print(
        f"changed: {report['changed']:,} ({report['changed_share']:.1%}); "
        f"transitions: {report['transitions']}"
    )
    print(
        f"outcomes known: {report['outcomes']['known']:,}; accuracy recorded "
        f"{report['outcomes']['recorded_accuracy']:.4f} → candidate "
        f"{report['outcomes']['candidate_accuracy']:.4f}; fixed {report['outcomes']['fixed']:,}, "
        f"broken {report['outcomes']['broken']:,}"
    )


if __name__ == "__main__":
    main()
