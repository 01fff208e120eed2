"""Several OS processes appending to one SQLite ledger: one chain, limits that hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from keel import open_engine
from tests.conftest import LOW_RISK, replace_in

WORKER = """
import json, sys
from keel import open_engine
project, count = sys.argv[1], int(sys.argv[2])
inputs = json.loads(sys.argv[3])
statuses = []
with open_engine(project) as engine:
    for _ in range(count):
        statuses.append(engine.decide("credit_limit", inputs).status)
print(json.dumps(statuses))
"""


def test_processes_share_one_chain_and_one_rate_limit(project: Path, env: dict[str, str]) -> None:
    replace_in(
        project / "policies/credit_limit.yaml",
        "      max: 200\n      window: 1h",
        "      max: 50\n      window: 1h",
    )
    with open_engine(project, environ=env):
        pass  # create and migrate the database once, before the workers race
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(project), "40", json.dumps(LOW_RISK)],
            env={**os.environ, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(3)
    ]
    statuses: list[Any] = []
    for worker in workers:
        out, err = worker.communicate(timeout=240)
        assert worker.returncode == 0, err
        statuses.extend(json.loads(out))
    assert len(statuses) == 120
    assert statuses.count("final") == 50  # the limit held across the three processes
    assert statuses.count("pending_review") == 70
    with open_engine(project, environ=env) as engine:
        report = engine.verify()
    assert report.ok and report.entries == 123 and report.head_seq == 123
