"""Property-based tests of the HTTP API from its own OpenAPI schema (schemathesis).

Every operation gets generated requests, valid and invalid, with an admin key, on SQLite and
on PostgreSQL: no response may be a server error, and every error must be a well-formed
{code, message, detail}.
(Driven through schemathesis's Python API: its pytest plugin does not support pytest 9.)
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from keel import open_engine
from keel.api import create_app
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.roles import Grant, Role

EXAMPLES = 15
# CI runs a fixed sample so that a red build always means a change broke something; set
# KEEL_FUZZ_RANDOM=1 (and raise EXAMPLES) to explore new inputs locally.
DERANDOMIZE = os.environ.get("KEEL_FUZZ_RANDOM") != "1"


def error_is_well_formed(ctx: Any, response: Any, case: Any) -> bool | None:
    if response.status_code < 400:
        return None
    body = response.json()
    assert set(body) == {"code", "message", "detail"}, body
    assert isinstance(body["code"], str) and body["code"], body
    assert isinstance(body["message"], str) and body["message"], body
    assert isinstance(body["detail"], dict), body
    return True


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_api_never_fails_on_the_server_and_errors_are_well_formed(
    project: Path, env: dict[str, str], mode: GenerationMode
) -> None:
    """On SQLite and on PostgreSQL (which refuses NUL bytes in text the way SQLite does not)."""
    with open_engine(project, environ=env) as engine:
        _, text = create_key(engine.db, "fuzz", "tests", [Grant(Role.ADMIN)], "tests", time.time())
        headers = {"Authorization": f"Bearer {text}"}
        audit = AuditLog(engine.db)  # closed before the engine: no write after the store closes
        app = create_app(engine, audit)
        schema = schemathesis.openapi.from_asgi("/openapi.json", app, headers=headers)
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) >= 12
        exercised = 0
        for operation in operations:

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=EXAMPLES,
                derandomize=DERANDOMIZE,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            def check(case: Any) -> None:
                response = case.call(headers=headers)
                case.validate_response(response, checks=[not_a_server_error, error_is_well_formed])

            try:
                check()
                exercised += 1
            except Unsatisfiable:
                # Nothing to negate in this operation: schemathesis cannot make it invalid.
                assert mode is GenerationMode.NEGATIVE, operation.path
        audit.close()
        # Positive: every operation. Negative: those with a body or typed query parameters
        # (decide, batch, what-if, list); free-form strings in paths cannot be made invalid.
        assert exercised == len(operations) if mode is GenerationMode.POSITIVE else exercised >= 4
