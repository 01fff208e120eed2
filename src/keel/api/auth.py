"""Who is calling: every route but the health checks needs a valid credential.

Verified credentials are remembered for at most ``CACHE_S`` seconds (never past their own
expiry), so most requests cost no database read; a revoked key is refused by every worker
within that time.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from fastapi import Request
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.api.errors import error_response
from keel.errors import KeelError
from keel.security.apikeys import authenticate
from keel.security.roles import AuthenticationError, Principal
from keel.text import identifier

if TYPE_CHECKING:
    from keel.engine import Engine

CACHE_S = 1.0
CACHE_MAX = 10_000


class PrincipalCache:
    """Verified credentials by the hash of their token, each until ``CACHE_S`` of the
    engine's clock has passed (or the credential expires, if sooner)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._entries: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def get(self, token: str) -> Principal | None:
        key = hashlib.sha256(token.encode()).hexdigest()
        with self._lock:
            entry = self._entries.get(key)
        if entry is None or entry[1] <= self._clock():
            return None
        return entry[0]

    def put(self, token: str, principal: Principal) -> None:
        key = hashlib.sha256(token.encode()).hexdigest()
        until = self._clock() + CACHE_S
        if principal.expires_at is not None:
            until = min(until, principal.expires_at)
        with self._lock:
            if len(self._entries) >= CACHE_MAX:
                self._entries.clear()
            self._entries[key] = (principal, until)


PUBLIC_PATHS = frozenset({"/healthz", "/readyz", "/openapi.json"})  # hold no data


def authenticate_request(request: Request) -> Principal:
    """The caller, or 401 (and 429 over its rate). Run by ``Authenticate`` before routing,
    so a request is authenticated before its body is parsed or its route is looked up."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    state = request.app.state.keel
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "send an API key as 'Authorization: Bearer keel_…' (create one with keel keys create)"
        )
    token = token.strip()
    principal: Principal | None = state.principals.get(token)
    if principal is None:
        try:
            if token.startswith("keel_") or state.oidc is None:
                principal = authenticate(state.engine.db, token, state.engine.clock())
            else:
                principal = state.oidc.authenticate(token)
        except AuthenticationError as error:
            who = f"key:{error.detail['prefix']}" if "prefix" in error.detail else "unknown"
            state.audit.record(
                "security",
                who,
                "authenticate",
                request.url.path,
                "failed",
                {"reason": error.message},
            )
            raise
        state.principals.put(token, principal)
    request.state.principal = principal
    state.limiter.take(principal.id)
    return principal


class Authenticate:
    """Every request but ``PUBLIC_PATHS`` is authenticated first: a caller without a valid
    credential gets 401 whatever its body or path, and the audit trail names the caller of
    every request that got past this, malformed ones included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in PUBLIC_PATHS:
            await self.app(scope, receive, send)
            return
        try:
            authenticate_request(Request(scope))
        except KeelError as error:
            response = error_response(error.code, error.message, error.detail)
            if "retry_after" in error.detail:
                response.headers["Retry-After"] = str(error.detail["retry_after"])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the principal ``Authenticate`` found; path and query values
    are checked as identifiers (printable text only: a NUL byte or an escape sequence never
    reaches the store, the logs or a terminal)."""
    principal = getattr(request.state, "principal", None)
    if not isinstance(principal, Principal):  # a route mounted outside the middleware
        principal = authenticate_request(request)
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if isinstance(value, str):
                identifier(value, f"{where}.{name}")
    return principal


def engine_of(request: Request) -> Engine:
    """The engine the app serves (every router reads it from here)."""
    engine: Engine = request.app.state.keel.engine
    return engine
