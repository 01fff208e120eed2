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
    try:
        principal = authenticate(state.engine.db, token.strip(), state.engine.clock())
    except AuthenticationError as error:
        state.audit.record(
            "security",
            f"key:{error.detail.get('prefix', '?')}",
            "authenticate",
            request.url.path,
            "failed",
            {"reason": error.message},
        )
        raise
    request.state.principal = principal
    return principal
