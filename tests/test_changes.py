"""Policy change management: propose, diff, approve, activate, roll back; each step recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from keel import open_engine
from keel.engine import Engine
from keel.errors import ConflictError, DefinitionError, InputError, KeelError, NotFoundError
from keel.ledger.records import iso_time
from keel.rollout.diff import render_table
from keel.runtime import REFRESH_S
from keel.security.roles import PermissionDeniedError
from tests.conftest import LOW_RISK, Clock, person, run_sql
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
ANNA = person("key:anna0001", "Anna", "policy_author")
BEN = person("key:ben00002", "Ben", "policy_author")
CARL = person("key:carl0003", "Carl", "approver")
DORA = person("key:dora0004", "Dora", "approver")
OWEN = person("key:owen0005", "Owen", "owner")


def policy_text(project: Path, old: str = "", new: str = "") -> str:
    text = (project / "policies" / "credit_limit.yaml").read_text()
    if old:
        assert old in text
        text = text.replace(old, new)
    return text


SHORTER = ("  min_history_years: 1.0\n", "  min_history_years: 0.25\n")


def kinds(engine: Engine) -> list[str]:
    return [e.kind for e in engine.entries(100) if e.kind.startswith("policy_")]


def test_a_change_goes_from_proposal_to_activation_and_back(engine: Engine, project: Path) -> None:
    first = engine.runtime(FLOW).policy.version
    before = iso_time(engine.clock())
    assert engine.decide(FLOW, SHORT_HISTORY).status == "pending_review"
    change = engine.changes.propose(FLOW, policy_text(project, *SHORTER), ANNA, "Thin files ok")
    assert change.state == "proposed" and change.base_version == first
    new = change.version
    differences = engine.changes.diff(FLOW, first, new, engine.operator)
    assert [(d.section, d.name, d.before, d.after) for d in differences] == [
        ("params", "min_history_years", 1.0, 0.25)
    ]
    assert "min_history_years" in render_table(differences)
    with pytest.raises(
        ConflictError,
        match=r"four eyes: the person who proposed change .* \(anna\) cannot approve it",
    ):
        engine.changes.approve(change.id, person(ANNA.id, "Anna", "approver"), "mine")
    with pytest.raises(PermissionDeniedError, match="may not approve policy on flow"):
        engine.changes.approve(change.id, BEN, "ok")
    with pytest.raises(ConflictError, match="is not approved: 0 of 1 approval"):
        engine.changes.activate(change.id, CARL)
    approved = engine.changes.approve(change.id, CARL, "Checked on last quarter")
    assert approved.state == "approved" and approved.approvals[0].approver == CARL.id
    with pytest.raises(ConflictError, match=r"four eyes: carl has approved version .* already"):
        engine.changes.approve(change.id, CARL, "again")
    # An edit voids the approvals: the ledger names them.
    edited = engine.changes.edit(
        change.id,
        policy_text(project, "  min_history_years: 1.0\n", "  min_history_years: 0.3\n"),
        BEN,
        "0.3 is safer",
    )
    assert edited.state == "proposed" and edited.approvals == ()
    assert edited.editors == (ANNA.id, BEN.id)
    assert engine.entries(1, kind="policy_edited")[0].body["voided_approvals"] == [CARL.id]
    with pytest.raises(ConflictError, match="not approved"):
        engine.changes.activate(change.id, CARL)
    with pytest.raises(
        ConflictError, match=r"four eyes: the person who edited change .* \(ben\) cannot approve"
    ):
        engine.changes.approve(change.id, person(BEN.id, "Ben", "approver"), "x")
    engine.changes.approve(change.id, DORA, "0.3 is fine")
    activation = engine.changes.activate(change.id, CARL)
    newer = engine.changes.get(change.id, engine.operator).version
    assert activation.version == newer and activation.kind == "activate"
    assert engine.runtime(FLOW).policy.version == newer
    decided = engine.decide(FLOW, SHORT_HISTORY)
    assert decided.status == "final" and decided.policy_version == newer
    with pytest.raises(ConflictError, match="is active since"):
        engine.changes.edit(change.id, policy_text(project), ANNA, "too late")
    # The version active at any instant, and a rollback to any earlier one.
    assert engine.changes.active_at(FLOW, engine.operator, before).version == first
    assert engine.changes.active_at(FLOW, engine.operator).version == newer
    with pytest.raises(NotFoundError, match="had no active policy version at 2001"):
        engine.changes.active_at(FLOW, engine.operator, "2001-01-01T00:00:00.000000Z")
    with pytest.raises(NotFoundError, match="was never active"):
        engine.changes.rollback(FLOW, new, OWEN, "back")  # proposed, never live
    with pytest.raises(ConflictError, match="is active on flow 'credit_limit' already"):
        engine.changes.rollback(FLOW, newer[:12], OWEN, "same")
    with pytest.raises(InputError, match="a rollback needs a reason"):
        engine.changes.rollback(FLOW, first, OWEN, " ")
    back = engine.changes.rollback(FLOW, first[:12], OWEN, "Defaults rose in the thin files")
    assert back.kind == "rollback" and engine.runtime(FLOW).policy.version == first
    assert engine.decide(FLOW, SHORT_HISTORY).status == "pending_review"
    history = [(a.kind, a.version) for a in engine.changes.history(FLOW, engine.operator)]
    assert history == [("initial", first), ("activate", newer), ("rollback", first)]
    assert kinds(engine) == [
        "policy_registered",
        "policy_activated",
        "policy_proposed",
        "policy_approved",
        "policy_edited",
        "policy_approved",
        "policy_activated",
        "policy_activated",
    ]
    rollback_event = engine.entries(1, kind="policy_activated")[0].body
    assert rollback_event["by"] == {
        "id": OWEN.id,
        "name": "Owen",
        "role": "owner",
        "person": "owen",
    }
    assert rollback_event["previous"] == newer and rollback_event["kind"] == "rollback"
    assert engine.verify().ok


def test_bad_proposals_are_refused_and_store_nothing(
    engine: Engine, project: Path, db_url: str
) -> None:
    bad = [
        ("policy: [unclosed", DefinitionError, "not valid YAML"),
        (policy_text(project, "action: refer\n", "action: shred\n"), DefinitionError, "shred"),
        (policy_text(project, "policy: credit_limit", "policy: pricing"), DefinitionError, "uses"),
        (policy_text(project), ConflictError, "are already active on flow 'credit_limit'"),
        ("  ", InputError, "the proposed policy is empty"),
    ]
    for text, error, message in bad:
        with pytest.raises(error, match=message):
            engine.changes.propose(FLOW, text, ANNA, "try")
    with pytest.raises(InputError, match="a proposal needs a reason"):
        engine.changes.propose(FLOW, policy_text(project, *SHORTER), ANNA, "")
    with pytest.raises(PermissionDeniedError, match="may not propose policy on flow"):
        engine.changes.propose(FLOW, policy_text(project, *SHORTER), CARL, "x")
    with pytest.raises(NotFoundError, match="unknown flow 'pricing'"):
        engine.changes.propose("pricing", policy_text(project, *SHORTER), ANNA, "x")
    with pytest.raises(NotFoundError, match="no policy change with id 'chg_nope'"):
        engine.changes.approve("chg_nope", CARL, "x")
    assert run_sql(db_url, "select count(*) from policy_changes")[0][0] == 0
    assert kinds(engine) == ["policy_registered", "policy_activated"]


def test_a_change_proposed_against_an_old_version_is_not_activated(
    engine: Engine, project: Path
) -> None:
    one = engine.changes.propose(FLOW, policy_text(project, *SHORTER), ANNA, "one")
    other_text = policy_text(project, "  starter_limit: 1000.0\n", "  starter_limit: 800.0\n")
    two = engine.changes.propose(FLOW, other_text, BEN, "two")
    for change in (one, two):
        engine.changes.approve(change.id, CARL, "ok")
    engine.changes.activate(one.id, CARL)
    with pytest.raises(ConflictError, match=r"not the .* this change was proposed against"):
        engine.changes.activate(two.id, CARL)
    both = policy_text(project, *SHORTER).replace(
        "  starter_limit: 1000.0\n", "  starter_limit: 800.0\n"
    )
    rebased = engine.changes.edit(two.id, both, BEN, "onto the active version")
    assert rebased.base_version == one.version
    engine.changes.approve(two.id, DORA, "ok")
    assert engine.changes.activate(two.id, DORA).version == rebased.version


def test_other_processes_follow_an_activation(project: Path, env: dict[str, str]) -> None:
    clock = Clock(time.time())
    with (
        open_engine(project, environ=env, clock=clock) as a,
        open_engine(project, environ=env, clock=clock) as b,
    ):
        assert a.decide(FLOW, SHORT_HISTORY).status == "pending_review"
        change = b.changes.propose(FLOW, policy_text(project, *SHORTER), ANNA, "thin files")
        b.changes.approve(change.id, CARL, "ok")
        b.changes.activate(change.id, CARL)
        assert a.decide(FLOW, SHORT_HISTORY).status == "pending_review"  # looked < 1 s ago
        clock.advance(REFRESH_S)  # engines look for activations at most once a second
        decided = a.decide(FLOW, SHORT_HISTORY)
        assert decided.status == "final" and decided.policy_version == change.version


def test_the_store_decides_not_the_file(project: Path, env: dict[str, str]) -> None:
    with open_engine(project, environ=env) as engine:
        first = engine.runtime(FLOW).policy.version
    policy_file = project / "policies" / "credit_limit.yaml"
    policy_file.write_text(policy_text(project, *SHORTER))
    with open_engine(project, environ=env) as engine:
        assert engine.runtime(FLOW).policy.version == first  # an edited file changes nothing
        assert engine.decide(FLOW, SHORT_HISTORY).status == "pending_review"
        active, in_file = engine.changes.file_drift()[FLOW]
        assert active == first and in_file != first
        change = engine.changes.propose(FLOW, policy_file.read_text(), ANNA, "from the file")
        engine.changes.approve(change.id, CARL, "ok")
        engine.changes.activate(change.id, CARL)
        assert engine.changes.file_drift() == {}
        assert engine.decide(FLOW, LOW_RISK).policy_version == in_file


def test_changes_from_the_command_line(project: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    runner = CliRunner()

    def keel(*args: str) -> tuple[int, str, str]:
        result = runner.invoke(app, [*args, "-p", str(project)])
        return result.exit_code, result.stdout, result.stderr

    code, out, _ = keel("policy", "history", FLOW)
    assert code == 0 and "initial" in out
    policy_file = project / "policies" / "credit_limit.yaml"
    policy_file.write_text(policy_text(project, *SHORTER))
    code, out, _ = keel("policy", "diff", FLOW)
    assert code == 0 and "min_history_years" in out and "1.0" in out and "0.25" in out
    code, out, err = keel("policy", "propose", FLOW, "-r", "Thin files are fine")
    assert code == 0, err
    change = json.loads(out)
    code, out, _ = keel("policy", "diff", change["id"], "--json")
    assert json.loads(out)["differences"][0]["name"] == "min_history_years"
    code, _, err = keel("policy", "approve", change["id"], "-r", "mine")
    assert code == 2 and "cannot approve it" in err  # the same operator proposed it
    code, _, err = keel("policy", "activate", change["id"])
    assert code == 2 and "is not approved" in err
    code, _, err = keel("policy", "rollback", FLOW, "ffff", "-r", "x")
    assert code == 2 and "was never active" in err
    code, out, _ = keel("policy", "active", FLOW)
    assert code == 0 and json.loads(out)["kind"] == "initial"
    code, _, err = keel("policy", "active", FLOW, "--at", "yesterday")
    assert code == 2 and "must be an ISO 8601 time" in err
    code, _, err = keel("policy", "propose", FLOW, "-f", str(project / "nope.yaml"), "-r", "x")
    assert code == 2 and "cannot read" in err


def test_changes_over_http(engine: Engine, project: Path) -> None:
    from fastapi.testclient import TestClient

    from keel.api import create_app
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    def key(role: Role) -> dict[str, str]:
        _, token = create_key(
            engine.db, role.value, role.value, [Grant(role, FLOW)], "t", time.time()
        )
        return {"Authorization": f"Bearer {token}"}

    author, approver = key(Role.POLICY_AUTHOR), key(Role.APPROVER)
    with TestClient(create_app(engine)) as client:
        proposal = {"document": policy_text(project, *SHORTER), "reason": "thin files"}
        made = client.post(f"/v1/flows/{FLOW}/policy/changes", json=proposal, headers=author)
        assert made.status_code == 201, made.text
        change = made.json()
        path = f"/v1/policy-changes/{change['id']}"
        diff = client.get(f"{path}/diff", headers=approver).json()
        assert diff["differences"][0]["after"] == 0.25
        refused = client.post(f"{path}/approvals", json={"reason": "x"}, headers=author)
        assert refused.status_code == 403  # a policy author may not approve at all
        early = client.post(f"{path}/activation", json={}, headers=approver)
        assert early.status_code == 409 and "not approved" in early.json()["message"]
        approved = client.post(f"{path}/approvals", json={"reason": "ok"}, headers=approver)
        assert approved.json()["approvals"][0]["role"] == "approver"
        live = client.post(f"{path}/activation", json={}, headers=approver)
        assert live.status_code == 200 and live.json()["version"] == change["version"]
        active = client.get(f"/v1/flows/{FLOW}/policy/active", headers=author).json()
        assert active["version"] == change["version"]
        bad = client.post(
            f"/v1/flows/{FLOW}/policy/changes", json={**proposal, "x": 1}, headers=author
        )
        assert bad.status_code == 422
        broken = {"document": "policy: [", "reason": "x"}
        invalid = client.post(f"/v1/flows/{FLOW}/policy/changes", json=broken, headers=author)
        assert invalid.status_code == 422 and invalid.json()["code"] == "invalid_definition"


def test_the_history_shows_a_rolled_back_change_as_rolled_back(
    engine: Engine, project: Path, env: dict[str, str]
) -> None:
    """After a rollback the change it undid is no longer ``active`` anywhere: the service, the
    HTTP API and the CLI all derive its state from the activations, and name what is in force."""
    from fastapi.testclient import TestClient
    from typer.testing import CliRunner

    from keel.api import create_app
    from keel.cli import app
    from keel.security.apikeys import create_key
    from keel.security.roles import Grant, Role

    first = engine.runtime(FLOW).policy.version
    superseded = engine.changes.propose(FLOW, policy_text(project, *SHORTER), ANNA, "Thin ok")
    engine.changes.approve(superseded.id, CARL, "ok")
    engine.changes.activate(superseded.id, CARL)
    undone = engine.changes.propose(
        FLOW,
        policy_text(project, "  min_history_years: 1.0\n", "  min_history_years: 0.5\n"),
        ANNA,
        "Half a year",
    )
    engine.changes.approve(undone.id, CARL, "ok")
    engine.changes.activate(undone.id, CARL)
    assert engine.changes.get(undone.id, engine.operator).state == "active"
    engine.changes.rollback(FLOW, first[:12], OWEN, "Defaults rose")

    history = engine.changes.history(FLOW, engine.operator)
    assert [(a.kind, a.status) for a in history] == [
        ("initial", "superseded"),
        ("activate", "superseded"),
        ("activate", "rolled_back"),
        ("rollback", "in_force"),
    ]
    assert history[-1].version == first
    states = {c.id: c.state for c in engine.changes.changes(FLOW, engine.operator)}
    assert states == {superseded.id: "superseded", undone.id: "rolled_back"}
    assert engine.changes.get(undone.id, engine.operator).state == "rolled_back"

    _, token = create_key(
        engine.db, "reader", "reader", [Grant(Role.VIEWER, FLOW)], "t", time.time()
    )
    reader = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(engine)) as client:
        over_http = client.get(f"/v1/flows/{FLOW}/policy/history", headers=reader)
        assert over_http.status_code == 200, over_http.text
        assert [a["status"] for a in over_http.json()] == [a.status for a in history]
        listed = client.get(f"/v1/flows/{FLOW}/policy/changes", headers=reader).json()
        assert {c["id"]: c["state"] for c in listed} == states
        one = client.get(f"/v1/policy-changes/{undone.id}", headers=reader).json()
        assert one["state"] == "rolled_back"

    runner = CliRunner()
    shown = runner.invoke(app, ["policy", "history", FLOW, "-p", str(project)], env=env)
    assert shown.exit_code == 0, shown.stderr
    assert f"{undone.id}  rolled_back {undone.version[:12]}" in shown.stdout
    assert f"{superseded.id}  superseded" in shown.stdout
    assert f"in force: {first[:12]} since {history[-1].activated_at} (rollback)" in shown.stdout
    as_json = runner.invoke(app, ["policy", "history", FLOW, "--json", "-p", str(project)], env=env)
    body = json.loads(as_json.stdout)
    assert [a["status"] for a in body["activations"]][-2:] == ["rolled_back", "in_force"]
    assert {c["id"]: c["state"] for c in body["changes"]} == states


def other_model(path: Path, inverted: bool = False) -> Path:
    """A retrained risk model (different data, so a different file and version); an
    ``inverted`` one learnt the outcomes backwards, so it calls safe cases risky."""
    import skops.io as sio

    from keel.scaffold.applicants import generate_applicants, train_risk_model

    applicants = generate_applicants(400, seed=5)
    if inverted:
        applicants = [{**a, "defaulted": 1 - a["defaulted"]} for a in applicants]
    sio.dump(train_risk_model(applicants), path)
    return path


def test_a_model_changes_only_through_a_version(project: Path, env: dict[str, str]) -> None:
    retrained = other_model(project / "retrained.skops")
    with open_engine(project, environ=env) as engine:
        first_model = engine.runtime(FLOW).models["default_risk"].version
        assert engine.changes.active_models(FLOW) == {"default_risk": first_model}
        with pytest.raises(InputError, match="has no signal 'fraud'"):
            engine.changes.propose(FLOW, None, ANNA, "x", models={"fraud": retrained})
        broken = project / "broken.skops"
        broken.write_bytes(b"not a model")
        with pytest.raises(KeelError, match=r"broken\.skops"):
            engine.changes.propose(FLOW, None, ANNA, "x", models={"default_risk": broken})
        with pytest.raises(InputError, match="propose a policy, a model, or both"):
            engine.changes.propose(FLOW, None, ANNA, "x")
        change = engine.changes.propose(
            FLOW, None, ANNA, "Retrained on Q3", models={"default_risk": retrained}
        )
        new_model = change.models["default_risk"]
        assert new_model != first_model
        _, differences = engine.changes.change_diff(change.id, engine.operator)
        assert [(d.section, d.name, d.before, d.after) for d in differences] == [
            ("models", "default_risk", first_model, new_model)
        ]
        engine.changes.approve(change.id, CARL, "backtested")
        engine.changes.activate(change.id, CARL)
        decided = engine.decide(FLOW, LOW_RISK)
        assert decided.signals["default_risk"]["version"] == new_model
        first_policy = engine.runtime(FLOW).policy.version
        assert engine.changes.history(FLOW, engine.operator)[-1].models is not None
    # A model saved over the project's file is not what runs: the store's pinned model is.
    import skops.io as sio

    from keel.scaffold.applicants import generate_applicants, train_risk_model

    sio.dump(
        train_risk_model(generate_applicants(300, seed=9)),
        project / "models" / "default_risk.skops",
    )
    with open_engine(project, environ=env) as engine:
        assert engine.decide(FLOW, LOW_RISK).signals["default_risk"]["version"] == new_model
        with pytest.raises(ConflictError, match="is active on flow 'credit_limit' already"):
            engine.changes.rollback(FLOW, first_policy, OWEN, "same policy")


def test_a_model_proposal_from_the_command_line(project: Path) -> None:
    from typer.testing import CliRunner

    from keel.cli import app

    retrained = other_model(project / "q3.skops")
    runner = CliRunner()
    base = ["policy", "propose", FLOW, "-r", "Retrained", "--model-only", "-p", str(project)]
    result = runner.invoke(app, [*base, "--model", f"default_risk={retrained}"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout)["models"]["default_risk"].startswith("sha256:")
    result = runner.invoke(app, [*base, "--model", "default_risk"])
    assert result.exit_code == 2 and "--model takes SIGNAL=PATH" in result.stderr
