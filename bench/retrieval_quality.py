"""Retrieval quality on Keel's shipped evaluation set: keyword, vector and hybrid.

    make bench-retrieval-quality   # or: .venv/bin/python bench/retrieval_quality.py [--set FOLDER]

Runs what ``keel knowledge eval`` runs on ``tests/fixtures/knowledge/eval`` (587 passages,
119 judged queries) with the default embedder (int8 ONNX all-MiniLM-L6-v2) and the
index's default fusion settings (``Weights()``), which were chosen on the development
split (``bench/fusion_grid.py`` on ``tests/fixtures/knowledge/eval-dev``), never on this
set. ``--split dev`` with ``--set`` measures the development split the same way. Prints
the machine, the time taken, and the table: nDCG@10, recall@100 and MRR@10 per run with
95% bootstrap intervals, and hybrid against each of the others query by query.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from keel.cli.knowledge import report_lines
from keel.embeddings.registry import default_embedder
from keel.index.records import Weights
from keel.knowledge.evalrun import run_evaluation

EVAL_SET = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "knowledge" / "eval"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=EVAL_SET, help="a BEIR folder")
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv (default test)")
    args = parser.parse_args()
    load = os.getloadavg()
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    )
    start = time.perf_counter()
    report = run_evaluation(args.set, default_embedder(), Weights(), split=args.split)
    print(f"indexed, searched and scored in {time.perf_counter() - start:.1f} s\n")
    print("\n".join(report_lines(report)))


if __name__ == "__main__":
    main()
