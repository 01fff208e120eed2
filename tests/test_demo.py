"""The demo end to end, as `make demo` runs it."""

from pathlib import Path

from typer.testing import CliRunner

from keel.cli import app


def test_demo_runs_and_verifies(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--count", "120"])
    assert result.exit_code == 0, result.stdout + result.stderr
    out = result.stdout
    assert "Deciding 120 applicants" in out
    assert "approve" in out and "decline" in out
    assert "raised the default risk" in out or "lowered the default risk" in out
    assert "ok: 124 entries verified" in out  # policy (2), autonomy, 120 decisions, checkpoint
    # Running it again recreates the demo folder instead of failing on it.
    again = CliRunner().invoke(app, ["demo", "--dir", str(tmp_path / "demo"), "--count", "5"])
    assert again.exit_code == 0, again.stdout
