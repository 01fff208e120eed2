"""Graceful shutdown of `keel serve`: SIGTERM under load from keep-alive clients fails no
request the server accepted."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest

from keel import open_engine
from keel.config import load_settings
from keel.errors import ConfigError
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


def test_graceful_timeout_is_a_setting(project: Path) -> None:
    assert load_settings(project, {}).graceful_timeout_s == 25
    with (project / "keel.yaml").open("a") as settings:
        settings.write("api: {graceful_timeout_s: 5}\n")
    assert load_settings(project, {}).graceful_timeout_s == 5
    with (project / "keel.yaml").open("a") as settings:
        settings.write("api: {graceful_timeout_s: 0}\n")  # the later key wins in YAML
    with pytest.raises(ConfigError, match=r"api\.graceful_timeout_s must be a positive"):
        load_settings(project, {})
