"""The delivery outbox, on a real store and a real HTTP receiver on 127.0.0.1: alarm
notices survive a receiver that is down and a restart, arrive at least once with a stable
id, are dead-lettered after their tries, and are never claimed by two senders at once."""

from __future__ import annotations

import hashlib
import hmac
import json
import socket
import sys
import threading
from datetime import datetime
from pathlib import Path

import pytest

from keel import open_engine
from keel.config import load_settings
from keel.engine import Engine
from keel.errors import ConfigError, ConflictError, InputError, NotFoundError
from keel.monitor.deliver import Attempt
from keel.monitor.outbox import ALARM_NOTICE, RETRAINING_REQUEST, Outgoing, enqueue_in
from keel.security.roles import PermissionDeniedError
from tests.conftest import Clock, person, run_sql
from tests.test_alarms import (
    DAY,
    FLOW,
    OWNER,
    SECRET,
    START,
    VIEWER,
    Receiver,
    decide_day,
    monitoring,
    section,
)
from tests.test_cli import keel
from tests.test_serve import free_port

SIGNED = {"KEEL_TEST_HOOK_SECRET": SECRET}
ELSEWHERE = person("key:else0004", "Elena", "owner", "pricing")


def notify_only(url: str, secret_env: str = "KEEL_TEST_HOOK_SECRET") -> str:
    return f'monitoring:\n  notify:\n    - {{url: "{url}", secret_env: {secret_env}}}\n'


def enqueue(engine: Engine, n: int = 1) -> list[str]:
    """``n`` alarm notices for the flow's first webhook, written as a monitor run writes
    them: in a write transaction."""
    outgoing = [
        Outgoing(ALARM_NOTICE, "notify[0]", f"alm_test{i}", {"kind": "alarm_raised", "n": i})
        for i in range(n)
    ]
    ids: list[str] = engine.writer.transact(
        lambda conn, gate: enqueue_in(conn, gate.now, FLOW, outgoing)
    )
    return ids


def signed_by_secret(headers: dict[str, str], body: bytes) -> bool:
    expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    return headers["X-Keel-Signature"] == expected


def counted(engine: Engine, state: str, kind: str = ALARM_NOTICE) -> float:
    labels = {"flow": FLOW, "kind": kind, "state": state}
    return engine.metrics.registry.get_sample_value("keel_deliveries_total", labels) or 0.0


def moment(text: str) -> float:
    """Seconds since the epoch of a time as the store keeps it."""
    return datetime.fromisoformat(text).timestamp()


def test_a_receiver_down_during_an_alarm_gets_it_after_a_restart(
    project: Path, env: dict[str, str], db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    port = free_port()  # nobody listens there yet: the receiver is down
    url = f"http://127.0.0.1:{port}/hook"
    monitoring(project, section(url))
    environ = {**env, **SIGNED}
    clock = Clock(START)
    with open_engine(project, environ=environ, clock=clock) as engine:
        decide_day(engine, clock, 0, 80_000)
        decide_day(engine, clock, 1, 120_000)
        clock.now = START + 2 * DAY
        run = engine.monitoring.run(FLOW, OWNER)
        alarm_id = run.alarms[0].id
        # The alarm is recorded; its notice and the retraining request wait in the outbox.
        assert sorted((d["kind"], d["target"], d["state"], d["attempts"], d["last_error"])
                      for d in run.deliveries) == [
            ("alarm_notice", "notify[0]", "pending", 1, "ConnectionRefusedError"),
            ("retraining_request", "retrain.webhook", "pending", 1, "ConnectionRefusedError"),
        ]  # fmt: skip
        waiting = engine.deliveries.find(OWNER, "pending", FLOW)
        ids = {d.id for d in waiting}
        assert len(ids) == 2 and all(d.alarm_id == alarm_id for d in waiting)
        backoff = engine.settings.deliveries.backoff_s
        for d in waiting:  # the first backoff, stretched by at most a fifth
            assert (
                START + 2 * DAY + backoff
                <= moment(d.next_attempt_at)
                <= (START + 2 * DAY + backoff * 1.2)
            )
        assert counted(engine, "failed") == 1.0
    # The outbox names the webhook, never its URL or the secret.
    stored = repr(run_sql(db_url, "SELECT * FROM deliveries"))
    assert "127.0.0.1" not in stored and SECRET not in stored and alarm_id in stored

    receiver = Receiver(port=port)
    try:
        with open_engine(project, environ=environ, clock=clock) as engine:  # a restart
            assert engine.run_scheduled().deliveries == []  # not due yet: backoff holds
            assert receiver.got == []
            clock.advance(engine.settings.deliveries.backoff_s * 1.2 + 1)
            work = engine.run_scheduled()
            assert sorted(d.state for d in work.deliveries) == ["delivered", "delivered"]
            done = engine.deliveries.find(OWNER, "delivered", FLOW)
            assert {d.id for d in done} == ids and all(d.attempts == 2 for d in done)
            assert engine.deliveries.find(OWNER, "pending") == []
            assert counted(engine, "delivered") == 1.0
            assert counted(engine, "delivered", "retraining_request") == 1.0
            waiting = engine.metrics.registry.get_sample_value(
                "keel_deliveries_waiting", {"state": "pending"}
            )
            assert waiting == 0.0
            assert engine.run_scheduled().deliveries == []  # delivered is delivered
    finally:
        receiver.close()
    assert len(receiver.got) == 2
    for headers, body in receiver.got:
        sent = json.loads(body)
        assert headers["X-Keel-Delivery"] == sent["delivery"] and sent["delivery"] in ids
        assert signed_by_secret(headers, body)
        assert sent["alarm"]["id"] == alarm_id and sent["flow"] == FLOW
    kinds = sorted(json.loads(body)["kind"] for _, body in receiver.got)
    assert kinds == ["alarm_raised", "retraining_requested"]
    assert "failed (try 1 of 12): ConnectionRefusedError" in caplog.text
    assert url not in caplog.text and SECRET not in caplog.text  # logs name the webhook


def test_a_send_not_recorded_before_a_crash_is_sent_again_with_the_same_id(
    project: Path, env: dict[str, str]
) -> None:
    receiver = Receiver()
    try:
        monitoring(project, notify_only(receiver.url))
        environ = {**env, **SIGNED}
        clock = Clock(START)
        with (
            open_engine(project, environ=environ, clock=clock) as crashed,
            open_engine(project, environ=environ, clock=clock) as other,
        ):
            (delivery_id,) = enqueue(crashed)
            (claim,) = crashed.deliveries.claim()
            assert crashed.deliveries.send(claim) == Attempt(True)  # POSTed …
            # … and the sender dies before it records that. Its lease keeps others off …
            assert other.deliveries.dispatch_due() == []
            clock.advance(crashed.settings.deliveries.lease_s + 1)
            # … until it runs out: another sender sends it again, with the same id.
            (again,) = other.deliveries.dispatch_due()
            assert (again.id, again.state, again.attempts) == (delivery_id, "delivered", 1)
            # The dead sender's late word cannot undo the delivery.
            late = crashed.deliveries.settle(claim, Attempt(False, "HTTP 503"))
            assert late.state == "delivered" and late.last_error is None
    finally:
        receiver.close()
    assert [h["X-Keel-Delivery"] for h, _ in receiver.got] == [delivery_id, delivery_id]
    assert [json.loads(b)["delivery"] for _, b in receiver.got] == [delivery_id, delivery_id]
    assert all(signed_by_secret(h, b) for h, b in receiver.got)


def test_two_dispatchers_never_claim_the_same_delivery(project: Path, env: dict[str, str]) -> None:
    receiver = Receiver()
    try:
        monitoring(project, notify_only(receiver.url))
        environ = {**env, **SIGNED}
        clock = Clock(START)
        with (
            open_engine(project, environ=environ, clock=clock) as one,
            open_engine(project, environ=environ, clock=clock) as two,
        ):
            ids = enqueue(one, 12)
            taken = one.deliveries.claim(limit=5)
            assert len(taken) == 5 and two.deliveries.claim(ids=[taken[0].delivery.id]) == []
            clock.advance(one.settings.deliveries.lease_s + 1)  # those claims run out
            start = threading.Barrier(2)
            sent: dict[str, list[str]] = {}

            def dispatch(name: str, engine: Engine) -> None:
                start.wait()
                sent[name] = [d.id for d in engine.deliveries.dispatch_due()]

            threads = [threading.Thread(target=dispatch, args=(n, e))
                       for n, e in (("one", one), ("two", two))]  # fmt: skip
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            assert sorted(sent["one"] + sent["two"]) == sorted(ids)  # each once, by one of them
            assert {d.state for d in one.deliveries.find(OWNER, flow=FLOW)} == {"delivered"}
    finally:
        receiver.close()
    assert sorted(h["X-Keel-Delivery"] for h, _ in receiver.got) == sorted(ids)


def test_a_delivery_is_dead_lettered_after_its_tries_and_a_person_sends_it_again(
    project: Path, env: dict[str, str]
) -> None:
    (project / "keel.yaml").write_text(
        (project / "keel.yaml").read_text()
        + "deliveries: {max_attempts: 3, backoff_s: 10, max_backoff_s: 15}\n"
    )
    receiver = Receiver(status=503)
    try:
        monitoring(project, notify_only(receiver.url))
        clock = Clock(START)
        with open_engine(project, environ={**env, **SIGNED}, clock=clock) as engine:
            (delivery_id,) = enqueue(engine)
            (first,) = engine.deliveries.dispatch_due()
            assert (first.state, first.attempts, first.last_error) == ("pending", 1, "HTTP 503")
            assert 10 <= moment(first.next_attempt_at) - START <= 12  # 10 s, jitter ≤ 1/5
            clock.now = moment(first.next_attempt_at)
            (second,) = engine.deliveries.dispatch_due()
            assert moment(second.next_attempt_at) - clock.now == 15  # 20 s, capped at 15
            clock.now = moment(second.next_attempt_at)
            (third,) = engine.deliveries.dispatch_due()
            assert (third.state, third.attempts) == ("dead", 3)
            assert third.to_dict()["next_attempt_at"] is None
            clock.advance(3600)
            assert engine.deliveries.dispatch_due() == []  # dead: nobody tries it again
            assert (counted(engine, "failed"), counted(engine, "dead")) == (2.0, 1.0)
            dead = engine.metrics.registry.get_sample_value(
                "keel_deliveries_waiting", {"state": "dead"}
            )
            assert dead == 1.0
            # Sending it again is a person's recorded act, on a flow they may change.
            with pytest.raises(PermissionDeniedError, match="may not change autonomy"):
                engine.deliveries.retry(delivery_id, VIEWER, "again")
            with pytest.raises(NotFoundError):
                engine.deliveries.retry(delivery_id, ELSEWHERE, "again")
            with pytest.raises(InputError, match="needs a reason"):
                engine.deliveries.retry(delivery_id, OWNER, " ")
            receiver.status = 200
            retried = engine.deliveries.retry(delivery_id, OWNER, "Receiver fixed")
            assert (retried.state, retried.attempts) == ("delivered", 1)
            with pytest.raises(ConflictError, match="is delivered, not dead"):
                engine.deliveries.retry(delivery_id, OWNER, "again")
            entry = next(e for e in engine.entries(100) if e.kind == "delivery_retried")
            assert entry.body["delivery"] == delivery_id and entry.body["by"] == OWNER.id
            assert (entry.body["attempts"], entry.body["last_error"]) == (3, "HTTP 503")
            assert engine.verify().ok
    finally:
        receiver.close()
    assert len(receiver.got) == 4
    assert {h["X-Keel-Delivery"] for h, _ in receiver.got} == {delivery_id}


def test_deliveries_from_the_command_line(project: Path) -> None:
    port = free_port()  # down
    # The command line's environment lacks the secret: a try says so, and fails.
    monitoring(project, notify_only(f"http://127.0.0.1:{port}/hook", "KEEL_NOT_SET_IN_TESTS"))
    with open_engine(project, environ=SIGNED) as engine:
        (delivery_id,) = enqueue(engine)
    at = ["-p", str(project)]
    code, out, _ = keel("deliveries", "list", "--state", "pending", *at)
    assert code == 0 and delivery_id in out and "notify[0]" in out and "tries 0" in out
    code, out, _ = keel("deliveries", "dispatch", *at)
    assert code == 1 and delivery_id in out and "KEEL_NOT_SET_IN_TESTS is not set" in out
    code, out, _ = keel("deliveries", "show", delivery_id, *at)
    shown = json.loads(out)
    assert (shown["attempts"], shown["payload"]["kind"]) == (1, "alarm_raised")
    code, _, err = keel("deliveries", "dispatch", *at)
    assert code == 0 and "no delivery was due" in err  # the backoff holds
    code, _, err = keel("deliveries", "retry", delivery_id, "-r", "now", *at)
    assert code == 2 and "is pending, not dead" in err
    code, _, err = keel("deliveries", "list", "--state", "lost", *at)
    assert code == 2 and "unknown delivery state 'lost'" in err
    code, _, err = keel("deliveries", "show", "dlv_missing", *at)
    assert code == 2 and "no delivery with id 'dlv_missing'" in err


def test_delivery_settings_are_checked(project: Path) -> None:
    settings = load_settings(project, {})
    assert settings.deliveries.max_attempts == 12 and settings.deliveries.lease_s == 120
    path = project / "keel.yaml"
    text = path.read_text()
    for bad, message in [
        ("deliveries: {backoff_s: 60, max_backoff_s: 30}", "must be at least deliveries.backoff_s"),
        ("deliveries: {max_attempts: 0}", "deliveries.max_attempts must be a positive integer"),
        ("deliveries: {tries: 3}", "unknown setting deliveries.tries"),
    ]:
        path.write_text(text + bad + "\n")
        with pytest.raises(ConfigError, match=message):
            load_settings(project, {})


def test_a_retraining_command_gets_the_request_with_its_delivery_id(project: Path) -> None:
    script = (
        "import os, sys, pathlib; "
        "pathlib.Path(os.environ['KEEL_DELIVERY'] + '.json').write_bytes(sys.stdin.buffer.read())"
    )
    argv = json.dumps([sys.executable, "-c", script])
    monitoring(project, f"monitoring:\n  retrain:\n    command: {argv}\n")
    request = Outgoing(RETRAINING_REQUEST, "retrain.command", "alm_test", {"kind": "retrain"})
    with open_engine(project, environ={}) as engine:
        (delivery_id,) = engine.writer.transact(
            lambda conn, gate: enqueue_in(conn, gate.now, FLOW, [request])
        )
        (done,) = engine.deliveries.dispatch_due()
        assert (done.state, done.attempts) == ("delivered", 1)
    got = json.loads((project / f"{delivery_id}.json").read_text())
    assert (got["delivery"], got["kind"]) == (delivery_id, "retrain")


def test_a_receiver_that_does_not_speak_http_is_a_failed_try(
    project: Path, caplog: pytest.LogCaptureFixture
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def answer_garbage() -> None:
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)
            conn.sendall(b"NOT HTTP AT ALL\r\n\r\n")

    thread = threading.Thread(target=answer_garbage, daemon=True)
    thread.start()
    try:
        monitoring(project, notify_only(f"http://127.0.0.1:{port}/hook"))
        with open_engine(project, environ=SIGNED) as engine:
            enqueue(engine)
            (tried,) = engine.deliveries.dispatch_due()
        assert (tried.state, tried.attempts, tried.last_error) == ("pending", 1, "BadStatusLine")
        assert "failed unexpectedly" not in caplog.text  # an answered failure, not a fault
    finally:
        thread.join(timeout=10)
        listener.close()


def test_the_webhook_is_looked_up_when_sent(project: Path) -> None:
    receiver = Receiver()
    try:
        flow_file = project / "flows" / "credit_limit.yaml"
        original = flow_file.read_text()
        monitoring(project, notify_only("http://127.0.0.1:9/old"))
        with open_engine(project, environ=SIGNED) as engine:
            (delivery_id,) = enqueue(engine)
        # The flow file changes before the notice goes out: the URL it names now is used …
        flow_file.write_text(original)
        monitoring(project, notify_only(receiver.url))
        with open_engine(project, environ=SIGNED) as engine:
            assert [d.state for d in engine.deliveries.dispatch_due()] == ["delivered"]
        # … and a webhook gone from the file is a failed try that says so.
        flow_file.write_text(original)
        with open_engine(project, environ=SIGNED) as engine:
            (gone,) = enqueue(engine)
            (tried,) = engine.deliveries.dispatch_due()
            assert tried.last_error == "the flow file has no webhook named notify[0] now"
    finally:
        receiver.close()
    assert [h["X-Keel-Delivery"] for h, _ in receiver.got] == [delivery_id]
    assert gone != delivery_id
