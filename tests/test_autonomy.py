"""Earned autonomy: raised only with evidence and someone else's approval; lowered at once."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from keel import open_engine
from keel.errors import ConflictError, DefinitionError, InputError
from keel.runtime import REFRESH_S
from keel.security.roles import PermissionDeniedError
from tests.conftest import LOW_RISK, Clock, person
from tests.test_review import ANNA, SHORT_HISTORY

FLOW = "credit_limit"
OWNER = person("key:owner001", "Olga", "owner")
APPROVER = person("key:appr0002", "Paul", "approver")
CRITERIA = """earned_autonomy:
  autonomous: {over: 14d, min_reviewed: 3, min_agreement: 0.95, max_guardrail_hits: 0}
"""


def with_criteria(project: Path, text: str = CRITERIA) -> None:
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(text)


def test_a_raise_needs_evidence_and_another_principals_approval(
    project: Path, env: dict[str, str]
) -> None:
    with_criteria(project)
    with open_engine(project, environ=env) as engine:
        first, second = (engine.decide(FLOW, SHORT_HISTORY) for _ in range(2))
        engine.reviews.resolve(first.id, ANNA, "approve", "fine")
        engine.reviews.resolve(second.id, ANNA, "reject", "no")
        with pytest.raises(ConflictError) as refused:
            engine.autonomy.request(FLOW, "autonomous", OWNER, "ready")
        unmet = refused.value.detail["unmet"]
        assert unmet == [
            "2 reviewed cases in the last 14 days, at least 3 needed",
            "agreement 50.0% in the last 14 days, at least 95.0% needed",
        ]
        assert engine.autonomy.show(FLOW, engine.operator).open_requests == ()
        # Three more agreed reviews: 4 of 5 agree, still short of 95%.
        for _ in range(3):
            case = engine.decide(FLOW, SHORT_HISTORY)
            engine.reviews.resolve(case.id, ANNA, "approve", "fine")
        with pytest.raises(ConflictError, match=r"agreement 80\.0%"):
            engine.autonomy.request(FLOW, "autonomous", OWNER, "ready")
    # A fresh window: only agreeing reviews.
    with open_engine(project, environ=env, clock=lambda: time.time() + 15 * 86400) as engine:
        for _ in range(3):
            case = engine.decide(FLOW, SHORT_HISTORY)
            engine.reviews.resolve(case.id, ANNA, "approve", "fine")
        request = engine.autonomy.request(FLOW, "autonomous", OWNER, "earned it").request
        assert request.evidence["reviewed"] == 3 and request.evidence["agreement"] == 1.0
        assert engine.runtime(FLOW).flow.autonomy == "supervised"  # not before approval
        with pytest.raises(
            ConflictError,
            match=r"four eyes: the person who requested autonomy raise .* \(olga\) cannot approve",
        ):
            engine.autonomy.approve(request.id, person(OWNER.id, "Olga", "approver"), "mine")
        with pytest.raises(PermissionDeniedError, match=r"Olga .* may not approve policy"):
            engine.autonomy.approve(request.id, OWNER, "x")
        change = engine.autonomy.approve(request.id, APPROVER, "evidence checked")
        assert change.kind == "raise" and change.approved_by == APPROVER.id
        assert engine.runtime(FLOW).flow.autonomy == "autonomous"
        assert engine.decide(FLOW, SHORT_HISTORY).status == "final"  # grey zone: acted on
        with pytest.raises(ConflictError, match="was approved at"):
            engine.autonomy.approve(request.id, APPROVER, "again")
        event = engine.entries(1, kind="autonomy_changed")[0].body
        assert event["level"] == "autonomous" and event["evidence"]["reviewed"] == 3
        assert [e.kind for e in engine.entries(200) if e.kind.startswith("autonomy")] == [
            "autonomy_changed",
            "autonomy_requested",
            "autonomy_changed",
        ]
        assert engine.verify().ok


def test_lowering_is_always_allowed_and_recorded(project: Path, env: dict[str, str]) -> None:
    clock = Clock(time.time())
    with (
        open_engine(project, environ=env, clock=clock) as engine,
        open_engine(project, environ=env, clock=clock) as other,
    ):
        with pytest.raises(ConflictError, match="defines no evidence criteria for 'autonomous'"):
            engine.autonomy.request(FLOW, "autonomous", OWNER, "please")
        with pytest.raises(ConflictError, match="is at 'supervised' already"):
            engine.autonomy.request(FLOW, "supervised", OWNER, "same")
        with pytest.raises(InputError, match="unknown autonomy level 'total'"):
            engine.autonomy.request(FLOW, "total", OWNER, "x")
        with pytest.raises(InputError, match="needs a reason"):
            engine.autonomy.request(FLOW, "shadow", OWNER, "")
        with pytest.raises(PermissionDeniedError, match=r"X .* may not change autonomy"):
            engine.autonomy.request(FLOW, "shadow", person("key:x", "X", "policy_author"), "x")
        lowered = engine.autonomy.request(FLOW, "advisory", APPROVER, "drift alarm").applied
        assert lowered.kind == "lower" and lowered.previous == "supervised"
        assert engine.decide(FLOW, LOW_RISK).status == "advisory"
        assert other.decide(FLOW, LOW_RISK).status == "final"  # it looked less than 1 s ago
        clock.advance(REFRESH_S)  # other processes follow within a second
        assert other.decide(FLOW, LOW_RISK).status == "advisory"
        history = [(h.kind, h.level) for h in engine.autonomy.show(FLOW, engine.operator).history]
        assert history == [("initial", "supervised"), ("lower", "advisory")]


def test_bad_criteria_are_named(project: Path, env: dict[str, str]) -> None:
    with_criteria(
        project,
        "earned_autonomy:\n  shadow: {over: 1d}\n"
        "  autonomous: {over: soon, min_agreement: 2, min_reviewed: -1, colour: red}\n",
    )
    with pytest.raises(DefinitionError) as raised:
        open_engine(project, environ=env)
    message = str(raised.value)
    for expected in (
        "'shadow' is not a level to raise to",
        "'over' must look like 7d or 14d, got 'soon'",
        "'min_agreement' must be a share from 0 to 1, got 2",
        "'min_reviewed' must be a whole number ≥ 0, got -1",
        "unknown criterion 'colour'",
    ):
        assert expected in message


def test_autonomy_over_http(project: Path) -> None:
    from fastapi.testclient import TestClient

    from keel.api import create_app
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    with_criteria(project, "earned_autonomy:\n  autonomous: {over: 1d}\n")
    with open_engine(project) as engine:

        def key(role: Role) -> dict[str, str]:
            grant = [Grant(role, FLOW)]
            _, token = create_key(engine.db, role.value, role.value, grant, "t", time.time())
            return {"Authorization": f"Bearer {token}"}

        owner, approver, viewer = key(Role.OWNER), key(Role.APPROVER), key(Role.VIEWER)
        with TestClient(create_app(engine)) as client:
            path = f"/v1/flows/{FLOW}/autonomy"
            raise_ = {"level": "autonomous", "reason": "earned"}
            assert client.post(path, json=raise_, headers=viewer).status_code == 403
            request = client.post(path, json=raise_, headers=owner).json()["request"]
            approval = f"/v1/autonomy-requests/{request['id']}/approval"
            assert client.post(approval, json={"reason": "x"}, headers=owner).status_code == 403
            assert client.post(approval, json={"reason": "x"}, headers=viewer).status_code == 403
            done = client.post(approval, json={"reason": "ok"}, headers=approver)
            assert done.status_code == 200 and done.json()["level"] == "autonomous"
            again = client.post(approval, json={"reason": "ok"}, headers=approver)
            assert again.status_code == 409
            unknown = client.post(
                "/v1/autonomy-requests/aut_x/approval", json={"reason": "x"}, headers=approver
            )
            assert unknown.status_code == 404
            shown = client.get(path, headers=viewer).json()
            assert shown["level"] == "autonomous" and len(shown["history"]) == 2
            lower = client.post(path, json={"level": "shadow", "reason": "alarm"}, headers=owner)
            assert lower.json()["applied"]["kind"] == "lower"
            bad = client.post(path, json={"level": "total", "reason": "x"}, headers=owner)
            assert bad.status_code == 422
