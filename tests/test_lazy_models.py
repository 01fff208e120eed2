"""Models are loaded on first use, once, from bytes checked against the version recorded
when the project opened; ``keel validate`` and ``keel serve`` load them all at once."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.api.server import ENV_PROJECT, app_from_env
from keel.cli import app
from keel.engine import open_engine
from keel.errors import IntegrityError, ModelError
from keel.scaffold.applicants import generate_applicants, train_risk_model
from keel.signals.adapters import SklearnModel
from keel.signals.loading import LazyModel, loaded
from tests.conftest import LOW_RISK, replace_in

MODEL = Path("models") / "default_risk.skops"
FLOW = Path("flows") / "credit_limit.yaml"


def _retrain(project: Path) -> None:
    """Replace the model file with a valid model trained on other data (a new version)."""
    import skops.io as sio

    sio.dump(train_risk_model(generate_applicants(300, seed=9)), project / MODEL)


def _decisions(project: Path) -> int:
    with open_engine(project) as engine:
        return sum(1 for e in engine.entries(limit=1000) if e.kind == "decision")


def test_opening_describes_each_model_without_loading_it(project: Path) -> None:
    open_engine(project).close()  # the first opening records (and so loads) the files
    with open_engine(project) as engine:
        model = engine.runtime("credit_limit").models["default_risk"]
        assert isinstance(model, LazyModel) and not model.is_loaded
        assert model.kind == "sklearn" and model.version.startswith("sha256:")
        decision = engine.decide("credit_limit", LOW_RISK)
        assert model.is_loaded and isinstance(loaded(model), SklearnModel)
        assert decision.signals["default_risk"]["version"] == model.version


def test_a_model_file_replaced_after_open_is_refused(project: Path) -> None:
    """What Keel decides with is the version it recorded at open: a file replaced before
    the first decision is refused by name, and no decision is recorded."""
    before = _decisions(project)
    with open_engine(project) as engine:
        _retrain(project)
        with pytest.raises(IntegrityError) as info:
            engine.decide("credit_limit", LOW_RISK)
        assert str((project / MODEL).resolve()) in info.value.message
        assert "changed after the project was opened" in info.value.message
        with pytest.raises(IntegrityError):  # and again: a refusal is not forgotten
            engine.decide_many("credit_limit", [LOW_RISK])
    assert _decisions(project) == before
    with open_engine(project) as engine:  # reopened: the new file is the new version
        assert engine.decide("credit_limit", LOW_RISK).signals["default_risk"]["score"] >= 0


def test_a_replaced_model_is_a_clear_409_over_http(project: Path) -> None:
    from fastapi.testclient import TestClient

    from keel.api import create_app
    from keel.security.audit import AuditLog
    from tests.test_api import admin

    open_engine(project).close()  # the first opening records (and so loads) the files
    with open_engine(project) as engine:
        audit = AuditLog(engine.db)
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            _retrain(project)
            answer = client.post(
                "/v1/flows/credit_limit/decisions", json={"inputs": LOW_RISK},
                headers=admin(engine),
            )  # fmt: skip
        audit.close()
    assert answer.status_code == 409, answer.text
    assert answer.json()["code"] == "integrity_failed"
    assert "default_risk.skops" in answer.json()["message"]


def test_a_corrupt_model_file_is_reported_and_reads_still_work(project: Path) -> None:
    """``keel validate`` reports a corrupt file (see test_validate_models); commands that
    score nothing still work, and decisions go on with the model version the store pins."""
    with open_engine(project) as engine:
        pinned = engine.decide("credit_limit", LOW_RISK).signals["default_risk"]["version"]
    (project / MODEL).write_bytes(b"not a model at all")
    runner = CliRunner()
    validated = runner.invoke(app, ["validate", "-p", str(project)])
    assert validated.exit_code == 2 and "default_risk.skops" in validated.output
    assert "corrupt" in validated.output
    listed = runner.invoke(app, ["review", "list", "-p", str(project)])
    assert listed.exit_code == 0, listed.output
    history = runner.invoke(app, ["policy", "history", "credit_limit", "-p", str(project)])
    assert history.exit_code == 0, history.output
    with open_engine(project) as engine:
        assert engine.decide("credit_limit", LOW_RISK).signals["default_risk"]["version"] == pinned


def test_a_first_version_never_pins_a_model_that_does_not_load(project: Path) -> None:
    """Opening a project for the first time records its files' versions: the model files
    are loaded first, so a corrupt one is refused by name and nothing is recorded."""
    (project / MODEL).write_bytes(b"not a model at all")
    with pytest.raises(ModelError) as info:
        open_engine(project)
    assert "default_risk.skops" in info.value.message and "corrupt" in info.value.message
    _retrain(project)
    with open_engine(project) as engine:
        activations = [e for e in engine.entries(limit=1000) if e.kind == "policy_activated"]
        assert len(activations) == 1


def test_the_first_decision_after_open_is_not_timed_with_the_load(project: Path) -> None:
    """A fresh process pays for importing scikit-learn and loading the model at its first
    decision (seconds), far beyond a 50 ms timeout that the model's own call fits in; the
    load happens before the model is timed, so the decision has the model's score and no
    fallback."""
    replace_in(project / FLOW, "timeout_ms: 250", "timeout_ms: 50")
    open_engine(project).close()  # the first opening records (and so loads) the files
    done = subprocess.run(
        [str(Path(sys.executable).parent / "keel"), "decide", "credit_limit",
         "--input", json.dumps(LOW_RISK), "-p", str(project)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    decision = json.loads(done.stdout)
    signal = decision["signals"]["default_risk"]
    assert "score" in signal, signal
    assert decision["failed_signals"] == {} and decision["fallback"] is None, decision


def test_serve_loads_every_model_before_it_answers(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(ENV_PROJECT, str(project))
    served = app_from_env()
    engine = served.state.keel.engine
    try:
        model = engine.runtime("credit_limit").models["default_risk"]
        assert isinstance(model, LazyModel) and model.is_loaded
    finally:
        engine.close()


def test_serve_refuses_to_start_on_a_model_it_cannot_load(
    project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project / MODEL).write_bytes(b"not a model at all")
    monkeypatch.setenv(ENV_PROJECT, str(project))
    with pytest.raises(ModelError, match=r"default_risk\.skops"):
        app_from_env()


def test_development_mode_never_activates_a_model_file_that_does_not_load(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Development mode activates edited files as the project opens; a model file that
    does not load is left out, said in the log, and the flow keeps its active version."""
    from tests.test_devmode import set_mode

    set_mode(project, "development")
    with open_engine(project) as engine:
        before = engine.changes.active_models("credit_limit")
    (project / MODEL).write_bytes(b"not a model at all")
    with open_engine(project) as engine:
        assert engine.changes.active_models("credit_limit") == before
        decision = engine.decide("credit_limit", LOW_RISK)
    assert decision.signals["default_risk"]["version"] == before["default_risk"]
    assert "keeps its active version, because a model file does not load" in caplog.text
    assert "default_risk.skops" in caplog.text


def test_a_pinned_model_is_loaded_on_first_use_and_checked_again(project: Path) -> None:
    """A pinned version comes from the store into the local cache, described; loading it
    checks the cached file against the pin, so a file changed there is refused by name."""
    with open_engine(project) as engine:
        version = engine.runtime("credit_limit").models["default_risk"].version
        pinned = engine.ctx.registry.model("credit_limit", "default_risk", version)
        assert isinstance(pinned, LazyModel) and not pinned.is_loaded
        assert pinned.version == version and pinned.path != (project / MODEL).resolve()
        pinned.path.write_bytes(b"changed in the cache")
        with pytest.raises(IntegrityError) as info:
            loaded(pinned)
        assert str(pinned.path) in info.value.message
