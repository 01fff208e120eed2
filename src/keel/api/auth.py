"""Who is calling: every route but the health checks needs a valid credential."""

from __future__ import annotations

from fastapi import Request

from keel.security.apikeys import authenticate
from keel.security.roles import AuthenticationError, Principal


def current_principal(request: Request) -> Principal:
    """FastAPI dependency: the authenticated principal, or 401."""
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    state = request.app.state.keel
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthenticationError(
            "send an API key as 'Authorization: Bearer keel_…' (create one with keel keys create)"
        )
    token = token.strip()
    try:
        if token.startswith("keel_") or state.oidc is None:
            principal = authenticate(state.engine.db, token, state.engine.clock())
        else:
            principal = state.oidc.authenticate(token)
    except AuthenticationError as error:
        who = f"key:{error.detail['prefix']}" if "prefix" in error.detail else "unknown"
        state.audit.record(
            "security", who, "authenticate", request.url.path, "failed", {"reason": error.message}
        )
        raise
    request.state.principal = principal
    state.limiter.take(principal.id)
    return principal
