"""Windows over the ledger and the monitors that compare a window with its baseline."""

from __future__ import annotations

import json
import os
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest

from keel import open_engine
from keel.errors import InputError
from keel.flows.monitoring import DRIFT, LATENCY, RATES, Check, MonitoringSpec
from keel.ledger.records import iso_time
from keel.monitor.monitors import Limits, look_limits, run_monitor
from keel.monitor.windows import Window, duration, read_window, sliding, tumbling
from tests.conftest import LOW_RISK, Clock
from tests.test_cli import keel
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
DAY = 86_400.0
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z


def test_tumbling_and_sliding_windows() -> None:
    windows = tumbling("2027-01-15T08:00:00Z", "2027-01-17T06:00:00Z", duration("w", "1d"))
    assert [w.since[:19] for w in windows] == [
        "2027-01-15T08:00:00", "2027-01-16T00:00:00", "2027-01-17T00:00:00",
    ]  # fmt: skip
    assert windows[0].until == windows[1].since and windows[-1].until.startswith("2027-01-17T06")
    slid = sliding("2027-01-17T00:00:00Z", timedelta(days=1), timedelta(hours=6), 3)
    assert [w.until[:13] for w in slid] == ["2027-01-16T12", "2027-01-16T18", "2027-01-17T00"]
    assert slid[0].since.startswith("2027-01-15T12")
    with pytest.raises(InputError, match="must be a duration such as 15m"):
        duration("--window", "a week")
    with pytest.raises(InputError, match="the span is empty"):
        tumbling("2027-01-16T00:00:00Z", "2027-01-15T00:00:00Z", timedelta(days=1))
    with pytest.raises(InputError, match="more than 1000 windows"):
        tumbling("2027-01-01T00:00:00Z", "2027-03-01T00:00:00Z", timedelta(minutes=1))


def decide_days(project: Path, env: dict[str, str]) -> None:
    """Day 1: 30 ordinary cases. Day 2: 30 with higher incomes, a third sent to review."""
    clock = Clock(START)
    rng = np.random.default_rng(4)
    with open_engine(project, environ=env, clock=clock) as engine:
        for _ in range(30):
            income = float(rng.normal(80_000, 5_000))
            engine.decide(FLOW, {**LOW_RISK, "annual_income": income})
            clock.now += 60
        clock.now = START + DAY
        for i in range(30):
            income = float(rng.normal(120_000, 5_000))
            case = SHORT_HISTORY if i % 3 == 0 else LOW_RISK
            engine.decide(FLOW, {**case, "annual_income": income})
            clock.now += 60


def test_a_window_against_its_baseline(project: Path, env: dict[str, str]) -> None:
    decide_days(project, env)
    baseline = Window(iso_time(START - 3600), iso_time(START + DAY - 3600))
    current = Window(iso_time(START + DAY - 3600), iso_time(START + 2 * DAY))
    with open_engine(project, environ=env) as engine:
        data = read_window(engine.ctx, FLOW, current)
        assert data.decisions == 30 and data.statuses["pending_review"] == 10
        table = data.table()
        assert table["input.annual_income"].dtype == float and table["action"].dtype == object
        assert len(table["signal.default_risk"]) == 30
        result = run_monitor(engine.ctx, FLOW, current, baseline)
        loose = {name: Check(0.5) for name in RATES} | {LATENCY: Check(100.0), DRIFT: Check(1)}
        relaxed = run_monitor(engine.ctx, FLOW, current, baseline, Limits(loose))
    checks = {c["figure"]: c for c in result["behaviour"]}
    assert checks["automation_rate"]["baseline"] == 1.0
    assert checks["automation_rate"]["current"] == pytest.approx(20 / 30)
    assert checks["escalation_rate"]["breached"] is True
    assert checks["fallback_rate"]["breached"] is False
    assert checks["override_rate"]["current"] == 0.0
    assert checks["latency_p99_ms"]["baseline"] > 0
    drifted = result["drift"]["summary"]["drifted"]
    assert "input.annual_income" in drifted and "input.region" not in drifted
    assert "action" not in drifted  # approve in both windows (review is a status)
    assert "escalation_rate" in result["breaches"]
    assert "drift" in result["breaches"] and result["verdicts"]["fallback_rate"] == "clean"
    assert "escalation_rate" not in relaxed["breaches"]


def test_empty_windows_are_named(project: Path, env: dict[str, str]) -> None:
    decide_days(project, env)
    with open_engine(project, environ=env) as engine:
        empty = Window("2020-01-01T00:00:00Z", "2020-01-02T00:00:00Z")
        full = Window(iso_time(START), iso_time(START + DAY))
        with pytest.raises(InputError, match=r"the baseline window .* holds no decisions"):
            run_monitor(engine.ctx, FLOW, full, empty)
        with pytest.raises(InputError, match=r"the current window .* holds no decisions"):
            run_monitor(engine.ctx, FLOW, empty, full)


def test_monitor_from_the_command_line(project: Path) -> None:
    decide_days(project, dict(os.environ))  # the store the command line opens
    until = iso_time(START + 2 * DAY)
    code, out, err = keel(
        "monitor", "run", FLOW, "--window", "1d", "--baseline", "1d", "--until", until,
        "-p", str(project),
    )  # fmt: skip
    assert code == 1, err  # a breach
    assert "30 decisions in" in out and "escalation_rate" in out and "BREACH" in out
    code, out, _ = keel(
        "monitor", "run", FLOW, "--baseline", "1d", "--until", until, "--json",
        "-p", str(project),
    )  # fmt: skip
    result = json.loads(out)
    assert result["current"]["decisions"] == 30 and result["baseline"]["decisions"] == 30
    code, _, err = keel("monitor", "run", FLOW, "--window", "soon", "-p", str(project))
    assert code == 2 and "--window must be a duration" in err
    code, _, err = keel("monitor", "run", FLOW, "--until", "2020-01-01T00:00:00Z",
                        "-p", str(project))  # fmt: skip
    assert code == 2 and "holds no decisions" in err
    code, _, err = keel("monitor", "run", "nope", "-p", str(project))
    assert code == 2 and "nope" in err


def test_drift_report_from_a_flow_and_windows(project: Path, tmp_path: Path) -> None:
    decide_days(project, dict(os.environ))  # the store the command line opens
    out = tmp_path / "drift"
    where = ["--until", iso_time(START + 2 * DAY), "-p", str(project)]
    args = ["drift", "report", "--flow", FLOW, "--window", "1d", "--baseline", "1d"]
    code, stdout, err = keel(*args, "--out", str(out), *where)
    assert code == 1, err  # incomes moved
    assert "input.annual_income" in stdout
    report = json.loads((out / "report.json").read_text())
    assert report["current"]["rows"] == 30 and report["reference"]["rows"] == 30
    assert report["reference"]["source"].startswith(f"{FLOW} 2027-01-15T08:00")
    assert report["columns"]["action"]["type"] == "categorical"
    assert "<svg" in (out / "report.html").read_text()
    # The baseline window's profile is stored by content hash, and found again.
    stored = list((project / ".keel" / "profiles").glob("*.npz"))
    code, _, _ = keel(*args, "--out", str(tmp_path / "again"), *where)
    assert list((project / ".keel" / "profiles").glob("*.npz")) == stored and len(stored) == 1
    bad = [
        (["--flow", FLOW, "--reference", "x.csv"], "give --reference and --current"),
        (["--current", "x.csv"], "give --reference and --current"),
        (["--flow", "nope"], "unknown flow 'nope'"),
        (["--flow", FLOW, "--window", "soon"], "--window must be a duration"),
        (["--flow", FLOW, "--until", "2020-01-01T00:00:00Z"], "holds no decisions"),
    ]
    for extra, message in bad:
        code, _, err = keel("drift", "report", *extra, "--out", str(tmp_path / "no"),
                            "-p", str(project))  # fmt: skip
        assert code == 2 and message in err, (extra, err)
    assert not (tmp_path / "no").exists()


def test_a_look_overrides_limits_and_keeps_severities() -> None:
    checks = {name: Check(0.1, "critical") for name in RATES}
    spec = MonitoringSpec(
        min_decisions=50, clear_below=0.4,
        checks=checks | {LATENCY: Check(2.0, "info"), DRIFT: Check(3.0)},
    )  # fmt: skip
    limits = look_limits(spec, max_change=0.25, max_ratio=4.0)
    assert {limits.checks[name] for name in RATES} == {Check(0.25, "critical")}
    assert limits.checks[LATENCY] == Check(4.0, "info") and limits.checks[DRIFT] == Check(3.0)
    assert limits.min_decisions == 1 and limits.clear_below == 0.4
    assert look_limits(spec).checks == spec.checks
