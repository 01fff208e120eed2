"""`kill -9` of a serving process under load, round after round on one store: no decision
that was acknowledged is ever missing, and the ledger verifies after every restart.

bench/crash.py runs more rounds and prints the figures recorded in bench/RESULTS.md.
"""

from __future__ import annotations

import signal
from pathlib import Path

from keel import open_engine
from tests.serving import Load, missing, prepare, start

ROUNDS = 3
CLIENTS = 8


def test_kill_9_under_load_loses_no_acknowledged_decision(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    token = prepare(project, env)
    acknowledged: list[str] = []
    for round_ in range(ROUNDS):
        server = start(project, env)  # the same store each round: recovery, then service
        with Load(server.base, token, CLIENTS) as load:
            load.wait_until_each_answered(3 + round_)  # every client mid-stream
            server.signal(signal.SIGKILL)
            assert server.wait() == -signal.SIGKILL
            load.stop()
        # Requests in flight at the kill fail (reset or refused); none of them was answered.
        acknowledged += load.acknowledged
        assert len(load.acknowledged) >= CLIENTS * (3 + round_)
        assert missing(db_url, acknowledged) == {"decisions": [], "ledger": []}, round_
        with open_engine(project, environ=env) as engine:
            report = engine.verify(deep=True)  # the chain and every table beside it
        assert report.ok, (round_, report.to_dict())
        assert report.entries >= len(acknowledged)
    assert len(set(acknowledged)) == len(acknowledged)  # no id answered twice
