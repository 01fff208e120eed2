"""A real `keel serve` process on 127.0.0.1, and keep-alive clients that load it with
decisions: what the shutdown and crash tests (and bench/crash.py) drive."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx2 as httpx
import sqlalchemy as sa

from keel import open_engine
from keel.security.apikeys import create_key
from keel.security.roles import Grant, Role
from tests.conftest import LOW_RISK

READY_S = 120.0  # a loaded shared machine can take a while to import and open a worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def prepare(project: Path, env: dict[str, str]) -> str:
    """Lift the caller's rate limit above what the clients send, create the database once
    (before workers race to migrate it), and return a decider key."""
    with (project / "keel.yaml").open("a") as settings:
        settings.write("api: {rate_per_s: 100000, burst: 100000}\n")
    with open_engine(project, environ=env) as engine:
        _, token = create_key(
            engine.db, "load", "load", [Grant(Role.DECIDER)], "test", engine.clock()
        )
    return token


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    ready_s: float  # from start to the first 200 of /readyz

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def signal(self, sig: int) -> None:
        """Send ``sig`` to the server's process group: the supervisor and its workers, as a
        crashing node or a ``kill`` of the whole service would."""
        os.killpg(self.process.pid, sig)

    def wait(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout=timeout)


def start(project: Path, env: dict[str, str], workers: int = 1, *extra: str) -> Server:
    """`keel serve` on ``project`` in a process group of its own; returns once it is ready."""
    port = free_port()
    log = project / f"serve-{port}.log"
    command = [sys.executable, "-m", "keel.cli", "serve", "-p", str(project)]
    command += ["--port", str(port), "--workers", str(workers), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env={**os.environ, **env, "PYTHONUNBUFFERED": "1"},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    started = time.perf_counter()
    server = Server(process, port, log, 0.0)
    deadline = started + READY_S
    while time.perf_counter() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"keel serve exited: {log.read_text()}")
        try:
            if httpx.get(f"{server.base}/readyz", timeout=2).status_code == 200:
                server.ready_s = time.perf_counter() - started
                return server
        except httpx.TransportError:
            time.sleep(0.05)
    server.signal(signal.SIGKILL)
    raise AssertionError(f"keel serve not ready after {READY_S} s: {log.read_text()}")


@dataclass
class Load:
    """``clients`` threads, each with its own keep-alive connection, sending decisions until
    stopped. Each request ends one of three ways: a 2xx with its decision id
    (``acknowledged``), a connection refused before anything was sent (``refused``), or
    anything else — a reset after sending, a truncated answer, an error status (``broken``)."""

    base: str
    token: str
    clients: int
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0
    broken: list[str] = field(default_factory=list)
    answered: dict[int, int] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        for i in range(self.clients):
            thread = threading.Thread(target=self._client, args=(i,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=60)

    def wait_until_each_answered(self, count: int, timeout: float = READY_S) -> None:
        """Until every client has had ``count`` answers: all connections are open and busy."""
        deadline = time.perf_counter() + timeout
        while time.perf_counter() < deadline:
            with self._lock:
                done = len(self.answered) == self.clients
                if done and min(self.answered.values()) >= count:
                    return
                if self.broken:
                    raise AssertionError(f"requests failed before the test began: {self.broken}")
            time.sleep(0.02)
        raise AssertionError(f"clients not all answered in {timeout} s: {self.answered}")

    def _client(self, index: int) -> None:
        headers = {"Authorization": f"Bearer {self.token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=60) as client:
            sent = 0
            while not self._stop.is_set():
                sent += 1
                body = {"inputs": LOW_RISK, "subject_id": f"load-{index}-{sent}"}
                try:
                    response = client.post("/v1/flows/credit_limit/decisions", json=body)
                except httpx.ConnectError:
                    with self._lock:
                        self.refused += 1
                    time.sleep(0.05)  # the server is gone or going: retry, gently
                    continue
                except httpx.TransportError as error:
                    with self._lock:
                        self.broken.append(f"{type(error).__name__}: {error}")
                    continue
                with self._lock:
                    if response.status_code // 100 == 2:
                        self.acknowledged.append(response.json()["id"])
                        self.answered[index] = self.answered.get(index, 0) + 1
                    else:
                        self.broken.append(f"{response.status_code}: {response.text[:200]}")


def missing(url: str, ids: list[str]) -> dict[str, list[str]]:
    """Which of ``ids`` are not in the decisions table, and which not in the ledger."""
    engine = sa.create_engine(url)
    found: dict[str, set[str]] = {}
    with engine.connect() as conn:
        for table, column in (("decisions", "id"), ("ledger", "record_id")):
            rows = conn.execute(sa.text(f"SELECT {column} FROM {table}"))
            found[table] = {r[0] for r in rows}
    engine.dispose()
    return {table: sorted(set(ids) - seen) for table, seen in found.items()}
