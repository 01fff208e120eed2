"""Acts outside the flow registry check the rows they read against the ledger first: a
review against the decision that waits, an autonomy approval against its evidence, a
policy approval against who wrote and approved the change. A row changed in the database
gets the act refused (409 ``integrity_failed``) with nothing written; the untouched row
lets it through. On SQLite and PostgreSQL."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from keel import open_engine
from keel.api import create_app
from keel.engine import Engine
from keel.errors import ConflictError, IntegrityError
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.roles import Grant, Role
from tests.conftest import LOW_RISK, Clock, person, run_sql
from tests.test_changes import SHORTER, policy_text
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
AUTHOR = person("key:auth0001", "Ann", "policy_author")
ANNS_APPROVER_KEY = person("key:auth0009", "Ann's other key", "approver", who="Ann")
APPROVER = person("key:appr0002", "Paul", "approver")
OWNER = person("key:owner003", "Olga", "owner")
REVIEWER = person("key:revi0004", "Rita", "reviewer")
EARNED = """earned_autonomy:
  supervised: {over: 7d, min_reviewed: 1, min_agreement: 0.5, max_guardrail_hits: 1000}
"""


def _count(url: str) -> int:
    return int(str(run_sql(url, "select count(*) from ledger")[0][0]))


def _waiting(engine: Engine, n: int) -> list[str]:
    ids = [engine.decide(FLOW, SHORT_HISTORY).id for _ in range(n)]
    assert all(engine.entry(i).body["status"] == "pending_review" for i in ids)
    return ids


@pytest.fixture
def served(
    project: Path, env: dict[str, str]
) -> Iterator[tuple[Engine, TestClient, dict[str, str]]]:
    """The example project served over HTTP, with a reviewer's key."""
    with open_engine(project, environ=env, clock=Clock()) as engine:
        _, key = create_key(engine.db, "rita", "Rita", [Grant(Role.REVIEWER)], "t", time.time())
        audit = AuditLog(engine.db)  # closed before the engine
        with TestClient(create_app(engine, audit), raise_server_exceptions=False) as client:
            yield engine, client, {"Authorization": f"Bearer {key}"}
        audit.close()


def test_a_forged_proposal_is_never_approved_into_action(
    served: tuple[Engine, TestClient, dict[str, str]], db_url: str
) -> None:
    engine, client, rita = served
    decision, other = _waiting(engine, 2)
    proposed = run_sql(db_url, "select proposed_action, proposed_value from reviews "
                               "where decision_id = :d", params={"d": decision})[0]  # fmt: skip
    forge = "update reviews set proposed_value = 999999 where decision_id = :d"
    run_sql(db_url, forge, params={"d": decision})
    before = _count(db_url)
    reply = client.post(f"/v1/reviews/{decision}/resolution", headers=rita,
                        json={"resolution": "approve", "reason": "Income verified"})  # fmt: skip
    assert reply.status_code == 409, reply.text
    error = reply.json()
    assert error["code"] == "integrity_failed"
    assert f"reviews row {decision}: column proposed_value is 999999" in error["message"]
    assert error["detail"]["column"] == "proposed_value"
    assert _count(db_url) == before  # nothing recorded...
    state = run_sql(db_url, "select state from reviews where decision_id = :d",
                    params={"d": decision})  # fmt: skip
    assert state == [("open",)]  # ...nor changed
    claim = client.post(f"/v1/reviews/{decision}/claim", headers=rita)
    assert claim.status_code == 409 and claim.json()["code"] == "integrity_failed"
    metric = engine.ctx.metrics.integrity_refusals.labels(FLOW, "review")._value.get()
    assert metric == 1.0
    # Put back, the same review goes through; an untouched one always did.
    run_sql(db_url, "update reviews set proposed_action = :a, proposed_value = :v "
                    "where decision_id = :d", params={"a": proposed[0], "v": proposed[1],
                                                      "d": decision})  # fmt: skip
    for waiting in (decision, other):
        done = client.post(f"/v1/reviews/{waiting}/resolution", headers=rita,
                           json={"resolution": "approve", "reason": "Income verified"})  # fmt: skip
        assert done.status_code == 200, done.text
    assert engine.verify(deep=True).ok


def test_a_forged_requester_cannot_open_four_eyes(project: Path, env: dict[str, str],
                                                   db_url: str) -> None:  # fmt: skip
    """The requester column is what four eyes compares: changed, the review is refused
    for integrity before four eyes reads it."""
    with open_engine(project, environ=env, clock=Clock()) as engine:
        (decision,) = _waiting(engine, 1)
        run_sql(db_url, "update reviews set requested_by = 'key:someone', "
                        "requested_person = 'someone' where decision_id = :d",
                params={"d": decision})  # fmt: skip
        with pytest.raises(IntegrityError, match="column requested_by"):
            engine.reviews.claim(decision, REVIEWER)
        assert run_sql(db_url, "select state, claimed_by from reviews where decision_id = :d",
                       params={"d": decision}) == [("open", None)]  # fmt: skip


def test_an_override_reads_the_decision_from_the_ledger_not_the_index(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    with open_engine(project, environ=env, clock=Clock()) as engine:
        (waiting,) = _waiting(engine, 1)
        run_sql(db_url, "delete from reviews where decision_id = :d",
                "update decisions set status = 'final' where id = :d",
                params={"d": waiting})  # fmt: skip
        before = _count(db_url)
        with pytest.raises(IntegrityError, match=r"decisions row .* column status"):
            engine.reviews.override(waiting, REVIEWER, "reject", "Known fraud pattern")
        assert _count(db_url) == before
        final = engine.decide(FLOW, LOW_RISK)
        review = engine.reviews.override(final.id, REVIEWER, "reject", "Known fraud pattern")
        assert review.decision == final.id


def test_an_autonomy_raise_is_never_judged_on_forged_evidence(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(EARNED)
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        reviewed, waiting = _waiting(engine, 2)
        engine.reviews.resolve(reviewed, REVIEWER, "approve", "Income verified")
        clock.advance(60)  # the evidence window ends before now
        engine.autonomy.request(FLOW, "advisory", OWNER, "Watch the new staff")
        raised = engine.autonomy.request(FLOW, "supervised", OWNER, "Reviews agree").request
        assert raised is not None
        forge = ("update reviews set state = 'resolved', resolution = 'approve', "
                 "final_action = proposed_action, reviewer = 'key:revi0004' "
                 "where decision_id = :d")  # fmt: skip
        run_sql(db_url, forge, params={"d": waiting})
        before = _count(db_url)
        with pytest.raises(IntegrityError) as refused:
            engine.autonomy.approve(raised.id, APPROVER, "Evidence checked")
        assert refused.value.code == "integrity_failed"
        assert refused.value.detail["mismatch"]["key"] == waiting
        assert refused.value.detail["mismatch"]["column"] == "state"
        assert _count(db_url) == before
        assert run_sql(db_url, "select state from autonomy_requests where id = :r",
                       params={"r": raised.id}) == [("open",)]  # fmt: skip
        metric = engine.ctx.metrics.integrity_refusals.labels(FLOW, "autonomy_approval")
        assert metric._value.get() == 1.0
        # A forged outcome in the window is found alike.
        run_sql(db_url, "update reviews set state = 'open', resolution = null, "
                        "final_action = null, reviewer = null where decision_id = :d",
                params={"d": waiting})  # fmt: skip
        run_sql(
            db_url,
            "insert into outcomes values (:d, :f, 1, 'repaid', null, "
            "'2027-01-18T00:00:00.000000Z', '2027-01-18T00:00:00.000000Z', "
            "'key:evil', 'api', 'out_forged')",
            params={"d": reviewed, "f": FLOW},
        )
        with pytest.raises(IntegrityError, match="outcomes row"):
            engine.autonomy.approve(raised.id, APPROVER, "Evidence checked")
        run_sql(db_url, "delete from outcomes where record_id = 'out_forged'")
        change = engine.autonomy.approve(raised.id, APPROVER, "Evidence checked")
        assert change.level == "supervised"


def test_the_evidence_check_reads_only_the_criteria_window(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    """A raise is judged on the last ``over`` (7 days here): a row older than that is not
    evidence, is not read, and does not stop it; deep verification still names it."""
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(EARNED)
    clock = Clock()
    with open_engine(project, environ=env, clock=clock) as engine:
        (old,) = _waiting(engine, 1)
        run_sql(db_url, "update reviews set proposed_value = 999999 where decision_id = :d",
                params={"d": old})  # fmt: skip
        clock.advance(8 * 86_400)
        (recent,) = _waiting(engine, 1)
        engine.reviews.resolve(recent, REVIEWER, "approve", "Income verified")
        clock.advance(60)
        engine.autonomy.request(FLOW, "advisory", OWNER, "Watch the new staff")
        raised = engine.autonomy.request(FLOW, "supervised", OWNER, "Reviews agree").request
        assert raised is not None
        assert engine.autonomy.approve(raised.id, APPROVER, "Checked").level == "supervised"
        report = engine.verify(deep=True)
        assert report.deep is not None and report.deep.mismatch is not None
        assert (report.deep.mismatch.table, report.deep.mismatch.key) == ("reviews", old)


def test_a_forged_autonomy_requester_cannot_approve_their_own_raise(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(EARNED)
    clock = Clock()
    olgas_approver_key = person("key:olga0009", "Olga's other key", "approver", who="Olga")
    with open_engine(project, environ=env, clock=clock) as engine:
        (reviewed,) = _waiting(engine, 1)
        engine.reviews.resolve(reviewed, REVIEWER, "approve", "Income verified")
        clock.advance(60)
        engine.autonomy.request(FLOW, "advisory", OWNER, "Watch the new staff")
        raised = engine.autonomy.request(FLOW, "supervised", OWNER, "Reviews agree").request
        assert raised is not None
        run_sql(db_url, "update autonomy_requests set requested_by = 'key:x', "
                        "requested_person = 'x' where id = :r", params={"r": raised.id})  # fmt: skip
        with pytest.raises(IntegrityError, match="column requested_by"):
            engine.autonomy.approve(raised.id, olgas_approver_key, "Evidence checked")
        run_sql(db_url, "update autonomy_requests set requested_by = :i, requested_person = "
                        ":p where id = :r",
                params={"i": OWNER.id, "p": OWNER.person, "r": raised.id})  # fmt: skip
        with pytest.raises(ConflictError, match="cannot approve it"):
            engine.autonomy.approve(raised.id, olgas_approver_key, "Evidence checked")
        assert engine.autonomy.approve(raised.id, APPROVER, "Checked").level == "supervised"


def test_four_eyes_on_a_change_reads_persons_the_ledger_vouches_for(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    with open_engine(project, environ=env, clock=Clock()) as engine:
        change = engine.changes.propose(
            FLOW, policy_text(project, *SHORTER), AUTHOR, "Thin files ok"
        )
        # Ann, through an approver's key, would approve her own change once the rows no
        # longer name her.
        run_sql(db_url, "update policy_changes set author_person = 'someone', "
                        "editor_persons = :p where id = :c",
                params={"p": json.dumps(["someone"]), "c": change.id})  # fmt: skip
        before = _count(db_url)
        with pytest.raises(IntegrityError, match="column author_person"):
            engine.changes.approve(change.id, ANNS_APPROVER_KEY, "Backtested")
        assert _count(db_url) == before
        assert run_sql(db_url, "select count(*) from policy_approvals") == [(0,)]
        metric = engine.ctx.metrics.integrity_refusals.labels(FLOW, "policy_approval")
        assert metric._value.get() == 1.0
        # Put back, four eyes names the rule; another person approves.
        run_sql(db_url, "update policy_changes set author_person = 'ann', "
                        "editor_persons = :p where id = :c",
                params={"p": json.dumps(["ann"]), "c": change.id})  # fmt: skip
        with pytest.raises(ConflictError, match="cannot approve it"):
            engine.changes.approve(change.id, ANNS_APPROVER_KEY, "Backtested")
        approved = engine.changes.approve(change.id, APPROVER, "Backtested")
        assert approved.state == "approved"


def test_a_forged_approval_person_is_refused_before_it_counts(
    project: Path, env: dict[str, str], db_url: str
) -> None:
    """An approval row is what 'one person's approval counts once' reads."""
    with open_engine(project, environ=env, clock=Clock()) as engine:
        edited = policy_text(project, *SHORTER)
        change = engine.changes.propose(FLOW, edited, AUTHOR, "Thin files ok")
        run_sql(
            db_url,
            "insert into policy_approvals (change_id, version, approver, "
            "approver_person, role, reason, approved_at, record_id) values "
            "(:c, :v, 'key:x', 'x', 'approver', 'r', '2027-01-01T00:00:00.000000Z', "
            "'evt_forged')",
            params={"c": change.id, "v": change.version},
        )
        with pytest.raises(IntegrityError, match="policy_approvals row evt_forged"):
            engine.changes.approve(change.id, APPROVER, "Backtested")
