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

A worker still starting when the signal comes never listens: listening would open the shut
socket again, for every process (see ``WorkerServer``).

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

import asyncio
import contextlib
import os
import signal
import socket
import sys
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
STARTUP_FAILURE = 3  # uvicorn's exit status for a worker whose app cannot start


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


def watch_for_stop() -> None:
    """Watch for SIGTERM and SIGINT in this worker, beside uvicorn's own handling: the shared
    listening socket is shut at once, in every process (uvicorn would only stop this worker's
    accepting, and the kernel would go on completing connections into the queue until the
    supervisor's copy stops). Call it from the main thread while the app is built."""
    if threading.current_thread() is not threading.main_thread():
        return  # signals reach the main thread only; nothing to watch here
    for sig in (signal.SIGINT, signal.SIGTERM):
        previous = signal.getsignal(sig)
        server = getattr(previous, "__self__", None)  # uvicorn's handler is its server's
        signal.signal(sig, _OnStop(previous, server))


class _OnStop:
    def __init__(self, previous: Any, server: Any) -> None:
        self.previous = previous
        self.server = server

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        _shut(getattr(self.server, "servers", []))
        if callable(self.previous):
            self.previous(sig, frame)  # uvicorn's: sets the server's ``should_exit``


def _shut(listeners: list[Any]) -> None:
    """Stop listening on the sockets of ``listeners`` (asyncio or uvloop servers), in every
    process that shares them."""
    for listener in listeners:
        for sock in listener.sockets:
            with socket.socket(fileno=os.dup(sock.fileno())) as shared:
                _stop_listening(shared)


def _stop_listening(sock: socket.socket) -> None:
    """Stop a listening socket in every process that holds it: connects are refused from
    now on. (Closing this process's descriptor would not: each worker holds its own.)"""
    with contextlib.suppress(OSError):  # already shut down, or not listening yet
        sock.shutdown(socket.SHUT_RD)


class WorkerServer(uvicorn.Server):
    """uvicorn's server, given the listening socket the supervisor bound, which listens on it
    only if it has not been told to stop, checked with no turn of the event loop between the
    check and the listen.

    Every process shares one listening socket, and on SIGTERM it is shut (``SHUT_RD``) for
    all of them. Shut, it can be opened again: ``listen()`` on it from any process, and the
    kernel queues connections for everyone once more. uvicorn listens at the end of its
    startup, after the app's lifespan, and gives the event loop at least one turn between
    the two. A worker still starting when the signal came (its sibling already serving) has
    its ``should_exit`` set by uvicorn's handler, yet listens anyway; the connections queued
    for it are reset when it stops, one per keep-alive client.

    So this startup is uvicorn's (0.54, pinned in constraints.txt) for a worker given
    sockets, with the listening split off: after the app's lifespan, each server is created
    without listening and registered in ``servers``, where the signal handler (``_OnStop``)
    finds it; then ``should_exit`` is checked, and only if it is unset does the server start
    listening, inside the same step of the loop. A signal handled in the few bytecodes
    between the check and the ``listen()`` call (Python runs handlers between bytecodes) is
    caught by a second check after it: the socket is shut again at once.

    A worker told to stop before it listens closes its copy of the socket, runs the
    lifespan's shutdown (its scheduled jobs cancelled, the engine closed) and exits without
    serving.
    """

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        if sockets is None:  # uvicorn binds the socket itself: nobody else shares it
            await super().startup(sockets)
            return
        await self.lifespan.startup()
        if self.lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)
        config, loop = self.config, asyncio.get_running_loop()

        def protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            return config.http_protocol_class(  # type: ignore[call-arg]
                config=config,
                server_state=self.server_state,
                app_state=self.lifespan.state,
                _loop=_loop,
            )

        self.servers = []
        for sock in sockets:
            server = await loop.create_server(
                protocol, sock=sock, ssl=config.ssl, backlog=config.backlog, start_serving=False
            )
            self.servers.append(server)
        if self.told_to_stop():
            log.info("worker stopped before it served; exiting without listening")
            for server in self.servers:
                server.close()  # closes this worker's copy of the socket, unused
            await self.lifespan.shutdown()
            return
        for server in self.servers:
            await server.start_serving()  # listen() runs before this awaits anything
        if self.told_to_stop():  # the signal came between the check and listen(): shut again
            _shut(self.servers)
        self.started = True

    def told_to_stop(self) -> bool:
        """Whether a SIGTERM or SIGINT has been handled (uvicorn's handler sets the flag)."""
        return self.should_exit


class WorkerProcess(Process):
    """uvicorn's worker process, running a ``WorkerServer``."""

    @property
    def server(self) -> uvicorn.Server:
        if self._server is None:
            self._server = WorkerServer(config=self.config)
        return self._server


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

    def init_processes(self) -> None:
        for _ in range(self.processes_num):
            worker = WorkerProcess(self.config, self.sockets)
            worker.start()
            self.processes.append(worker)

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
            replacement = WorkerProcess(self.config, self.sockets)
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
    sock = config.bind_socket()  # bound here, listened on by the worker (WorkerServer)
    if workers == 1:
        server = WorkerServer(config)
        server.run(sockets=[sock])
        return 0 if server.started or server.should_exit else STARTUP_FAILURE
    supervisor = Supervisor(config, [sock], worker_hang_s)
    supervisor.should_exit = StopFlag()  # type: ignore[assignment]  # set from a handler

    def stop(_sig: int, _frame: FrameType | None) -> None:
        # At once, in the handler: uvicorn's supervisor looks at its signals every 0.5 s,
        # and workers that already stopped accepting would leave connects unanswered.
        # Workers first, so that one still starting knows not to listen (WorkerServer).
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
