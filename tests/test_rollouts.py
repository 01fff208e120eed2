"""Shadow and canary rollouts: recorded beside live decisions, sticky, stopped by bounds."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest

from keel import open_engine
from keel.engine import Engine
from keel.errors import ConflictError, InputError, LedgerWriteError, NotFoundError
from keel.events import BY_KIND, body_keys
from keel.review.queue import ReviewResolution
from keel.rollout.canary import CHECK_S
from keel.runtime import REFRESH_S, RefreshInTransactionError, Running
from keel.security.roles import PermissionDeniedError
from tests.conftest import LOW_RISK, Clock, person
from tests.test_changes import SHORTER, policy_text
from tests.test_review import ANNA, SHORT_HISTORY

FLOW = "credit_limit"
AUTHOR = person("key:auth0001", "Ann", "policy_author")
APPROVER = person("key:appr0002", "Paul", "approver")
STRICT = ("  min_income: 12000.0\n", "  min_income: 100000.0\n")  # declines everyone


def test_a_shadow_is_recorded_beside_each_decision_and_never_acted_on(
    engine: Engine, project: Path
) -> None:
    version = engine.changes.register(FLOW, policy_text(project, *STRICT), engine.operator)
    with pytest.raises(ConflictError, match="is the active one already"):
        engine.rollouts.start(FLOW, "shadow", engine.runtime(FLOW).policy.version, APPROVER, "x")
    with pytest.raises(PermissionDeniedError, match=r"Ann .* may not activate policy"):
        engine.rollouts.start(FLOW, "shadow", version, AUTHOR, "x")
    rollout = engine.rollouts.start(FLOW, "shadow", version[:10], APPROVER, "watch it")
    with pytest.raises(ConflictError, match="runs on flow 'credit_limit' already"):
        engine.rollouts.start(FLOW, "shadow", version, APPROVER, "again")
    decided = [engine.decide(FLOW, LOW_RISK, subject_id=f"s-{i}") for i in range(3)]
    assert all(d.action == "approve" and d.status == "final" for d in decided)  # acted as before
    beside = engine.entry(decided[0].id).body["rollout"]
    assert beside["mode"] == "shadow" and beside["action"] == "decline"
    assert beside["rule"] == "income_too_low" and beside["version"] == version
    report = engine.rollouts.report(rollout.id, engine.operator)
    assert report.decisions == 3 and report.agreement == 0.0
    assert report.transitions == {"approve": {"decline": 3}}
    stopped = engine.rollouts.stop(FLOW, APPROVER, "seen enough")
    assert stopped.state == "stopped"
    assert "rollout" not in engine.entry(engine.decide(FLOW, LOW_RISK).id).body
    with pytest.raises(NotFoundError, match="no rollout runs on flow"):
        engine.rollouts.stop(FLOW, APPROVER, "again")
    kinds = [e.kind for e in engine.entries(50) if e.kind.startswith("rollout")]
    assert kinds == ["rollout_started", "rollout_stopped"]
    ended = engine.entries(1, kind="rollout_stopped")[0].body
    assert (ended["by"], ended["by_person"]) == (APPROVER.id, "paul")  # the person, recorded
    assert engine.verify().ok


def test_a_canary_serves_a_sticky_share_and_rolls_back_past_its_bounds(
    engine: Engine, project: Path
) -> None:
    change = engine.changes.propose(FLOW, policy_text(project, *SHORTER), AUTHOR, "thin files")
    with pytest.raises(ConflictError, match="is proposed, not approved"):
        engine.rollouts.start(FLOW, "canary", change.id, APPROVER, "try", share=0.5)
    engine.changes.approve(change.id, APPROVER, "ok")
    for kwargs, message in (
        ({"share": 0.0}, "a canary serves a share between 0 and 1"),
        ({"share": 0.5, "bounds": {"max_cost": 1.0}}, "unknown bound 'max_cost'"),
        ({"share": 0.5, "bounds": {"max_override_rate": 2.0}}, "must be a number from 0 to 1"),
    ):
        with pytest.raises(InputError, match=message):
            engine.rollouts.start(FLOW, "canary", change.id, APPROVER, "try", **kwargs)
    with pytest.raises(InputError, match="give an approved change"):
        engine.rollouts.start(FLOW, "canary", change.version, APPROVER, "try", share=0.5)
    bounds = {"min_decisions": 4, "max_override_rate": 0.2}
    rollout = engine.rollouts.start(
        FLOW, "canary", change.id, APPROVER, "half", share=0.5, bounds=bounds
    )
    first: dict[str, Any] = {}
    served: list[str] = []
    for i in range(200):  # a hash of rollout and subject decides: go on until both arms have 4
        first[f"s-{i}"] = engine.decide(FLOW, SHORT_HISTORY, subject_id=f"s-{i}")
        served = [s for s, d in first.items() if d.policy_version == change.version]
        if min(len(served), len(first) - len(served)) >= 4:
            break
    assert min(len(served), len(first) - len(served)) >= 4
    for subject, decision in first.items():  # the candidate acts; the active version escalates
        assert decision.status == ("final" if subject in served else "pending_review")
        again = engine.decide(FLOW, SHORT_HISTORY, subject_id=subject)
        assert again.policy_version == decision.policy_version  # sticky per subject
    assert engine.decide(FLOW, SHORT_HISTORY).policy_version != change.version  # no subject
    assert engine.rollouts.check(rollout.id) is None  # within bounds
    for subject in served:  # reviewers override half the canary's decisions
        engine.reviews.override(first[subject].id, ANNA, "reject", "too generous")
    stopped = engine.rollouts.check(rollout.id)
    assert stopped is not None and stopped.state == "rolled_back"
    assert "override rate" in stopped.end_reason and "above the bound 20.0%" in stopped.end_reason
    assert engine.metrics.rollbacks.labels(FLOW)._value.get() == 1
    after = engine.decide(FLOW, SHORT_HISTORY, subject_id=served[0])
    assert after.policy_version != change.version and after.status == "pending_review"
    report = engine.rollouts.report(rollout.id, engine.operator)
    assert report.candidate.overrides == len(served)
    assert report.candidate.override_rate == pytest.approx(0.5)
    assert report.active.decisions > 0


def test_a_canary_share_is_the_share_of_subjects_it_serves() -> None:
    for share in (0.05, 0.5, 0.9):
        canary = Running("rol_x", FLOW, "canary", "v", share, cast(Any, None))
        served = sum(canary.serves(f"subject-{i}") for i in range(20_000))
        assert served / 20_000 == pytest.approx(share, abs=0.02)  # over 5 standard deviations
    assert not Running("rol_x", FLOW, "shadow", "v", 0.0, cast(Any, None)).serves("s-1")
    assert not Running("rol_x", FLOW, "canary", "v", 0.5, cast(Any, None)).serves(None)


def test_activating_a_version_ends_the_rollout(engine: Engine, project: Path) -> None:
    change = engine.changes.propose(FLOW, policy_text(project, *SHORTER), AUTHOR, "thin files")
    engine.rollouts.start(FLOW, "shadow", change.id, APPROVER, "watch")
    engine.changes.approve(change.id, APPROVER, "ok")
    engine.changes.activate(change.id, APPROVER)
    current = engine.rollouts.current(FLOW, engine.operator)
    assert current.state == "ended" and "activated" in current.end_reason
    assert "rollout" not in engine.entry(engine.decide(FLOW, LOW_RISK).id).body


def test_rollouts_from_the_command_line(project: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    with open_engine(project) as engine:
        version = engine.changes.register(FLOW, policy_text(project, *STRICT), engine.operator)
    runner = CliRunner()

    def keel(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "-p", str(project)])
        return result.exit_code, result.stdout, result.stderr

    code, out, err = keel("rollout", "start", FLOW, version[:12], "-r", "watch")
    assert code == 0, err
    code, _, err = keel("decide", FLOW, "-i", json.dumps(LOW_RISK))
    assert code == 0, err
    code, out, _ = keel("rollout", "report", FLOW)
    assert json.loads(out)["transitions"] == {"approve": {"decline": 1}}
    code, _, err = keel("rollout", "start", FLOW, version[:12], "-r", "again")
    assert code == 2 and "runs on flow 'credit_limit' already" in err
    code, _, err = keel("rollout", "start", FLOW, "chg_x", "--mode", "canary", "-r", "x")
    assert code == 2 and "a canary serves a share between 0 and 1" in err
    code, out, _ = keel("rollout", "stop", FLOW, "-r", "done")
    assert code == 0 and json.loads(out)["state"] == "stopped"


def test_a_bound_check_due_during_a_review_override_cannot_hang_the_writer(
    project: Path, env: dict[str, str]
) -> None:
    """The conditions of a deadlock seen on a slow machine: a canary's bound check and a
    refresh of the flows fell due while a review override held the ledger's lock, and the
    override's own read of the flow refreshed, checked the canary and asked for the lock
    again. Time is moved by hand, so the check is due exactly when the override runs."""
    clock = Clock(time.time())
    with open_engine(project, environ=env, clock=clock) as engine:
        change = engine.changes.propose(FLOW, policy_text(project, *SHORTER), AUTHOR, "thin")
        engine.changes.approve(change.id, APPROVER, "ok")
        bounds = {"min_decisions": 2, "max_override_rate": 0.2}
        rollout = engine.rollouts.start(
            FLOW, "canary", change.id, APPROVER, "half", share=0.5, bounds=bounds
        )
        decided = [engine.decide(FLOW, SHORT_HISTORY, subject_id=f"s-{i}") for i in range(16)]
        served = [d for d in decided if d.policy_version == change.version]
        assert len(served) >= 2
        clock.advance(REFRESH_S + CHECK_S)  # a refresh and a bound check are both due now

        done: list[ReviewResolution] = []
        overriding = threading.Thread(
            target=lambda: done.append(
                engine.reviews.override(served[0].id, ANNA, "reject", "too generous")
            ),
            daemon=True,
        )
        overriding.start()
        overriding.join(timeout=60)
        assert not overriding.is_alive(), "the review override hung the ledger writer"
        assert done and done[0].resolution == "reject"
        assert (
            engine.rollouts.current(FLOW, engine.operator).state == "running"
        )  # no check as a side effect

        # Inside a transaction the registry refuses to refresh, and a nested transaction
        # fails at once instead of waiting for a lock its own thread holds.
        with pytest.raises(RefreshInTransactionError, match="outside write transactions"):
            engine.writer.transact(lambda _c, _g: engine.ctx.registry.refresh(force=True))
        with pytest.raises(LedgerWriteError, match="inside a write transaction"):
            engine.writer.transact(lambda _c, _g: engine.writer.transact(lambda _c2, _g2: 1))
        assert engine.decide(FLOW, LOW_RISK).status == "final"  # the writer still works

        # The scheduled check does what the override no longer does as a side effect.
        for decision in served[1:]:
            engine.reviews.override(decision.id, ANNA, "reject", "too generous")
        stops = engine.run_scheduled().rollbacks
        assert [s.id for s in stops] == [rollout.id]
        assert stops[0].state == "rolled_back"
        assert engine.rollouts.current(FLOW, engine.operator).state == "rolled_back"
        for entry in engine.entries(500):  # every body is a record of the catalogue
            assert set(entry.body) <= set(body_keys(BY_KIND[entry.kind])), entry.kind
