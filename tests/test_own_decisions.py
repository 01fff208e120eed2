"""The person who asked for a decision may read it, its explanation and its what-if, while
they may still decide on the flow; another decider is answered as for an unknown decision,
and readers of the flow read every decision — the same over HTTP, in Python and on the CLI."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import Engine, open_engine
from keel.cli import app
from keel.errors import NotFoundError
from keel.security.apikeys import create_key
from keel.security.roles import Grant, Role
from tests.conftest import LOW_RISK, person

FLOW = "credit_limit"


def key(engine: Engine, owner: str, role: Role) -> tuple[dict[str, str], str]:
    """Headers for a new key of ``owner`` with ``role`` on the flow, and the key's text."""
    now = engine.clock()
    _, text = create_key(engine.db, owner, owner, [Grant(role, FLOW)], "tests", now, None)
    return {"Authorization": f"Bearer {text}"}, text


def reads(client: TestClient, decision_id: str, headers: dict[str, str]) -> list[int]:
    return [
        client.get(f"/v1/decisions/{decision_id}", headers=headers).status_code,
        client.get(f"/v1/decisions/{decision_id}/explanation", headers=headers).status_code,
        client.post(
            f"/v1/decisions/{decision_id}/what-if",
            json={"set": {"debt_to_income": 0.3}, "counterfactual": True},
            headers=headers,
        ).status_code,
    ]


def test_a_decider_reads_its_own_decisions_only(engine: Engine, client: TestClient) -> None:
    mine, _ = key(engine, "svc-a", Role.DECIDER)
    theirs, _ = key(engine, "svc-b", Role.DECIDER)
    viewer, _ = key(engine, "vera", Role.VIEWER)
    made = client.post(f"/v1/flows/{FLOW}/decisions", json={"inputs": LOW_RISK}, headers=mine)
    assert made.status_code == 200, made.text
    decision_id = made.json()["id"]
    assert reads(client, decision_id, mine) == [200, 200, 200]
    explained = client.get(f"/v1/decisions/{decision_id}/explanation", headers=mine).json()
    assert explained["inputs"]["annual_income"] == LOW_RISK["annual_income"]  # it sent them
    # Another decider cannot tell the decision exists: the same answer as an unknown id.
    assert reads(client, decision_id, theirs) == [404, 404, 404]
    unknown = client.get("/v1/decisions/dec_nope/explanation", headers=theirs).json()
    other = client.get(f"/v1/decisions/{decision_id}/explanation", headers=theirs).json()
    assert other["code"] == unknown["code"] == "not_found"
    # A reader of the flow reads it; what-if re-reads personal inputs, which it may not.
    assert reads(client, decision_id, viewer) == [200, 200, 403]
    masked = client.get(f"/v1/decisions/{decision_id}/explanation", headers=viewer).json()
    assert masked["inputs"]["annual_income"] != LOW_RISK["annual_income"]


def test_the_rule_compares_persons_and_needs_the_decide_grant(engine: Engine) -> None:
    asked = person("key:svc-a1", "svc-a", "decider")
    decision = engine.decide(FLOW, LOW_RISK, by=asked)
    same_person = person("key:svc-a2", "svc-a", "decider")  # another key of the same person
    assert engine.explanations.explain(decision.id, same_person)["decision"]["id"] == decision.id
    outsider = person("key:svc-b1", "svc-b", "decider")
    with pytest.raises(NotFoundError, match="no decision with id"):
        engine.explanations.decision(decision.id, outsider)
    no_longer = person("key:svc-a3", "svc-a", "viewer")  # same person, no decide grant left
    masked = engine.explanations.explain(decision.id, no_longer)["inputs"]
    assert masked["annual_income"] != LOW_RISK["annual_income"]  # read as a viewer reads


def test_the_cli_follows_the_same_rule(project: Path) -> None:
    with open_engine(project, environ={}) as engine:
        _, mine = key(engine, "svc-a", Role.DECIDER)
        _, theirs = key(engine, "svc-b", Role.DECIDER)
        decision = engine.decide(FLOW, LOW_RISK, by=person("key:x", "svc-a", "decider"))
    runner = CliRunner()
    args = ["explain", decision.id, "-p", str(project)]
    own = runner.invoke(app, args, env={"KEEL_API_KEY": mine})
    assert own.exit_code == 0 and "Decision: approve" in own.stdout
    other = runner.invoke(app, args, env={"KEEL_API_KEY": theirs})
    assert other.exit_code != 0 and f"no decision with id '{decision.id}'" in other.stderr
