"""Crash test of `keel serve`: `kill -9` under load, round after round on one store.

    make bench-crash    # = scripts/with-postgres.sh .venv/bin/python bench/crash.py

Each round starts `keel serve` on the same project and store, loads it with keep-alive
clients sending decisions, and after a random number of answers per client (seeded)
kills the server's whole process group with SIGKILL. After the last round it counts the
acknowledged decisions (each answered 2xx) missing from the decisions table or from the
ledger, and verifies the chain. Restart time is from starting the process to its first
200 on /readyz (recovery, migrations, model load, workers up). Runs on SQLite, and on
PostgreSQL too under scripts/with-postgres.sh. The suite's tests/test_crash.py is the
short version of this; both use tests/serving.py. Traffic goes only to 127.0.0.1.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.serving

ROUNDS = 10
CLIENTS = 16
WORKERS = 2


def crash_rounds(
    project: Path, env: dict[str, str], url: str, args: argparse.Namespace
) -> dict[str, Any]:
    from tests.serving import Load, missing, prepare, start

    from keel import open_engine

    token = prepare(project, env)
    rng = random.Random(args.seed)
    acknowledged: list[str] = []
    cut = 0
    restarts: list[float] = []
    for _ in range(args.rounds):
        server = start(project, env, args.workers)
        restarts.append(server.ready_s)
        with Load(server.base, token, args.clients) as load:
            load.wait_until_each_answered(rng.randint(2, 12))
            server.signal(signal.SIGKILL)
            server.wait()
            load.stop()
        acknowledged += load.acknowledged
        cut += len(load.broken)
    lost = missing(url, acknowledged)
    started = time.perf_counter()
    with open_engine(project, environ=env) as engine:
        report = engine.verify(deep=True)
    return {
        "acknowledged": len(acknowledged),
        "cut": cut,
        "lost_decisions": len(lost["decisions"]),
        "lost_ledger": len(lost["ledger"]),
        "entries": report.entries,
        "verify": "OK" if report.ok else f"FAILED: {report.to_dict()}",
        "verify_s": time.perf_counter() - started,
        "restart_median_s": statistics.median(restarts),
        "restart_max_s": max(restarts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=ROUNDS)
    parser.add_argument("--clients", type=int, default=CLIENTS)
    parser.add_argument("--workers", type=int, default=WORKERS)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    from keel.scaffold import init_project

    print(
        f"# Keel crash — {time.strftime('%Y-%m-%d')} — {platform.node()} ({os.cpu_count()} "
        f"CPUs, Python {platform.python_version()}) — {args.rounds} rounds of `kill -9`, "
        f"keel serve --workers {args.workers}, {args.clients} keep-alive clients"
    )
    print(
        "\n| store | rounds | acknowledged | cut in flight (never acknowledged) | lost: "
        "decisions table | lost: ledger | ledger entries | verify --deep | restart median / max |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    admin = os.environ.get("KEEL_TEST_POSTGRES_URL")
    with tempfile.TemporaryDirectory() as tmp:
        targets: list[tuple[str, Path, dict[str, str], str]] = []
        sqlite = init_project(Path(tmp) / "sqlite")
        targets.append(("SQLite", sqlite, {}, f"sqlite:///{sqlite}/keel.db"))
        if admin:
            import sqlalchemy as sa

            name = f"keel_crash_{uuid.uuid4().hex[:8]}"
            with sa.create_engine(admin, isolation_level="AUTOCOMMIT").connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            url = admin.replace("/postgres?", f"/{name}?")
            targets.append(
                ("PostgreSQL", init_project(Path(tmp) / "pg"), {"KEEL_DATABASE_URL": url}, url)
            )
        for label, project, env, url in targets:
            r = crash_rounds(project, env, url, args)
            print(
                f"| {label} | {args.rounds} | {r['acknowledged']:,} | {r['cut']} | "
                f"{r['lost_decisions']} | {r['lost_ledger']} | {r['entries']:,} | "
                f"{r['verify']} ({r['verify_s']:.2f} s) | "
                f"{r['restart_median_s']:.1f} / {r['restart_max_s']:.1f} s |",
                flush=True,
            )
    if not admin:
        print("\n(PostgreSQL skipped: run through scripts/with-postgres.sh)")


if __name__ == "__main__":
    main()
