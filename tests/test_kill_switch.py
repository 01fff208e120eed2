"""The kill switch: engaged over HTTP in one step, followed by a second server process at its
next registry refresh (driven by the injected clock), recorded in the ledger and in every
decision made while it holds, and released only by a second person."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.cli import app as cli
from keel.errors import ConflictError
from keel.runtime import REFRESH_S
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.roles import Grant, PermissionDeniedError, Role
from tests.conftest import LOW_RISK, Clock, person

FLOW = "credit_limit"


def test_a_stop_over_http_reaches_a_second_process_and_needs_a_second_person_to_release(
    project: Path, env: dict[str, str]
) -> None:
    clock = Clock(time.time())
    with (
        open_engine(project, environ=env, clock=clock) as server,
        open_engine(project, environ=env, clock=clock) as other,
    ):
        _, text = create_key(server.db, "olga", "olga", [Grant(Role.OWNER, FLOW)], "t", clock())
        owner = {"Authorization": f"Bearer {text}"}
        assert other.decide(FLOW, LOW_RISK).status == "final"
        audit = AuditLog(server.db)  # closed before the engine (see test_bad_input)
        with TestClient(create_app(server, audit)) as client:
            stopped = client.post(f"/v1/flows/{FLOW}/stop", json={"reason": "outage"},
                                  headers=owner)  # fmt: skip
            assert stopped.status_code == 200 and stopped.json()["hold"] == "stop"
            again = client.post(f"/v1/flows/{FLOW}/stop", json={"reason": "x"}, headers=owner)
            assert again.status_code == 409
            here = server.decide(FLOW, LOW_RISK)
            assert here.status == "deferred" and "kill switch" in (here.fallback or "")
            assert here.reason.startswith("Automatic decisions on this flow are stopped")
            assert other.decide(FLOW, LOW_RISK).status == "final"  # looked < REFRESH_S ago
            clock.advance(REFRESH_S)
            there = other.decide(FLOW, LOW_RISK)
            assert there.status == "deferred" and there.action == "refer"
            assert other.entry(there.id).body["hold"] == "stop"  # visible in the record
            lift = client.post(f"/v1/flows/{FLOW}/hold/lift", json={"reason": "mine"},
                               headers=owner)  # fmt: skip
            assert (
                lift.status_code == 409 and "a second person releases it" in lift.json()["message"]
            )
        audit.close()
        kinds = [e.body["hold"] for e in server.entries(50, kind="flow_hold_changed")]
        assert kinds == ["stop"]
        with pytest.raises(PermissionDeniedError):  # a viewer may not release it
            other.holds.lift(FLOW, person("key:vera", "Vera", "viewer"), "no")
        released = other.holds.lift(FLOW, person("key:paul", "Paul", "approver"), "checked")
        assert released.hold == "none" and released.previous == "stop"
        assert other.decide(FLOW, LOW_RISK).status == "final"
        with pytest.raises(ConflictError, match="is not held"):
            other.holds.lift(FLOW, person("key:paul", "Paul", "approver"), "again")


def test_a_stop_from_the_command_line(project: Path) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["flow", "stop", FLOW, "-r", "outage", "-p", str(project)])
    assert result.exit_code == 0, result.stderr
    with open_engine(project) as engine:
        assert engine.decide(FLOW, LOW_RISK).status == "deferred"
    # The same operator cannot release what they stopped.
    result = runner.invoke(cli, ["flow", "release", FLOW, "-r", "ok", "-p", str(project)])
    assert result.exit_code == 2 and "a second person releases it" in result.stderr
