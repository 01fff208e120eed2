"""Outcomes: reported once, resent harmlessly, never contradicted; single, batch and files."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import open_engine
from keel.api import create_app
from keel.cli import app
from keel.engine import Engine
from keel.errors import ConflictError, DefinitionError, InputError, NotFoundError
from keel.ledger.records import iso_time
from keel.review.outcomes import OutcomeReport
from keel.security.apikeys import create_key
from keel.security.roles import Grant, PermissionDeniedError, Role
from tests.conftest import LOW_RISK, person, replace_in, run_sql

FLOW = "credit_limit"


def test_an_outcome_is_recorded_once_and_never_contradicted(engine: Engine) -> None:
    decision = engine.decide(FLOW, LOW_RISK)
    when = iso_time(time.time())  # outcomes are observed after the decision, never before
    reported = engine.outcomes.report(
        OutcomeReport(decision.id, "defaulted", 1850.0, when.replace(".", ",")),
        person("key:svc", "svc", "decider"),
    )
    row = reported.row
    assert reported.created and row.label == "defaulted" and row.value == 1850.0
    assert row.observed_at == when
    entry = engine.entry(row.record_id)
    assert entry.kind == "outcome" and entry.body["decision"] == decision.id
    assert entry.body["reported_by"] == "key:svc" and entry.flow == FLOW
    # A resend (with or without its time) changes nothing.
    for resend in (
        OutcomeReport(decision.id, "defaulted", 1850.0),
        OutcomeReport(decision.id, "defaulted", 1850.0, when.replace("Z", "+00:00")),
    ):
        again = engine.outcomes.report(resend, person("key:other", "key:other", "decider"))
        assert not again.created and again.row.record_id == row.record_id
    for conflicting in (
        OutcomeReport(decision.id, "repaid"),
        OutcomeReport(decision.id, "defaulted", 99.0),
        OutcomeReport(decision.id, "defaulted", 1850.0, iso_time(time.time() + 1)),
    ):
        with pytest.raises(ConflictError, match="already has outcome 'defaulted', value 1850"):
            engine.outcomes.report(conflicting, person("key:other", "key:other", "decider"))
    assert (
        engine.outcomes.get(decision.id, engine.operator).reported_by == "key:svc"
    )  # the first stands
    assert engine.metrics.outcomes.labels(FLOW, "defaulted")._value.get() == 1
    assert engine.verify().ok and engine.verify().entries == 5


def test_bad_reports_are_refused_and_change_nothing(engine: Engine, db_url: str) -> None:
    decision = engine.decide(FLOW, LOW_RISK)
    made = engine.entry(decision.id).recorded_at
    with pytest.raises(NotFoundError, match="no decision with id 'dec_nope'"):
        engine.outcomes.report(OutcomeReport("dec_nope", "repaid"), engine.operator)
    bad = [
        (OutcomeReport(decision.id, "paid_back"), "unknown outcome label 'paid_back'"),
        (OutcomeReport(decision.id, ""), "label must be a text"),
        (OutcomeReport(decision.id, "repaid", float("nan")), "not a finite number"),
        (OutcomeReport(decision.id, "repaid", None, "yesterday"), "not an ISO 8601 time"),
        (OutcomeReport(decision.id, "repaid", None, "2001-01-01"), "before the decision"),
        (OutcomeReport(decision.id, "repaid", None, "2999-01-01"), "in the future"),
    ]
    for report, message in bad:
        with pytest.raises(InputError, match=message):
            engine.outcomes.report(report, engine.operator)
    assert made  # the decision's own time bounds observed_at from below
    assert run_sql(db_url, "select count(*) from outcomes")[0][0] == 0
    assert engine.verify().entries == 4  # policy (2), autonomy, the decision; no outcome
    with pytest.raises(NotFoundError, match="no outcome has been reported"):
        engine.outcomes.get(decision.id, engine.operator)


def test_a_batch_is_recorded_whole_or_not_at_all(engine: Engine, db_url: str) -> None:
    ids = [d.id for d in engine.decide_many(FLOW, [LOW_RISK] * 4)]
    good = [OutcomeReport(i, "repaid") for i in ids[:3]]
    with pytest.raises(InputError) as refused:
        engine.outcomes.report_many(
            [
                *good,
                OutcomeReport(ids[3], "repaid"),
                OutcomeReport(ids[3], "defaulted"),  # contradicts the row before it
                OutcomeReport("dec_nope", "repaid"),
                OutcomeReport(ids[0], "lost"),
            ],
            engine.operator,
            "api",
        )
    message = str(refused.value)
    assert "3 problems in the outcomes from api, so none was recorded" in message
    assert "row 5: decision" in message and "row 6: no decision with id 'dec_nope'" in message
    assert "row 7: unknown outcome label 'lost'" in message
    assert run_sql(db_url, "select count(*) from outcomes")[0][0] == 0
    result = engine.outcomes.report_many([*good, good[0]], engine.operator, "api")
    assert result.to_dict() == {"recorded": 3, "unchanged": 1}
    assert engine.outcomes.report_many(good, engine.operator, "api").to_dict() == {
        "recorded": 0,
        "unchanged": 3,
    }
    elsewhere = person("key:else0001", "Elsa", "decider", "pricing")  # reports on no flow here
    with pytest.raises(PermissionDeniedError, match="may not report outcomes on any flow"):
        engine.outcomes.report_many([OutcomeReport(ids[3], "repaid")], elsewhere, "api")
    with pytest.raises(InputError, match="no outcomes given"):
        engine.outcomes.report_many([], engine.operator, "api")


def test_outcome_files_csv_and_parquet(engine: Engine, tmp_path: Path) -> None:
    ids = [d.id for d in engine.decide_many(FLOW, [LOW_RISK] * 4)]
    csv_file = tmp_path / "june.csv"
    csv_file.write_text(
        "decision_id,label,value,observed_at\n"
        f"{ids[0]},repaid,,\n"
        f"{ids[1]},defaulted,1850.5,{iso_time(time.time())}\n"
    )
    assert engine.outcomes.import_file(csv_file, engine.operator).to_dict() == {
        "recorded": 2,
        "unchanged": 0,
    }
    assert engine.outcomes.get(ids[1], engine.operator).source == "file:june.csv"
    parquet = tmp_path / "july.parquet"
    pq.write_table(
        pa.table(
            {
                "decision_id": [ids[1], ids[2], ids[3]],
                "label": ["defaulted", "repaid", "defaulted"],
                "value": [1850.5, None, 300.0],
            }
        ),
        parquet,
    )
    assert engine.outcomes.import_file(parquet, engine.operator).to_dict() == {
        "recorded": 2,
        "unchanged": 1,
    }
    assert engine.outcomes.get(ids[3], engine.operator).value == 300.0


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("a.csv", "decision_id,value\nx,1\n", "missing column label"),
        ("a.csv", "decision_id,label,lable\nx,y,z\n", "unknown column lable"),
        ("a.csv", "decision_id,label\n", "the file holds no outcomes"),
        ("a.csv", "decision_id,label,value\nx,repaid,lots\n", "row 1: value 'lots' is not a"),
        ("a.csv", "decision_id,label\nx,repaid,extra\n", "row 1: 3 cells for 2"),
        ("a.csv", b"\xff\xfe\x00binary", "not a UTF-8 text"),
        ("a.parquet", b"PAR1 not really", "not a readable Parquet file"),
        ("a.xlsx", "whatever", "outcome files are .csv or .parquet"),
    ],
)
def test_malformed_outcome_files_are_refused(
    engine: Engine, tmp_path: Path, name: str, content: str | bytes, message: str
) -> None:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(InputError, match=message):
        engine.outcomes.import_file(path, engine.operator)
    with pytest.raises(InputError, match="no outcome file at"):
        engine.outcomes.import_file(tmp_path / "missing.csv", engine.operator)


def test_outcome_settings_are_checked(project: Path, env: dict[str, str]) -> None:
    flow_file = project / "flows" / "credit_limit.yaml"
    original = flow_file.read_text()
    replace_in(flow_file, "    defaulted: decline\n", "    defaulted: decline\n    Bad-Label: x\n")
    replace_in(flow_file, "  value: amount written off", "  colour: red\n  value: amount")
    with pytest.raises(DefinitionError) as raised:
        open_engine(project, environ=env)
    message = str(raised.value)
    assert "outcome.labels.Bad-Label: an outcome label must be lower_snake_case" in message
    assert "unknown key 'colour' in outcome" in message
    flow_file.write_text(original.replace("    defaulted: decline\n", "    defaulted: shred\n"))
    with pytest.raises(DefinitionError, match="'shred' is not an action of policy credit_limit"):
        open_engine(project, environ=env)


def test_a_flow_without_labels_takes_no_outcomes(project: Path, env: dict[str, str]) -> None:
    flow_file = project / "flows" / "credit_limit.yaml"
    text = flow_file.read_text()
    start = text.index("outcome:")
    end = text.index("inputs:")
    flow_file.write_text(text[:start] + "outcome: defaulted within 24 months\n" + text[end:])
    with open_engine(project, environ=env) as engine:
        decision = engine.decide(FLOW, LOW_RISK)
        with pytest.raises(InputError, match="declares no outcome labels"):
            engine.outcomes.report(OutcomeReport(decision.id, "repaid"), engine.operator)


def test_outcomes_over_http_and_the_command_line(project: Path) -> None:
    with open_engine(project) as engine:  # the command line opens the same SQLite file
        _outcomes_over_http_and_the_command_line(engine, project)


def _outcomes_over_http_and_the_command_line(engine: Engine, project: Path) -> None:
    decision = engine.decide(FLOW, LOW_RISK)
    _, token = create_key(engine.db, "svc", "test", [Grant(Role.DECIDER, FLOW)], "t", time.time())
    headers = {"Authorization": f"Bearer {token}"}
    with TestClient(create_app(engine)) as client:
        path = f"/v1/decisions/{decision.id}/outcome"
        first = client.put(path, json={"label": "repaid"}, headers=headers)
        assert first.status_code == 201 and first.json()["created"] is True
        again = client.put(path, json={"label": "repaid"}, headers=headers)
        assert again.status_code == 200 and again.json()["created"] is False
        other = client.put(path, json={"label": "defaulted"}, headers=headers)
        assert other.status_code == 409 and other.json()["code"] == "conflict"
        bad = client.put(path, json={"label": "repaid", "colour": 1}, headers=headers)
        assert bad.status_code == 422
        batch = client.post(
            "/v1/outcomes",
            json={"outcomes": [{"decision_id": decision.id, "label": "repaid"}]},
            headers=headers,
        )
        assert batch.json() == {"recorded": 0, "unchanged": 1}
    runner = CliRunner()
    shown = runner.invoke(app, ["outcomes", "show", decision.id, "-p", str(project)])
    assert shown.exit_code == 0 and json.loads(shown.stdout)["label"] == "repaid"
    refused = runner.invoke(
        app, ["outcomes", "report", decision.id, "defaulted", "-p", str(project)]
    )
    assert refused.exit_code == 2 and "already has outcome 'repaid'" in refused.stderr
    later = engine.decide(FLOW, LOW_RISK)
    reported = runner.invoke(
        app, ["outcomes", "report", later.id, "defaulted", "--value", "12", "-p", str(project)]
    )
    assert reported.exit_code == 0 and "recorded" in reported.stderr
    file = project / "o.csv"
    file.write_text(f"decision_id,label,value\n{later.id},defaulted,12\n")
    imported = runner.invoke(app, ["outcomes", "import", str(file), "-p", str(project)])
    assert imported.exit_code == 0 and "0 outcomes recorded, 1 already" in imported.stdout
