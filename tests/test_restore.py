"""The way back from the governor: restoring the level an alarm took away, once the alarm
is resolved, with its resolution as evidence and a second person's approval."""

from __future__ import annotations

from pathlib import Path

import pytest

from keel import open_engine
from keel.errors import ConflictError, NotFoundError
from tests.conftest import Clock, person
from tests.test_alarms import DAY, FLOW, OWNER, START, decide_day, monitoring

RESOLVER = person("key:appr0002", "Paul", "approver")
SECOND = person("key:appr0004", "Quinn", "approver")
LOWER = """monitoring:
  window: 1d
  baseline: 1d
  min_decisions: 20
  drift: {methods: [ks, chisquare], severity: critical}
  limits: {latency_p99_ms: false, escalation_rate: false, automation_rate: false}
  governor:
    - when: {alarm: drift, severity: critical}
      do: lower_autonomy
      to: advisory
"""


def drifted(engine: object, clock: Clock) -> str:
    """Two days whose incomes moved: a critical drift alarm; its id."""
    decide_day(engine, clock, 0, 80_000)
    decide_day(engine, clock, 1, 120_000)
    clock.now = START + 2 * DAY
    run = engine.monitoring.run(FLOW, OWNER)  # type: ignore[attr-defined]
    assert run.breaches == ["drift"]
    return str(run.alarms[0].id)


def unmet(error: pytest.ExceptionInfo[ConflictError]) -> str:
    return "; ".join(error.value.detail["unmet"])


def test_a_resolved_alarm_restores_the_level_the_governor_took_away(
    project: Path, env: dict[str, str]
) -> None:
    monitoring(project, LOWER)  # and no earned_autonomy criteria at all
    clock = Clock(START)
    with open_engine(project, environ=env, clock=clock) as engine:
        alarm_id = drifted(engine, clock)
        assert engine.runtime(FLOW).flow.autonomy == "advisory"
        lowered = engine.autonomy.show(FLOW, OWNER).history[-1]
        # A plain raise has no criteria to meet; a restore waits for the alarm.
        with pytest.raises(ConflictError, match="defines no evidence criteria"):
            engine.autonomy.request(FLOW, "supervised", OWNER, "back")
        with pytest.raises(ConflictError) as firing:
            engine.autonomy.request(FLOW, "supervised", OWNER, "back", restore=alarm_id)
        assert f"alarm {alarm_id} (drift, critical) is firing" in unmet(firing)
        with pytest.raises(NotFoundError, match="no alarm with id 'alm_missing'"):
            engine.autonomy.request(FLOW, "supervised", OWNER, "back", restore="alm_missing")
        engine.monitoring.resolve(alarm_id, RESOLVER, "A new branch opened; incomes are real")
        # Only the level taken away, not higher.
        with pytest.raises(ConflictError) as higher:
            engine.autonomy.request(FLOW, "autonomous", OWNER, "more", restore=alarm_id)
        assert "a restore goes back to 'supervised' only" in unmet(higher)
        with pytest.raises(ConflictError, match="is below its level"):
            engine.autonomy.request(FLOW, "shadow", OWNER, "down", restore=alarm_id)
        asked = engine.autonomy.request(
            FLOW, "supervised", OWNER, "The drift was a new branch", restore=alarm_id
        ).request
        assert asked is not None
        restore = asked.evidence["restore"]
        assert restore["alarm"] == alarm_id and restore["lowered"] == lowered.record_id
        assert (restore["from"], restore["to"]) == ("supervised", "advisory")
        assert restore["resolved_by"] == "key:appr0002" and restore["resolved_person"] == "paul"
        assert restore["resolve_reason"] == "A new branch opened; incomes are real"
        resolved = engine.entry(restore["resolution"])
        assert resolved.kind == "alarm_resolved" and resolved.body["alarm"] == alarm_id
        # The resolver may not approve the restore the resolution vouches for; nor the
        # requester.
        with pytest.raises(ConflictError, match="four eyes: the person who resolved alarm"):
            engine.autonomy.approve(asked.id, RESOLVER, "fine")
        with pytest.raises(ConflictError, match="four eyes"):
            engine.autonomy.approve(asked.id, person("key:own2", "Olga", "admin"), "fine")
        change = engine.autonomy.approve(asked.id, SECOND, "Resolution checked")
        assert (change.kind, change.previous, change.level) == ("raise", "advisory", "supervised")
        assert change.approved_by == "key:appr0004"
        assert engine.runtime(FLOW).flow.autonomy == "supervised"
        recorded = engine.entry(change.record_id).body
        assert recorded["evidence"]["restore"] == restore
        assert recorded["approved_person"] == "quinn" and recorded["requested_person"] == "olga"
        requested = [e for e in engine.entries(1000) if e.kind == "autonomy_requested"]
        assert requested[-1].body["evidence"]["restore"]["alarm"] == alarm_id
        # A second restore of the same lowering is refused.
        with pytest.raises(ConflictError) as again:
            engine.autonomy.request(FLOW, "autonomous", OWNER, "again", restore=alarm_id)
        assert "no governor lowering left to restore" in unmet(again)
        assert engine.verify(deep=True).ok


def test_no_restore_without_a_governor_lowering(project: Path, env: dict[str, str]) -> None:
    monitoring(project, LOWER.replace("lower_autonomy\n      to: advisory", "escalate_all"))
    clock = Clock(START)
    with open_engine(project, environ=env, clock=clock) as engine:
        alarm_id = drifted(engine, clock)
        engine.monitoring.resolve(alarm_id, RESOLVER, "Understood")
        engine.holds.lift(FLOW, SECOND, "Escalations back to normal")
        engine.autonomy.request(FLOW, "advisory", OWNER, "careful")  # a person's lowering
        with pytest.raises(ConflictError) as refused:
            engine.autonomy.request(FLOW, "supervised", OWNER, "back", restore=alarm_id)
        assert "has no governor lowering left to restore" in unmet(refused)


def test_a_restore_waits_until_every_alarm_is_resolved_and_the_level_is_unchanged(
    project: Path, env: dict[str, str]
) -> None:
    monitoring(project, LOWER)
    clock = Clock(START)
    with open_engine(project, environ=env, clock=clock) as engine:
        alarm_id = drifted(engine, clock)
        engine.monitoring.resolve(alarm_id, RESOLVER, "Understood")
        asked = engine.autonomy.request(FLOW, "supervised", OWNER, "back", restore=alarm_id)
        assert asked.request is not None
        # A person lowers the flow further meanwhile: the restore no longer applies.
        engine.autonomy.request(FLOW, "shadow", OWNER, "Stop acting until we look")
        with pytest.raises(ConflictError) as moved:
            engine.autonomy.approve(asked.request.id, SECOND, "fine")
        assert "is at 'shadow', not at 'advisory' where the governor left it" in unmet(moved)
        assert engine.runtime(FLOW).flow.autonomy == "shadow"


def test_a_restore_over_http(project: Path) -> None:
    from fastapi.testclient import TestClient

    from keel.api import create_app
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    monitoring(project, LOWER)
    clock = Clock(START)
    with open_engine(project, clock=clock) as engine:
        alarm_id = drifted(engine, clock)

        def key(name: str, role: Role) -> dict[str, str]:
            grants = [Grant(role, FLOW)]
            _, token = create_key(engine.db, name, name, grants, "t", clock.now)
            return {"Authorization": f"Bearer {token}"}

        owner, paul, quinn = (
            key("olga", Role.OWNER),
            key("paul", Role.APPROVER),
            key("quinn", Role.APPROVER),
        )
        with TestClient(create_app(engine)) as client:
            path = f"/v1/flows/{FLOW}/autonomy"
            body = {"level": "supervised", "reason": "back", "restore": alarm_id}
            firing = client.post(path, json=body, headers=owner)
            assert firing.status_code == 409
            assert any("is firing" in line for line in firing.json()["detail"]["unmet"])
            missing = client.post(path, json={**body, "restore": "alm_x"}, headers=owner)
            assert missing.status_code == 404
            assert client.post(path, json={**body, "restore": ""}, headers=owner).status_code == 422
            engine.monitoring.resolve(alarm_id, RESOLVER, "Understood")  # Paul
            asked = client.post(path, json=body, headers=owner)
            assert asked.status_code == 200
            request = asked.json()["request"]
            assert request["evidence"]["restore"]["alarm"] == alarm_id
            approval = f"/v1/autonomy-requests/{request['id']}/approval"
            refused = client.post(approval, json={"reason": "ok"}, headers=paul)
            assert refused.status_code == 409 and refused.json()["detail"]["rule"] == "four_eyes"
            done = client.post(approval, json={"reason": "ok"}, headers=quinn)
            assert done.status_code == 200 and done.json()["level"] == "supervised"
