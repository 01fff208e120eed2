"""Replay and rollout options are checked together: three wrong options are three problems
in one refusal, on the command line and over HTTP, and nothing is registered or started."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import Engine, open_engine
from keel.cli import app
from keel.errors import InputError
from keel.security.roles import Role
from tests.conftest import LOW_RISK
from tests.test_own_decisions import key

FLOW = "credit_limit"


def ledger_size(engine: Engine) -> int:
    return engine.verify().entries


def test_cli_replay_names_every_bad_option(project: Path) -> None:
    with open_engine(project, environ={}) as engine:
        engine.decide(FLOW, LOW_RISK)
        before = ledger_size(engine)
    policy = project / "policies" / "credit_limit.yaml"
    result = CliRunner().invoke(
        app,
        ["replay", FLOW, "chg_x", "--file", str(policy), "--since", "yesterday",
         "--until", "soon", "-p", str(project)],
    )  # fmt: skip
    assert result.exit_code == 2
    error = result.stderr
    assert "3 problems with the options:" in error
    assert "candidate: give either a candidate (a change or version) or --file, not both" in error
    assert "since: since must be an ISO 8601 time" in error
    assert "until: until must be an ISO 8601 time" in error
    with open_engine(project, environ={}) as engine:
        assert ledger_size(engine) == before  # the file was not registered


def test_http_replay_and_rollout_name_every_bad_option(engine: Engine, client: TestClient) -> None:
    headers, _ = key(engine, "olga", Role.OWNER)
    engine.decide(FLOW, LOW_RISK)
    response = client.post(
        f"/v1/flows/{FLOW}/replays",
        json={
            "since": "2026-11-02",
            "until": "2026-11-01",
            "document": "policy: x",
            "candidate": "chg_x",
        },
        headers=headers,
    )
    assert response.status_code == 422, response.text
    errors = response.json()["detail"]["errors"]
    assert [e["field"] for e in errors] == ["candidate", "until"]
    assert "the range is empty" in errors[1]["error"]
    response = client.post(
        f"/v1/flows/{FLOW}/rollouts",
        json={
            "mode": "canary",
            "candidate": "abc123",
            "reason": "try",
            "share": 2.0,
            "bounds": {"max_cost": 1.0, "max_override_rate": 2.0},
        },
        headers=headers,
    )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["message"].startswith("4 problems with the options:")
    assert [e["field"] for e in body["detail"]["errors"]] == [
        "bounds.max_override_rate",
        "bounds.max_cost",
        "share",
        "candidate",
    ]
    assert client.get(f"/v1/flows/{FLOW}/rollouts", headers=headers).json()["rollouts"] == []


def test_one_bad_option_reads_as_itself(engine: Engine) -> None:
    with pytest.raises(InputError) as info:
        engine.rollouts.start(FLOW, "canary", "chg_x", engine.operator, "try", share=0.0)
    assert info.value.message.startswith("a canary serves a share between 0 and 1")
    assert info.value.detail["field"] == "share"
