"""Keel's benchmarks, each side by side with its reference in the same run.

    make bench            # or: .venv/bin/python bench/run.py [--cases 5000]

1. Governance overhead per decision, model call excluded (p50, p99), and end-to-end
   decisions per second per core with the durable ledger (SQLite WAL, synchronous=FULL),
   for a 10-rule policy with 2 guardrail windows.
2. Ledger append throughput against raw batched SQLite inserts of the same rows.
3. Policy evaluation against zen-engine (GoRules) evaluating the same decision table.

The other benches have targets of their own: ``make bench-load``, ``bench-crash``,
``bench-verify``, ``bench-replay``, ``bench-drift``, ``bench-startup`` and ``bench-batch``
(``keel decide --file`` on 1,000,000 rows against ``Engine.decide_many``).
"""

from __future__ import annotations

import argparse
import platform
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import zen

import zen_policy
from keel.canonical import canonical_json
from keel.decide.draft import draft
from keel.engine import open_engine
from keel.ledger.records import chain_hash, new_id
from keel.ledger.windows import WindowState
from keel.ledger.writer import Pending, WindowGate
from keel.scaffold import generate_applicants, init_project
from keel.scaffold.applicants import case_inputs

TENTH_RULE = """\
  - name: short_employment
    when: input.employment_years < 0.25 && signals.default_risk.score >= 0.15
    action: refer
    reason: Less than three months in employment with elevated risk.
  - name: thin_file
"""


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def make_project(root: Path) -> Path:
    project = init_project(root / "bench-project")
    policy = project / "policies" / "credit_limit.yaml"
    text = policy.read_text()
    text = text.replace("  - name: thin_file\n", TENTH_RULE, 1)
    # Windows large enough that every approval is checked against and consumes both.
    text = text.replace("      max: 200\n", "      max: 1000000000\n")
    text = text.replace("      max: 750000\n", "      max: 1000000000000\n")
    policy.write_text(text)
    return project


def bench_overhead(project: Path, cases: list[dict[str, Any]]) -> dict[str, float]:
    with open_engine(project, environ={}) as engine:
        runtime = engine.runtime("credit_limit")
        assert (
            len(runtime.policy.rules) == 10 and len(runtime.policy.policy.guardrails.windows) == 2
        )
        signals = [runtime.signals(engine.runner, runtime.flow.validate_input(c)) for c in cases]
        state = WindowState()
        protected = runtime.flow.protected_fields()
        samples = []
        prev = "0" * 64
        for case, sig in zip(cases, signals, strict=True):
            start = time.perf_counter()
            clean = runtime.flow.validate_input(case)
            did = new_id("dec")
            stored, _ = engine.protector.split(did, clean, protected)
            d = draft(runtime, engine.runner, did, None, clean, stored, signals=sig)
            body = d.finalize(WindowGate(state, time.time()))
            record = canonical_json(
                {"schema_version": 1, "kind": "decision", "id": did, "body": body}
            )
            prev = chain_hash(prev, record)
            samples.append((time.perf_counter() - start) * 1e6)
        model_us = [s.model_ms * 1000 for s in signals]
        # End to end, one caller, one decision at a time: each waits for its own commit.
        e2e = []
        for case in cases[:500]:
            start = time.perf_counter()
            engine.decide("credit_limit", case)
            e2e.append((time.perf_counter() - start) * 1e6)
    return {
        "overhead_p50_us": pct(samples, 0.5),
        "overhead_p99_us": pct(samples, 0.99),
        "model_p50_us": pct(model_us, 0.5),
        "single_decide_p50_us": pct(e2e, 0.5),
        "single_decide_p99_us": pct(e2e, 0.99),
    }


def in_threads(target: Any, cases: list[dict[str, Any]], threads: int) -> tuple[int, float, float]:
    """Run ``target`` on equal shares of ``cases`` in ``threads`` threads: (n, wall s, CPU s)."""
    share = len(cases) // threads
    pool = [
        threading.Thread(target=target, args=(cases[i * share : (i + 1) * share],))
        for i in range(threads)
    ]
    wall, cpu = time.perf_counter(), time.process_time()
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return share * threads, time.perf_counter() - wall, time.process_time() - cpu


def bench_throughput(project: Path, cases: list[dict[str, Any]]) -> dict[str, float]:
    out: dict[str, float] = {}
    with open_engine(project, environ={}) as engine:
        engine.decide_many("credit_limit", cases[:100])  # warm up
        wall, cpu = time.perf_counter(), time.process_time()
        for i in range(0, len(cases), 100):
            engine.decide_many("credit_limit", cases[i : i + 100])
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        out["batch100_per_s"] = len(cases) / wall
        out["batch100_per_cpu_s"] = len(cases) / cpu

        def batches(part: list[dict[str, Any]]) -> None:
            for k in range(0, len(part), 100):
                engine.decide_many("credit_limit", part[k : k + 100])

        def one_by_one(part: list[dict[str, Any]]) -> None:
            for case in part:
                engine.decide("credit_limit", case)

        for key, target, threads in (("callers2", batches, 2), ("threads8", one_by_one, 8)):
            n, wall, cpu = in_threads(target, cases, threads)
            out[f"{key}_per_s"] = n / wall
            out[f"{key}_per_cpu_s"] = n / cpu
        assert engine.verify().ok
    return out


def bench_ledger(root: Path, n: int, batch: int, bodies: list[dict[str, Any]]) -> dict[str, float]:
    """Append real decision records (cycled) through Keel's writer; then the same rows raw."""
    # Keel: the real writer, real group commits, chained and canonicalised.
    with open_engine(
        root / "bench-project", environ={"KEEL_DATABASE_URL": f"sqlite:///{root}/keel-ledger.db"}
    ) as engine:
        start = time.perf_counter()
        for i in range(0, n, batch):
            engine.writer.append(
                [
                    Pending(
                        "decision",
                        new_id("dec"),
                        "credit_limit",
                        _const(bodies[(i + j) % len(bodies)]),
                    )
                    for j in range(min(batch, n - i))
                ]
            )
        keel_s = time.perf_counter() - start
        assert engine.verify().ok
        rows = [
            tuple(r)
            for r in engine.db.engine.raw_connection()
            .cursor()
            .execute(
                "select seq + 1000000, kind, record_id || 'x', flow, recorded_at, record, prev_hash, hash from ledger"
            )
            .fetchall()
        ]
    rows = rows[-n:]
    # Raw: the same rows, batched executemany, same pragmas, no hashing or canonical JSON.
    raw = sqlite3.connect(root / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    raw.execute(
        "create table ledger (seq integer primary key, kind text, record_id text, flow text, "
        "recorded_at text, record text, prev_hash text, hash text)"
    )
    raw.execute("create unique index ix_r on ledger(record_id)")
    raw.execute("create index ix_f on ledger(flow, seq)")
    start = time.perf_counter()
    for i in range(0, len(rows), batch):
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany("insert into ledger values (?,?,?,?,?,?,?,?)", rows[i : i + batch])
        raw.execute("COMMIT")
    raw_s = time.perf_counter() - start
    raw.close()
    return {"keel_per_s": n / keel_s, "raw_per_s": len(rows) / raw_s, "batch": batch}


def _const(body: dict[str, Any]) -> Any:
    return lambda _gate: body


def real_bodies(project: Path, cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    with open_engine(project, environ={}) as engine:
        decisions = engine.decide_many("credit_limit", cases[:200])
        return [engine.entry(d.id).body for d in decisions]


def bench_policy(project: Path, cases: list[dict[str, Any]]) -> dict[str, float]:
    with open_engine(project, environ={}) as engine:
        runtime = engine.runtime("credit_limit")
        prepared = []
        for c in cases:
            clean = runtime.flow.validate_input(c)
            sig = runtime.signals(engine.runner, clean)
            prepared.append((clean, sig.values))
    decision = zen.ZenEngine().create_decision(zen_policy.jdm())
    compiled = runtime.policy
    agree = 0
    keel_t = zen_t = 0.0
    for _ in range(3):  # interleaved rounds, best of three each
        start = time.perf_counter()
        keel_results = [compiled.evaluate(i, s) for i, s in prepared]
        k = time.perf_counter() - start
        start = time.perf_counter()
        zen_results = [decision.evaluate({"input": i, "signals": s})["result"] for i, s in prepared]
        z = time.perf_counter() - start
        keel_t = k if not keel_t else min(keel_t, k)
        zen_t = z if not zen_t else min(zen_t, z)
    for kr, zr in zip(keel_results, zen_results, strict=True):
        same_value = (kr.value is None and zr.get("value") is None) or (
            kr.value is not None and abs(kr.value - float(zr["value"])) < 1e-6
        )
        agree += kr.rule == zr["rule"] and kr.action == zr["action"] and same_value
    n = len(prepared)
    return {"keel_us": keel_t / n * 1e6, "zen_us": zen_t / n * 1e6, "agree": agree, "n": n}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--cases", type=int, default=5000)
    parser.add_argument("--repeat", type=int, default=5, help="throughput runs (noisy machines)")
    args = parser.parse_args()
    cases = [case_inputs(a) for a in generate_applicants(args.cases, seed=99)]
    print(
        f"# Keel benchmarks — {time.strftime('%Y-%m-%d')} — {platform.node()} "
        f"({platform.processor() or platform.machine()}, Python {platform.python_version()})"
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        project = make_project(root)

        o = bench_overhead(project, cases)
        print(
            "\n## 1. Governance overhead per decision (10 rules, 2 guardrail windows), model excluded"
        )
        print(
            f"overhead p50 {o['overhead_p50_us']:.0f} µs, p99 {o['overhead_p99_us']:.0f} µs "
            f"(goal p99 < 1000 µs); the model itself p50 {o['model_p50_us']:.0f} µs"
        )
        print(
            f"one caller, one decision at a time, model + durable commit: p50 {o['single_decide_p50_us']:.0f} µs, "
            f"p99 {o['single_decide_p99_us']:.0f} µs"
        )

        runs = [bench_throughput(make_project(root / f"run{i}"), cases) for i in range(args.repeat)]
        print(
            f"\n## 1b. End to end with the durable ledger (model included); "
            f"median of {args.repeat} runs [min–max]"
        )

        def line(label: str, key: str, goal: str = "") -> None:
            wall = sorted(r[f"{key}_per_s"] for r in runs)
            cpu = sorted(r[f"{key}_per_cpu_s"] for r in runs)
            print(
                f"{label}: {statistics.median(wall):,.0f} decisions/s wall [{wall[0]:,.0f}–{wall[-1]:,.0f}], "
                f"{statistics.median(cpu):,.0f} per CPU-second [{cpu[0]:,.0f}–{cpu[-1]:,.0f}]{goal}"
            )

        line("decide_many, 100 per call", "batch100", " (goal ≥ 5,000 per core)")
        line("2 callers, decide_many of 100 each", "callers2")
        line("8 threads calling decide()", "threads8")

        print("\n## 2. Ledger append vs raw batched SQLite inserts of the same rows")
        bodies = real_bodies(project, cases)
        size = sum(len(canonical_json(b)) for b in bodies) / len(bodies)
        print(f"(real decision records, {size:,.0f} bytes of body on average)")
        for batch in (100, 500):
            lg = bench_ledger(root, 20000, batch, bodies)
            print(
                f"batch {batch}: keel {lg['keel_per_s']:,.0f}/s, raw {lg['raw_per_s']:,.0f}/s, "
                f"ratio {lg['keel_per_s'] / lg['raw_per_s']:.0%} (goal ≥ 25%)"
            )
            for f in ("keel-ledger.db", "raw.db"):
                for suffix in ("", "-wal", "-shm"):
                    (root / (f + suffix)).unlink(missing_ok=True)

        p = bench_policy(project, cases)
        print("\n## 3. Policy evaluation vs zen-engine, same decision logic")
        print(
            f"keel {p['keel_us']:.1f} µs, zen-engine {p['zen_us']:.1f} µs per decision; "
            f"keel/zen time ratio {p['keel_us'] / p['zen_us']:.2f}× (goal ≤ 3×); "
            f"same rule, action and value on {p['agree']}/{p['n']} cases"
        )


if __name__ == "__main__":
    main()
