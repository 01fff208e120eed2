"""Development mode: the file is authoritative, every activation it makes is recorded as
such, and production mode, once the ledger records it, cannot be left."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import pytest
import skops.io as sio
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.errors import ConfigError
from keel.scaffold.applicants import generate_applicants, train_risk_model
from keel.security.apikeys import create_key
from keel.security.roles import Grant, Role
from tests.conftest import LOW_RISK, run_sql

FLOW = "credit_limit"
POLICY = "policies/credit_limit.yaml"
MODEL = "models/default_risk.skops"
RAISED = ("  review_risk: 0.22\n", "  review_risk: 0.3\n")
runner = CliRunner()


def keel(project: Path, *args: str, key: str | None = None) -> tuple[int, str, str]:
    """Run a command as the local operator, or as the key ``key`` (``KEEL_API_KEY``)."""
    env = {"KEEL_API_KEY": key} if key else None
    result = runner.invoke(app, [*args, "-p", str(project)], env=env)
    return result.exit_code, result.stdout, result.stderr


def set_mode(project: Path, mode: str) -> None:
    """Write ``mode`` into keel.yaml, as a person editing it would."""
    settings = project / "keel.yaml"
    lines = [line for line in settings.read_text().splitlines() if not line.startswith("mode:")]
    settings.write_text("\n".join([*lines, f"mode: {mode}"]) + "\n")


def edit(project: Path, old: str, new: str) -> None:
    path = project / POLICY
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def entries(project: Path, kind: str) -> list[dict[str, object]]:
    """The bodies of the ledger's entries of ``kind``, oldest first, with who recorded them."""
    rows = run_sql(
        f"sqlite:///{project / 'keel.db'}",
        "SELECT record FROM ledger WHERE kind = :kind ORDER BY seq",
        params={"kind": kind},
    )
    return [json.loads(str(record))["body"] for (record,) in rows]


def test_development_mode_activates_each_edited_file_and_records_it(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_mode(project, "development")
    code, out, err = keel(project, "decide", FLOW, "--input", json.dumps(LOW_RISK))
    assert code == 0, err
    first = json.loads(out)["policy_version"]
    [initial] = entries(project, "policy_activated")
    assert initial["kind"] == "initial" and initial["mode"] == "development"

    edit(project, *RAISED)
    code, out, err = keel(project, "decide", FLOW, "--input", json.dumps(LOW_RISK))
    assert code == 0, err
    second = json.loads(out)["policy_version"]
    assert second != first
    said = f"development mode: {POLICY} changed; flow {FLOW} now runs policy version {second[:12]}"
    assert said in caplog.text
    activated = entries(project, "policy_activated")[-1]
    assert activated["kind"] == "development" and activated["mode"] == "development"
    assert activated["version"] == second and activated["previous"] == first
    assert activated["files"] == [{"path": POLICY, "sha256": sha256(project / POLICY)}]
    assert str(activated["by"]["id"]).startswith("local:")  # type: ignore[index]
    assert activated["reason"] == f"development mode: {POLICY} changed"

    code, out, err = keel(project, "policy", "history", FLOW)  # nothing changed: no new entry
    assert code == 0, err
    lines = out.splitlines()
    assert len(lines) == 3 and " initial " in lines[0]
    assert f" development {second[:12]}  by local:" in lines[1] and POLICY in lines[1]
    assert lines[2].startswith(f"in force: {second[:12]} since ") and "(development)" in lines[2]
    assert len(entries(project, "policy_activated")) == 2
    code, out, err = keel(project, "ledger", "verify", "--deep")
    assert code == 0 and "ok:" in out, err


def test_a_retrained_model_file_is_pinned_in_development_mode(project: Path) -> None:
    set_mode(project, "development")
    with open_engine(project) as engine:
        before = engine.changes.active_models(FLOW)
    sio.dump(train_risk_model(generate_applicants(2000, 3)), project / MODEL)
    with open_engine(project) as engine:
        pinned = engine.changes.active_models(FLOW)
        running = engine.runtime(FLOW).models["default_risk"].version
        decision = engine.decide(FLOW, LOW_RISK)
    assert pinned != before and pinned["default_risk"] == running
    assert decision.signals["default_risk"]["version"] == running
    activated = entries(project, "policy_activated")[-1]
    assert activated["kind"] == "development" and activated["models"] == pinned
    assert activated["files"] == [{"path": MODEL, "sha256": sha256(project / MODEL)}]


def test_the_activation_names_the_key_that_ran_the_command_and_needs_its_permission(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_mode(project, "development")
    with open_engine(project) as engine:
        now = time.time()
        owner, ana = create_key(engine.db, "ana", "ana@example.com", [Grant(Role.OWNER, FLOW)],
                                "t", now)  # fmt: skip
        _, viewer = create_key(engine.db, "vic", "vic@example.com", [Grant(Role.VIEWER)], "t", now)
    edit(project, *RAISED)
    code, _, err = keel(project, "policy", "history", FLOW, key=viewer)
    assert code == 0, err
    assert "vic (key:" in caplog.text and "may not activate policies on flow" in caplog.text
    assert "production mode" not in caplog.text  # the file waits: it is not a proposal
    assert [e["kind"] for e in entries(project, "policy_activated")] == ["initial"]
    code, out, err = keel(project, "policy", "history", FLOW, key=ana)
    assert code == 0, err
    activated = entries(project, "policy_activated")[-1]
    assert activated["kind"] == "development"
    assert activated["by"] == {  # type: ignore[comparison-overlap]
        "id": owner.principal_id,
        "name": "ana",
        "role": "owner",
        "person": "ana@example.com",
    }
    assert f"by {owner.principal_id}" in out.splitlines()[-2]  # the last: what is in force


def test_leaving_development_mode_is_recorded_and_there_is_no_way_back(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    set_mode(project, "development")
    code, _, err = keel(project, "decide", FLOW, "--input", json.dumps(LOW_RISK))
    assert code == 0, err
    assert entries(project, "project_mode_changed") == []

    set_mode(project, "production")
    edit(project, *RAISED)
    code, out, err = keel(project, "policy", "history", FLOW)
    assert code == 0, err
    [left] = entries(project, "project_mode_changed")
    assert left["mode"] == "production" and left["previous"] == "development"
    assert str(left["by"]["id"]).startswith("local:")  # type: ignore[index]
    # The edit is reported, never activated: four eyes from now on.
    assert f"{POLICY} holds" in caplog.text
    assert f"keel policy propose {FLOW} -r REASON" in caplog.text
    initial, in_force = out.splitlines()  # the initial activation only, and what it put in force
    assert " initial " in initial and in_force.endswith("(initial)")
    assert len(entries(project, "policy_activated")) == 1

    code, _, _ = keel(project, "policy", "history", FLOW)  # a second start records nothing
    assert code == 0 and len(entries(project, "project_mode_changed")) == 1

    set_mode(project, "development")
    code, _, err = keel(project, "policy", "history", FLOW)
    assert code == 2
    assert "cannot return to development mode" in err and "production mode since" in err
    assert len(entries(project, "policy_activated")) == 1  # nothing was activated
    with pytest.raises(ConfigError, match="cannot return to development mode"):
        open_engine(project)


def test_development_mode_is_refused_on_a_ledger_made_in_production(project: Path) -> None:
    """A keel.yaml without ``mode`` is production: its history keeps four eyes."""
    code, _, err = keel(project, "decide", FLOW, "--input", json.dumps(LOW_RISK))
    assert code == 0, err
    set_mode(project, "development")
    edit(project, *RAISED)
    code, _, err = keel(project, "decide", FLOW, "--input", json.dumps(LOW_RISK))
    assert code == 2 and "cannot return to development mode" in err
    assert "its activations were made in production mode" in err
    assert [e["kind"] for e in entries(project, "policy_activated")] == ["initial"]


def test_a_flow_held_for_integrity_is_not_activated_over(project: Path) -> None:
    """Activating the file on top of a row changed outside Keel would hide the change."""
    set_mode(project, "development")
    open_engine(project).close()
    run_sql(f"sqlite:///{project / 'keel.db'}", "UPDATE flow_activations SET models = NULL")
    edit(project, *RAISED)
    with open_engine(project) as engine:
        assert FLOW in engine.ctx.registry.integrity()
        assert engine.decide(FLOW, LOW_RISK).status == "deferred"  # held: nothing acted on
    assert [e["kind"] for e in entries(project, "policy_activated")] == ["initial"]


def test_the_mode_setting_takes_two_values(project: Path) -> None:
    set_mode(project, "staging")
    code, _, err = keel(project, "validate")
    assert code == 2 and "mode must be one of production, development, got 'staging'" in err
