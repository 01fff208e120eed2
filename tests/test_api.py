"""The HTTP API on a real engine and database, through Starlette's httpx test client."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel import Engine, open_engine
from keel.api import create_app
from keel.api.auth import CACHE_S
from keel.api.errors import STATUS
from keel.errors import KeelError
from keel.monitor.alarms import settle_in
from keel.monitor.outbox import ALARM_NOTICE, Outgoing, enqueue_in
from keel.review.outcomes import OutcomeReport
from keel.security.apikeys import Keys, create_key
from keel.security.audit import AuditLog
from keel.security.roles import KNOWLEDGE_ROLES, Grant, Principal, Role, local_operator
from tests.conftest import LOW_RISK, Clock, person
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"


@pytest.fixture
def clock() -> Clock:
    return Clock(time.time())


@pytest.fixture
def engine(project: Path, env: dict[str, str], clock: Clock) -> Iterator[Engine]:
    """The project on a clock the tests move: caches expire when the test says so."""
    with open_engine(project, environ=env, clock=clock) as eng:
        yield eng


@pytest.fixture
def audit(engine: Engine) -> Iterator[AuditLog]:
    log = AuditLog(engine.db)
    yield log
    log.close()


@pytest.fixture
def client(engine: Engine, audit: AuditLog) -> Iterator[TestClient]:
    with TestClient(create_app(engine, audit), raise_server_exceptions=False) as c:
        yield c


def key(
    engine: Engine, *grants: Grant, expires_in: float | None = None, owner: str = "tests"
) -> dict[str, str]:
    """A key with ``grants``; keys with the same ``owner`` are one person (four eyes)."""
    now = engine.clock()
    _, text = create_key(
        engine.db,
        "test",
        owner,
        list(grants),
        "tests",
        now,
        now + expires_in if expires_in else None,
    )
    return {"Authorization": f"Bearer {text}"}


def admin(engine: Engine) -> dict[str, str]:
    return key(engine, Grant(Role.ADMIN))


def test_decide_read_explain_whatif(engine: Engine, client: TestClient) -> None:
    headers = key(engine, Grant(Role.OWNER, FLOW))
    response = client.post(
        f"/v1/flows/{FLOW}/decisions",
        json={"inputs": LOW_RISK, "subject_id": "c-1"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    decision = response.json()
    assert decision["action"] == "approve" and decision["subject_id"] == "c-1"
    got = client.get(f"/v1/decisions/{decision['id']}", headers=headers).json()
    assert got["hash"] == decision["hash"] and got["seq"] == decision["seq"]
    why = client.get(f"/v1/decisions/{decision['id']}/explanation", headers=headers).json()
    assert why["why"][0].startswith("Decision: approve")
    whatif = client.post(
        f"/v1/decisions/{decision['id']}/what-if",
        json={"set": {"debt_to_income": 0.7}},
        headers=headers,
    ).json()
    assert whatif["after"]["action"] == "decline"
    listed = client.get(
        "/v1/decisions", params={"flow": FLOW, "subject_id": "c-1"}, headers=headers
    ).json()
    assert [d["id"] for d in listed["decisions"]] == [decision["id"]]


def test_batch_and_paging(engine: Engine, client: TestClient) -> None:
    headers = key(engine, Grant(Role.OWNER, FLOW))
    cases = [{"inputs": {**LOW_RISK, "requested_limit": 1000.0 + i}} for i in range(5)]
    response = client.post(
        f"/v1/flows/{FLOW}/decisions/batch", json={"cases": cases}, headers=headers
    )
    assert response.status_code == 200, response.text
    seqs = [d["seq"] for d in response.json()["decisions"]]
    page = client.get("/v1/decisions", params={"limit": 3}, headers=headers).json()
    assert [d["seq"] for d in page["decisions"]] == sorted(seqs, reverse=True)[:3]
    rest = client.get(
        "/v1/decisions", params={"limit": 3, "before_seq": page["next_before_seq"]}, headers=headers
    ).json()
    assert [d["seq"] for d in rest["decisions"]] == sorted(seqs, reverse=True)[3:]
    assert rest["next_before_seq"] is None


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"inputs": {**LOW_RISK, "annual_income": "lots"}}, "invalid_input", "annual_income"),
        ({"inputs": LOW_RISK, "colour": "blue"}, "invalid_request", "colour"),
        ({"input": LOW_RISK}, "invalid_request", "inputs"),
        ({"inputs": LOW_RISK, "subject_id": ""}, "invalid_request", "subject_id"),
    ],
)
def test_bad_requests_name_the_field_and_record_nothing(
    engine: Engine, client: TestClient, body: dict[str, Any], code: str, field: str
) -> None:
    response = client.post(f"/v1/flows/{FLOW}/decisions", json=body, headers=admin(engine))
    assert response.status_code == 422
    error = response.json()
    assert error["code"] == code and field in error["message"]
    assert engine.list_decisions(FLOW) == []


def test_malformed_json_and_oversized_body(engine: Engine, client: TestClient) -> None:
    headers = {**admin(engine), "content-type": "application/json"}
    response = client.post(f"/v1/flows/{FLOW}/decisions", content=b"{not json", headers=headers)
    assert response.status_code == 422 and response.json()["code"] == "invalid_request"
    big = b'{"inputs": {"x": "' + b"a" * 1_100_000 + b'"}}'
    response = client.post(f"/v1/flows/{FLOW}/decisions", content=big, headers=headers)
    assert response.status_code == 413 and response.json()["code"] == "request_too_large"
    assert engine.list_decisions(FLOW) == []


def test_time_filters(engine: Engine, client: TestClient) -> None:
    headers = admin(engine)
    decision = engine.decide(FLOW, LOW_RISK)
    listed = client.get(
        "/v1/decisions", params={"since": "2000-01-01T00:00:00Z"}, headers=headers
    ).json()
    assert [d["id"] for d in listed["decisions"]] == [decision.id]
    listed = client.get("/v1/decisions", params={"until": "2000-01-01"}, headers=headers).json()
    assert listed["decisions"] == []
    response = client.get("/v1/decisions", params={"since": "last tuesday"}, headers=headers)
    assert (
        response.status_code == 422
        and "since must be an ISO 8601 time" in response.json()["message"]
    )


def test_out_of_range_paging_is_a_clear_error(engine: Engine, client: TestClient) -> None:
    # Found by schemathesis: a sequence number past the column's range reached the database
    # (64 bits on SQLite, 32 on PostgreSQL), a 500 on PostgreSQL.
    for too_far in (2**31, 2**63):
        response = client.get(
            "/v1/decisions", params={"before_seq": too_far}, headers=admin(engine)
        )
        assert response.status_code == 422 and "before_seq" in response.json()["message"]
    last = client.get("/v1/decisions", params={"before_seq": 2**31 - 1}, headers=admin(engine))
    assert last.status_code == 200


def test_unknown_flow_and_route(engine: Engine, client: TestClient) -> None:
    headers = admin(engine)
    response = client.post("/v1/flows/pricing/decisions", json={"inputs": {}}, headers=headers)
    assert response.status_code == 404 and "unknown flow 'pricing'" in response.json()["message"]
    response = client.get("/v1/nothing-here", headers=headers)
    assert response.status_code == 404 and response.json()["code"] == "not_found"


@pytest.mark.parametrize(
    "header",
    [
        None,
        "Bearer",
        "Basic dXNlcjpwYXNz",
        "Bearer keel_00000000_" + "A" * 43,
        "Bearer not-a-key",
    ],
)
def test_no_anonymous_access(client: TestClient, engine: Engine, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    for method, path in (("get", "/v1/flows"), ("get", "/v1/decisions"), ("get", "/metrics")):
        response = client.request(method, path, headers=headers)
        assert response.status_code == 401, path
        assert response.json()["code"] == "unauthenticated"
        assert response.headers["www-authenticate"] == "Bearer"
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json() == {"status": "ready"}


def test_revoked_and_expired_keys_are_refused(
    engine: Engine, client: TestClient, clock: Clock, audit: AuditLog
) -> None:
    headers = key(engine, Grant(Role.VIEWER))
    assert client.get("/v1/flows", headers=headers).status_code == 200
    prefix = headers["Authorization"].split("_")[1]
    Keys(engine.db, audit, clock).revoke(local_operator(), prefix)
    assert client.get("/v1/flows", headers=headers).status_code == 200  # still remembered
    clock.advance(CACHE_S)  # verified keys are remembered for at most this long
    response = client.get("/v1/flows", headers=headers)
    assert response.status_code == 401 and "revoked" in response.json()["message"]
    short = key(engine, Grant(Role.VIEWER), expires_in=0.5)
    assert client.get("/v1/flows", headers=short).status_code == 200
    clock.advance(0.6)  # never remembered past its own expiry
    response = client.get("/v1/flows", headers=short)
    assert response.status_code == 401 and "expired" in response.json()["message"]


def test_role_changes_reach_a_running_server(
    engine: Engine, client: TestClient, clock: Clock, audit: AuditLog
) -> None:
    headers = key(engine, Grant(Role.VIEWER, "credit_limit"))
    prefix = headers["Authorization"].split("_")[1]
    assert client.get("/v1/ledger/verification", headers=headers).status_code == 403
    keys = Keys(engine.db, audit, clock)
    keys.grant(local_operator(), prefix, [Grant(Role.AUDITOR)])
    clock.advance(CACHE_S)
    assert client.get("/v1/ledger/verification", headers=headers).status_code == 200
    keys.ungrant(local_operator(), prefix, [Grant(Role.AUDITOR)])
    clock.advance(CACHE_S)
    assert client.get("/v1/ledger/verification", headers=headers).status_code == 403
    assert client.get("/v1/flows", headers=headers).status_code == 200  # viewer still


def test_forged_secret_with_a_real_prefix_is_refused(engine: Engine, client: TestClient) -> None:
    real = key(engine, Grant(Role.ADMIN))["Authorization"]
    forged = real[:-5] + ("AAAAA" if not real.endswith("AAAAA") else "BBBBB")
    assert client.get("/v1/flows", headers={"Authorization": forged}).status_code == 401


# ---- the authorisation matrix: every endpoint against every role -------------------------

ALL = set(Role) - KNOWLEDGE_ROLES  # knowledge roles reach no flow endpoint
REVIEWERS = {Role.REVIEWER, Role.OWNER, Role.ADMIN}
REPORTERS = {Role.DECIDER, Role.OWNER, Role.ADMIN}
PROPOSERS = {Role.POLICY_AUTHOR, Role.OWNER, Role.ADMIN}
ACTIVATORS = {Role.APPROVER, Role.OWNER, Role.ADMIN}
READERS = {
    Role.VIEWER,
    Role.REVIEWER,
    Role.POLICY_AUTHOR,
    Role.APPROVER,
    Role.OWNER,
    Role.AUDITOR,
    Role.ADMIN,
}
# endpoint → (roles allowed with a grant on the flow, roles allowed only with a global grant)
MATRIX: dict[str, tuple[set[Role], set[Role]]] = {
    "decide": ({Role.DECIDER, Role.OWNER, Role.ADMIN}, set()),
    "batch": ({Role.DECIDER, Role.OWNER, Role.ADMIN}, set()),
    "list_flow": (READERS, set()),
    "get": (READERS, set()),
    "explain": (READERS, set()),
    "notice": (READERS, set()),
    "what_if": ({Role.REVIEWER, Role.OWNER, Role.AUDITOR, Role.ADMIN}, set()),
    "get_flow": (ALL, set()),
    "verify": (set(), {Role.AUDITOR, Role.ADMIN}),
    "checkpoint": (set(), {Role.AUDITOR, Role.ADMIN}),
    "metrics": (set(), {Role.AUDITOR, Role.ADMIN}),
    "list_reviews": (REVIEWERS, set()),
    "get_review": (REVIEWERS, set()),
    "claim": (REVIEWERS, set()),
    "resolve": (REVIEWERS, set()),
    "override": (REVIEWERS, set()),
    "report_outcome": (REPORTERS, set()),
    "get_outcome": (READERS, set()),
    "report_outcomes": (REPORTERS, set()),
    "propose_policy": (PROPOSERS, set()),
    "list_policy_changes": (ALL, set()),
    "get_policy_change": (ALL, set()),
    "diff_policy_change": (ALL, set()),
    "approve_policy_change": ({Role.APPROVER, Role.ADMIN}, set()),
    "activate_policy_change": (ACTIVATORS, set()),
    "edit_policy_change": (PROPOSERS, set()),
    "policy_history": (ALL, set()),
    "active_policy": (ALL, set()),
    "rollback_policy": (ACTIVATORS, set()),
    "replay_policy": ({Role.POLICY_AUTHOR, Role.APPROVER, Role.OWNER, Role.ADMIN}, set()),
    "trust_metrics": (READERS, set()),
    "fairness_figures": (READERS, set()),
    "get_autonomy": (ALL, set()),
    "change_autonomy": (ACTIVATORS, set()),
    "start_rollout": (ACTIVATORS, set()),
    "list_rollouts": (ALL, set()),
    "stop_rollout": (ACTIVATORS, set()),
    "run_monitor": (ACTIVATORS, set()),
    "list_monitor_runs": (ALL, set()),
    "list_alarms": (ALL, set()),
    "get_alarm": (ALL, set()),
    "resolve_alarm": (ACTIVATORS, set()),
    "get_hold": (ALL, set()),
    "lift_hold": ({Role.APPROVER, Role.ADMIN}, set()),
    "stop_flow": (ACTIVATORS, set()),
    "list_deliveries": (ALL, set()),
    "get_delivery": (ALL, set()),
    "retry_delivery": (ACTIVATORS, set()),
    "list_models": (READERS, set()),
    "get_model": (READERS, set()),
    "get_model_card": (READERS, set()),
}
# Change management depends on the change's state (a principal may not approve what it
# wrote, nor activate what nobody approved): allowed there means not refused for identity.
STATEFUL = {
    "propose_policy",
    "approve_policy_change",
    "activate_policy_change",
    "edit_policy_change",
    "rollback_policy",
    "change_autonomy",
    "start_rollout",
    "stop_rollout",
    "resolve_alarm",
    "lift_hold",
    "stop_flow",
    "retry_delivery",  # 409: the delivery is pending, not dead
    "notice",  # 409: the decision is not adverse (tests/test_notices.py renders them)
}
CHANGE_ROUTES = {
    "get_policy_change",
    "diff_policy_change",
    "approve_policy_change",
    "activate_policy_change",
    "edit_policy_change",
}
# Reviews and decisions a caller may not act on do not exist for it (404), like unreadable
# decisions; everything else refused is 403.
HIDDEN_UNLESS_ALLOWED = {"get_review", "claim", "resolve", "override", "report_outcome"}
HIDDEN_UNLESS_ALLOWED |= {"get_model", "get_model_card"}  # a version used on unreadable flows
# An alarm or a delivery on an unreadable flow is unknown.
ALARM_ROUTES = {"get_alarm", "resolve_alarm", "get_delivery", "retry_delivery"}


def raise_alarm(engine: Engine) -> str:
    """A firing drift alarm on the flow, as a monitor run would leave it."""
    spec = engine.runtime(FLOW).flow.monitoring
    run = {"id": "mon_matrix", "verdicts": {"drift": "breach"}}
    figures = {"drift": {"drifted": ["input.region"], "limit": 1}}
    notices, _ = engine.writer.transact(
        lambda conn, gate: settle_in(conn, gate, FLOW, spec, run, figures)
    )
    return str(notices[0].alarm.id)


def enqueue_delivery(engine: Engine, alarm_id: str) -> str:
    """A pending alarm notice in the outbox, as a monitor run leaves one."""
    notice = Outgoing(ALARM_NOTICE, "notify[0]", alarm_id, {"kind": "alarm_raised"})
    ids = engine.writer.transact(lambda conn, gate: enqueue_in(conn, gate.now, FLOW, [notice]))
    return str(ids[0])


def call(client: TestClient, endpoint: str, ids: dict[str, str], headers: dict[str, str]) -> int:
    decision_id, pending_id, change_id = ids["decision"], ids["pending"], ids["change"]
    body = {"inputs": LOW_RISK}
    proposal = {"document": ids["document"], "reason": "matrix"}
    changes = f"/v1/policy-changes/{change_id}"
    verdict = {"resolution": "reject", "reason": "matrix"}
    resend = {"decision_id": decision_id, "label": "repaid"}
    requests = {
        "list_reviews": ("get", f"/v1/reviews?flow={FLOW}", None),
        "get_review": ("get", f"/v1/reviews/{pending_id}", None),
        "claim": ("post", f"/v1/reviews/{pending_id}/claim", None),
        "resolve": ("post", f"/v1/reviews/{pending_id}/resolution", verdict),
        "override": ("post", f"/v1/decisions/{decision_id}/override", verdict),
        "decide": ("post", f"/v1/flows/{FLOW}/decisions", body),
        "batch": ("post", f"/v1/flows/{FLOW}/decisions/batch", {"cases": [body]}),
        "list_flow": ("get", f"/v1/decisions?flow={FLOW}", None),
        "get": ("get", f"/v1/decisions/{decision_id}", None),
        "explain": ("get", f"/v1/decisions/{decision_id}/explanation", None),
        "notice": ("get", f"/v1/decisions/{decision_id}/notice", None),
        "what_if": ("post", f"/v1/decisions/{decision_id}/what-if", {"set": {}}),
        "get_flow": ("get", f"/v1/flows/{FLOW}", None),
        "verify": ("get", "/v1/ledger/verification", None),
        "checkpoint": ("post", "/v1/ledger/checkpoints", None),
        "metrics": ("get", "/metrics", None),
        "report_outcome": ("put", f"/v1/decisions/{decision_id}/outcome", {"label": "repaid"}),
        "get_outcome": ("get", f"/v1/decisions/{decision_id}/outcome", None),
        "report_outcomes": ("post", "/v1/outcomes", {"outcomes": [resend]}),
        "propose_policy": ("post", f"/v1/flows/{FLOW}/policy/changes", proposal),
        "list_policy_changes": ("get", f"/v1/flows/{FLOW}/policy/changes", None),
        "get_policy_change": ("get", changes, None),
        "diff_policy_change": ("get", f"{changes}/diff", None),
        "approve_policy_change": ("post", f"{changes}/approvals", {"reason": "matrix"}),
        "activate_policy_change": ("post", f"{changes}/activation", {}),
        "edit_policy_change": ("put", changes, {**proposal, "document": ids["edited"]}),
        "policy_history": ("get", f"/v1/flows/{FLOW}/policy/history", None),
        "active_policy": ("get", f"/v1/flows/{FLOW}/policy/active", None),
        "rollback_policy": (
            "post",
            f"/v1/flows/{FLOW}/policy/rollback",
            {"version": ids["first"], "reason": "matrix"},
        ),
        "get_autonomy": ("get", f"/v1/flows/{FLOW}/autonomy", None),
        "run_monitor": ("post", f"/v1/flows/{FLOW}/monitor-runs", {}),
        "list_monitor_runs": ("get", f"/v1/flows/{FLOW}/monitor-runs", None),
        "list_alarms": ("get", f"/v1/flows/{FLOW}/alarms?state=firing", None),
        "get_alarm": ("get", f"/v1/alarms/{ids['alarm']}", None),
        "resolve_alarm": ("post", f"/v1/alarms/{ids['alarm']}/resolution", {"reason": "m"}),
        "get_hold": ("get", f"/v1/flows/{FLOW}/hold", None),
        "lift_hold": ("post", f"/v1/flows/{FLOW}/hold/lift", {"reason": "matrix"}),
        "stop_flow": ("post", f"/v1/flows/{FLOW}/stop", {"reason": "matrix"}),
        "list_deliveries": ("get", f"/v1/deliveries?flow={FLOW}&state=pending", None),
        "get_delivery": ("get", f"/v1/deliveries/{ids['delivery']}", None),
        "retry_delivery": ("post", f"/v1/deliveries/{ids['delivery']}/retry", {"reason": "m"}),
        "list_models": ("get", f"/v1/models?flow={FLOW}", None),
        "get_model": ("get", f"/v1/models/{ids['model']}", None),
        "get_model_card": ("get", f"/v1/models/{ids['model']}/card?format=html", None),
        "start_rollout": (
            "post",
            f"/v1/flows/{FLOW}/rollouts",
            {"mode": "shadow", "candidate": change_id, "reason": "matrix"},
        ),
        "list_rollouts": ("get", f"/v1/flows/{FLOW}/rollouts", None),
        "stop_rollout": ("post", f"/v1/flows/{FLOW}/rollouts/stop", {"reason": "matrix"}),
        "change_autonomy": (
            "post",
            f"/v1/flows/{FLOW}/autonomy",
            {"level": "advisory", "reason": "matrix"},
        ),
        "trust_metrics": (
            "get",
            f"/v1/flows/{FLOW}/trust?since=2000-01-01&until=2100-01-01",
            None,
        ),
        "fairness_figures": (
            "get",
            f"/v1/flows/{FLOW}/fairness?since=2000-01-01&until=2100-01-01",
            None,
        ),
        "replay_policy": (
            "post",
            f"/v1/flows/{FLOW}/replays",
            {"candidate": ids["first"], "since": "2000-01-01", "until": "2100-01-01"},
        ),
    }
    method, path, json = requests[endpoint]
    return client.request(method, path, json=json, headers=headers).status_code


SINCE, UNTIL = "2000-01-01T00:00:00.000000Z", "2100-01-01T00:00:00.000000Z"


def call_python(engine: Engine, endpoint: str, ids: dict[str, str], who: Principal) -> int:
    """The same request made to the Python services directly, as the HTTP status its
    answer would have (services check the principal themselves: no route in between)."""
    decision_id, pending_id, change_id = ids["decision"], ids["pending"], ids["change"]
    resend = OutcomeReport(decision_id, "repaid")
    calls: dict[str, Callable[[], object]] = {
        "list_reviews": lambda: engine.reviews.queue(who, [FLOW]),
        "get_review": lambda: engine.reviews.get(pending_id, who),
        "claim": lambda: engine.reviews.claim(pending_id, who),
        "resolve": lambda: engine.reviews.resolve(pending_id, who, "reject", "matrix"),
        "override": lambda: engine.reviews.override(decision_id, who, "reject", "matrix"),
        "decide": lambda: engine.decider.decide(who, FLOW, LOW_RISK),
        "batch": lambda: engine.decider.decide_many(who, FLOW, [LOW_RISK]),
        "list_flow": lambda: engine.explanations.list_decisions(who, FLOW),
        "get": lambda: engine.explanations.decision(decision_id, who),
        "explain": lambda: engine.explanations.explain(decision_id, who),
        "notice": lambda: engine.notices.notice(decision_id, who),
        "what_if": lambda: engine.explanations.what_if(decision_id, who, {}),
        "get_flow": lambda: engine.flow(FLOW, who),
        "verify": lambda: engine.verify(by=who),
        "checkpoint": lambda: engine.checkpoint(by=who),
        "metrics": lambda: engine.metrics_text(who),
        "report_outcome": lambda: engine.outcomes.report(resend, who),
        "get_outcome": lambda: engine.outcomes.get(decision_id, who),
        "report_outcomes": lambda: engine.outcomes.report_many([resend], who, "api"),
        "propose_policy": lambda: engine.changes.propose(FLOW, ids["document"], who, "matrix"),
        "list_policy_changes": lambda: engine.changes.changes(FLOW, who),
        "get_policy_change": lambda: engine.changes.get(change_id, who),
        "diff_policy_change": lambda: engine.changes.change_diff(change_id, who),
        "approve_policy_change": lambda: engine.changes.approve(change_id, who, "matrix"),
        "activate_policy_change": lambda: engine.changes.activate(change_id, who),
        "edit_policy_change": lambda: engine.changes.edit(change_id, ids["edited"], who, "m"),
        "policy_history": lambda: engine.changes.history(FLOW, who),
        "active_policy": lambda: engine.changes.active_at(FLOW, who),
        "rollback_policy": lambda: engine.changes.rollback(FLOW, ids["first"], who, "matrix"),
        "get_autonomy": lambda: engine.autonomy.show(FLOW, who),
        "run_monitor": lambda: engine.monitoring.run(FLOW, who),
        "list_monitor_runs": lambda: engine.monitoring.runs(FLOW, who),
        "list_alarms": lambda: engine.monitoring.alarms(who, FLOW, "firing"),
        "get_alarm": lambda: engine.monitoring.alarm(ids["alarm"], who),
        "resolve_alarm": lambda: engine.monitoring.resolve(ids["alarm"], who, "m"),
        "get_hold": lambda: engine.holds.show(FLOW, who),
        "lift_hold": lambda: engine.holds.lift(FLOW, who, "matrix"),
        "stop_flow": lambda: engine.holds.stop(FLOW, who, "matrix"),
        "list_deliveries": lambda: engine.deliveries.find(who, "pending", FLOW),
        "get_delivery": lambda: engine.deliveries.show(ids["delivery"], who),
        "retry_delivery": lambda: engine.deliveries.retry(ids["delivery"], who, "m"),
        "list_models": lambda: engine.models.list_versions(who, FLOW),
        "get_model": lambda: engine.models.show(ids["model"], who),
        "get_model_card": lambda: engine.models.show(ids["model"], who),
        "start_rollout": lambda: engine.rollouts.start(FLOW, "shadow", change_id, who, "m"),
        "list_rollouts": lambda: engine.rollouts.recent(FLOW, who),
        "stop_rollout": lambda: engine.rollouts.stop(FLOW, who, "matrix"),
        "change_autonomy": lambda: engine.autonomy.request(FLOW, "advisory", who, "matrix"),
        "trust_metrics": lambda: engine.trust.metrics(who, FLOW, SINCE, UNTIL),
        "fairness_figures": lambda: engine.fairness.report(who, FLOW, SINCE, UNTIL),
        "replay_policy": lambda: engine.replay(FLOW, ids["first"], SINCE, UNTIL, by=who),
    }
    assert set(calls) == set(MATRIX)
    try:
        calls[endpoint]()
    except KeelError as error:
        return STATUS[error.code]
    return 200


@pytest.mark.parametrize("surface", ["http", "python"])
@pytest.mark.parametrize("scope", ["flow", "global", "other_flow"])
@pytest.mark.parametrize("role", list(Role))
def test_authorisation_matrix(
    engine: Engine, client: TestClient, role: Role, scope: str, surface: str
) -> None:
    """Every endpoint against every role and scope, over HTTP and straight through the
    Python services: both surfaces give the same answers, from the same table."""
    decision_id = engine.decide(FLOW, LOW_RISK).id
    pending_id = engine.decide(FLOW, SHORT_HISTORY).id
    engine.outcomes.report(
        OutcomeReport(decision_id, "repaid"), engine.operator
    )  # reports: resends
    text = (engine.settings.policies_dir / "credit_limit.yaml").read_text()
    document = text.replace("  starter_limit: 1000.0\n", "  starter_limit: 900.0\n")
    someone = person("key:someone", "Someone", "policy_author")
    ids = {
        "decision": decision_id,
        "pending": pending_id,
        "change": engine.changes.propose(FLOW, document, someone, "matrix").id,
        "document": document,
        "edited": text.replace("  starter_limit: 1000.0\n", "  starter_limit: 800.0\n"),
        "first": engine.runtime(FLOW).policy.version,
        "alarm": raise_alarm(engine),
        "model": engine.runtime(FLOW).models["default_risk"].version,
    }
    ids["delivery"] = enqueue_delivery(engine, ids["alarm"])
    # A knowledge role's scope is a collection: on a collection named like the flow it
    # reaches no flow endpoint.
    grant = Grant.scoped(
        role, None if scope == "global" else FLOW if scope == "flow" else "pricing"
    )
    headers = key(engine, grant)
    caller = Principal("key:matrix01", "Matrix", "Matrix", (grant,))
    for endpoint, (on_flow, global_only) in MATRIX.items():
        allowed = (scope == "flow" and role in on_flow) or (
            scope == "global" and role in on_flow | global_only
        )
        if surface == "http":
            status = call(client, endpoint, ids, headers)
        else:
            status = call_python(engine, endpoint, ids, caller)
        if allowed:
            ok = {200, 201, 409} if endpoint in STATEFUL else {200, 201}
            assert status in ok, (endpoint, role, scope, status)
        elif endpoint in CHANGE_ROUTES | ALARM_ROUTES and (
            scope == "other_flow" or role in KNOWLEDGE_ROLES
        ):
            assert status == 404, (endpoint, role, scope, status)  # its flow is unreadable
        else:
            # Decisions a caller may not read do not exist for it; everything else is 403.
            reads = scope in ("flow", "global") and role in READERS
            readers_only = ("get", "explain", "notice", "what_if", "get_outcome")
            hidden = (endpoint in readers_only and not reads) or (endpoint in HIDDEN_UNLESS_ALLOWED)
            expected = 404 if hidden else 403
            assert status == expected, (endpoint, role, scope, status)


def test_explanations_mask_personal_data_for_readers_without_the_right(
    engine: Engine, client: TestClient
) -> None:
    decision_id = engine.decide(FLOW, {**LOW_RISK, "annual_income": 87654.0}).id
    path = f"/v1/decisions/{decision_id}/explanation"
    viewer = client.get(path, headers=key(engine, Grant(Role.VIEWER, FLOW))).json()
    assert (
        viewer["inputs"]["annual_income"] == "‹protected›" and viewer["inputs"]["region"] == "north"
    )
    shown = (
        json.dumps(viewer["why"]) + json.dumps(viewer["trace"]) + json.dumps(viewer["attributions"])
    )
    assert "87654" not in shown and "87,654" not in shown
    income_step = next(s for s in viewer["trace"] if s["rule"] == "income_too_low")
    assert income_step["values"]["input.annual_income"] == "‹protected›"
    owner = client.get(path, headers=key(engine, Grant(Role.OWNER, FLOW))).json()
    assert owner["inputs"]["annual_income"] == 87654.0
    owner_step = next(s for s in owner["trace"] if s["rule"] == "income_too_low")
    assert owner_step["values"]["input.annual_income"] == 87654.0


def test_lists_show_only_what_the_caller_may_read(engine: Engine, client: TestClient) -> None:
    engine.decide(FLOW, LOW_RISK)
    elsewhere = key(engine, Grant(Role.VIEWER, "pricing"))
    assert client.get("/v1/decisions", headers=elsewhere).json()["decisions"] == []
    assert client.get("/v1/flows", headers=elsewhere).json() == []
    here = key(engine, Grant(Role.VIEWER, FLOW))
    assert len(client.get("/v1/decisions", headers=here).json()["decisions"]) == 1
    assert [f["name"] for f in client.get("/v1/flows", headers=here).json()] == [FLOW]


def test_every_request_is_audited(engine: Engine, client: TestClient, audit: AuditLog) -> None:
    import json

    from keel.security.audit import AuditTrail

    headers = key(engine, Grant(Role.DECIDER, FLOW))
    client.post(f"/v1/flows/{FLOW}/decisions", json={"inputs": LOW_RISK}, headers=headers)
    client.get("/v1/ledger/verification", headers=headers)
    client.get("/v1/flows", headers={"Authorization": "Bearer keel_00000000_" + "A" * 43})
    audit.flush()
    events = [json.loads(line) for line in AuditTrail(engine.db).export(local_operator())]
    prefix = headers["Authorization"].split("_")[1]
    summary = [(e["kind"], e["principal"], e["action"], e["outcome"]) for e in events]
    assert ("request", f"key:{prefix}", "decide", "ok") in summary
    assert ("request", f"key:{prefix}", "verify_ledger", "denied") in summary
    assert ("security", "key:00000000", "authenticate", "failed") in summary
    assert ("request", "anonymous", "unknown", "denied") in summary
    assert all("annual_income" not in json.dumps(e) for e in events)  # no request bodies


def test_the_matrix_covers_every_operation(engine: Engine, client: TestClient) -> None:
    schema = client.get("/openapi.json", headers=key(engine, Grant(Role.VIEWER, FLOW))).json()
    operations = sum(len(methods) for methods in schema["paths"].values())
    unauthenticated = 2  # /healthz and /readyz
    filtered_list = 1  # GET /v1/flows: never refused, filtered (test_lists_show_only_…)
    elsewhere = 1  # approving a raise needs a request first: tests/test_autonomy.py
    # Knowledge collections take knowledge roles on collections: tests/test_knowledge_api.py
    knowledge = sum(len(m) for p, m in schema["paths"].items() if p.startswith("/v1/collections"))
    assert operations == len(MATRIX) + unauthenticated + filtered_list + elsewhere + knowledge


def test_reviews_over_http_with_four_eyes(project: Path, env: dict[str, str]) -> None:
    flow_file = project / "flows" / "credit_limit.yaml"
    flow_file.write_text(flow_file.read_text() + "review:\n  four_eyes: true\n")
    with open_engine(project, environ=env) as engine:
        app = create_app(engine, AuditLog(engine.db))
        with TestClient(app) as client:
            both = key(engine, Grant(Role.DECIDER, FLOW), Grant(Role.REVIEWER, FLOW))
            other = key(engine, Grant(Role.REVIEWER, FLOW), owner="someone else")
            decided = client.post(
                f"/v1/flows/{FLOW}/decisions", json={"inputs": SHORT_HISTORY}, headers=both
            ).json()
            assert decided["status"] == "pending_review"
            queue = client.get("/v1/reviews?state=open", headers=other).json()["reviews"]
            assert [r["decision_id"] for r in queue] == [decided["id"]]
            path = f"/v1/reviews/{decided['id']}/resolution"
            own = client.post(path, json={"resolution": "approve", "reason": "ok"}, headers=both)
            assert own.status_code == 409 and own.json()["code"] == "conflict"
            missing = client.post(path, json={"resolution": "approve"}, headers=other)
            assert missing.status_code == 422 and "reason" in json.dumps(missing.json())
            done = client.post(
                path, json={"resolution": "approve", "reason": "Checked."}, headers=other
            )
            assert done.status_code == 200 and done.json()["reviewer"]["role"] == "reviewer"
            again = client.post(path, json={"resolution": "reject", "reason": "x"}, headers=other)
            assert again.status_code == 409
            assert engine.verify().ok


def test_openapi_is_published_to_any_authenticated_caller(
    engine: Engine, client: TestClient
) -> None:
    assert client.get("/openapi.json").status_code == 401
    schema = client.get("/openapi.json", headers=key(engine, Grant(Role.VIEWER, FLOW))).json()
    assert "/v1/flows/{flow}/decisions" in schema["paths"]
    assert "ErrorOut" in schema["components"]["schemas"]
    # The bearer scheme is declared (Swagger UI's "Authorize"), on every route but the
    # health checks.
    assert schema["components"]["securitySchemes"]["apiKey"]["scheme"] == "bearer"
    for path, operations in schema["paths"].items():
        for op in operations.values():
            expected = [] if path in ("/healthz", "/readyz") else [{"apiKey": []}]
            assert op.get("security", []) == expected, path
