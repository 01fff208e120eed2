"""Bad input over HTTP gets a clear 4xx, never a 5xx, and changes nothing — on SQLite and
PostgreSQL: numbers too large or not finite, NUL and other control characters, bidi
overrides, in bodies, paths and queries."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from keel import Engine
from keel.api import create_app
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog, AuditTrail
from keel.security.roles import Grant, Role, local_operator
from keel.store.schema import metadata
from keel.text import escape, free_text, identifier
from tests.conftest import LOW_RISK, Clock
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
HUGE = int("9" * 400)
UNSAFE = ["a\x00b", "bell\x07", "esc\x1b[31mred", "\u202eevil", "zero\u200bwidth"]


@pytest.fixture
def admin(engine: Engine) -> dict[str, str]:
    _, text = create_key(engine.db, "bad", "tests", [Grant(Role.ADMIN)], "t", time.time())
    return {"Authorization": f"Bearer {text}"}


def _post(client: TestClient, url: str, body: object, headers: dict[str, str]) -> object:
    """POST ``body`` as JSON with NaN and Infinity written as Python's json writes them (the
    literals a careless client sends; httpx refuses to)."""
    text = json.dumps(body)  # allow_nan: NaN, Infinity
    return client.post(url, content=text, headers={**headers, "Content-Type": "application/json"})


def _state(engine: Engine) -> tuple[int, int, dict[str, int]]:
    """The chain's length, the flow's decisions, and the rows of every table but the audit
    trail (which records refused requests too); the store must verify deeply."""
    report = engine.verify(deep=True)
    assert report.ok, report.to_dict()
    with engine.db.read() as conn:
        rows = {
            table.name: conn.execute(select(func.count()).select_from(table)).scalar_one()
            for table in metadata.sorted_tables
            if table.name != "audit_events"
        }
    return report.entries, len(engine.list_decisions(FLOW)), rows


def _refused(response: object, field: str) -> None:
    status = response.status_code  # type: ignore[attr-defined]
    body = response.json()  # type: ignore[attr-defined]
    assert status == 422, (status, body)
    assert body["code"] == "invalid_input" and field in body["message"], body


def test_bad_numbers_and_characters_in_a_case_are_refused(
    engine: Engine, client: TestClient, admin: dict[str, str]
) -> None:
    before = _state(engine)
    url = f"/v1/flows/{FLOW}/decisions"
    for inputs, field in (
        ({**LOW_RISK, "annual_income": HUGE}, "annual_income"),
        ({**LOW_RISK, "delinquencies_2y": HUGE}, "delinquencies_2y"),
        ({**LOW_RISK, "annual_income": -HUGE}, "annual_income"),
        ({**LOW_RISK, "region": "north\x1b[2J"}, "region"),
    ):
        _refused(client.post(url, json={"inputs": inputs}, headers=admin), field)
    for subject in UNSAFE:
        body = {"inputs": LOW_RISK, "subject_id": subject}
        _refused(client.post(url, json=body, headers=admin), "subject_id")
        batch = {"cases": [{"inputs": LOW_RISK}, body]}
        _refused(client.post(f"{url}/batch", json=batch, headers=admin), "subject_id")
    assert _state(engine) == before  # nothing recorded, the chain intact
    assert client.post(url, json={"inputs": LOW_RISK, "subject_id": "cust 42"}, headers=admin)


def test_reviews_refuse_values_that_are_not_finite_and_reasons_with_control_characters(
    engine: Engine, client: TestClient, admin: dict[str, str]
) -> None:
    pending = engine.decide(FLOW, SHORT_HISTORY).id
    final = engine.decide(FLOW, LOW_RISK).id
    before = _state(engine)
    for value in (float("nan"), float("inf"), 1e300):
        change = {"resolution": "change", "reason": "r", "action": "approve", "value": value}
        _refused(_post(client, f"/v1/reviews/{pending}/resolution", change, admin), "value")
        _refused(_post(client, f"/v1/decisions/{final}/override", change, admin), "value")
    for reason in UNSAFE:
        verdict = {"resolution": "reject", "reason": reason}
        _refused(client.post(f"/v1/reviews/{pending}/resolution", json=verdict, headers=admin),
                 "reason")  # fmt: skip
    assert _state(engine) == before
    assert engine.reviews.get(pending, engine.operator).state == "open"


def test_paths_queries_outcomes_and_what_if_refuse_bad_input(
    engine: Engine, client: TestClient, admin: dict[str, str]
) -> None:
    decided = engine.decide(FLOW, LOW_RISK).id
    before = _state(engine)
    for query in ("subject_id=a%00b", "action=ap%1bprove", "status=%E2%80%AEfinal"):
        _refused(client.get(f"/v1/decisions?{query}", headers=admin), "query.")
    _refused(client.get("/v1/decisions/dec%00x", headers=admin), "path.decision_id")
    _refused(client.get("/v1/reviews/dec%07x", headers=admin), "path.decision_id")
    report = {"label": "repa\x00id"}
    response = client.put(f"/v1/decisions/{decided}/outcome", json=report, headers=admin)
    _refused(response, "label")
    batch = {"outcomes": [{"decision_id": "dec\x00", "label": "repaid"}]}
    _refused(client.post("/v1/outcomes", json=batch, headers=admin), "decision_id")
    for params in ({"decline_risk": float("nan")}, {"decline_risk": float("inf")},
                   {"decline_risk": 10**400}):  # fmt: skip
        response = _post(client, f"/v1/decisions/{decided}/what-if", {"params": params}, admin)
        _refused(response, "decline_risk")
    response = client.post(
        f"/v1/decisions/{decided}/what-if",
        json={"set": {"annual_income": HUGE}},
        headers=admin,
    )
    _refused(response, "annual_income")
    assert _state(engine) == before


def test_identifier_and_text_rules() -> None:
    assert identifier("cust-42 Zoë", "subject_id") == "cust-42 Zoë"
    assert free_text("line one\n\tline two", "reason") == "line one\n\tline two"
    for bad in UNSAFE:
        with pytest.raises(Exception, match="may not hold"):
            identifier(bad, "subject_id")
    with pytest.raises(Exception, match="U\\+202E RIGHT-TO-LEFT OVERRIDE"):
        free_text("\u202e", "reason")
    with pytest.raises(Exception, match="identifier may not hold"):
        identifier("a\nb", "subject_id")
    assert escape("ok\u202eno\x1b") == "ok\\u202eno\\u001b"
    assert escape("Zoë\n") == "Zoë\n"


def test_an_oversize_body_sent_without_a_length_gets_413(
    engine: Engine, client: TestClient, admin: dict[str, str]
) -> None:
    before = _state(engine)

    def chunks() -> Iterator[bytes]:  # 2 MiB in 64 KiB chunks, no Content-Length
        yield b'{"inputs": {"region": "'
        for _ in range(32):
            yield b"x" * 65536
        yield b'"}}'

    response = client.post(f"/v1/flows/{FLOW}/decisions", content=chunks(), headers=admin)
    assert response.status_code == 413 and response.json()["code"] == "request_too_large"
    small = iter([json.dumps({"inputs": LOW_RISK}).encode()])
    typed = {**admin, "Content-Type": "application/json"}
    response = client.post(f"/v1/flows/{FLOW}/decisions", content=small, headers=typed)
    assert response.status_code == 200, response.json()  # a small chunked body still passes
    assert _state(engine)[0] == before[0] + 1


def test_deeply_nested_bodies_are_refused(
    engine: Engine, client: TestClient, admin: dict[str, str]
) -> None:
    before = _state(engine)
    url = f"/v1/flows/{FLOW}/decisions"
    typed = {**admin, "Content-Type": "application/json"}
    for depth in (64, 5_000, 200_000):  # past the parser's recursion limit too
        nested = "[" * depth + "]" * depth
        for body in (nested, '{"inputs": {"region": ' + nested + "}}"):
            response = client.post(url, content=body.encode(), headers=typed)
            assert 400 <= response.status_code < 500, (depth, response.status_code)
            assert response.json()["code"] in (
                "invalid_request",
                "invalid_input",
                "request_too_large",
            )
    assert _state(engine) == before


def test_authentication_comes_before_the_body_and_the_route(
    engine: Engine, client: TestClient, admin: dict[str, str]
) -> None:
    malformed = {"Content-Type": "application/json"}
    url = f"/v1/flows/{FLOW}/decisions"
    for headers in ({}, {"Authorization": "Bearer keel_nope_nope"}):
        response = client.post(url, content=b"{not json", headers={**malformed, **headers})
        assert response.status_code == 401 and response.json()["code"] == "unauthenticated"
        assert client.get("/v1/no-such-route", headers=headers).status_code == 401
    response = client.post(url, content=b"{not json", headers={**malformed, **admin})
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    client.app.state.keel.audit.flush()  # type: ignore[attr-defined]
    events = [json.loads(line) for line in AuditTrail(engine.db).export(local_operator())]
    caller = "key:" + admin["Authorization"].split("_")[1]
    refused = [e for e in events if e["kind"] == "request" and e["outcome"] == "error"]
    assert [e["principal"] for e in refused] == [caller]  # the malformed request is named
    assert client.get("/openapi.json").status_code == 401  # only health checks are anonymous
    assert client.get("/openapi.json", headers=admin).status_code == 200
    assert client.get("/healthz").status_code == 200


def test_failed_logins_are_limited_and_their_audit_rows_bounded(project: Path) -> None:
    from keel import open_engine
    from keel.api.auth import FAILED_BURST, FAILED_PER_S, FAILURE_WINDOW_S

    clock = Clock(time.time())
    with open_engine(project, environ={}, clock=clock) as engine:
        audit = AuditLog(engine.db, clock=clock)
        _, good = create_key(engine.db, "ok", "t", [Grant(Role.VIEWER)], "t", clock())
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            bad = {"Authorization": "Bearer keel_deadbeef_" + "A" * 43}
            codes = [client.get("/v1/flows", headers=bad).status_code for _ in range(60)]
            assert codes[:FAILED_BURST] == [401] * FAILED_BURST
            assert set(codes[FAILED_BURST:]) == {429}  # refused before the key is read
            limited = client.get("/v1/flows", headers=bad)
            assert int(limited.headers["retry-after"]) >= 1
            clock.advance(FAILURE_WINDOW_S + 2 / FAILED_PER_S)  # the buckets refill
            ok = client.get("/v1/flows", headers={"Authorization": f"Bearer {good}"})
            assert ok.status_code == 200
            audit.flush()
            rows = [
                json.loads(line)
                for line in AuditTrail(engine.db).export(local_operator())
                if '"authenticate"' in line
            ]
            assert 1 <= len(rows) <= 4  # one per source and window, not one per attempt
            failures = engine.metrics.auth_failures
            counted = failures.labels("no")._value.get() + failures.labels("yes")._value.get()
            assert counted == 61  # every attempt counted, none silently dropped
        audit.close()
