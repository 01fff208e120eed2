"""The key service and its audit trail on a test clock, shared by tests/test_keys.py and
tests/test_groups.py; each module brings its own ``db`` fixture (SQLite only, or both
backends). Import the fixtures into a test module to use them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from keel.security.apikeys import Keys
from keel.security.audit import AuditLog, AuditTrail
from keel.store.database import Database
from tests.conftest import Clock, person

ADMIN = person("oidc:idp#ana", "Ana", "admin")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def audit(db: Database, clock: Clock) -> Iterator[AuditLog]:
    log = AuditLog(db, clock=clock)
    yield log
    log.close()


@pytest.fixture
def keys(db: Database, audit: AuditLog, clock: Clock) -> Keys:
    return Keys(db, audit, clock)


def events(db: Database, audit: AuditLog) -> list[dict[str, Any]]:
    """The audit trail's events so far, as an admin exports them."""
    audit.flush()
    return [json.loads(line) for line in AuditTrail(db).export(ADMIN)]
