"""Key management and the audit export as services, called from Python with real
principals: only a global admin manages keys, only a global admin or auditor reads the
audit trail, and every key change is a security event whoever calls it."""

# ruff: noqa: F811 - the fixtures `clock`, `audit` and `keys` come from tests/keys_support.py
from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from keel.errors import KeelError, NotFoundError
from keel.security.apikeys import Keys, authenticate
from keel.security.audit import AuditLog, AuditTrail
from keel.security.roles import (
    KNOWLEDGE_ROLES,
    AuthenticationError,
    Grant,
    PermissionDeniedError,
    Role,
)
from keel.store.database import Database, open_database
from tests.conftest import Clock, person
from tests.keys_support import ADMIN, audit, clock, events, keys  # noqa: F401 - fixtures

FLOW = "credit_limit"
SCOPES = [
    (role.value, scope)
    for role in Role
    for scope in (None, "handbook" if role in KNOWLEDGE_ROLES else FLOW)
]


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = open_database(f"sqlite:///{tmp_path / 'keel.db'}")
    yield database
    database.close()


def test_a_key_created_from_python_is_an_audit_event(
    db: Database, audit: AuditLog, keys: Keys, clock: Clock
) -> None:
    grants = [Grant(Role.DECIDER, FLOW), Grant(Role.VIEWER)]
    key, text = keys.create(ADMIN, "checkout", grants, expires_in=3600)
    assert key.created_by == ADMIN.id and key.owner == "checkout"
    assert authenticate(db, text, clock()).grants == tuple(grants)
    [event] = events(db, audit)
    assert {k: event[k] for k in ("kind", "principal", "action", "target", "outcome")} == {
        "kind": "security",
        "principal": ADMIN.id,
        "action": "key_created",
        "target": key.principal_id,
        "outcome": "ok",
    }
    assert event["detail"] == {"name": "checkout", "grants": ["decider@credit_limit", "viewer@*"]}
    clock.advance(3600)  # the lifetime runs on the service's clock
    with pytest.raises(AuthenticationError, match="expired"):
        authenticate(db, text, clock())


@pytest.mark.parametrize(("role", "flow"), [s for s in SCOPES if s != ("admin", None)])
def test_only_a_global_admin_manages_keys(
    db: Database, audit: AuditLog, keys: Keys, role: str, flow: str | None
) -> None:
    key, _ = keys.create(ADMIN, "svc", [Grant(Role.VIEWER)])
    caller = person("oidc:idp#eve", "Eve", role, flow)
    attempts = [
        lambda: keys.create(caller, "mine", [Grant(Role.ADMIN)]),
        lambda: keys.list(caller),
        lambda: keys.grant(caller, key.prefix, [Grant(Role.ADMIN)]),
        lambda: keys.ungrant(caller, key.prefix, [Grant(Role.VIEWER)]),
        lambda: keys.revoke(caller, key.prefix),
    ]
    for attempt in attempts:
        with pytest.raises(PermissionDeniedError, match="may not manage keys"):
            attempt()
    assert keys.list(ADMIN) == [key]  # nothing changed
    denied = [(e["action"], e["target"], e["outcome"]) for e in events(db, audit)[1:]]
    assert denied == [  # every attempt to change a key is recorded; listing is not a change
        ("key_created", "key:*", "denied"),
        ("role_granted", key.principal_id, "denied"),
        ("role_removed", key.principal_id, "denied"),
        ("key_revoked", key.principal_id, "denied"),
    ]
    assert {e["principal"] for e in events(db, audit)[1:]} == {caller.id}


def test_role_changes_and_their_refusals_are_recorded(
    db: Database, audit: AuditLog, keys: Keys
) -> None:
    key, _ = keys.create(ADMIN, "ops", [Grant(Role.VIEWER)])
    changed = keys.grant(ADMIN, key.prefix, [Grant(Role.REVIEWER, FLOW)])
    assert [str(g) for g in changed.grants] == ["viewer@*", "reviewer@credit_limit"]
    refusals = [
        (lambda: keys.grant(ADMIN, key.prefix, [Grant(Role.VIEWER)]), "already has viewer@*"),
        (lambda: keys.ungrant(ADMIN, key.prefix, [Grant(Role.APPROVER)]), "does not have"),
        (lambda: keys.grant(ADMIN, "ffffffff", [Grant(Role.VIEWER)]), "no API key with prefix"),
    ]
    for refused, message in refusals:
        with pytest.raises(KeelError, match=message):
            refused()
    keys.ungrant(ADMIN, key.prefix, [Grant(Role.VIEWER)])
    with pytest.raises(KeelError, match="no role; revoke it instead"):
        keys.ungrant(ADMIN, key.prefix, [Grant(Role.REVIEWER, FLOW)])
    revoked = keys.revoke(ADMIN, key.prefix)
    assert revoked.revoked_at is not None
    with pytest.raises(KeelError, match="already revoked"):
        keys.revoke(ADMIN, key.prefix)
    with pytest.raises(NotFoundError):
        keys.revoke(ADMIN, "ffffffff")
    recorded = events(db, audit)
    assert [(e["action"], e["outcome"]) for e in recorded] == [
        ("key_created", "ok"),
        ("role_granted", "ok"),
        ("role_granted", "refused"),
        ("role_removed", "refused"),
        ("role_granted", "refused"),
        ("role_removed", "ok"),
        ("role_removed", "refused"),
        ("key_revoked", "ok"),
    ]
    assert {e["principal"] for e in recorded} == {ADMIN.id}
    assert recorded[1]["detail"] == {
        "grants": ["reviewer@credit_limit"],
        "now": ["viewer@*", "reviewer@credit_limit"],
    }
    assert recorded[4]["target"] == "key:ffffffff"
    assert recorded[4]["detail"]["reason"] == "no API key with prefix 'ffffffff'"


@pytest.mark.parametrize(("role", "flow"), SCOPES)
def test_only_a_global_admin_or_auditor_reads_the_audit_trail(
    db: Database, audit: AuditLog, role: str, flow: str | None
) -> None:
    audit.record("security", "key:00000000", "authenticate", "key:00000000", "failed")
    audit.flush()
    caller = person("oidc:idp#eve", "Eve", role, flow)
    trail = AuditTrail(db)
    if flow is None and role in ("admin", "auditor"):
        [line] = trail.export(caller)
        assert json.loads(line)["action"] == "authenticate"
    else:
        with pytest.raises(PermissionDeniedError, match="may not read audit"):
            trail.export(caller)  # refused at the call, before any line is read
