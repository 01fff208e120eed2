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


async def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal, or 401 (and 429 over the rate)."""
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
    # Ids and filters in the path and query are identifiers: printable text only (a NUL
    # byte or an escape sequence never reaches the store, the logs or a terminal).
    for where, params in (("path", request.path_params), ("query", request.query_params)):
        for name, value in params.items():
            if isinstance(value, str):
                identifier(value, f"{where}.{name}")
    return principal


def engine_of(request: Request) -> Engine:
    """The engine the app serves (every router reads it from here)."""
    engine: Engine = request.app.state.keel.engine
    return engine
