"""Building the FastAPI application around an open engine."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from keel.api.auth import Authenticate, FailedLogins, PrincipalCache
from keel.api.errors import error_response
from keel.config import Settings
from keel.engine import Engine
from keel.errors import KeelError
from keel.security.audit import AuditLog
from keel.security.limits import Limiter, RateLimitedError, RateLimiter, SharedRateLimiter
from keel.security.oidc import OidcVerifier

MAX_BODY_BYTES = 1_048_576
# One uploaded knowledge document (POST /v1/collections/{c}/documents): a PDF handbook is
# larger than any JSON body the rest of the API takes.
MAX_DOCUMENT_BYTES = 32 * 1_048_576
UPLOAD_PATH = re.compile(r"/v1/collections/[^/]+/documents/?")


@dataclass
class KeelState:
    engine: Engine
    audit: AuditLog
    limiter: Limiter
    oidc: OidcVerifier | None
    principals: PrincipalCache
    failed_logins: FailedLogins


class BodyLimit:
    """Refuse request bodies over a size, declared or streamed, before any handler runs:
    ``limit``, or ``upload_limit`` for a document upload (``UPLOAD_PATH``)."""

    def __init__(self, app: ASGIApp, limit: int, upload_limit: int = MAX_DOCUMENT_BYTES) -> None:
        self.app = app
        self.default_limit = limit
        self.upload_limit = upload_limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        upload = scope["method"] == "POST" and UPLOAD_PATH.fullmatch(scope["path"]) is not None
        limit = self.upload_limit if upload else self.default_limit
        hint = "split the document" if upload else "send smaller batches"
        await self._limited(scope, receive, send, limit, hint)

    async def _limited(
        self, scope: Scope, receive: Receive, send: Send, limit: int, hint: str
    ) -> None:
        declared = dict(scope.get("headers", [])).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            await self._refuse(scope, receive, send, limit, hint)
            return
        if declared is None:
            # Chunked, no length declared: read it here, at most the limit, so an oversize
            # body gets its 413 before a parser can turn the cut into a 400.
            buffered: list[Message] = []
            seen = 0
            while True:
                message = await receive()
                buffered.append(message)
                seen += len(message.get("body", b""))
                if seen > limit:
                    await self._refuse(scope, receive, send, limit, hint)
                    return
                if message["type"] != "http.request" or not message.get("more_body"):
                    break

            async def replay() -> Message:
                return buffered.pop(0) if buffered else await receive()

            await self.app(scope, replay, send)
            return
        seen = 0

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:
                raise _TooLarge
            return message

        try:
            await self.app(scope, counting, send)
        except _TooLarge:
            await self._refuse(scope, receive, send, limit, hint)

    async def _refuse(
        self, scope: Scope, receive: Receive, send: Send, limit: int, hint: str
    ) -> None:
        response = error_response(
            "request_too_large",
            f"the request body is larger than {limit:,} bytes; {hint}",
            {"limit": limit},
        )
        await response(scope, receive, send)


class _TooLarge(Exception):
    pass


class AuditRequests:
    """Record every request but the health checks: who, which route, how it ended.

    Plain ASGI (no body buffering): the status comes from the response's first message,
    the principal from what authentication left in the request state.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in ("/healthz", "/readyz"):
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            principal = scope.get("state", {}).get("principal")
            route = scope.get("route")
            outcome = {401: "denied", 403: "denied", 429: "limited"}.get(
                status, "ok" if status < 400 else "error"
            )
            scope["app"].state.keel.audit.record(
                "request",
                principal.id if principal else "anonymous",
                getattr(route, "name", "unknown"),
                scope["path"],
                outcome,
                {
                    "method": scope["method"],
                    "status": status,
                    "ms": round((time.perf_counter() - started) * 1000, 3),
                },
            )


UNPARSEABLE = "There was an error parsing the body"  # FastAPI's detail for such a body


def shared_limits(settings: Settings, workers: int) -> bool:
    """Whether the rate limits live in the store (``api.rate_limits``; ``auto``: when the
    server runs more than one worker process, so the limit holds across them)."""
    return settings.rate_limits == "shared" or (settings.rate_limits == "auto" and workers > 1)


def create_app(engine: Engine, audit: AuditLog | None = None, workers: int = 1) -> FastAPI:
    """The API for ``engine``. The caller owns the engine; the app records to ``audit``
    (the caller's to close), or to an audit log of its own that it closes on shutdown, so
    nothing writes to the store after the caller closes the engine. ``workers``: how many
    worker processes serve the same store (see ``shared_limits``)."""
    from keel.api import apidocs, decisions, monitoring, outcomes, policies, reviews, service  # noqa: PLC0415 - routers import lazily
    from keel.api.inventory import router as models_router  # noqa: PLC0415
    from keel.api.knowledge import router as knowledge_router  # noqa: PLC0415

    app = FastAPI(
        title="Keel",
        version="1",
        description="Governed, explained and recorded decisions from AI models.",
        docs_url=None,
        redoc_url=None,
    )
    settings = engine.settings
    audit_log = audit or AuditLog(engine.db, clock=engine.clock)
    if audit is None:
        app.router.on_shutdown.append(audit_log.close)
    shared = shared_limits(settings, workers)
    limiter: Limiter = (
        SharedRateLimiter(engine.db, "api", settings.rate_per_s, settings.burst, engine.clock)
        if shared
        else RateLimiter(settings.rate_per_s, settings.burst, engine.clock)
    )
    app.state.keel = KeelState(
        engine,
        audit_log,
        limiter,
        OidcVerifier(settings.oidc, engine.metrics) if settings.oidc else None,
        PrincipalCache(engine.clock),
        FailedLogins(audit_log, engine.metrics, engine.clock, engine.db if shared else None),
    )

    @app.exception_handler(KeelError)
    async def keel_error(_request: Request, error: KeelError) -> JSONResponse:
        response = error_response(error.code, error.message, error.detail)
        if isinstance(error, RateLimitedError):
            response.headers["Retry-After"] = str(error.detail["retry_after"])
        return response

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_request: Request, error: RequestValidationError) -> JSONResponse:
        problems = [
            {"field": ".".join(str(p) for p in e["loc"][1:]) or "body", "error": e["msg"]}
            for e in error.errors()
        ]
        summary = "; ".join(f"{p['field']}: {p['error']}" for p in problems[:5])
        return error_response(
            "invalid_request", f"invalid request ({summary})", {"errors": problems}
        )

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, error: StarletteHTTPException) -> JSONResponse:
        if error.status_code == 400 and error.detail == UNPARSEABLE:
            # FastAPI's answer to a body json cannot read at all: nested past the parser's
            # recursion limit, or not text. Say so, as for any other malformed body.
            return error_response(
                "invalid_request",
                "invalid request (body: not readable as JSON: nested too deeply or not UTF-8)",
                {"errors": [{"field": "body", "error": "not readable as JSON"}]},
            )
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code, "http_error")
        response = error_response(code, str(error.detail))
        response.status_code = error.status_code
        return response

    app.include_router(decisions.router)
    app.include_router(reviews.router)
    app.include_router(outcomes.router)
    app.include_router(policies.router)
    app.include_router(monitoring.router)
    app.include_router(models_router)
    app.include_router(knowledge_router)
    app.include_router(service.router)
    app.include_router(apidocs.router)
    # Outermost last: the size limit, then the audit record, then authentication.
    app.add_middleware(Authenticate)
    app.add_middleware(AuditRequests)
    app.add_middleware(BodyLimit, limit=MAX_BODY_BYTES)
    return app
