"""Graceful shutdown of `keel serve`: SIGTERM under load from keep-alive clients fails no
request the server accepted."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from keel import open_engine
from keel.api.serving import WorkerServer, watch_for_stop
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


Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def sigterm_and_shut(sock: socket.socket) -> None:
    """What the supervisor does on SIGTERM: this process (the worker) is signalled, and the
    shared socket is shut. (Python runs the handler as ``os.kill`` returns.)"""
    os.kill(os.getpid(), signal.SIGTERM)
    with contextlib.suppress(OSError):  # not listening
        sock.shutdown(socket.SHUT_RD)


class SignalledAtListen(socket.socket):
    """The shared socket, with SIGTERM coming in the very last instant before ``listen()``:
    after the worker's check that it is not stopping."""

    def listen(self, backlog: int = socket.SOMAXCONN) -> None:
        sigterm_and_shut(self)
        super().listen(backlog)


def serve_signalled(sock: socket.socket, during_startup: bool) -> tuple[WorkerServer, list[str]]:
    """Run a worker's server (in this process, asyncio's loop) on ``sock``, bound by its
    "supervisor" and already listened on by a "sibling"; SIGTERM comes at the end of the
    app's startup if ``during_startup``. Returns the server and the app's lifespan events."""
    events: list[str] = []

    async def app(scope: dict[str, Any], receive: Receive, send: Send) -> None:
        assert scope["type"] == "lifespan"
        while True:
            event = (await receive())["type"]
            events.append(event)
            if event == "lifespan.startup":
                if during_startup:  # the app's last step: no check comes after it here
                    sigterm_and_shut(sock)
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return

    def factory() -> Any:
        watch_for_stop()  # as keel.api.server.app_from_env does
        return app

    config = uvicorn.Config(factory, factory=True, loop="asyncio", log_level="warning")
    server = WorkerServer(config)
    kept = signal.signal(signal.SIGTERM, lambda *_: None)  # uvicorn raises it again at exit
    try:
        server.run(sockets=[sock])
    finally:
        signal.signal(signal.SIGTERM, kept)
    return server, events


@pytest.mark.parametrize("at", ["end-of-startup", "listen"])
def test_a_worker_signalled_while_it_starts_leaves_the_shared_socket_shut(at: str) -> None:
    """The race behind resets at shutdown: a worker still starting when SIGTERM came (its
    sibling already serving, the socket shut by the handler) listened anyway, at the end of
    uvicorn's startup, opening the socket again for every process. Signalled as the app's
    startup ends, the worker never listens; signalled in the instant between its check and
    ``listen()``, it shuts the socket again at once."""
    sock = SignalledAtListen() if at == "listen" else socket.socket()
    sock.bind(("127.0.0.1", 0))
    socket.socket.listen(sock)  # the sibling's, serving already
    port = sock.getsockname()[1]
    with sock.dup() as sibling:  # the sibling's copy: open until its last request is answered
        server, events = serve_signalled(sock, during_startup=at == "end-of-startup")
        assert sibling.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN) == 0
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert server.started == (at == "listen")  # listened, then stopped as any server does
    assert events == ["lifespan.startup", "lifespan.shutdown"]  # jobs cancelled, engine closed


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
