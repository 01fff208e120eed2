"""Drift detection, Keel against Evidently 0.7, side by side in the same run.

    make bench-drift       # or: .venv/bin/python bench/drift.py [--rows 1000000]

Seeded data (bench/drift_data.py): 1,000,000 reference and 1,000,000 current rows, 20
numeric columns (5 shifted) and 5 categorical ones (3 to 1,000 categories, one category
only in the current data), 1% missing values and a few infinities. For each preset —
Evidently's default, ``num_method="ks", cat_method="chisquare"``, and ``method="psi"`` —
each side runs in a fresh process of its own: Evidently (``.venv-bench``, pandas
DataFrames read from the Parquet files, ``Report([DataDriftPreset(...)])``) and Keel in
its Evidently-compatible mode (the reference profile already stored; the current table
read with PyArrow). Timed: Evidently's ``Report.run``; Keel's loading of the stored
profile and the comparison. Peak memory is each process's maximum resident set.

Agreement: every column's score (p-values compared as −log10) must match Evidently's to a
relative 1e-9, and every verdict exactly.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE))

DATA = HERE / ".data" / "drift"
EVIDENTLY_PYTHON = HERE.parent / ".venv-bench" / "bin" / "python"
PRESETS = {
    "default": {},
    "ks-chisquare": {"num_method": "ks", "cat_method": "chisquare"},
    "psi": {"methods": ["psi"]},
}
EVIDENTLY_NAMES = {
    "Wasserstein distance (normed)": "wasserstein",
    "Jensen-Shannon distance": "jensenshannon",
    "K-S p_value": "ks",
    "chi-square p_value": "chisquare",
    "PSI": "psi",
    "Z-test p_value": "z",
}
GOAL = 20.0


def keel_side(reference: Path, current: Path, preset: str, out: Path) -> None:
    """Keel's run of one preset, in this process."""
    import pyarrow.parquet as pq

    from keel.monitor.profile import ProfileStore, compare

    store = ProfileStore(DATA / "profiles")
    pointer = store.folder / "sources"
    table = pq.read_table(current)
    columns = {name: table.column(name) for name in table.column_names}
    loaded_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    profile_id = next(pointer.iterdir()).read_text().strip() if pointer.is_dir() else None
    if profile_id is None:
        raise SystemExit("no stored profile: run the build step first")
    started = time.perf_counter()
    profile = store.load(profile_id)
    comparison = compare(profile, columns, mode="evidently", **PRESETS[preset])  # type: ignore[arg-type]
    elapsed = time.perf_counter() - started
    fields = ("method", "value", "p_value", "score", "threshold", "drift")
    result = {
        s.column: {name: getattr(s, name) for name in fields}
        for s in comparison.statistics
        if s.mode == "evidently"
    }
    out.write_text(
        json.dumps(
            {
                "seconds": elapsed,
                "peak_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                "loaded_rss_kib": loaded_rss,
                "columns": result,
                "problems": comparison.problems,
            }
        )
    )


def build_side(reference: Path) -> None:
    """Stores the reference profile (once; later runs find it by the file's hash)."""
    import pyarrow.parquet as pq

    from keel.monitor.profile import ProfileStore

    def read(path: Path) -> dict[str, object]:
        table = pq.read_table(path)
        return {name: table.column(name) for name in table.column_names}

    started = time.perf_counter()
    profile = ProfileStore(DATA / "profiles").of_file(reference, read)
    print(f"reference profile {profile.id[:12]}: {time.perf_counter() - started:.1f} s")


def _log(value: float | None) -> float | None:
    if value is None:
        return None
    return math.inf if value == 0.0 else -math.log10(value)


def agree(keel: dict, evidently: dict) -> list[str]:
    """Every difference between the two sides' per-column results."""
    problems = []
    for column, theirs in evidently["columns"].items():
        ours = keel["columns"].get(column)
        method = EVIDENTLY_NAMES.get(theirs["method_name"], theirs["method_name"])
        if ours is None:
            problems.append(f"{column}: no result from Keel")
            continue
        if ours["method"] != method:
            problems.append(f"{column}: method {ours['method']} ≠ {method}")
        a, b = ours["score"], theirs["value"]
        if method in ("ks", "chisquare", "z"):
            a, b = _log(a), _log(b)
        if a is None or b is None or not (a == b or math.isclose(a, b, rel_tol=1e-9)):
            problems.append(f"{column}: score {a!r} ≠ {b!r}")
        if ours["drift"] != theirs["drift"]:
            problems.append(f"{column}: verdict {ours['drift']} ≠ {theirs['drift']}")
    return problems


def run(side: list[str], label: str) -> float:
    started = time.perf_counter()
    subprocess.run(side, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--side", choices=["keel", "build"])
    parser.add_argument("--preset", choices=list(PRESETS))
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    from drift_data import files

    reference, current = files(DATA, args.rows)
    if args.side == "build":
        build_side(reference)
        return
    if args.side == "keel":
        keel_side(reference, current, args.preset, args.out)
        return
    if not EVIDENTLY_PYTHON.exists():
        raise SystemExit("Evidently's environment is missing: run `make bench-drift`")

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    )
    subprocess.run(
        [sys.executable, __file__, "--rows", str(args.rows), "--side", "build"], check=True
    )
    out = DATA / "results"
    out.mkdir(exist_ok=True)
    failures = 0
    print(f"\n{args.rows:,} reference and {args.rows:,} current rows, 25 columns\n")
    header = (f"{'preset':<14}{'Evidently s':>12}{'Keel s':>9}{'speed-up':>10}"
              f"{'Evidently MiB':>15}{'Keel MiB':>10}  agreement")  # fmt: skip
    print(header)
    for preset in PRESETS:
        theirs_path, ours_path = out / f"evidently-{preset}.json", out / f"keel-{preset}.json"
        subprocess.run([str(EVIDENTLY_PYTHON), str(HERE / "drift_evidently.py"),
                        str(reference), str(current), preset, str(theirs_path)], check=True)  # fmt: skip
        subprocess.run([sys.executable, __file__, "--rows", str(args.rows), "--side", "keel",
                        "--preset", preset, "--out", str(ours_path)], check=True)  # fmt: skip
        theirs, ours = json.loads(theirs_path.read_text()), json.loads(ours_path.read_text())
        problems = agree(ours, theirs)
        failures += len(problems)
        drifted = sum(1 for c in ours["columns"].values() if c["drift"])
        verdict = (f"all {len(theirs['columns'])} columns match ({drifted} drifted)"
                   if not problems else f"{len(problems)} differences")  # fmt: skip
        ratio = theirs["seconds"] / ours["seconds"]
        print(f"{preset:<14}{theirs['seconds']:>12.2f}{ours['seconds']:>9.2f}{ratio:>9.1f}×"
              f"{theirs['peak_rss_kib'] / 1024:>15,.0f}{ours['peak_rss_kib'] / 1024:>10,.0f}"
              f"  {verdict}{'  (goal ≥ 20×: ' + ('met' if ratio >= GOAL else 'missed') + ')'}")  # fmt: skip
        for problem in problems:
            print(f"    {problem}")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
