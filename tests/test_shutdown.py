"""Graceful shutdown of `keel serve`: SIGTERM under load from keep-alive clients fails no
request the server accepted."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from keel import open_engine
from keel.config import load_settings
from keel.errors import ConfigError
from tests.conftest import python_model
from tests.serving import Load, missing, prepare, start

CLIENTS = 8


@pytest.mark.parametrize(
    ("workers", "to"),
    [(1, "group"), (2, "group"), (2, "supervisor"), (2, "group-twice")],
    ids=["1-worker", "2-workers", "2-workers-supervisor-only", "2-workers-sigterm-twice"],
)
def test_sigterm_under_load_answers_every_request_it_accepted(
    project: Path, env: dict[str, str], db_url: str, workers: int, to: str
) -> None:
    """SIGTERM to the whole process group (systemd, Ctrl-C), twice at once, or to the
    supervisor alone (a container's PID 1). Each worker gets its signal from the group and
    again from the supervisor: a handler that took a lock (``threading.Event.set``) could
    run inside itself and hang the worker forever."""
    token = prepare(project, env)
    server = start(project, env, workers, "--graceful-timeout", "20")
    with Load(server.base, token, CLIENTS) as load:
        load.wait_until_each_answered(3)  # every keep-alive connection open and busy
        if to == "group":
            server.signal(signal.SIGTERM)
        elif to == "group-twice":  # a handler must never wait on a lock its thread holds
            server.signal(signal.SIGTERM)
            server.signal(signal.SIGTERM)
        else:
            server.process.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
        load.stop()
    log = server.log.read_text()
    # Each request got its whole answer, or was refused before it was sent: never a reset
    # after sending (uvicorn alone: one per connection with two workers).
    assert load.broken == [], (load.broken[:5], log)
    assert load.refused > 0  # the clients kept trying: the server stopped accepting
    assert status in (0, -signal.SIGTERM), log  # a clean exit (uvicorn re-raises SIGTERM)
    assert "Traceback" not in log and "Cancel" not in log, log  # nothing cut off
    assert missing(db_url, load.acknowledged) == {"decisions": [], "ledger": []}
    with open_engine(project, environ=env) as engine:
        report = engine.verify(deep=True)
    assert report.ok and report.entries >= len(load.acknowledged)


# The flow's model, loaded in each worker as it starts: the first worker to load it writes
# its pid, holds Python's interpreter lock for 10 s, as unpickling a large model does, and
# then says it is done.
HOLDS_THE_LOCK = """
import ctypes, os

claim = os.environ.get("KEEL_TEST_HOLD_LOCK")
if claim:
    try:
        fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        pass
    else:
        os.write(fd, str(os.getpid()).encode())
        os.close(fd)
        ctypes.PyDLL(None).sleep(10)  # libc's sleep, called without releasing the lock
        open(claim + ".done", "w").close()


def score(row):
    return 0.1
"""


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.mark.parametrize("hang_s", [None, 4], ids=["default", "worker_hang_s-4"])
def test_a_worker_holding_the_interpreter_lock_is_replaced_only_past_worker_hang_s(
    project: Path, hang_s: int | None
) -> None:
    """uvicorn's supervisor kills a worker that takes 5 s to answer its health check, so a
    worker loading a large model (or starved on a busy machine) was killed as it started,
    again and again. Keel's waits ``api.worker_hang_s``, then replaces it, and says so."""
    python_model(project, HOLDS_THE_LOCK)
    token = prepare(project, {})
    if hang_s is not None:
        with (project / "keel.yaml").open("a") as settings:
            settings.write(f"api: {{rate_per_s: 100000, burst: 100000, worker_hang_s: {hang_s}}}\n")
    claim = project / "held-by.pid"
    server = start(project, {"KEEL_TEST_HOLD_LOCK": str(claim)}, 2)
    try:
        with Load(server.base, token, 2) as load:
            load.wait_until_each_answered(3)
        holder = int(claim.read_text())
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and alive(holder):
            if (project / "held-by.pid.done").exists():
                break  # the hold is over, and the worker was left to finish it
            time.sleep(0.1)
        assert alive(holder) == (hang_s is None)
    finally:
        server.process.send_signal(signal.SIGTERM)
        status = server.wait(timeout=60)
    log = server.log.read_text()
    killed = f"worker process {holder} left its health check unanswered for {hang_s} s: killed"
    assert (killed in log) == (hang_s is not None), log
    assert load.broken == [] and status in (0, -signal.SIGTERM), log


def test_graceful_timeout_is_a_setting(project: Path) -> None:
    assert load_settings(project, {}).graceful_timeout_s == 25
    with (project / "keel.yaml").open("a") as settings:
        settings.write("api: {graceful_timeout_s: 5}\n")
    assert load_settings(project, {}).graceful_timeout_s == 5
    with (project / "keel.yaml").open("a") as settings:
        settings.write("api: {graceful_timeout_s: 0}\n")  # the later key wins in YAML
    with pytest.raises(ConfigError, match=r"api\.graceful_timeout_s must be a positive"):
        load_settings(project, {})
