"""The tamper suite: one store holding every kind of governed fact, altered the ways an
intruder with database access would; each change is found, naming the right entry or row.

The store is built once per database (SQLite, PostgreSQL) and copied for each case: the
SQLite file with its project folder, the PostgreSQL database as a template.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.canonical import canonical_json
from keel.cli import app as cli
from keel.config import load_settings
from keel.errors import KeelError
from keel.keys import load_data_key
from keel.ledger import GENESIS_HASH, chain_hash
from keel.ledger.checkpoint import Checkpoint
from keel.ledger.records import iso_time
from keel.ledger.verify import VerifyReport, verify_ledger
from keel.protect import Protector
from keel.review.outcomes import OutcomeReport
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.roles import Grant, Role
from keel.store.database import open_database
from tests.conftest import LOW_RISK, POSTGRES_ADMIN, Clock, person, run_sql
from tests.test_changes import SHORTER, other_model, policy_text
from tests.test_review import SHORT_HISTORY

FLOW = "credit_limit"
DAY = 86_400.0
START = 1_800_000_000.0
AUTHOR = person("key:auth0001", "Ann", "policy_author")
APPROVER = person("key:appr0002", "Paul", "approver")
OWNER = person("key:owner003", "Olga", "owner")
REVIEWER = person("key:revi0004", "Rita", "reviewer")
STRICT = ("  min_income: 12000.0\n", "  min_income: 100000.0\n")

FLOW_EXTRA = """review:
  deadline: 30d
earned_autonomy:
  supervised: {over: 7d, min_reviewed: 1, min_agreement: 0.5, max_guardrail_hits: 1000}
monitoring:
  window: 1d
  baseline: 1d
  min_decisions: 20
  drift: false
  limits:
    escalation_rate: {max_change: 0.2, severity: warning}
    automation_rate: false
    fallback_rate: false
    latency_p99_ms: false
  alarms: {cooldown: 6h, clear_after: 2, clear_below: 0.5}
  notify:
    - {url: "http://127.0.0.1:9/down", name: ops}
  governor:
    - when: {alarm: [escalation_rate]}
      do: pause
    - when: {alarm: [escalation_rate]}
      do: retrain
  retrain:
    webhook: {url: "http://127.0.0.1:9/retrain"}
"""


@dataclass
class Store:
    """A built store: its project folder, the environment that points at its database,
    the database URL, and what the build left to name in assertions."""

    project: Path
    env: dict[str, str]
    url: str
    checkpoint: Checkpoint
    facts: dict[str, Any]


def _day(engine: Any, clock: Clock, day: int, review_every: int = 0) -> list[str]:
    """30 cases on ``day``, a minute apart; returns their ids."""
    rng = np.random.default_rng(day)
    clock.now = START + day * DAY
    ids = []
    for i in range(30):
        case = SHORT_HISTORY if review_every and i % review_every == 0 else LOW_RISK
        income = float(rng.normal(80_000, 5_000))
        ids.append(engine.decide(FLOW, {**case, "annual_income": income}).id)
        clock.now += 60
    return ids


def _build(project: Path, env: dict[str, str]) -> dict[str, Any]:
    """Every governed fact, made through Keel's services as its users would."""
    with (project / "flows" / "credit_limit.yaml").open("a") as flow:
        flow.write(FLOW_EXTRA)
    with (project / "keel.yaml").open("a") as settings:
        settings.write("deliveries: {max_attempts: 1}\n")  # the receivers are down: dead
    retrained = other_model(project / "retrained.skops")
    clock = Clock(START)
    facts: dict[str, Any] = {}
    with open_engine(project, environ=env, clock=clock) as engine:
        _day(engine, clock, 0)
        second = _day(engine, clock, 1, review_every=3)  # escalations rose: an alarm
        clock.now = START + 2 * DAY
        run = engine.monitoring.run(FLOW, OWNER)
        assert run.breaches == ["escalation_rate"] and engine.runtime(FLOW).hold == "pause"
        facts["alarm"] = run.alarms[0].id
        assert run.deliveries is not None
        facts["deliveries"] = {d["kind"]: d["id"] for d in run.deliveries}
        engine.deliveries.retry(facts["deliveries"]["alarm_notice"], OWNER, "Receiver fixed")
        engine.monitoring.resolve(facts["alarm"], OWNER, "Staffing change explains it")
        engine.holds.lift(FLOW, APPROVER, "Escalations back to normal")
        # Reviews: two escalations approved, one claimed, the rest left open; an override.
        waiting = [d for d in second if engine.entry(d).body["status"] == "pending_review"]
        for decision in waiting[:2]:
            engine.reviews.resolve(decision, REVIEWER, "approve", "Income verified")
        engine.reviews.claim(waiting[2], REVIEWER)
        facts["reviewed"], facts["waiting"] = waiting[0], waiting[3]
        final = engine.decide(FLOW, LOW_RISK, subject_id="cust-1")
        engine.reviews.override(final.id, REVIEWER, "reject", "Known fraud pattern")
        facts["overridden"] = final.id
        outcome = OutcomeReport(second[1], "defaulted", 1200.0)
        facts["outcome"] = engine.outcomes.report(outcome, OWNER).row.decision_id
        # Autonomy lowered, then raised on evidence with another person's approval.
        engine.autonomy.request(FLOW, "advisory", OWNER, "Watch the new staff")
        raised = engine.autonomy.request(FLOW, "supervised", OWNER, "Reviews agree").request
        assert raised is not None
        engine.autonomy.approve(raised.id, APPROVER, "Evidence checked")
        # A policy change with a retrained model, approved and activated.
        change = engine.changes.propose(
            FLOW, policy_text(project, *SHORTER), AUTHOR, "Thin files ok",
            models={"default_risk": retrained},
        )  # fmt: skip
        engine.changes.approve(change.id, APPROVER, "Backtested")
        engine.changes.activate(change.id, APPROVER)
        facts["change"], facts["model"] = change.id, change.models["default_risk"]
        facts["version"] = change.version
        # A shadow rollout of a stricter version, started and stopped.
        strict = policy_text(project, *SHORTER).replace(*STRICT)
        candidate = engine.changes.register(FLOW, strict, engine.operator)
        rollout = engine.rollouts.start(FLOW, "shadow", candidate, APPROVER, "Watch it")
        for i in range(3):
            engine.decide(FLOW, LOW_RISK, subject_id=f"s-{i}")
        engine.rollouts.stop(FLOW, APPROVER, "Seen enough")
        facts["rollout"] = rollout.id
        facts["last"] = engine.decide(FLOW, LOW_RISK, subject_id="cust-2").id
        facts["checkpoint"] = engine.checkpoint()
        checked = engine.verify(deep=True)
        assert checked.ok, checked.problem
    return facts


def _clone_pg(admin: str, template: str) -> str:
    name = f"keel_{uuid.uuid4().hex[:12]}"
    server = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
    server.dispose()
    return name


def _drop_pg(admin: str, name: str) -> None:
    server = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    server.dispose()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def built(
    request: pytest.FixtureRequest,
    template_project: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[Store, str | None]]:
    """The populated store, once per database; the PostgreSQL database's name, if any."""
    project = tmp_path_factory.mktemp("tamper") / "project"
    shutil.copytree(template_project, project)
    admin = os.environ.get(POSTGRES_ADMIN)
    if request.param == "postgres" and not admin:
        pytest.skip("PostgreSQL runs under `make test` (scripts/with-postgres.sh sets it up)")
    name = None
    env: dict[str, str] = {}
    if request.param == "postgres":
        assert admin is not None
        name = f"keel_{uuid.uuid4().hex[:12]}"
        server = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
        with server.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        server.dispose()
        env = {"KEEL_DATABASE_URL": admin.replace("/postgres?", f"/{name}?")}
    facts = _build(project, env)
    url = env.get("KEEL_DATABASE_URL", f"sqlite:///{project}/keel.db")
    yield Store(project, env, url, facts.pop("checkpoint"), facts), name
    if admin and name:
        _drop_pg(admin, name)


@pytest.fixture
def store(built: tuple[Store, str | None], tmp_path: Path) -> Iterator[Store]:
    """A fresh copy of the built store for one case."""
    original, template = built
    project = tmp_path / "project"
    shutil.copytree(original.project, project)
    admin = os.environ.get(POSTGRES_ADMIN)
    if template is None or admin is None:
        yield Store(project, {}, f"sqlite:///{project}/keel.db", original.checkpoint,
                    dict(original.facts))  # fmt: skip
        return
    name = _clone_pg(admin, template)
    url = admin.replace("/postgres?", f"/{name}?")
    yield Store(project, {"KEEL_DATABASE_URL": url}, url, original.checkpoint,
                dict(original.facts))  # fmt: skip
    _drop_pg(admin, name)


def sql(store: Store, *statements: str, **params: object) -> list[tuple[object, ...]]:
    return run_sql(store.url, *statements, params=params)


def verify(store: Store, deep: bool = False, checkpoint: Checkpoint | None = None) -> VerifyReport:
    """Verify as an auditor would: the database and the project's data key, no engine."""
    settings = load_settings(store.project, store.env)
    db = open_database(settings.database_url, migrate=False)
    try:
        protector = Protector(*load_data_key(settings.keys_dir))
        return verify_ledger(db, checkpoint, deep=deep, protector=protector)
    finally:
        db.close()


def mismatch(store: Store) -> dict[str, Any]:
    """The first disagreement deep verification names (the chain itself verifies)."""
    report = verify(store, deep=True)
    assert report.bad_seq is None, report.problem  # the chain is intact...
    assert not report.ok and report.deep is not None and report.deep.mismatch is not None
    return report.deep.mismatch.to_dict()  # ...the side table is not


# ---- an untouched store ----------------------------------------------------------------


def test_an_untouched_store_verifies_deep(store: Store) -> None:
    report = verify(store, deep=True)
    assert report.ok, report.problem
    assert report.deep is not None and report.deep.mismatch is None
    rows = report.deep.rows
    for table in (
        "decisions", "protected_values", "policy_versions", "model_artifacts", "policy_changes",
        "policy_approvals", "flow_activations", "autonomy_changes", "autonomy_requests",
        "flow_holds", "rollouts", "alarms", "reviews", "outcomes", "guardrail_usage",
        "deliveries",
    ):  # fmt: skip
        assert rows.get(table, 0) > 0, table
    assert "reviews.claimed_by, reviews.claimed_at" in report.deep.unchecked
    assert verify(store, deep=True, checkpoint=store.checkpoint).ok


def test_a_legitimate_erasure_of_personal_data_verifies_deep(store: Store) -> None:
    subject = store.facts["overridden"]
    sql(store, "delete from protected_values where record_id = :id", id=subject)
    report = verify(store, deep=True)
    assert report.ok, report.problem
    with open_engine(store.project, environ=store.env) as engine:
        assert engine.verify(deep=True).ok  # the engine's own verify agrees


# ---- the chain -------------------------------------------------------------------------


def test_an_edited_entry_is_named(store: Store) -> None:
    sql(store, "update ledger set record = replace(record, '\"approve\"', '\"decline\"') "
               "where seq = 20")  # fmt: skip
    report = verify(store, deep=True)
    assert (report.ok, report.bad_seq) == (False, 20) and "altered" in str(report.problem)
    assert report.deep is None  # an altered chain is no reference for the tables


def test_a_deleted_middle_entry_is_named(store: Store) -> None:
    sql(store, "delete from ledger where seq = 30")
    report = verify(store)
    assert report.bad_seq == 30 and "entry 30 is missing" in str(report.problem)


def test_an_inserted_entry_is_named(store: Store) -> None:
    sql(
        store,
        "update ledger set seq = seq + 1000 where seq >= 40",
        "update ledger set seq = seq - 999 where seq >= 1040",
    )
    prev = str(sql(store, "select hash from ledger where seq = 39")[0][0])
    record = canonical_json(
        {"schema_version": 1, "kind": "decision", "id": "dec_forged", "flow": FLOW,
         "recorded_at": "2027-01-16T00:00:00.000000Z", "body": {"action": "approve"}}
    )  # fmt: skip
    sql(
        store,
        "insert into ledger values (40, 'decision', 'dec_forged', :flow, "
        "'2027-01-16T00:00:00.000000Z', :record, :prev, :hash)",
        flow=FLOW, record=record, prev=prev, hash=chain_hash(prev, record),
    )  # fmt: skip
    report = verify(store)
    assert report.bad_seq == 41 and "prev_hash" in str(report.problem)


def test_two_reordered_entries_are_named(store: Store) -> None:
    sql(
        store,
        "update ledger set seq = 10000 where seq = 50",
        "update ledger set seq = 50 where seq = 51",
        "update ledger set seq = 51 where seq = 10000",
    )
    assert verify(store).bad_seq == 50


def test_a_truncated_end_is_named_by_the_head_and_by_the_checkpoint(store: Store) -> None:
    head = store.checkpoint.seq + 1
    sql(store, "delete from ledger where seq >= :cut", cut=head - 5)
    report = verify(store)
    assert report.bad_seq == head - 5 and "removed from the end" in str(report.problem)
    sql(store, "update ledger_head set seq = :seq, hash = (select hash from ledger "
               "where seq = :seq)", seq=head - 6)  # fmt: skip
    assert verify(store).ok  # a consistent truncation: only the checkpoint sees it
    report = verify(store, checkpoint=store.checkpoint)
    assert not report.ok and "entries were removed" in str(report.problem)


def test_removing_only_the_final_entry_is_named_by_the_checkpoint(store: Store) -> None:
    final = store.checkpoint.seq + 1  # the checkpoint's own event
    assert sql(store, "select kind from ledger where seq = :s", s=final) == [("checkpoint",)]
    sql(
        store,
        "delete from ledger where seq = :s",
        "update ledger_head set seq = :p, hash = (select hash from ledger where seq = :p)",
        s=final, p=final - 1,
    )  # fmt: skip
    assert verify(store).ok
    report = verify(store, checkpoint=store.checkpoint)
    assert not report.ok and report.bad_seq == final
    assert f"entry {final} was removed from the end" in str(report.problem)


def test_a_consistent_rewrite_is_named_by_the_checkpoint(store: Store) -> None:
    prev = GENESIS_HASH
    for seq, record in sql(store, "select seq, record from ledger order by seq"):
        data = json.loads(str(record))
        if data["kind"] == "outcome":
            data["body"]["label"] = "repaid"
        text = canonical_json(data)
        digest = chain_hash(prev, text)
        sql(store, "update ledger set record = :t, prev_hash = :p, hash = :h where seq = :s",
            t=text, p=prev, h=digest, s=seq)  # fmt: skip
        prev = digest
    sql(store, "update ledger_head set hash = :h", h=prev)
    assert verify(store).ok  # internally consistent...
    report = verify(store, checkpoint=store.checkpoint)
    assert not report.ok and "rewritten" in str(report.problem)  # ...but not what was signed


# ---- the governed tables ---------------------------------------------------------------


def test_altered_policy_text_is_named(store: Store) -> None:
    version = store.facts["version"]
    document = json.loads(str(sql(store, "select document from policy_versions "
                                         "where version = :v", v=version)[0][0]))  # fmt: skip
    document["params"]["decline_risk"] = 0.99
    sql(store, "update policy_versions set document = :d where version = :v",
        d=canonical_json(document), v=version)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("policy_versions", version,
                                                              "document")  # fmt: skip
    assert "does not hash to its version" in found["problem"]


def test_a_forged_policy_version_no_entry_introduced_is_named(store: Store) -> None:
    old = str(sql(store, "select document from policy_versions where version = :v",
                  v=store.facts["version"])[0][0])  # fmt: skip
    document = json.loads(old)
    document["params"]["decline_risk"] = 0.99
    text = canonical_json(document)
    forged = hashlib.sha256(text.encode()).hexdigest()  # hashes right: nobody proposed it
    sql(store, "insert into policy_versions values (:v, 'credit_limit', :d, "
               "'2027-01-17T00:00:00.000000Z')", v=forged, d=text)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("policy_versions", forged, None)
    assert "no policy_registered/proposed/edited entry behind it" in found["problem"]


def test_a_rollout_of_a_forged_version_does_not_make_it_governed(store: Store) -> None:
    """A rollout started on a stored version (through the engine, which reads the table)
    records an entry naming it; that entry does not introduce the version."""
    old = str(sql(store, "select document from policy_versions where version = :v",
                  v=store.facts["version"])[0][0])  # fmt: skip
    document = json.loads(old)
    document["params"]["decline_risk"] = 0.98
    text = canonical_json(document)
    forged = hashlib.sha256(text.encode()).hexdigest()
    sql(store, "insert into policy_versions values (:v, 'credit_limit', :d, "
               "'2027-01-17T00:00:00.000000Z')", v=forged, d=text)  # fmt: skip
    # An engine that refuses forged versions records nothing: the row is named alike.
    with open_engine(store.project, environ=store.env) as engine, contextlib.suppress(KeelError):
        engine.rollouts.start(FLOW, "shadow", forged, APPROVER, "Watch it")
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("policy_versions", forged, None)


def test_an_altered_model_artifact_is_named(store: Store) -> None:
    model = store.facts["model"]
    sql(store, "update model_artifacts set data = :d where version = :v",
        d=b"not the approved model", v=model)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("model_artifacts", model, "data")


def test_an_altered_outcome_is_named(store: Store) -> None:
    decision = store.facts["outcome"]
    sql(store, "update outcomes set label = 'repaid', value = 99999 where decision_id = :d",
        d=decision)  # fmt: skip
    found = mismatch(store)
    assert found == {
        "table": "outcomes", "key": decision, "column": "label", "stored": "repaid",
        "ledger": "defaulted", "problem": "differs from the ledger",
    }  # fmt: skip


def test_an_altered_review_is_named(store: Store) -> None:
    decision = store.facts["reviewed"]
    sql(store, "update reviews set final_action = 'decline', reviewer = 'key:evil' "
               "where decision_id = :d", d=decision)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("reviews", decision,
                                                              "final_action")  # fmt: skip
    assert (found["stored"], found["ledger"]) == ("decline", "approve")


def test_a_waiting_review_marked_resolved_is_named(store: Store) -> None:
    decision = store.facts["waiting"]
    sql(store, "update reviews set state = 'resolved', resolution = 'approve' "
               "where decision_id = :d", d=decision)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("reviews", decision, "state")


def test_a_later_deadline_on_a_waiting_review_is_named(store: Store) -> None:
    """Moving a waiting review's deadline would suppress its breach notice."""
    decision = store.facts["waiting"]
    (due,) = sql(store, "select due_at from reviews where decision_id = :d", d=decision)[0]
    assert due is not None
    sql(store, "update reviews set due_at = '2099-01-01T00:00:00.000000Z' where decision_id = :d",
        d=decision)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("reviews", decision, "due_at")
    assert found["ledger"] == due


def test_an_altered_activation_is_named(store: Store) -> None:
    forged = "f" * 64
    (record_id,) = sql(store, "select record_id from flow_activations where kind = 'activate'")[0]
    sql(store, "update flow_activations set version = :v where kind = 'activate'", v=forged)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("flow_activations", record_id,
                                                              "version")  # fmt: skip
    assert found["stored"] == forged and found["ledger"] == store.facts["version"]


def test_an_inferred_activation_stands_only_where_decisions_switched_version(
    store: Store,
) -> None:
    """Migration 0006 inferred activations (no entry) from where old decisions switched
    version; such a row elsewhere is forged."""
    (version, at) = sql(store, "select policy_version, recorded_at from decisions "
                               "order by seq limit 1")[0]  # fmt: skip
    insert = ("insert into flow_activations (flow, version, activated_at, activated_by, kind, "
              "reason) values (:f, :v, :a, 'keel', 'inferred', 'inferred')")  # fmt: skip
    sql(store, insert, f=FLOW, v=version, a=at)
    assert verify(store, deep=True).ok
    sql(store, insert, f=FLOW, v=store.facts["version"], a=at)
    found = mismatch(store)
    assert (found["table"], found["column"]) == ("flow_activations", None)
    assert "no policy_activated or decision entry behind it" in found["problem"]


def test_an_altered_autonomy_change_is_named(store: Store) -> None:
    (record_id,) = sql(store, "select record_id from autonomy_changes where kind = 'raise'")[0]
    sql(store, "update autonomy_changes set level = 'autonomous' where kind = 'raise'")
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("autonomy_changes", record_id,
                                                              "level")  # fmt: skip
    assert (found["stored"], found["ledger"]) == ("autonomous", "supervised")


def test_an_altered_autonomy_request_is_named(store: Store) -> None:
    (request,) = sql(store, "select id from autonomy_requests")[0]
    sql(store, "update autonomy_requests set decided_by = 'key:evil'")
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("autonomy_requests", request,
                                                              "decided_by")  # fmt: skip


def test_an_altered_hold_is_named(store: Store) -> None:
    (record_id,) = sql(store, "select record_id from flow_holds where hold = 'none'")[0]
    sql(store, "update flow_holds set hold = 'pause', set_by = 'key:evil' where hold = 'none'")
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("flow_holds", record_id, "hold")


def test_an_altered_rollout_is_named(store: Store) -> None:
    rollout = store.facts["rollout"]
    sql(store, "update rollouts set state = 'running', ended_at = null where id = :r", r=rollout)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("rollouts", rollout, "state")
    assert (found["stored"], found["ledger"]) == ("running", "stopped")


def test_an_altered_alarm_is_named(store: Store) -> None:
    alarm = store.facts["alarm"]
    sql(store, "update alarms set severity = 'info' where id = :a", a=alarm)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("alarms", alarm, "severity")
    assert (found["stored"], found["ledger"]) == ("info", "warning")


def test_deleted_window_usage_is_named(store: Store) -> None:
    (flow, guardrail, ts) = sql(store, "select flow, guardrail, ts from guardrail_usage "
                                       "order by id desc limit 1")[0]  # fmt: skip
    sql(store, "delete from guardrail_usage where id = (select max(id) from guardrail_usage)")
    found = mismatch(store)
    assert found["table"] == "guardrail_usage" and found["column"] is None
    assert found["key"] == f"{flow}/{guardrail}@{iso_time(float(str(ts)))}"
    assert "row is missing" in found["problem"]


def test_altered_window_usage_is_named(store: Store) -> None:
    (usage,) = sql(store, "select min(id) from guardrail_usage "
                          "where guardrail = 'daily_exposure_by_region'")[0]  # fmt: skip
    sql(store, "update guardrail_usage set amount = 1 where id = :u", u=usage)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("guardrail_usage", str(usage),
                                                              "amount")  # fmt: skip
    assert found["stored"] == 1.0 and found["ledger"] > 1.0


def test_personal_data_sealed_for_another_record_is_named(store: Store) -> None:
    victim, donor = store.facts["overridden"], store.facts["last"]
    sql(store, "update protected_values set nonce = (select nonce from protected_values "
               "where record_id = :d), ciphertext = (select ciphertext from protected_values "
               "where record_id = :d) where record_id = :v", d=donor, v=victim)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("protected_values", victim,
                                                              "ciphertext")  # fmt: skip
    assert "fail authentication" in found["problem"]


def test_personal_data_resealed_with_the_key_is_named(store: Store) -> None:
    """Even with the data key, another value cannot match the digest the ledger holds."""
    victim = store.facts["overridden"]
    settings = load_settings(store.project, store.env)
    key_id, key = load_data_key(settings.keys_dir)
    with open_engine(store.project, environ=store.env) as engine:
        inputs = engine.entry(victim).body["inputs"]
    forged = {**LOW_RISK, "annual_income": 999_999.0}
    _, sealed = Protector(key_id, key).split(victim, forged, [
        k for k, v in inputs.items() if isinstance(v, dict)
    ])  # fmt: skip
    assert sealed is not None
    sql(store, "update protected_values set nonce = :n, ciphertext = :c where record_id = :v",
        n=sealed.nonce, c=sealed.ciphertext, v=victim)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("protected_values", victim,
                                                              "ciphertext")  # fmt: skip
    assert "does not match the ledger digest" in found["problem"]


def test_an_inserted_row_with_no_entry_behind_it_is_named(store: Store) -> None:
    decision = store.facts["last"]
    sql(store, "insert into outcomes values (:d, :f, 1, 'repaid', null, "
               "'2027-01-18T00:00:00.000000Z', '2027-01-18T00:00:00.000000Z', 'key:evil', "
               "'api', 'out_forged')", d=decision, f=FLOW)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("outcomes", decision, None)
    assert found["problem"] == "row has no outcome entry behind it"


def test_a_deleted_decisions_row_is_named(store: Store) -> None:
    decision = store.facts["last"]
    sql(store, "delete from decisions where id = :d", d=decision)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("decisions", decision, None)
    assert "is missing" in found["problem"]


def test_an_altered_decisions_row_is_named(store: Store) -> None:
    decision = store.facts["overridden"]
    sql(store, "update decisions set status = 'pending_review' where id = :d", d=decision)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("decisions", decision, "status")


def test_a_forged_author_person_on_a_change_is_named(store: Store) -> None:
    """Four eyes reads the person column: a forged author would approve their own change."""
    change = store.facts["change"]
    sql(store, "update policy_changes set author_person = 'someone-else' where id = :c",
        c=change)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("policy_changes", change,
                                                              "author_person")  # fmt: skip
    assert (found["stored"], found["ledger"]) == ("someone-else", AUTHOR.person)


def test_forged_editor_persons_on_a_change_are_named(store: Store) -> None:
    change = store.facts["change"]
    sql(store, "update policy_changes set editor_persons = '[\"someone-else\"]' where id = :c",
        c=change)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("policy_changes", change,
                                                              "editor_persons")  # fmt: skip


def test_a_forged_approver_person_is_named(store: Store) -> None:
    (record_id,) = sql(store, "select record_id from policy_approvals")[0]
    sql(store, "update policy_approvals set approver_person = :p", p=AUTHOR.person)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("policy_approvals", record_id,
                                                              "approver_person")  # fmt: skip
    assert found["ledger"] == APPROVER.person


def test_a_forged_set_by_person_on_a_hold_is_named(store: Store) -> None:
    (record_id,) = sql(store, "select record_id from flow_holds where hold = 'none'")[0]
    sql(store, "update flow_holds set set_by_person = 'someone-else' where hold = 'none'")
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("flow_holds", record_id,
                                                              "set_by_person")  # fmt: skip
    assert found["ledger"] == APPROVER.person


def test_forged_requested_persons_are_named(store: Store) -> None:
    (request,) = sql(store, "select id from autonomy_requests limit 1")[0]
    sql(store, "update autonomy_requests set requested_person = 'x' where id = :r", r=request)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("autonomy_requests", request,
                                                              "requested_person")  # fmt: skip
    sql(store, "update autonomy_requests set requested_person = :p", p=OWNER.person)
    decision = store.facts["waiting"]
    sql(store, "update reviews set requested_person = 'x' where decision_id = :d", d=decision)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("reviews", decision,
                                                              "requested_person")  # fmt: skip


def test_a_forged_delivery_payload_is_named(store: Store) -> None:
    delivery = store.facts["deliveries"]["alarm_notice"]
    (text,) = sql(store, "select payload from deliveries where id = :d", d=delivery)[0]
    payload = json.loads(str(text))
    payload["alarm"]["severity"] = "info"
    sql(store, "update deliveries set payload = :p where id = :d", p=json.dumps(payload),
        d=delivery)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("deliveries", delivery,
                                                              "payload.alarm.severity")  # fmt: skip
    assert (found["stored"], found["ledger"]) == ("info", "warning")


def test_a_forged_retraining_target_is_named(store: Store) -> None:
    delivery = store.facts["deliveries"]["retraining_request"]
    sql(store, "update deliveries set target = 'retrain.command' where id = :d", d=delivery)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("deliveries", delivery, "target")
    assert found["ledger"] == ["retrain.webhook"]


def test_a_delivery_with_no_entry_behind_it_is_named(store: Store) -> None:
    delivery = store.facts["deliveries"]["alarm_notice"]
    sql(store, "insert into deliveries (id, flow, kind, target, alarm_id, payload, state, "
               "attempts, next_attempt_at, created_at) select 'dlv_forged', flow, kind, target, "
               "alarm_id, payload, 'pending', 0, next_attempt_at, '2027-01-19T00:00:00.000000Z' "
               "from deliveries where id = :d", d=delivery)  # fmt: skip
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("deliveries", "dlv_forged", None)
    assert "no alarm_raised alarm entry behind it" in found["problem"]


def test_a_deleted_retraining_request_and_a_retried_delivery_are_named(store: Store) -> None:
    retry = store.facts["deliveries"]["alarm_notice"]
    sql(store, "update deliveries set target = 'other' where id = :d", d=retry)
    found = mismatch(store)
    assert (found["table"], found["key"], found["column"]) == ("deliveries", retry, "target")
    sql(store, "delete from deliveries where id = :d", d=retry)
    found = mismatch(store)
    assert (found["table"], found["key"]) == ("deliveries", retry)
    assert "a delivery_retried entry sent it back" in found["problem"]
    request = store.facts["deliveries"]["retraining_request"]
    sql(store, "delete from deliveries where id = :d", d=request)
    found = mismatch(store)
    assert found["table"] == "deliveries" and found["ledger"] == "retrain.webhook"
    assert "row is missing" in found["problem"]


# ---- the command line and HTTP ---------------------------------------------------------


def test_the_command_line_names_the_first_bad_row(store: Store) -> None:
    runner = CliRunner()
    args = ["ledger", "verify", "--deep", "--project", str(store.project)]
    clean = runner.invoke(cli, args, env=store.env)
    assert clean.exit_code == 0, clean.stderr
    assert "ok: " in clean.stdout and "rows in 16 tables match the ledger" in clean.stdout
    decision = store.facts["reviewed"]
    sql(store, "update reviews set reviewer = :r where decision_id = :d",
        r="key:evil\x1b[2J\u202e", d=decision)  # fmt: skip
    assert runner.invoke(cli, args[:-3] + args[-2:], env=store.env).exit_code == 0  # plain
    failed = runner.invoke(cli, args, env=store.env)
    assert failed.exit_code == 1
    assert f"FAILED (deep) in table reviews, row {decision}" in failed.stderr
    assert "column reviewer: stored 'key:evil\\x1b[2J\\u202e'" in failed.stderr  # escaped
    assert "\x1b" not in failed.stderr and "\u202e" not in failed.stderr
    assert f"the ledger records '{REVIEWER.id}'" in failed.stderr


def test_the_command_line_without_the_data_key_says_personal_inputs_were_not_opened(
    store: Store,
) -> None:
    settings = load_settings(store.project, store.env)
    (settings.keys_dir / "data.key").unlink()
    args = ["ledger", "verify", "--deep", "--project", str(store.project)]
    result = CliRunner().invoke(cli, args, env=store.env)
    assert result.exit_code == 0, result.stderr
    assert "no data key, so personal inputs were not opened" in result.stdout
    assert not (settings.keys_dir / "data.key").exists()  # verifying creates no key


def test_http_verification_with_deep_names_the_first_bad_row(store: Store) -> None:
    decision = store.facts["outcome"]
    sql(store, "update outcomes set value = 99999 where decision_id = :d", d=decision)
    with open_engine(store.project, environ=store.env) as engine:
        _, text = create_key(engine.db, "audit", "ava", [Grant(Role.AUDITOR)], "t", 0.0)
        auditor = {"Authorization": f"Bearer {text}"}
        _, text = create_key(engine.db, "view", "vic", [Grant(Role.VIEWER)], "t", 0.0)
        viewer = {"Authorization": f"Bearer {text}"}
        audit = AuditLog(engine.db)  # closed before the engine
        with TestClient(create_app(engine, audit)) as client:
            plain = client.get("/v1/ledger/verification", headers=auditor)
            assert plain.status_code == 200 and plain.json()["ok"] is True
            assert plain.json()["deep"] is None
            deep = client.get("/v1/ledger/verification?deep=true", headers=auditor)
            assert deep.status_code == 200
            body = deep.json()
            assert body["ok"] is False and body["bad_seq"] is None
            assert body["deep"]["mismatch"] == {
                "table": "outcomes", "key": decision, "column": "value", "stored": 99999.0,
                "ledger": 1200.0, "problem": "differs from the ledger",
            }  # fmt: skip
            assert "outcomes row" in body["problem"]
            denied = client.get("/v1/ledger/verification?deep=true", headers=viewer)
            assert denied.status_code == 403  # the same permission as the plain walk
            bad = client.get("/v1/ledger/verification?deep=maybe", headers=auditor)
            assert bad.status_code == 422
        audit.close()


def test_verification_reads_one_moment_of_the_store(store: Store) -> None:
    """Deep verification compares tables written at different times with the chain; a
    server writing meanwhile must not make them disagree, so it reads one snapshot."""
    settings = load_settings(store.project, store.env)
    db = open_database(settings.database_url, migrate=False)
    count = "select count(*) from decisions"
    try:
        with db.snapshot() as conn:
            before = conn.execute(sa.text(count)).scalar()
            sql(store, "delete from decisions where id = :d", d=store.facts["last"])
            assert conn.execute(sa.text(count)).scalar() == before  # committed meanwhile
        with db.read() as conn:
            assert conn.execute(sa.text(count)).scalar() == before - 1  # seen afterwards
    finally:
        db.close()
