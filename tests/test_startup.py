"""CLI start-up: commands that need no model import neither scikit-learn nor skops.

Importing skops imports all of scikit-learn (seconds on a small machine), so reading,
verifying and checkpointing the ledger, managing keys and exporting the audit trail open the
store alone, and commands that open the engine but score no case (history, reviews,
reports, the model inventory) describe each model without loading it (first use loads it). Each command runs in a fresh interpreter, which then lists the heavy packages
it imported; a command that loads the project's ``.skops`` model is the control that shows
the probe sees them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app
from keel.engine import open_engine
from keel.ledger.checkpoint import load_checkpoint
from keel.review.outcomes import OutcomeReport
from tests.conftest import LOW_RISK, python_model

HEAVY = ("sklearn", "skops", "pandas", "scipy", "onnxruntime")

# Runs one command through Typer's runner, then prints its exit code, output and the heavy
# top-level packages now in sys.modules.
PROBE = """
import json, sys
from typer.testing import CliRunner
from keel.cli import app
result = CliRunner().invoke(app, sys.argv[1:])
heavy = sorted({m.split(".")[0] for m in sys.modules} & set(json.loads(sys.stdin.read())))
print(json.dumps({"code": result.exit_code, "output": result.output, "heavy": heavy}))
"""


def imported(*args: str) -> list[str]:
    """The heavy packages ``keel ARGS`` imported; fails the test if the command failed."""
    return imported_with_output(*args)[0]


def imported_with_output(*args: str) -> tuple[list[str], str]:
    """The heavy packages ``keel ARGS`` imported, and its output."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *args],
        input=json.dumps(HEAVY),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(done.stdout.splitlines()[-1])
    assert result["code"] == 0, result["output"]
    heavy: list[str] = result["heavy"]
    return heavy, str(result["output"])


@pytest.fixture
def decided(project: Path, low_risk: dict[str, object]) -> Path:
    """The example project with one decision in its ledger."""
    with open_engine(project) as engine:
        engine.decide("credit_limit", low_risk)
    return project


def test_help_imports_no_model_library() -> None:
    assert imported("--help") == []
    assert imported("ledger", "--help") == []


@pytest.mark.parametrize(
    "command",
    [
        ["ledger", "verify"],
        ["ledger", "verify", "--deep"],
        ["ledger", "show"],
        ["ledger", "export"],
        ["ledger", "checkpoint"],
        ["keys", "list"],
        ["audit", "export"],
    ],
    ids=" ".join,
)
def test_store_commands_import_no_model_library(decided: Path, command: list[str]) -> None:
    assert imported(*command, "--project", str(decided)) == []


def test_checkpoint_without_the_engine_is_recorded_and_verifies(
    decided: Path, tmp_path: Path
) -> None:
    """The lighter path still records the checkpoint in the chain, as the engine does."""
    out = tmp_path / "cp.json"
    assert imported("ledger", "checkpoint", "--out", str(out), "--project", str(decided)) == []
    checkpoint = load_checkpoint(out)
    with open_engine(decided) as engine:
        report = engine.verify(checkpoint)
        last = engine.entries(limit=1)[0]
    assert report.ok and report.head_seq == checkpoint.seq + 1
    assert last.kind == "checkpoint" and last.body["seq"] == checkpoint.seq


@pytest.mark.parametrize(
    "command",
    [
        ["policy", "history", "credit_limit"],
        ["policy", "active", "credit_limit"],
        ["review", "list"],
        ["report", "fairness", "credit_limit"],
        ["report", "trust", "credit_limit"],
        ["models", "list"],
        ["alarms", "list"],
    ],
    ids=" ".join,
)
def test_engine_commands_that_score_nothing_load_no_model(
    decided: Path, command: list[str]
) -> None:
    """The engine opens with each ``.skops`` model described (its file hashed), not loaded."""
    heavy = imported(*command, "--project", str(decided))
    assert not {"sklearn", "skops"} & set(heavy), heavy


def test_a_command_that_scores_loads_the_model(decided: Path) -> None:
    """The control for the commands above: deciding loads the model on first use."""
    example = f"@{decided / 'examples' / 'low_risk.json'}"
    heavy = imported("decide", "credit_limit", "--input", example, "-p", str(decided))
    assert {"sklearn", "skops"} <= set(heavy)


def test_a_python_model_costs_no_model_library(project: Path) -> None:
    """Commands that load models pay only for the models they load: a flow whose signal is
    a Python function validates and decides without scikit-learn, skops or SciPy."""
    python_model(project)
    example = f"@{project / 'examples' / 'low_risk.json'}"
    assert imported("validate", "--project", str(project)) == []
    assert imported("decide", "credit_limit", "--input", example, "-p", str(project)) == []


def test_the_model_inventory_costs_no_model_library(project: Path) -> None:
    """``keel models list`` reads the ledger; ``keel models show`` computes its figures
    (AUC, Gini, KS, Brier) with the performance module, which needs no scikit-learn."""
    python_model(project)
    with open_engine(project) as engine:
        for n in range(30):
            decision = engine.decide("credit_limit", {**LOW_RISK, "annual_income": 50_000 + n})
            label = "defaulted" if n % 3 == 0 else "repaid"
            engine.outcomes.report(OutcomeReport(decision.id, label), engine.operator)
        version = decision.signals["default_risk"]["version"]
    assert imported("models", "list", "--project", str(project)) == []
    heavy, output = imported_with_output("models", "show", version, "--project", str(project))
    assert "AUC 0.500, Gini 0.000, KS 0.000" in output and "(n=30, 10 bad;" in output
    assert not {"sklearn", "skops"} & set(heavy)


def test_a_command_that_loads_the_skops_model_imports_it(decided: Path) -> None:
    """The control: the probe does see scikit-learn where a command loads the model."""
    assert {"sklearn", "skops"} <= set(imported("validate", "--project", str(decided)))


def test_checkpoint_without_the_engine_still_checks_the_key(decided: Path) -> None:
    """A key without ``checkpoint_ledger`` is refused, and nothing is appended."""
    runner = CliRunner()
    created = runner.invoke(
        app, ["keys", "create", "--name", "auditor", "--role", "viewer", "-p", str(decided)]
    )
    token = created.stdout.split()[0]
    refused = runner.invoke(
        app, ["ledger", "checkpoint", "-p", str(decided)], env={"KEEL_API_KEY": token}
    )
    assert refused.exit_code == 2 and "error [forbidden]" in refused.stderr
    with open_engine(decided) as engine:
        assert engine.entries(limit=1)[0].kind != "checkpoint"
