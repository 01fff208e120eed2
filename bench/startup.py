"""CLI start-up: the wall time of a few ``keel`` commands, against bare Python and scikit-learn.

    .venv/bin/python bench/startup.py [--runs 5]

Each command runs ``--runs`` times as a fresh process (the ``keel`` console script of this
environment) on the example project, kept in bench/.data/startup/ with one decision in its
ledger; the median is printed. Two references run in the same loop: ``python -c pass``
(the interpreter alone) and ``python -c "import sklearn"`` (what loading a scikit-learn
model costs before any Keel code). Printed: each median, and its ratio to both references.
Commands that need no model should stay well below ``import sklearn``: ``--help`` and
``ledger verify`` do not open the engine; ``policy history`` and ``review list`` open it,
which describes the model (hashes its file) without loading it. ``validate`` loads every
model, and ``decide`` loads the ``.skops`` model on first use, so they pay for scikit-learn.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from keel.engine import open_engine
from keel.scaffold import init_project

ROOT = Path(__file__).parent / ".data" / "startup"


def prepare(root: Path) -> Path:
    """The example project with one decision recorded (made once, then reused)."""
    project = root / "project"
    if (root / "built.txt").exists():
        return project
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    init_project(project)
    with open_engine(project, environ={}) as engine:
        engine.decide("credit_limit", _low_risk(project))
    (root / "built.txt").write_text("ok\n")
    return project


def _low_risk(project: Path) -> dict[str, object]:
    loaded: dict[str, object] = json.loads((project / "examples" / "low_risk.json").read_text())
    return loaded


def median_seconds(argv: list[str], runs: int, cwd: Path) -> float:
    """The median wall time of ``argv`` as a fresh process; a failing run stops the bench."""
    env = {**os.environ, "KEEL_API_KEY": ""}
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        done = subprocess.run(argv, check=False, cwd=cwd, env=env, capture_output=True, text=True)
        times.append(time.perf_counter() - start)
        if done.returncode != 0:
            raise SystemExit(f"{' '.join(argv)} failed ({done.returncode}): {done.stderr}")
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    project = prepare(ROOT)
    keel = str(Path(sys.executable).with_name("keel"))
    python = sys.executable
    example = f"@{project / 'examples' / 'low_risk.json'}"
    commands = {
        "python -c pass": [python, "-c", "pass"],
        'python -c "import sklearn"': [python, "-c", "import sklearn"],
        "keel --help": [keel, "--help"],
        "keel ledger verify": [keel, "ledger", "verify"],
        "keel policy history": [keel, "policy", "history", "credit_limit"],
        "keel review list": [keel, "review", "list"],
        "keel validate": [keel, "validate"],
        "keel decide": [keel, "decide", "credit_limit", "--input", example],
    }
    print(
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs, "
        f"median of {args.runs} runs each, in {project}"
    )
    medians = {name: median_seconds(argv, args.runs, project) for name, argv in commands.items()}
    bare, sklearn = medians["python -c pass"], medians['python -c "import sklearn"']
    print(f"{'command':<28} {'median s':>9} {'× python':>9} {'× sklearn':>10}")
    for name, seconds in medians.items():
        print(f"{name:<28} {seconds:>9.3f} {seconds / bare:>9.1f} {seconds / sklearn:>10.2f}")


if __name__ == "__main__":
    main()
