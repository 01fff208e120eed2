"""Alarms, the governor and scheduled monitor runs, on a real store and real webhooks."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from keel import open_engine
from keel.decide.draft import Status
from keel.errors import ConflictError, DefinitionError, InputError, NotFoundError
from keel.flows import parse_flow
from keel.flows.monitoring import Check
from keel.monitor.profile import ProfileStore
from keel.security.roles import PermissionDeniedError
from keel.yamlfile import load_yaml_text
from tests.conftest import LOW_RISK, Clock, person
from tests.test_cli import keel
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
DAY = 86_400.0
START = 1_800_000_000.0  # 2027-01-15T08:00:00Z
OWNER = person("key:owner001", "Olga", "owner")
APPROVER = person("key:appr0002", "Paul", "approver")
VIEWER = person("key:view0003", "Vera", "viewer")
SECRET = "hook-secret-for-tests"


class Receiver:
    """A real HTTP server on 127.0.0.1 that keeps what it is sent and answers ``status``
    (which a test may change); on ``port``, or any free one."""

    def __init__(self, status: int = 200, port: int = 0) -> None:
        self.got: list[tuple[dict[str, str], bytes]] = []
        self.status = status
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.got.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.got]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    yield found
    found.close()


def monitoring(project: Path, text: str) -> None:
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(text)


RULES = """    - when: {alarm: drift, severity: critical}
      do: lower_autonomy
      to: advisory
    - when: {alarm: [escalation_rate]}
      do: escalate_all
    - when: {alarm: drift}
      do: retrain
"""


def section(url: str, rules: str = RULES) -> str:
    return f"""monitoring:
  window: 1d
  baseline: 1d
  min_decisions: 20
  drift: {{methods: [ks, chisquare], severity: critical}}
  limits:
    escalation_rate: {{max_change: 0.2, severity: warning}}
    automation_rate: 0.5
    fallback_rate: false
    latency_p99_ms: false  # timings are noise on a shared machine
  alarms: {{cooldown: 6h, clear_after: 2, clear_below: 0.5}}
  notify:
    - {{url: "{url}", secret_env: KEEL_TEST_HOOK_SECRET}}
  governor:
{rules}  retrain:
    webhook: {{url: "{url}", secret_env: KEEL_TEST_HOOK_SECRET}}
"""


def decide_day(engine: Any, clock: Clock, day: int, income: float, review_every: int = 0) -> None:
    """30 cases on ``day`` (0-based from START), a minute apart."""
    rng = np.random.default_rng(day)
    clock.now = START + day * DAY
    for i in range(30):
        case = SHORT_HISTORY if review_every and i % review_every == 0 else LOW_RISK
        engine.decide(FLOW, {**case, "annual_income": float(rng.normal(income, 5_000))})
        clock.now += 60


def kinds(engine: Any, prefix: str) -> list[str]:
    return [e.kind for e in engine.entries(1000) if e.kind.startswith(prefix)]


def test_an_alarm_lowers_autonomy_holds_the_flow_and_asks_for_retraining(
    project: Path, env: dict[str, str], receiver: Receiver
) -> None:
    monitoring(project, section(receiver.url))
    environ = {**env, "KEEL_TEST_HOOK_SECRET": SECRET}
    clock = Clock(START)
    with open_engine(project, environ=environ, clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 120_000, review_every=3)  # incomes moved, a third escalated
        clock.now = START + 2 * DAY
        run = engine.monitoring.run(FLOW, OWNER)
        assert run.state == "judged"
        assert set(run.breaches) == {"drift", "escalation_rate"}
        raised = {a.monitor: a for a in run.alarms}
        assert raised["drift"].severity == "critical"
        assert raised["escalation_rate"].severity == "warning"
        assert [a["action"] for a in raised["drift"].actions] == ["lower_autonomy", "retrain"]
        assert raised["drift"].actions[0]["from"] == "supervised"
        assert [a["action"] for a in raised["escalation_rate"].actions] == ["escalate_all"]
        # The governor's acts are in force, and recorded with their evidence.
        runtime = engine.runtime(FLOW)
        assert runtime.flow.autonomy == "advisory" and runtime.hold == "escalate_all"
        lowered = engine.autonomy.show(FLOW, engine.operator).history[-1]
        assert lowered.kind == "lower" and lowered.requested_by == "keel-governor"
        assert lowered.evidence["monitor"] == "drift"
        assert "input.annual_income" in lowered.evidence["figures"]["drifted"]
        assert kinds(engine, "alarm") == ["alarm_raised", "alarm_raised"]
        assert kinds(engine, "retraining") == ["retraining_requested"]
        assert kinds(engine, "flow_hold") == ["flow_hold_changed"]
        # The ledger names the webhook; its URL (which may carry credentials) is not kept.
        request = next(e for e in engine.entries(1000) if e.kind == "retraining_requested")
        assert request.body["webhook"] == "retrain.webhook"
        assert all("127.0.0.1" not in e.record for e in engine.entries(1000))
        # Every decision now records the level and the hold in force.
        decided = engine.decide(FLOW, LOW_RISK)
        body = engine.entry(decided.id).body
        assert body["autonomy"] == "advisory" and body["hold"] == "escalate_all"
        assert decided.status == Status.ADVISORY
        assert engine.verify().ok
    # Two alarm notices and one retraining request, signed with the secret.
    bodies = receiver.bodies()
    assert sorted(b["kind"] for b in bodies) == [
        "alarm_raised", "alarm_raised", "retraining_requested",
    ]  # fmt: skip
    for headers, body in receiver.got:
        expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
        assert headers["X-Keel-Signature"] == expected
    request = next(b for b in bodies if b["kind"] == "retraining_requested")
    assert request["models"]["default_risk"] and request["alarm"]["monitor"] == "drift"
    assert request["owner"] == "dana.reyes@example.com"


def test_an_alarm_is_raised_once_repeats_after_its_cooldown_and_clears_with_hysteresis(
    project: Path, env: dict[str, str], receiver: Receiver
) -> None:
    monitoring(project, section(receiver.url, RULES.split("    - when: {alarm: [esc", maxsplit=1)[0]
               .replace("do: lower_autonomy\n      to: advisory", "do: retrain")))  # fmt: skip
    environ = {**env, "KEEL_TEST_HOOK_SECRET": SECRET}
    clock = Clock(START)
    with open_engine(project, environ=environ, clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 120_000)
        clock.now = START + 2 * DAY
        first = engine.monitoring.run(FLOW, OWNER)
        assert first.breaches == ["drift"]
        alarm_id = first.alarms[0].id
        clock.now += 3600  # inside the cool-down: the same alarm, not told again
        again = engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
        assert again.breaches == ["drift"] and again.alarms == []
        alarm = engine.monitoring.alarm(alarm_id, engine.operator)
        assert (alarm.runs, alarm.suppressed, alarm.state) == (2, 1, "firing")
        clock.now += 6 * 3600  # past it: told again, the governor does not act again
        later = engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
        assert [a.kind for a in later.alarms] == ["alarm_repeated"]
        assert later.alarms[0].actions == []
        assert kinds(engine, "alarm") == ["alarm_raised", "alarm_repeated"]
        assert kinds(engine, "retraining") == ["retraining_requested"]
        # Two more days like the last: clean against their baseline, twice → resolved.
        decide_day(engine, clock, 2, 120_000)
        decide_day(engine, clock, 3, 120_000)
        clock.now = START + 4 * DAY
        one = engine.monitoring.run(FLOW, OWNER, until=START + 3 * DAY)
        assert one.result["verdicts"]["drift"] == "clean"
        assert engine.monitoring.alarm(alarm_id, engine.operator).clean_runs == 1
        two = engine.monitoring.run(FLOW, OWNER, until=START + 4 * DAY)
        assert [a.kind for a in two.alarms] == ["alarm_resolved"]
        resolved = engine.monitoring.alarm(alarm_id, engine.operator)
        assert resolved.state == "resolved" and resolved.resolved_by == "keel"
        assert engine.monitoring.alarms(engine.operator, FLOW, "firing") == []
    assert [b["kind"] for b in receiver.bodies()].count("alarm_resolved") == 1


def test_a_hold_stays_until_its_alarm_is_resolved_and_an_approver_lifts_it(
    project: Path, env: dict[str, str], receiver: Receiver
) -> None:
    monitoring(project, section(receiver.url, RULES.replace("do: escalate_all", "do: pause")))
    environ = {**env, "KEEL_TEST_HOOK_SECRET": SECRET}
    clock = Clock(START)
    with open_engine(project, environ=environ, clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 80_000, review_every=3)  # only escalations moved
        clock.now = START + 2 * DAY
        run = engine.monitoring.run(FLOW, OWNER)
        assert run.breaches == ["escalation_rate"]
        assert engine.runtime(FLOW).hold == "pause"
        paused = engine.decide(FLOW, LOW_RISK)
        assert paused.status == Status.DEFERRED and paused.action == "refer"  # the fallback
        assert engine.entry(paused.id).body["rule"] == "hold"
        assert "paused after an alarm" in paused.reason
        alarm_id = run.alarms[0].id
        with pytest.raises(ConflictError, match="held by alarms still firing"):
            engine.holds.lift(FLOW, APPROVER, "looks fine")
        with pytest.raises(PermissionDeniedError, match="may not approve policy on flow"):
            engine.holds.lift(FLOW, OWNER, "mine")
        with pytest.raises(PermissionDeniedError, match="may not change autonomy on flow"):
            engine.monitoring.resolve(alarm_id, VIEWER, "no")
        with pytest.raises(NotFoundError):
            engine.monitoring.resolve("alm_missing", OWNER, "no")
        engine.monitoring.resolve(alarm_id, OWNER, "Reviewer staffing change explains it")
        with pytest.raises(ConflictError, match="was resolved at"):
            engine.monitoring.resolve(alarm_id, OWNER, "again")
        lifted = engine.holds.lift(FLOW, APPROVER, "Escalations back to normal")
        assert (lifted.hold, lifted.previous) == ("none", "pause")
        assert engine.runtime(FLOW).hold == "none"
        assert engine.decide(FLOW, LOW_RISK).status == Status.FINAL
        with pytest.raises(ConflictError, match="is not held"):
            engine.holds.lift(FLOW, APPROVER, "again")
        history = engine.holds.show(FLOW, engine.operator).history
        assert [h.hold for h in history] == ["none", "pause"]
        assert history[1].set_by == "keel-governor" and history[1].alarm_id == alarm_id


def test_a_raise_is_refused_while_an_alarm_fires(project: Path, env: dict[str, str]) -> None:
    monitoring(project, "earned_autonomy:\n  autonomous: {over: 1d}\n"
               "monitoring: {window: 1d, baseline: 1d, min_decisions: 20,\n"
               "  limits: {latency_p99_ms: false}}\n")  # fmt: skip
    clock = Clock(START)
    with open_engine(project, environ=env, clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 120_000)
        clock.now = START + 2 * DAY
        run = engine.monitoring.run(FLOW, OWNER)
        with pytest.raises(ConflictError) as refused:
            engine.autonomy.request(FLOW, "autonomous", OWNER, "ready")
        alarm_id = next(a.id for a in run.alarms if a.monitor == "drift")
        assert f"alarm {alarm_id} (drift, warning) is firing" in refused.value.detail["unmet"]


def test_scheduled_runs_claim_their_period_once(project: Path, env: dict[str, str]) -> None:
    monitoring(
        project,
        "monitoring: {window: 1d, baseline: 1d, every: 1h, min_decisions: 20,\n"
        "  limits: {latency_p99_ms: false}, drift: {methods: [ks, chisquare]}}\n",
    )
    clock = Clock(START)
    with (
        open_engine(project, environ=env, clock=clock) as engine,
        open_engine(project, environ=env, clock=clock) as other,
    ):
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 80_000)
        clock.now = START + 2 * DAY + 1800
        assert [flow for flow, _, _ in engine.monitoring.due()] == [FLOW]
        runs = engine.monitoring.run_due()
        assert [r.state for r in runs] == ["judged"] and runs[0].breaches == []
        assert runs[0].current_until == "2027-01-17T08:00:00.000000Z"  # on the hour
        assert other.monitoring.run_due() == [] and engine.monitoring.due() == []
        clock.now = START + 5 * DAY  # a later period whose window holds no decisions
        skipped = other.monitoring.run_due()
        assert [r.state for r in skipped] == ["skipped"]
        assert "holds no decisions" in skipped[0].note
        states = [r.state for r in engine.monitoring.runs(FLOW, engine.operator)]
        assert states == ["skipped", "judged"]


BAD = [
    ("monitoring: [1]", "'monitoring' must be a mapping"),
    ("monitoring: {windw: 1d}", "unknown key 'windw'"),
    ("monitoring: {window: soon}", "'window' must look like 15m"),
    ("monitoring: {min_decisions: 0}", "'min_decisions' must be a whole number ≥ 1"),
    ("monitoring: {drift: {methods: [kss]}}", "'methods' must list drift methods"),
    ("monitoring: {drift: {severity: dire}}", "'severity' must be one of info, warning"),
    ("monitoring: {limits: {speed: 0.1}}", "unknown behaviour figure 'speed'"),
    ("monitoring: {limits: {override_rate: 2}}", "must be a share above 0, at most 1"),
    ("monitoring: {limits: {latency_p99_ms: {max_ratio: 0.5}}}", "must be a ratio above 1"),
    ("monitoring: {limits: {latency_p99_ms: {max_change: 2}}}", "unknown key 'max_change'"),
    ("monitoring: {alarms: {cooldown: never}}", "'cooldown' must look like"),
    ("monitoring: {alarms: {clear_below: 0}}", "'clear_below' must be a share"),
    ("monitoring: {notify: [ftp://x]}", "'url' must be an http(s) URL"),
    ("monitoring: {notify: [{url: 'https://x', secret_env: lower}]}", "'secret_env' must name"),
    ("monitoring: {notify: [{url: 'https://x', name: 'a b'}]}", "'name' must be letters"),
    (
        "monitoring: {notify: [{url: 'https://x', name: ops}, {url: 'https://y', name: ops}]}",
        "two webhooks are named 'ops'",
    ),
    ("monitoring: {governor: [{do: explode}]}", "'do' must be one of lower_autonomy"),
    ("monitoring: {governor: [{do: lower_autonomy}]}", "lower_autonomy needs 'to'"),
    ("monitoring: {governor: [{do: lower_autonomy, to: autonomous}]}", "lower_autonomy needs"),
    ("monitoring: {governor: [{do: pause, to: shadow}]}", "'to' belongs to lower_autonomy"),
    ("monitoring: {governor: [{do: retrain}]}", "a retrain rule needs a 'retrain' section"),
    ("monitoring: {governor: [{when: {alarm: rain}, do: pause}]}", "'alarm' must name monitors"),
    (
        "monitoring: {limits: {fallback_rate: false}, "
        "governor: [{when: {alarm: fallback_rate}, do: pause}]}",
        "fallback_rate is not watched",
    ),
    ("monitoring: {retrain: {}}", "'retrain' needs a webhook or a command"),
    ("monitoring: {drift: {reference: train.parquet}}", "'reference' must be a stored profile"),
    ("monitoring: {drift: {reference: 123456789012}}", "'reference' must be quoted"),
    ("monitoring: {retrain: {command: python retrain.py}}", "'command' must be a list of words"),
]


@pytest.mark.parametrize(("text", "message"), BAD)
def test_a_bad_monitoring_section_is_refused_with_its_place(
    project: Path, text: str, message: str
) -> None:
    path = project / "flows" / "credit_limit.yaml"
    raw = load_yaml_text(path.read_text() + text + "\n", str(path))
    with pytest.raises(DefinitionError) as refused:
        parse_flow(raw, path)
    problems = [f"{p.where}: {p.message}" for p in refused.value.problems]
    assert any(message in p and p.startswith("monitoring") for p in problems), problems
    assert all(p.line is not None for p in refused.value.problems)


def test_the_monitoring_section_and_its_defaults(project: Path) -> None:
    path = project / "flows" / "credit_limit.yaml"
    plain = parse_flow(load_yaml_text(path.read_text(), str(path)), path).monitoring
    assert (plain.window_s, plain.baseline_s, plain.every_s) == (86_400, 7 * 86_400, None)
    assert plain.checks["automation_rate"] == Check(0.1) and plain.governor == ()
    text = path.read_text() + section("https://hooks.example.com/keel")
    spec = parse_flow(load_yaml_text(text, str(path)), path).monitoring
    assert "fallback_rate" not in spec.checks
    assert spec.checks["escalation_rate"] == Check(0.2, "warning")
    assert spec.checks["drift"] == Check(1.0, "critical")
    assert [r.action for r in spec.governor] == ["lower_autonomy", "escalate_all", "retrain"]
    assert spec.governor[0].matches("drift", "critical")
    assert not spec.governor[0].matches("drift", "warning")
    assert spec.retrain is not None and spec.retrain.webhook is not None
    # Webhooks are named (deliveries keep the name, never the URL).
    assert [h.name for h in spec.notify] == ["notify[0]"]
    assert spec.retrain.webhook.name == "retrain.webhook"


def test_alarms_from_the_command_line(project: Path) -> None:
    monitoring(project, "monitoring: {window: 1d, baseline: 1d, min_decisions: 20,\n"
               "  limits: {latency_p99_ms: false}, drift: {methods: [ks, chisquare]},\n"
               "  governor: [{when: {alarm: drift}, do: escalate_all}]}\n")  # fmt: skip
    clock = Clock(START)
    with open_engine(project, environ=dict(os.environ), clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 120_000)
    until = ["--until", "2027-01-17T08:00:00Z", "-p", str(project)]
    code, _, err = keel("monitor", "run", FLOW, "--record", "--window", "1d", *until)
    assert code == 2 and "--record judges by the flow's monitoring section" in err
    code, out, err = keel("monitor", "run", FLOW, "--record", *until)
    assert code == 1, err
    assert "alarm_raised" in out and "drift" in out and "escalate_all" in out
    code, out, _ = keel("alarms", "list", "--state", "firing", "-p", str(project))
    assert code == 0 and "credit_limit/drift" in out
    alarm_id = out.split()[0]
    code, out, _ = keel("alarms", "show", alarm_id, "-p", str(project))
    assert json.loads(out)["actions"][0]["action"] == "escalate_all"
    code, out, _ = keel("monitor", "hold", FLOW, "-p", str(project))
    assert json.loads(out)["hold"] == "escalate_all"
    code, _, err = keel("monitor", "lift", FLOW, "-r", "fixed", "-p", str(project))
    assert code == 2 and "held by alarms still firing" in err
    code, _, err = keel("alarms", "list", "--state", "loud", "-p", str(project))
    assert code == 2 and "unknown alarm state 'loud'" in err
    code, _, err = keel("alarms", "resolve", alarm_id, "-r", " ", "-p", str(project))
    assert code == 2 and "needs a reason" in err
    code, out, _ = keel("alarms", "resolve", alarm_id, "-r", "explained", "-p", str(project))
    assert code == 0 and json.loads(out)["state"] == "resolved"
    code, out, _ = keel("monitor", "lift", FLOW, "-r", "fixed", "-p", str(project))
    assert code == 0 and json.loads(out)["hold"] == "none"
    code, out, _ = keel("monitor", "runs", FLOW, "-p", str(project))
    assert code == 0 and "judged" in out and "drift" in out
    code, _, err = keel("monitor", "run-due", "-p", str(project))
    assert code == 0 and "no scheduled run was due" in err
    code, _, err = keel("monitor", "run", FLOW, "--record", "--until", "2020-01-01T00:00:00Z",
                        "-p", str(project))  # fmt: skip
    assert code == 2 and "skipped" in err and "holds no decisions" in err


def test_a_webhook_that_fails_is_logged_and_counted_and_loses_nothing(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    refusing = Receiver(status=400)
    try:
        monitoring(project, section(refusing.url, "    - when: {alarm: drift}\n      do: pause\n"))
        clock = Clock(START)
        # No secret in the environment: signed hooks are not sent, and that is said; the
        # notice waits in the outbox for its next try.
        with open_engine(project, environ={}, clock=clock) as engine:
            decide_day(engine, clock, 0, 80_000)
            decide_day(engine, clock, 1, 120_000)
            run = engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
            assert [(d["state"], d["attempts"]) for d in run.deliveries] == [("pending", 1)]
            assert "KEEL_TEST_HOOK_SECRET is not set" in run.deliveries[0]["last_error"]
        assert refusing.got == []
        with open_engine(project, environ={"KEEL_TEST_HOOK_SECRET": SECRET}, clock=clock) as engine:
            engine.monitoring.resolve(run.alarms[0].id, OWNER, "retry")
            clock.now = START + 2 * DAY + 60
            again = engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
            assert again.deliveries[0]["last_error"] == "HTTP 400"
            # A refusal is not tried again: dead at once, for a person to look at.
            assert (again.deliveries[0]["state"], again.deliveries[0]["attempts"]) == ("dead", 1)
            dead = engine.metrics.registry.get_sample_value(
                "keel_deliveries_total", {"flow": FLOW, "kind": "alarm_notice", "state": "dead"}
            )
            assert dead == 2.0  # the resolution's notice and the new alarm's
            assert engine.runtime(FLOW).hold == "pause"  # recorded all the same
        assert len(refusing.got) == 2
        assert "dead after 1 tries: HTTP 400" in caplog.text
        assert SECRET not in caplog.text and refusing.url not in caplog.text
    finally:
        refusing.close()


def test_drift_against_a_stored_training_profile(project: Path, env: dict[str, str]) -> None:
    rng = np.random.default_rng(9)
    training = {
        "annual_income": rng.normal(80_000, 5_000, 2_000),
        "region": np.array(["north"] * 2_000, dtype=object),
    }
    stored = ProfileStore.of_project(project).profile(training, "training.parquet")
    monitoring(project, "monitoring: {window: 1d, baseline: 1d, min_decisions: 20,\n"
               "  limits: {latency_p99_ms: false},\n"
               f"  drift: {{methods: [ks, chisquare], reference: {stored.id[:16]}}}}}\n")  # fmt: skip
    clock = Clock(START)
    with open_engine(project, environ=env, clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 120_000)
        run = engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
        drift = run.result["drift"]
        assert drift["summary"]["drifted"] == ["annual_income"]  # the profile's names
        assert set(drift["columns"]) == {"annual_income", "region"}
        assert any("not in the reference" in p and "signal.default_risk" in p
                   for p in drift["problems"])  # fmt: skip
    # A reference that is not stored: the run fails, says why, and is recorded as failed.
    flow = project / "flows" / "credit_limit.yaml"
    flow.write_text(flow.read_text().replace(stored.id[:16], "f" * 16))
    with open_engine(project, environ=env, clock=clock) as engine:
        with pytest.raises(InputError, match="no stored profile ffffffffffffffff"):
            engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
        failed = engine.monitoring.runs(FLOW, engine.operator)[0]
        assert failed.state == "failed" and "no stored profile" in failed.note


def test_a_file_to_file_drift_report_reads_columns_as_the_flow_defines_them(
    project: Path, tmp_path: Path
) -> None:
    """Two files with ``--flow``: the column the flow declares a category (``allowed``) is
    compared category by category, whatever its values, and shown by the flow's labels;
    without ``--flow`` the integer codes are numbers."""
    flow = project / "flows" / "credit_limit.yaml"
    flow.write_text(flow.read_text().replace(
        "    label: Delinquencies in the last two years\n",
        "    label: Delinquencies in the last two years\n    allowed: [0, 1, 2, 3]\n"
        "    labels: {0: none, 1: one, 2: two, 3: three or more}\n",
    ))  # fmt: skip
    rng = np.random.default_rng(12)

    def data_file(name: str, shares: list[float]) -> Path:
        codes = rng.choice([0, 1, 2, 3], 500, p=shares)
        incomes = rng.normal(80_000, 5_000, 500)
        path = tmp_path / name
        path.write_text("annual_income,delinquencies_2y\n" + "".join(
            f"{income:.2f},{code}\n" for income, code in zip(incomes, codes, strict=True)
        ))  # fmt: skip
        return path

    reference = data_file("reference.csv", [0.7, 0.2, 0.08, 0.02])
    current = data_file("current.csv", [0.3, 0.3, 0.2, 0.2])
    files = ["--reference", str(reference), "--current", str(current), "-p", str(project)]

    def report(out: str, *extra: str) -> dict[str, Any]:
        code, _, err = keel("drift", "report", *files, "--out", str(tmp_path / out), *extra)
        assert code == 1, err  # the codes moved
        column = json.loads((tmp_path / out / "report.json").read_text())["columns"]
        return dict(column["delinquencies_2y"])

    guessed = report("guessed")
    assert guessed["type"] == "numeric" and guessed["method"] == "wasserstein"
    defined = report("defined", "--flow", FLOW)
    assert defined["type"] == "categorical" and defined["method"] == "jensenshannon"
    histogram = defined["histogram"]
    assert histogram["categories"] == ["0", "1", "2", "3"]
    assert histogram["labels"] == ["none", "one", "two", "three or more"]
    code, _, err = keel("drift", "report", *files, "--out", str(tmp_path / "x"), "--flow", "nope")
    assert code == 2 and "unknown flow 'nope'" in err
    # A stored profile keeps its kinds: a column numeric there is compared as numbers, and
    # the report says so.
    code, plain, _ = keel("drift", "profile", str(reference), "-p", str(project))
    code, _, err = keel("drift", "report", "--reference", plain.split()[0], "--current",
                        str(current), "--flow", FLOW, "--out", str(tmp_path / "stored"),
                        "-p", str(project))  # fmt: skip
    assert code == 1, err
    assert "note: column 'delinquencies_2y' is a category of the flow but numeric" in err
    stored = json.loads((tmp_path / "stored" / "report.json").read_text())["columns"]
    assert stored["delinquencies_2y"]["type"] == "numeric"


def test_a_training_profile_built_for_the_flow_compares_integer_codes_as_categories(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    """A training file types columns by their values, so integer codes are numbers there;
    built for the flow, the column the flow declares a category (``allowed``) is profiled
    as categories and compared with the flow's windows category by category."""
    flow = project / "flows" / "credit_limit.yaml"
    flow.write_text(flow.read_text().replace(
        "    label: Delinquencies in the last two years\n",
        "    label: Delinquencies in the last two years\n    allowed: [0, 1, 2, 3]\n",
    ))  # fmt: skip
    rng = np.random.default_rng(11)
    codes = rng.choice([0, 1, 2], 600, p=[0.2, 0.5, 0.3])
    rows = [f"{income:.2f},{code},north" for income, code in
            zip(rng.normal(80_000, 5_000, 600), codes, strict=True)]  # fmt: skip
    training = tmp_path / "training.csv"
    training.write_text("annual_income,delinquencies_2y,region\n" + "\n".join(rows) + "\n")
    p = ["-p", str(project)]
    code, plain, err = keel("drift", "profile", str(training), *p)
    assert code == 0, err
    assert "2 numeric and 1 categorical columns" in plain
    code, for_flow, err = keel("drift", "profile", str(training), "--flow", FLOW, *p)
    assert code == 0, err
    assert "1 numeric and 2 categorical columns" in for_flow
    assert for_flow.split()[0] != plain.split()[0]  # another profile, stored beside the first
    stored = ProfileStore.of_project(project).find(for_flow.split()[0])
    assert stored.columns["delinquencies_2y"].counts == {  # type: ignore[union-attr]
        str(c): int((codes == c).sum()) for c in (0, 1, 2)
    }
    assert keel("drift", "profile", str(training), "--flow", "nope", *p)[0] == 2

    def drift_against(profile_id: str) -> dict[str, Any]:
        text = flow.read_text().split("monitoring:")[0]
        flow.write_text(text + "monitoring: {window: 1d, baseline: 1d, min_decisions: 20,\n"
                        "  limits: {latency_p99_ms: false},\n"
                        f"  drift: {{reference: '{profile_id[:16]}'}}}}\n")  # fmt: skip
        clock = Clock(START)
        with open_engine(project, environ=env, clock=clock) as engine:
            if not engine.entries(kind="decision"):
                decide_day(engine, clock, 0, 80_000)
                decide_day(engine, clock, 1, 80_000)
            run = engine.monitoring.run(FLOW, OWNER, until=START + 2 * DAY)
            return dict(run.result["drift"])

    # Typed by its values, the column is numeric in the profile: the codes were compared
    # as numbers, the flow's categories read back as numbers.
    before = drift_against(plain.split()[0])
    assert before["columns"]["delinquencies_2y"]["type"] == "numeric"
    assert before["columns"]["delinquencies_2y"]["method"] == "wasserstein"
    # Built for the flow: compared as a category (every case had 0 delinquencies: drift).
    after = drift_against(for_flow.split()[0])
    assert not any("delinquencies_2y" in p for p in after["problems"])
    column = after["columns"]["delinquencies_2y"]
    assert column["type"] == "categorical" and column["method"] == "jensenshannon"
    assert column["drift"] is True
    assert {s["method"] for s in column["statistics"]} >= {"chisquare", "new_categories"}
