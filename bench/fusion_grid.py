"""The fusion settings compared on the development split, to choose the index's defaults.

    .venv/bin/python bench/fusion_grid.py [--extension] [--set FOLDER --split SPLIT]

Indexes the set once (as ``keel knowledge eval`` does: default embedder, SQLite index,
depth 100), then runs the index's own hybrid search with each setting of a small grid:
reciprocal-rank fusion over weights, ``rrf_k`` and candidate depth, and the score-based
convex combinations (min-max and z-score normalised) over the keyword weight. Prints
nDCG@10 and recall@100 per setting, with keyword and vector search alone for reference.
Run it on the development split only: settings chosen on the test split would overstate
how well they do.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

from keel.embeddings.registry import default_embedder
from keel.index.records import Fusion, Weights
from keel.knowledge.evalrun import indexed_set, retrieval_runs
from keel.knowledge.evaluation import evaluate, load_beir

DEV_SET = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "knowledge" / "eval-dev"


def extension() -> list[tuple[str, Weights]]:
    """The second stage: the first stage's best, RRF with ``rrf_k`` 10 and equal weights,
    lay at the edge of its grid (the smallest ``rrf_k``, the lowest keyword weight), so
    the grid is carried one step past that edge in both directions."""
    return [
        (f"rrf k={rrf_k:g} kw={kw:g} cand=100", Weights(keyword=kw, rrf_k=rrf_k))
        for rrf_k in (3.0, 5.0, 10.0)
        for kw in (0.75, 1.0)
    ]


def grid() -> list[tuple[str, Weights]]:
    """The first stage's settings: small, and each a setting that means something beyond
    this set (a weight ratio, a constant, a depth), not a fit to its queries."""
    out = []
    for candidates in (50, 100):
        for rrf_k in (10.0, 30.0, 60.0):
            for kw in (1.0, 1.5, 2.0):
                out.append(
                    (
                        f"rrf k={rrf_k:g} kw={kw:g} cand={candidates}",
                        Weights(keyword=kw, vector=1.0, rrf_k=rrf_k, candidates=candidates),
                    )
                )
    for method in (Fusion.MINMAX, Fusion.ZSCORE):
        for candidates in (50, 100):
            for kw in (0.3, 0.4, 0.5, 0.6, 0.7):
                out.append((f"{method.value} kw={kw:g} cand={candidates}",
                            Weights(keyword=kw, vector=round(1 - kw, 2), candidates=candidates,
                                    method=method)))  # fmt: skip
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--set", type=Path, default=DEV_SET, help="a BEIR folder")
    parser.add_argument("--split", default="dev", help="qrels/<split>.tsv (default dev)")
    parser.add_argument("--extension", action="store_true", help="run the second stage only")
    args = parser.parse_args()
    load = os.getloadavg()
    print(f"Python {platform.python_version()}, {os.cpu_count()} CPUs, load average "
          f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")  # fmt: skip
    start = time.perf_counter()
    dataset = load_beir(args.set, args.split)
    embedder = default_embedder()
    with indexed_set(dataset, embedder) as (index, document_of):
        runs = retrieval_runs(index, dataset, embedder, Weights(), document_of,
                              ("keyword", "vector"))  # fmt: skip
        for name, weights in extension() if args.extension else grid():
            hybrid = retrieval_runs(index, dataset, embedder, weights, document_of, ("hybrid",))
            runs[name] = hybrid["hybrid"]
    report = evaluate(dataset, runs, resamples=1000)
    by_kind = report.means_by_kind()
    print(f"{len(runs)} runs in {time.perf_counter() - start:.1f} s on {dataset.name} "
          f"({len(dataset.queries)} queries)\n")  # fmt: skip
    print(f"{'setting':<34}{'nDCG@10':>9}{'recall@100':>12}{'para nDCG':>11}{'ident nDCG':>12}")
    for run in report.runs:
        kinds = [by_kind.get(kind, {}).get(run.name, {}).get("ndcg_at_10", float("nan"))
                 for kind in ("paraphrase", "identifier")]  # fmt: skip
        print(
            f"{run.name:<34}{run.means['ndcg_at_10'].mean:>9.3f}"
            f"{run.means['recall_at_100'].mean:>12.3f}{kinds[0]:>11.3f}{kinds[1]:>12.3f}"
        )


if __name__ == "__main__":
    main()
