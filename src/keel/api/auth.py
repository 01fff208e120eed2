"""Who is calling: every route but the health checks needs a valid credential.

The credential is ``Authorization: Bearer <key or token>``. The API's docs (``DOCS_PATHS``:
the Swagger UI page, its assets and ``/openapi.json``) also take it as the password of HTTP
Basic authentication, because a browser opening a page can send only that; nothing else
does, since a browser sends Basic credentials by itself to every request to the server,
and those must not be able to read data or change anything.

Verified credentials are remembered for at most ``CACHE_S`` seconds (never past their own
expiry), so most requests cost no database read; a revoked key is refused by every worker
within that time.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
from fastapi import Request, Security
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from keel.api.errors import error_response
from keel.errors import KeelError
from keel.security.apikeys import authenticate
from keel.security.audit import AuditLog
from keel.security.limits import Limiter, RateLimitedError, RateLimiter, SharedRateLimiter
from keel.security.roles import AuthenticationError, Principal
from keel.store.database import Database
from keel.telemetry import Metrics
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


PUBLIC_PATHS = frozenset({"/healthz", "/readyz"})  # hold no data
# The API's contract and its docs page: any authenticated principal may read them (no
# permission beyond authentication: they hold no data), with a bearer or a Basic credential.
DOCS_PATHS = frozenset({"/openapi.json", "/docs"})
DOCS_PREFIX = "/docs/"
DOCS_CHALLENGE = 'Basic realm="Keel API docs", charset="UTF-8"'
FAILED_PER_S = 0.5  # failed authentications a client address or key prefix may sustain
FAILED_BURST = 10
FAILURE_WINDOW_S = 60.0  # one audit row per source and window; the rest are counted


class FailedLogins:
    """Failed authentications, limited per client address and per key prefix (429 with
    ``Retry-After`` past ``FAILED_BURST``, refilled at ``FAILED_PER_S``), and recorded in
    the audit trail as one row per source and ``FAILURE_WINDOW_S`` — the first failure as
    it happened, the repeats as a count in the next row — so a flood of bad keys cannot
    flood the trail. Every attempt is counted in ``keel_authentication_failures``."""

    def __init__(
        self,
        audit: AuditLog,
        metrics: Metrics,
        clock: Callable[[], float],
        shared: Database | None = None,
    ) -> None:
        self._audit = audit
        self._metrics = metrics
        self._clock = clock
        # In the store when the API's limits are (``shared``): across workers and nodes.
        self._limiter: Limiter = (
            SharedRateLimiter(shared, "auth", FAILED_PER_S, FAILED_BURST, clock)
            if shared is not None
            else RateLimiter(FAILED_PER_S, FAILED_BURST, clock)
        )
        self._windows: dict[str, tuple[float, int]] = {}  # source → (window start, repeats)
        self._lock = threading.Lock()

    def refuse_if_limited(self, sources: list[str], path: str) -> None:
        """429 before any check of the credential when a source is over its limit."""
        wait = max((self._limiter.wait(s) for s in sources), default=0.0)
        if wait > 0:
            self._metrics.auth_failures.labels("yes").inc()
            self._note(sources[0], path, "limited", "too many failed authentications")
            raise RateLimitedError(sources[0], wait)

    def failed(self, sources: list[str], who: str, path: str, reason: str) -> None:
        self._metrics.auth_failures.labels("no").inc()
        for source in sources:
            # Over the limit: the next attempt from it is refused before its key is read.
            with contextlib.suppress(RateLimitedError):
                self._limiter.take(source)
        self._note(who, path, "failed", reason, sources)

    def _note(
        self, who: str, path: str, outcome: str, reason: str, sources: list[str] | None = None
    ) -> None:
        key = f"{who}|{outcome}"
        now = self._clock()
        with self._lock:
            start, repeats = self._windows.get(key, (None, 0))
            if start is not None and now - start < FAILURE_WINDOW_S:
                self._windows[key] = (start, repeats + 1)
                return
            if len(self._windows) > 10_000:
                self._windows.clear()
            self._windows[key] = (now, 0)
        detail: dict[str, Any] = {"reason": reason, "sources": sources or [who]}
        if repeats:
            detail["repeated_before"] = repeats  # the earlier window's repeats, counted
        self._audit.record("security", who, "authenticate", path, outcome, detail)


def _sources(request: Request, token: str) -> list[str]:
    """Where failed attempts are counted: the client address, and the key prefix if any."""
    out = [f"addr:{request.client.host if request.client else 'unknown'}"]
    if token.startswith("keel_") and token.count("_") >= 2:
        out.append(f"key:{token.split('_')[1][:16]}")
    return out


def is_docs_path(path: str) -> bool:
    """Whether ``path`` is the API's contract or its docs page (Basic credentials allowed)."""
    return path in DOCS_PATHS or path.startswith(DOCS_PREFIX)


def _credential(request: Request) -> str | None:
    """The key or token the request carries: a bearer credential, or on the docs paths the
    password of a Basic one (the user name is not read)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value
    if scheme.lower() == "basic" and value and is_docs_path(request.scope["path"]):
        try:
            pair = base64.b64decode(value, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
        password = pair.partition(":")[2].strip()
        return password or None
    return None


def _known(request: Request) -> Principal | None:
    """The caller a well-formed credential names, if this process knows it already (the
    cache of verified credentials); never reads the store."""
    token = _credential(request)
    if token is None:
        return None
    found: Principal | None = request.app.state.keel.principals.get(token)
    return found


def authenticate_request(request: Request) -> Principal:
    """The caller, or 401 (and 429 over its rate). Run by ``Authenticate`` before routing,
    so a request is authenticated before its body is parsed or its route is looked up."""
    token = _credential(request)
    state = request.app.state.keel
    if token is None:
        if is_docs_path(request.scope["path"]):
            raise AuthenticationError(
                "open the API docs with an API key as the password (any user name), or send "
                "'Authorization: Bearer keel_…' (create a key with keel keys create)"
            )
        raise AuthenticationError(
            "send an API key as 'Authorization: Bearer keel_…' (create one with keel keys create)"
        )
    principal: Principal | None = state.principals.get(token)
    if principal is None:
        sources = _sources(request, token)
        state.failed_logins.refuse_if_limited(sources, request.url.path)
        try:
            if token.startswith("keel_") or state.oidc is None:
                principal = authenticate(state.engine.db, token, state.engine.clock())
            else:
                principal = state.oidc.authenticate(token)
        except AuthenticationError as error:
            who = f"key:{error.detail['prefix']}" if "prefix" in error.detail else "unknown"
            state.failed_logins.failed(sources, who, request.url.path, error.message)
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
        state = scope["app"].state.keel
        try:
            request = Request(scope)
            known = _known(request) if state.limiter.blocking else None
            if known is not None and state.limiter.take_held(known.id):
                request.state.principal = known  # a known caller within its lease: no store
            elif state.limiter.blocking:  # shared limits wait on the store: off the loop
                await anyio.to_thread.run_sync(authenticate_request, request)
            else:
                authenticate_request(request)
        except KeelError as error:
            response = error_response(error.code, error.message, error.detail)
            if error.code == "unauthenticated" and is_docs_path(scope["path"]):
                # A browser asks its user for the key when it sees this challenge.
                response.headers.append("WWW-Authenticate", DOCS_CHALLENGE)
            if "retry_after" in error.detail:
                response.headers["Retry-After"] = str(error.detail["retry_after"])
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


# Declares the bearer scheme in the OpenAPI document (Swagger UI's "Authorize" button);
# ``Authenticate`` does the checking.
BEARER = HTTPBearer(
    scheme_name="apiKey",
    description="An API key (keel keys create) or, with OIDC configured, an access token.",
    auto_error=False,
)


async def current_principal(
    request: Request,
    _declared: HTTPAuthorizationCredentials | None = Security(BEARER),  # noqa: B008
) -> Principal:
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
