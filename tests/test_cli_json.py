"""The command line's JSON holds nested values as JSON objects and lists, never as JSON text
inside a string (which a reader would have to decode twice)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from tests.conftest import LOW_RISK
from tests.test_changes import ANNA, CARL, SHORTER, policy_text

FLOW = "credit_limit"
runner = CliRunner()


def encoded_strings(value: Any, where: str = "") -> list[str]:
    """Where ``value`` holds a string that is itself a JSON object or list."""
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in encoded_strings(v, f"{where}.{k}")]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in encoded_strings(v, f"{where}[{i}]")]
    if isinstance(value, str) and value[:1] in "{[":
        try:
            json.loads(value)
        except ValueError:
            return []
        return [where]
    return []


def keel_json(project: Path, *args: str) -> Any:
    result = runner.invoke(app, [*args, "-p", str(project)])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert encoded_strings(out) == [], " ".join(args)
    return out


def test_policy_and_rollout_json_nests_models_and_bounds(project: Path) -> None:
    with open_engine(project) as engine:
        first = engine.runtime(FLOW).policy.version
        change = engine.changes.propose(FLOW, policy_text(project, *SHORTER), ANNA, "shorter")
        engine.changes.approve(change.id, CARL, "fine")
        engine.changes.activate(change.id, CARL)
        engine.decide(FLOW, LOW_RISK)
    active = keel_json(project, "policy", "active", FLOW)
    assert isinstance(active["models"], dict) and active["models"]["default_risk"]
    history = keel_json(project, "policy", "history", FLOW, "--json")
    assert all(isinstance(a["models"], dict) for a in history["activations"])
    back = keel_json(project, "policy", "rollback", FLOW, first[:12], "-r", "back")
    assert back["kind"] == "rollback" and isinstance(back["models"], dict)
    started = keel_json(
        project, "rollout", "start", FLOW, change.version[:12], "-r", "watch",
        "--max-override-rate", "0.2",
    )  # fmt: skip
    assert started["bounds"]["max_override_rate"] == 0.2
    report = keel_json(project, "rollout", "report", FLOW)
    assert report["rollout"]["bounds"] == started["bounds"]
    stopped = keel_json(project, "rollout", "stop", FLOW, "-r", "done")
    assert stopped["state"] == "stopped" and stopped["bounds"] == started["bounds"]
