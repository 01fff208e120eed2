"""Batch scoring from a file: ``keel decide --file`` against ``Engine.decide_many`` in process.

    make bench-batch      # or: .venv/bin/python bench/batch.py [--rows 1000000]

Writes ``--rows`` generated applicants of the example project (``keel init``'s credit-limit
flow and model, its policy unchanged) to one Parquet file, then decides them twice, each
into a fresh project with its own SQLite ledger (WAL, synchronous=FULL):

1. ``keel decide credit_limit --file cases.parquet --out decisions.parquet --quiet`` as a
   fresh process: wall time from start to exit, so it includes start-up, loading the model,
   checking every row before recording and writing the output file.
2. The same rows read from the same file in chunks and passed to ``Engine.decide_many``
   in this process, one call per chunk: no row check beyond ``decide_many``'s own, no
   output file, no start-up.

Printed: rows per second for each, and the ratio of the file command's to the in-process
floor. Both ledgers are counted afterwards: each must hold exactly ``--rows`` decisions.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from keel.engine import open_engine
from keel.scaffold import generate_applicants, init_project
from keel.scaffold.applicants import case_inputs

ROOT = Path(__file__).parent / ".data" / "batch"
FLOW = "credit_limit"
BLOCK = 100_000  # applicants generated and written at a time


def write_cases(path: Path, rows: int) -> None:
    """``rows`` applicants with subject ids, written block by block (bounded memory)."""
    writer: pq.ParquetWriter | None = None
    done = 0
    while done < rows:
        n = min(BLOCK, rows - done)
        block = [
            {"subject_id": f"app-{done + i + 1}", **case_inputs(a)}
            for i, a in enumerate(generate_applicants(n, seed=1000 + done // BLOCK))
        ]
        table = pa.Table.from_pylist(block)
        if writer is None:
            writer = pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
        done += n
    if writer is not None:
        writer.close()


def fresh_project(root: Path) -> Path:
    project = init_project(root)
    with open_engine(project, environ={}):
        pass  # the database, migrated, and the policy recorded: not part of the timing
    return project


def decisions_in(project: Path) -> int:
    with sqlite3.connect(project / "keel.db") as conn:
        return int(conn.execute("select count(*) from ledger where kind='decision'").fetchone()[0])


def by_file(project: Path, cases: Path, chunk: int) -> tuple[float, str]:
    keel = str(Path(sys.executable).with_name("keel"))
    out = project.parent / "decisions.parquet"
    argv = [keel, "decide", FLOW, "--file", str(cases), "--out", str(out), "--quiet"]
    argv += ["--chunk-size", str(chunk), "-p", str(project)]
    env = {**os.environ, "KEEL_API_KEY": ""}
    start = time.perf_counter()
    done = subprocess.run(argv, check=False, env=env, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"keel decide --file failed ({done.returncode}): {done.stderr}")
    written = pq.ParquetFile(out).metadata.num_rows
    return seconds, f"{done.stdout.strip()}\n  output rows: {written:,}"


def in_process(project: Path, cases: Path, chunk: int) -> float:
    with open_engine(project, environ={}) as engine:
        start = time.perf_counter()
        for batch in pq.ParquetFile(cases).iter_batches(batch_size=chunk):
            rows = batch.to_pylist()
            subjects = [r.pop("subject_id") for r in rows]
            engine.decide_many(FLOW, rows, subjects)
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--chunk-size", type=int, default=1000)
    args = parser.parse_args()
    print(
        f"# Batch scoring — {time.strftime('%Y-%m-%d %H:%M')} — {platform.node()} "
        f"({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}, load {os.getloadavg()[0]:.1f})"
    )
    shutil.rmtree(ROOT, ignore_errors=True)
    ROOT.mkdir(parents=True)
    cases = ROOT / "cases.parquet"
    start = time.perf_counter()
    write_cases(cases, args.rows)
    size = cases.stat().st_size / 2**20
    print(
        f"{args.rows:,} rows written to {cases.name} ({size:.1f} MiB) in {time.perf_counter() - start:.1f} s"
    )

    floor = in_process(fresh_project(ROOT / "in-process" / "project"), cases, args.chunk_size)
    file_project = fresh_project(ROOT / "file" / "project")
    wall, said = by_file(file_project, cases, args.chunk_size)
    for project in (ROOT / "in-process" / "project", file_project):
        found = decisions_in(project)
        if found != args.rows:
            raise SystemExit(f"{project}: {found:,} decisions recorded, expected {args.rows:,}")

    print(f"\nchunks of {args.chunk_size:,}; every row recorded in each ledger")
    print(f"Engine.decide_many in process: {floor:.1f} s, {args.rows / floor:,.0f} rows/s")
    print(
        f"keel decide --file (fresh process, --out parquet): {wall:.1f} s, {args.rows / wall:,.0f} rows/s"
    )
    print(f"  the command said: {said}")
    print(f"ratio, file command / in process: {floor / wall:.2f} of the in-process rate")
    shutil.rmtree(ROOT, ignore_errors=True)


if __name__ == "__main__":
    main()
