"""Deep verification against the plain chain walk: one store, both timed in the same run.

    .venv/bin/python bench/verify.py [--decisions 50000]

The store is built through the real engine from the demo's seeded applicant generator
(10-rule policy, personal inputs sealed, window guardrails consumed): ``--decisions``
cases decided in batches, one waiting review in three resolved by a reviewer, one
decision in five with a reported outcome; kept in bench/.data/verify-N/ so later runs
reuse it. Each verification then runs in a fresh process (so its peak memory is its own),
reading the database and the data key as an auditor would: ``keel ledger verify`` (the
chain: every hash and link, the reference) and ``keel ledger verify --deep`` (the chain,
then every governed table rebuilt from it and compared, personal inputs opened). Printed:
entries per second for each, the ratio of their times, and each process's peak resident
memory (and how much of it verifying added: Keel's imports come first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from keel.config import load_settings
from keel.engine import open_engine
from keel.keys import load_data_key
from keel.ledger.verify import verify_ledger
from keel.protect import Protector
from keel.review.outcomes import OutcomeReport
from keel.scaffold import generate_applicants
from keel.scaffold.applicants import case_inputs
from keel.security.roles import Grant, Principal, Role
from keel.store.database import open_database
from run import make_project

FLOW = "credit_limit"
BATCH = 1000
OUTCOME_SHARE = 5  # one decision in five gets its outcome reported
REVIEW_SHARE = 3  # one waiting review in three is resolved
REVIEWER = Principal("key:bench-rev", "Bench reviewer", "bench-reviewer", (Grant(Role.REVIEWER),))


def build(root: Path, n: int) -> Path:
    """A project with ``n`` recorded decisions, reviews and outcomes (reused when built)."""
    marker = root / "built.txt"
    project = root / "bench-project"
    if marker.exists():
        return project
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    make_project(root)
    applicants = generate_applicants(n, seed=13)
    started = time.perf_counter()
    reviewed = 0
    with open_engine(project, environ={}) as engine:
        reports: list[OutcomeReport] = []
        for start in range(0, n, BATCH):
            chunk = applicants[start : start + BATCH]
            decided = engine.decide_many(FLOW, [case_inputs(a) for a in chunk])
            waiting = [d for d in decided if d.status == "pending_review"]
            for decision in waiting[::REVIEW_SHARE]:
                engine.reviews.resolve(decision.id, REVIEWER, "approve", "Checked")
                reviewed += 1
            for i, (decision, applicant) in enumerate(zip(decided, chunk, strict=True)):
                if (start + i) % OUTCOME_SHARE == 0:
                    label = "defaulted" if applicant["defaulted"] else "repaid"
                    value = (decision.value or 0.0) if applicant["defaulted"] else None
                    reports.append(OutcomeReport(decision.id, label, value))
            if (start // BATCH) % 10 == 0:
                print(f"  recorded {start + len(chunk):,} decisions", flush=True)
        engine.outcomes.report_many(reports, engine.operator, "bench")
    seconds = time.perf_counter() - started
    print(f"  built {n:,} decisions ({reviewed:,} reviews resolved, {len(reports):,} "
          f"outcomes) in {seconds:,.0f} s", flush=True)  # fmt: skip
    marker.write_text(str(n))
    return project


def _status_kib(field: str) -> int | None:
    """A memory figure of this process from /proc (Linux), in KiB; None elsewhere."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> int:
    """Reset the peak resident size to the present one (Linux: clear_refs 5), so the peak
    read after verifying is verifying's own and not the imports'; returns the present size."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return _status_kib("VmRSS") or 0


def measure(project: Path, deep: bool) -> dict[str, object]:
    """One verification in this process: seconds, entries, rows compared, peak memory."""
    settings = load_settings(project, {})
    db = open_database(settings.database_url, migrate=False)
    protector = Protector(*load_data_key(settings.keys_dir))
    before_kib = _reset_peak()
    started = time.perf_counter()
    report = verify_ledger(db, deep=deep, protector=protector)
    seconds = time.perf_counter() - started
    db.close()
    if not report.ok:
        raise SystemExit(f"verification failed: {report.problem}")
    rows = report.deep.rows if report.deep is not None else {}
    peak_kib = _status_kib("VmHWM") or resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"seconds": seconds, "entries": report.entries, "rows": rows, "peak_kib": peak_kib,
            "before_kib": before_kib}  # fmt: skip


def child(project: Path, deep: bool) -> dict[str, object]:
    args = [sys.executable, __file__, "--measure", "deep" if deep else "plain", str(project)]
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    result: dict[str, object] = json.loads(out.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=50_000)
    parser.add_argument("--data", type=Path, default=Path(__file__).parent / ".data")
    parser.add_argument("--measure", nargs=2, metavar=("KIND", "PROJECT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        kind, project = args.measure
        print(json.dumps(measure(Path(project), kind == "deep")))
        return
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    project = build(args.data / f"verify-{args.decisions}", args.decisions)
    plain, deep = child(project, False), child(project, True)
    entries = int(str(plain["entries"]))
    print()
    for name, result in (("verify (chain, the reference)", plain), ("verify --deep", deep)):
        seconds = float(str(result["seconds"]))
        peak, before = int(str(result["peak_kib"])) / 1024, int(str(result["before_kib"])) / 1024
        print(f"{name}: {entries:,} entries in {seconds:,.2f} s ({entries / seconds:,.0f} "
              f"entries/s); peak memory {peak:,.0f} MiB ({peak - before:+,.0f} MiB over the "
              f"process before verifying)")  # fmt: skip
    ratio = float(str(deep["seconds"])) / float(str(plain["seconds"]))
    print(f"ratio: --deep takes {ratio:.2f}× the plain walk's time")
    rows = deep["rows"]
    assert isinstance(rows, dict)
    print(f"rows compared: {sum(rows.values()):,} in {len(rows)} tables: "
          + ", ".join(f"{t} {n:,}" for t, n in sorted(rows.items())))  # fmt: skip


if __name__ == "__main__":
    main()
