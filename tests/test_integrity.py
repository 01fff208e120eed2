"""The engine acts on nothing the ledger does not vouch for: a policy text, a model file, an
activation, an autonomy level, a hold or a rollout changed in the database outside Keel
puts the flow on an integrity hold (every case deferred, a critical alarm), and the hold
lifts once the stored content verifies again. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from keel import open_engine
from keel.engine import Engine
from keel.errors import IntegrityError
from keel.runtime import REFRESH_S
from tests.conftest import LOW_RISK, Clock, person, run_sql
from tests.test_changes import SHORTER, policy_text

FLOW = "credit_limit"
AUTHOR = person("key:auth0001", "Ann", "policy_author")
APPROVER = person("key:appr0002", "Paul", "approver")


def _activate_shorter(engine: Engine, project: Path) -> str:
    change = engine.changes.propose(FLOW, policy_text(project, *SHORTER), AUTHOR, "thin files")
    engine.changes.approve(change.id, APPROVER, "fine")
    engine.changes.activate(change.id, APPROVER, "go")
    return change.version


def _held(engine: Engine, clue: str) -> str:
    """Decide once: the case must be deferred for integrity, naming ``clue``."""
    decision = engine.decide(FLOW, LOW_RISK)
    assert decision.status == "deferred", decision
    assert decision.fallback is not None and decision.fallback.startswith("integrity: ")
    assert clue in decision.fallback, decision.fallback
    assert engine.entry(decision.id).body["hold"] == "integrity"
    assert "does not match the ledger" in decision.reason  # not the fallback's own reason
    return decision.fallback


def _alarms(db_url: str) -> list[tuple[object, ...]]:
    return run_sql(
        db_url, "SELECT monitor, severity, state FROM alarms WHERE monitor = 'integrity'"
    )


def test_a_forged_policy_text_holds_the_flow_until_it_verifies_again(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        version = _activate_shorter(engine, project)
        assert engine.decide(FLOW, LOW_RISK).status == "final"
    [(original,)] = run_sql(
        db_url, "SELECT document FROM policy_versions WHERE version = :v", params={"v": version}
    )
    document = json.loads(str(original))
    document["params"]["decline_risk"] = 0.99
    forged = json.dumps(document)
    update = "UPDATE policy_versions SET document = :d WHERE version = :v"
    run_sql(db_url, update, params={"d": forged, "v": version})

    with open_engine(project, environ=env, clock=clock) as engine:
        cause = _held(engine, "does not match its hash")
        assert version[:12] in cause
        assert engine.ctx.registry.integrity() == {FLOW: cause.removeprefix("integrity: ")}
        # Raised as the engine opened, once: a critical alarm the owner sees.
        assert _alarms(db_url) == [("integrity", "critical", "firing")]
        assert engine.run_scheduled().integrity_alarms == []
        with pytest.raises(IntegrityError):  # what-if and replay refuse it too
            engine.ctx.registry.at_version(FLOW, version)
        # Put back, the content verifies at the next refresh, and the alarm resolves.
        run_sql(db_url, update, params={"d": original, "v": version})
        clock.advance(REFRESH_S)
        decision = engine.decide(FLOW, LOW_RISK)
        assert decision.status == "final" and decision.policy_version == version
        resolved = engine.run_scheduled().integrity_alarms
        assert [(a.kind, a.monitor) for a in resolved] == [("alarm_resolved", "integrity")]
        assert _alarms(db_url) == [("integrity", "critical", "resolved")]
        kinds = [e.kind for e in engine.entries(20) if e.kind.startswith("alarm_")]
        assert kinds == ["alarm_raised", "alarm_resolved"]


def test_a_forged_activation_never_runs_not_even_its_fallback(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        file_version = engine.runtime(FLOW).policy.version
        # Store a version nobody proposed, hashed correctly, and point the flow at it.
        forged = engine.changes.register(
            FLOW, policy_text(project, "fallback:\n  action: refer\n", "fallback:\n  action: decline\n"),
            engine.operator,
        )  # fmt: skip
    run_sql(
        db_url,
        "UPDATE flow_activations SET version = :v WHERE id = (SELECT MAX(id) FROM "
        "flow_activations)",
        params={"v": forged},
    )
    with open_engine(project, environ=env, clock=clock) as engine:
        _held(engine, "activation says version")
        decision = engine.decide(FLOW, LOW_RISK)
        assert decision.policy_version == file_version  # the forged one never ran
        assert decision.action == "refer"  # the verified policy's fallback, not the forged one


def test_a_removed_kill_switch_row_is_caught_by_a_running_process(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        engine.holds.stop(FLOW, person("key:own00001", "Olga", "owner"), "incident")
        assert engine.decide(FLOW, LOW_RISK).status == "deferred"
        run_sql(db_url, "DELETE FROM flow_holds")
        clock.advance(REFRESH_S)
        _held(engine, "newest hold in the ledger")


@pytest.mark.parametrize(
    ("statement", "clue"),
    [
        ("UPDATE autonomy_changes SET level = 'autonomous'", "autonomy level says level"),
        ("DELETE FROM flow_activations", "newest activation in the ledger"),
        ("UPDATE rollouts SET state = 'running'", "ledger records none running"),
    ],
    ids=["autonomy", "activation-deleted", "rollout-revived"],
)
def test_forged_settings_hold_the_flow(
    project: Path, env: dict[str, str], db_url: str, statement: str, clue: str
) -> None:
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        version = engine.changes.register(FLOW, policy_text(project, *SHORTER), engine.operator)
        engine.rollouts.start(FLOW, "shadow", version, APPROVER, "watch")
        engine.rollouts.stop(FLOW, APPROVER, "seen enough")
    run_sql(db_url, statement)
    with open_engine(project, environ=env, clock=clock) as engine:  # not re-seeded either
        _held(engine, clue)
        assert _alarms(db_url) == [("integrity", "critical", "firing")]


def test_a_forged_model_file_is_never_loaded(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    with open_engine(project, environ=env) as engine:
        [version] = engine.changes.active_models(FLOW).values()
        cache = engine.settings.keys_dir.parent / "models"
    shutil.rmtree(cache, ignore_errors=True)
    [(data,)] = run_sql(
        db_url, "SELECT data FROM model_artifacts WHERE version = :v", params={"v": version}
    )
    forged = bytes(data)[:-1] + bytes([bytes(data)[-1] ^ 1])  # type: ignore[arg-type]
    run_sql(
        db_url,
        "UPDATE model_artifacts SET data = :d WHERE version = :v",
        params={"d": forged, "v": version},
    )
    with (
        open_engine(project, environ=env) as engine,
        pytest.raises(IntegrityError, match="does not match its hash"),
    ):
        engine.ctx.registry.model_path(version)
