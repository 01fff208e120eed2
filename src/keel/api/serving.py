"""Running the API under uvicorn, and stopping it without failing a request it accepted.

On SIGTERM (or Ctrl-C) a Keel server:

1. stops accepting connections: from then on a client's connect is refused, so it knows at
   once to go elsewhere (with several workers the supervisor shuts the shared listening
   socket down the moment it gets the signal; closing a worker's copy of it alone would
   leave the kernel completing connections that nobody accepts, to reset them at exit);
2. answers every request it accepted, each with ``Connection: close``, so a keep-alive
   client learns from the answer itself not to send on that connection again;
3. closes a keep-alive connection that stays idle for ``DRAIN_IDLE_S``. uvicorn alone closes
   idle connections at once, which races a request the client is already sending: it meets a
   reset after it was sent (32 failed requests per SIGTERM with 32 keep-alive clients);
4. after ``graceful_timeout_s`` cancels whatever still runs; then the app's lifespan
   shutdown cancels the scheduled jobs and closes the audit log and the engine.
"""

from __future__ import annotations

import contextlib
import signal
import socket
from types import FrameType

import uvicorn
from uvicorn.supervisors.multiprocess import Multiprocess

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


def _stop_listening(sock: socket.socket) -> None:
    """Stop the shared listening socket in every process that holds it: connects are
    refused from now on. (Closing this process's descriptor would not: each worker holds
    its own.)"""
    with contextlib.suppress(OSError):  # already shut down by an earlier signal
        sock.shutdown(socket.SHUT_RD)


def run(
    app: str, host: str, port: int, workers: int, graceful_timeout_s: int, log_level: str
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
    supervisor = Multiprocess(config, sockets=[sock])

    def stop(_sig: int, _frame: FrameType | None) -> None:
        # At once, in the handler: uvicorn's supervisor looks at its signals every 0.5 s,
        # and workers that already stopped accepting would leave connects unanswered.
        _stop_listening(sock)
        supervisor.should_exit.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, stop)
    supervisor.run()
    return 0
