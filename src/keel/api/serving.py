"""Running the API under uvicorn, and stopping it without failing a request it accepted.

On SIGTERM (or Ctrl-C) a Keel server:

1. stops accepting connections at once, in every process: the listening socket that the
   workers share is shut (``shutdown(SHUT_RD)``) by whichever process gets the signal
   first, so a client's connect is refused from then on and it knows to go elsewhere.
   uvicorn alone only stops each worker's accepting, while the supervisor's copy of the
   socket keeps the kernel completing connections that nobody accepts, to reset them at
   exit: one failed request per keep-alive client and SIGTERM with two workers;
2. answers every request it accepted, each with ``Connection: close``, so a keep-alive
   client learns from the answer itself not to send on that connection again;
3. closes a keep-alive connection that stays idle for ``DRAIN_IDLE_S``. uvicorn alone closes
   idle connections at once, which races a request the client is already sending;
4. after ``graceful_timeout_s`` cancels whatever still runs; then the app's lifespan
   shutdown cancels the scheduled jobs and closes the audit log and the engine.

A worker still starting when the signal comes never listens (listening would open the
shut socket again).

With several workers the supervisor replaces a worker that exits, and one that has answered
its health checks before but then leaves one unanswered for ``api.worker_hang_s`` (default
120 s). uvicorn's own supervisor
kills a worker that takes 5 s to answer: a worker whose interpreter lock is held that long —
unpickling a large model, or a busy machine starving it while it starts — was killed and
restarted in a loop, dropping every request it was answering.

The supervisor ignores SIGHUP, SIGTTIN and SIGTTOU, on which uvicorn restarts or retires
single workers: a retired worker would shut the socket its siblings share. To change the
number of workers, stop the server and start it again.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from types import FrameType
from typing import Any

import uvicorn
from uvicorn.config import Config
from uvicorn.supervisors.multiprocess import Multiprocess, Process

from keel.telemetry import log

try:  # the C parser uvicorn uses in production, or its pure-Python one where it is missing
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol as _HttpProtocol
except ImportError:  # pragma: no cover - httptools is part of keel[server]
    from uvicorn.protocols.http.h11_impl import (  # type: ignore[assignment]
        H11Protocol as _HttpProtocol,
    )

DRAIN_IDLE_S = 1.0  # an idle keep-alive connection is closed after this much quiet
CLOSE = (b"connection", b"close")
STARTUP_FAILURE = 3


class DrainingHttp(_HttpProtocol):
    """uvicorn's HTTP/1.1 protocol, drained instead of cut on shutdown."""

    def shutdown(self) -> None:
        # Shared by every connection of this worker: each answer from now on closes its
        # connection, including answers to requests that arrive on idle connections below.
        if CLOSE not in self.server_state.default_headers:
            self.server_state.default_headers.append(CLOSE)
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.keep_alive = False
            return
        # Idle: a request may already be on its way; it is answered (and the connection
        # closed after it), or the connection is closed after DRAIN_IDLE_S without one.
        if self.timeout_keep_alive_task is not None:
            self.timeout_keep_alive_task.cancel()
        self.timeout_keep_alive_task = self.loop.call_later(
            DRAIN_IDLE_S, self.timeout_keep_alive_handler
        )


class StopFlag:
    """A ``threading.Event`` a signal handler may set: a plain attribute, no lock (``wait``
    polls). ``Event.set`` takes a lock, and a signal handled while this thread holds it — a
    second SIGTERM inside the first one's handler, or a handler run inside the supervisor
    loop's own ``wait`` — would wait on it forever."""

    def __init__(self) -> None:
        self._set = False

    def set(self) -> None:
        self._set = True

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        end = None if timeout is None else time.monotonic() + timeout
        while not self._set and (end is None or time.monotonic() < end):
            time.sleep(0.02)
        return self._set


def stop_requested() -> StopFlag:
    """Watch for SIGTERM and SIGINT in this worker, beside uvicorn's own handling: the flag
    returned is set, and the shared listening socket is shut at once, in every process
    (uvicorn would only stop this worker's accepting, and the kernel would go on completing
    connections into the queue until the supervisor's copy stops). Call it from the main
    thread while the app is built; the app checks the flag before uvicorn listens."""
    stopping = StopFlag()
    if threading.current_thread() is not threading.main_thread():
        return stopping  # signals reach the main thread only; nothing to watch here
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        server = getattr(previous, "__self__", None)  # uvicorn's handler is its server's
        # The signal may have come while the worker was importing and opening the project:
        # then only uvicorn's server knows.
        if getattr(server, "should_exit", False):
            stopping.set()
        signal.signal(sig, _OnStop(stopping, previous, server))
    return stopping


class _OnStop:
    def __init__(self, stopping: StopFlag, previous: Any, server: Any) -> None:
        self.stopping = stopping
        self.previous = previous
        self.server = server

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.stopping.set()
        for listener in getattr(self.server, "servers", []):
            for sock in listener.sockets:
                with socket.socket(fileno=os.dup(sock.fileno())) as shared:
                    _stop_listening(shared)
        if callable(self.previous):
            self.previous(sig, frame)


def _stop_listening(sock: socket.socket) -> None:
    """Stop a listening socket in every process that holds it: connects are refused from
    now on. (Closing this process's descriptor would not: each worker holds its own.)"""
    with contextlib.suppress(OSError):  # already shut down by an earlier signal
        sock.shutdown(socket.SHUT_RD)


class Supervisor(Multiprocess):
    """uvicorn's supervisor of worker processes, except how it keeps them alive: a worker is
    replaced when it has exited, or when it has left a health check unanswered for
    ``hang_s``; the check never blocks the supervisor's loop."""

    def __init__(
        self,
        config: Config,
        sockets: list[socket.socket],
        hang_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config, sockets)
        self.hang_s = hang_s
        self.clock = clock
        self.asked: dict[int, float] = {}  # worker pid -> when its unanswered check was sent
        self.answered: set[int] = set()  # the workers that have answered a check

    def keep_subprocess_alive(self) -> None:
        if self.should_exit.is_set():
            return  # stopping: the workers are being told to exit
        for index, worker in enumerate(self.processes):
            if worker.process.is_alive() and not self._hung(worker):
                continue
            pid, exited = worker.pid, worker.exitcode
            if exited is None:
                log.error(
                    "worker process %s left its health check unanswered for %s s: killed",
                    pid, self.hang_s,
                )  # fmt: skip
            worker.kill()
            worker.join()
            self.asked.pop(pid or 0, None)
            self.answered.discard(pid or 0)
            if worker.exitcode == STARTUP_FAILURE:  # the app cannot start: restarting won't help
                log.error("worker process %s failed to start; stopping", pid)
                self.should_exit.set()
                return
            if self.should_exit.is_set():
                return
            if exited is not None:
                log.warning("worker process %s exited (status %s); starting another", pid, exited)
            replacement = Process(self.config, self.sockets)
            replacement.start()
            self.processes[index] = replacement

    def _hung(self, worker: Process) -> bool:
        """Collect the worker's answers without waiting, send a check if none is pending, and
        tell whether the pending one is older than ``hang_s``. A worker that has never
        answered is still starting (Python, then the app's imports): it is not hung."""
        pid = worker.pid or 0
        try:
            while worker.parent_conn.poll():
                worker.parent_conn.recv()
                self.asked.pop(pid, None)
                self.answered.add(pid)
            if pid not in self.asked:
                worker.parent_conn.send(b"ping")
                self.asked[pid] = self.clock()
        except (OSError, EOFError):
            return True  # its end of the pipe is gone: the worker is gone or going
        return pid in self.answered and self.clock() - self.asked[pid] > self.hang_s


def run(
    app: str,
    host: str,
    port: int,
    workers: int,
    graceful_timeout_s: int,
    log_level: str,
    worker_hang_s: float,
) -> int:
    """Serve the ASGI app factory ``app``; return the exit status (``STARTUP_FAILURE`` if
    it never started)."""
    config = uvicorn.Config(
        app,
        factory=True,
        host=host,
        port=port,
        workers=workers,
        log_level=log_level,
        http=DrainingHttp,
        timeout_graceful_shutdown=graceful_timeout_s,
    )
    if workers == 1:
        server = uvicorn.Server(config)
        server.run()
        return 0 if server.started else STARTUP_FAILURE
    sock = config.bind_socket()
    supervisor = Supervisor(config, [sock], worker_hang_s)
    supervisor.should_exit = StopFlag()  # type: ignore[assignment]  # set from a handler

    def stop(_sig: int, _frame: FrameType | None) -> None:
        # At once, in the handler: uvicorn's supervisor looks at its signals every 0.5 s,
        # and workers that already stopped accepting would leave connects unanswered.
        # Workers first, so that one still starting knows not to listen (stop_requested).
        for worker in supervisor.processes:
            if worker.pid is not None and worker.exitcode is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(worker.pid, signal.SIGTERM)
        _stop_listening(sock)
        supervisor.should_exit.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    # uvicorn restarts or retires single workers on these (see the module's docstring).
    for sig in (signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    supervisor.run()
    return 0
