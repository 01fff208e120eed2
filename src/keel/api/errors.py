"""Errors over HTTP: ``{code, message, detail}`` with a status fixed per stable code."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse

# Error code → HTTP status. Codes are stable; anything unlisted is a 500 with its code.
STATUS = {
    "unauthenticated": 401,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "integrity_failed": 409,
    "request_too_large": 413,
    "rate_limited": 429,
    "invalid_request": 422,
    "invalid_input": 422,
    "invalid_definition": 422,
    "data_erased": 410,
    "ledger_write_failed": 503,
    "batch_incomplete": 503,
    "store_error": 503,
    "model_error": 503,
    "missing_extra": 503,
    "config_error": 503,
    "not_canonicalisable": 422,
    "invalid_template": 422,
    "invalid_notice_template": 422,
    "invalid_checkpoint": 422,
    "keel_error": 400,
}


def error_response(code: str, message: str, detail: dict[str, Any] | None = None) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if code == "unauthenticated" else None
    return JSONResponse(
        {"code": code, "message": message, "detail": detail or {}},
        status_code=STATUS.get(code, 500),
        headers=headers,
    )
