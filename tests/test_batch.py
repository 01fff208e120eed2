"""Batches: every bad case named at once (Python, HTTP), and deciding a CSV or Parquet file
of cases through the CLI — typed cells, nothing recorded from a file with bad rows, chunks
recorded atomically when the ledger fails part-way, an output file that matches the ledger."""

from __future__ import annotations

import csv
import os
import pty
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from keel import Engine, InputError, open_engine
from keel.api import create_app
from keel.cli import app
from keel.decide.casefile import typed_cell
from keel.scaffold.applicants import generate_applicants
from keel.security.roles import Grant, Role
from tests.conftest import LOW_RISK
from tests.test_api import key
from tests.test_decide import ledger_count

FLOW = "credit_limit"
COLUMNS = [
    "annual_income",
    "debt_to_income",
    "credit_utilization",
    "delinquencies_2y",
    "credit_history_years",
    "employment_years",
    "requested_limit",
    "region",
]
runner = CliRunner()


def keel(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def applicants(n: int) -> list[dict[str, Any]]:
    return [
        {"subject_id": f"app-{i + 1}", **{c: a[c] for c in COLUMNS}}
        for i, a in enumerate(generate_applicants(n, seed=11))
    ]


def write_csv(path: Path, rows: list[dict[str, Any]], header: list[str] | None = None) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header or list(rows[0]))
        for row in rows:
            writer.writerow(list(row.values()))
    return path


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


# ---- decide_many names every bad case -------------------------------------------------------


def test_decide_many_names_every_bad_case(engine: Engine, db_url: str) -> None:
    cases = [
        LOW_RISK,
        {**LOW_RISK, "region": "mars"},
        LOW_RISK,
        {**LOW_RISK, "annual_income": "lots", "delinquencies_2y": 2.5},
    ]
    with pytest.raises(InputError) as refused:
        engine.decide_many(FLOW, cases, ["a", "b", "c", "d"])
    message = refused.value.message
    assert "2 of 4 cases are invalid, so none was decided" in message
    assert "case 1 (subject b): region: 'mars' is not one of" in message
    assert "case 3 (subject d): annual_income: expected a number" in message
    assert "delinquencies_2y: expected an integer, got 2.5" in message
    listed = refused.value.detail["cases"]
    assert [(c["index"], c["subject_id"]) for c in listed] == [(1, "b"), (3, "d")]
    assert [e["field"] for e in listed[1]["errors"]] == ["annual_income", "delinquencies_2y"]
    assert ledger_count(db_url) == 0
    with pytest.raises(InputError, match="a batch needs at least one case"):
        engine.decide_many(FLOW, [])


def test_http_batch_names_every_bad_case_and_records_nothing(engine: Engine, db_url: str) -> None:
    headers = key(engine, Grant(Role.OWNER, FLOW))
    cases = [
        {"inputs": {**LOW_RISK, "region": "mars"}, "subject_id": "s-1"},
        {"inputs": LOW_RISK, "subject_id": "s-2"},
        {"inputs": {**LOW_RISK, "requested_limit": 5}, "subject_id": "s-3"},
    ]
    with TestClient(create_app(engine), raise_server_exceptions=False) as client:
        response = client.post(
            f"/v1/flows/{FLOW}/decisions/batch", json={"cases": cases}, headers=headers
        )
    assert response.status_code == 422, response.text
    body = response.json()
    assert body["code"] == "invalid_input"
    assert [(c["index"], c["subject_id"]) for c in body["detail"]["cases"]] == [
        (0, "s-1"),
        (2, "s-3"),
    ]
    assert body["detail"]["cases"][1]["errors"][0]["field"] == "requested_limit"
    assert "case 0 (subject s-1)" in body["message"] and "case 2 (subject s-3)" in body["message"]
    assert ledger_count(db_url) == 0


# ---- keel decide FLOW --file ----------------------------------------------------------------


@pytest.fixture
def ready(project: Path) -> Path:
    """The example project with its database created (and its policy recorded)."""
    with open_engine(project):
        pass
    return project


def recorded(project: Path) -> int:
    with sqlite3.connect(project / "keel.db") as conn:
        return int(conn.execute("select count(*) from ledger where kind='decision'").fetchone()[0])


def check_against_ledger(project: Path, rows: list[dict[str, Any]]) -> None:
    """Each output row says what the ledger recorded for its decision."""
    with open_engine(project) as engine:
        for row in rows:
            entry = engine.entry(str(row["decision_id"]))
            body = entry.body
            assert str(entry.seq) == str(row["seq"])
            assert entry.recorded_at == row["recorded_at"]
            assert body["subject_id"] == row["subject_id"]
            assert (body["action"], body["status"], body["rule"]) == (
                row["action"],
                row["status"],
                row["rule"],
            )
            value = row["value"]
            assert body.get("value") == (float(value) if value not in (None, "") else None)
            score = body["signals"]["default_risk"]["score"]
            assert float(row["default_risk_score"]) == pytest.approx(score, rel=1e-12)
            assert engine.explain(entry.record_id)["decision"]["reason"] == row["reason"]


def test_csv_file_decided_typed_and_written(ready: Path, tmp_path: Path) -> None:
    cases = write_csv(tmp_path / "cases.csv", applicants(7))
    out = tmp_path / "decisions.csv"
    code, stdout, err = keel(
        "decide", FLOW, "--file", str(cases), "--out", str(out), "--chunk-size", "3",
        "-p", str(ready),
    )  # fmt: skip
    assert code == 0, err
    assert stdout.startswith("decided 7 cases from cases.csv in ")
    assert "by action: " in stdout and "by status: " in stdout and f"written to {out}" in stdout
    assert "━" not in err and "deciding" not in err  # no progress bar when not a terminal
    rows = read_csv(out)
    assert [r["row"] for r in rows] == [str(n) for n in range(2, 9)]  # the header is line 1
    assert [r["subject_id"] for r in rows] == [f"app-{n}" for n in range(1, 8)]
    assert list(rows[0]) == [
        "row", "subject_id", "decision_id", "seq", "action", "value", "status", "rule",
        "reason", "fallback", "recorded_at", "default_risk_score",
    ]  # fmt: skip
    assert recorded(ready) == 7
    check_against_ledger(ready, [dict(r) for r in rows])
    with open_engine(ready) as engine:  # cells typed by the flow: an integer stays one
        inputs = engine.explain(rows[0]["decision_id"])["inputs"]
    assert type(inputs["delinquencies_2y"]) is int and type(inputs["annual_income"]) is float
    assert inputs["region"] in ("north", "south", "east", "west")


def test_parquet_file_decided_natively_typed(ready: Path, tmp_path: Path) -> None:
    people = applicants(5)
    table = pa.Table.from_pylist(
        [{**p, "customer": 1000 + i} for i, p in enumerate(people)]
    ).drop_columns(["subject_id"])
    cases = tmp_path / "cases.parquet"
    pq.write_table(table, cases)
    out = tmp_path / "decisions.parquet"
    code, _, err = keel(
        "decide", FLOW, "--file", str(cases), "--out", str(out),
        "--subject-column", "customer", "-p", str(ready),
    )  # fmt: skip
    assert code == 0, err
    written = pq.read_table(out)
    assert written.schema.field("seq").type == pa.int64()
    assert written.schema.field("default_risk_score").type == pa.float64()
    rows = written.to_pylist()
    assert [r["row"] for r in rows] == [1, 2, 3, 4, 5]  # Parquet rows count from 1
    assert [r["subject_id"] for r in rows] == ["1000", "1001", "1002", "1003", "1004"]
    check_against_ledger(ready, rows)


def test_bad_rows_all_named_and_nothing_recorded(ready: Path, tmp_path: Path) -> None:
    people = applicants(6)
    people[1]["annual_income"] = "lots"
    people[1]["region"] = "mars"
    people[3]["delinquencies_2y"] = "2.5"
    people[4]["debt_to_income"] = ""  # an empty cell is a missing value
    cases = write_csv(tmp_path / "cases.csv", people)
    with cases.open("a", encoding="utf-8") as handle:
        handle.write("app-7,1,2,3\n")  # too few cells
    out = tmp_path / "decisions.parquet"
    code, stdout, err = keel(
        "decide", FLOW, "--file", str(cases), "--out", str(out), "--chunk-size", "2",
        "-p", str(ready),
    )  # fmt: skip
    assert code == 2 and stdout == ""
    assert "cases.csv: 4 bad rows, so no case was recorded" in err
    assert "row 3: annual_income: expected a number, got str 'lots'; region: 'mars'" in err
    assert "row 5: delinquencies_2y: expected an integer, got 2.5" in err
    assert "row 6: debt_to_income: required field is missing" in err
    assert "row 8: 4 cells for 9 columns" in err
    assert "row 2:" not in err and "row 4:" not in err and "row 7:" not in err
    assert recorded(ready) == 0
    assert not out.exists()  # nothing recorded: no output file either


def test_failed_chunk_records_nothing_and_says_how_to_go_on(ready: Path, tmp_path: Path) -> None:
    cases = write_csv(tmp_path / "cases.csv", applicants(10))
    with sqlite3.connect(ready / "keel.db") as conn:  # the ledger refuses its 7th decision
        conn.execute(
            "create trigger full before insert on ledger when new.kind = 'decision' and "
            "(select count(*) from ledger where kind = 'decision') >= 6 "
            "begin select raise(abort, 'disk full'); end"
        )
    out = tmp_path / "first.csv"
    code, _, err = keel(
        "decide", FLOW, "--file", str(cases), "--out", str(out), "--chunk-size", "3",
        "-p", str(ready),
    )  # fmt: skip
    assert code == 2
    assert "error [batch_incomplete]: cases.csv: the chunk from row 8 could not be recorded" in err
    assert "disk full" in err and "rows 2–7 (6 cases) are recorded" in err
    assert f"go on with: keel decide {FLOW} --file {cases} --skip 6" in err
    assert recorded(ready) == 6  # two whole chunks; none of the third
    first = read_csv(out)
    assert [r["row"] for r in first] == ["2", "3", "4", "5", "6", "7"]
    check_against_ledger(ready, [dict(r) for r in first])

    with sqlite3.connect(ready / "keel.db") as conn:
        conn.execute("drop trigger full")
    rest = tmp_path / "rest.csv"
    code, stdout, err = keel(
        "decide", FLOW, "--file", str(cases), "--out", str(rest), "--chunk-size", "3",
        "--skip", "6", "-p", str(ready),
    )  # fmt: skip
    assert code == 0, err
    assert "decided 4 cases from cases.csv, 6 skipped" in stdout
    second = read_csv(rest)
    assert [r["subject_id"] for r in second] == ["app-7", "app-8", "app-9", "app-10"]
    assert recorded(ready) == 10
    check_against_ledger(ready, [dict(r) for r in second])


def test_summary_only_without_out_and_refusals(ready: Path, tmp_path: Path) -> None:
    cases = write_csv(tmp_path / "cases.csv", applicants(3))
    code, stdout, err = keel("decide", FLOW, "--file", str(cases), "-p", str(ready))
    assert code == 0, err
    assert stdout.startswith("decided 3 cases") and "written to" not in stdout
    taken = tmp_path / "taken.csv"
    taken.write_text("keep me")
    refusals = [
        (["--out", str(taken)], "already exists: choose another --out file"),
        (["--input", "{}"], "give either --input (one case) or --file"),
        (["--subject", "x"], "--subject goes with --input"),
        (["--skip", "4"], "holds 3 cases: --skip 4 would skip more"),
        (["--out", str(tmp_path / "d.json")], "decision files are .csv or .parquet"),
    ]
    for extra, said in refusals:
        code, _, err = keel("decide", FLOW, "--file", str(cases), *extra, "-p", str(ready))
        assert code == 2 and said in err, (extra, err)
    assert taken.read_text() == "keep me"
    wrong = write_csv(tmp_path / "wrong.csv", [{"income": 1, "region": "north"}])
    code, _, err = keel("decide", FLOW, "--file", str(wrong), "-p", str(ready))
    assert code == 2
    assert "columns that are not inputs of the flow: income" in err
    assert "missing columns for required inputs: annual_income, debt_to_income" in err
    assert recorded(ready) == 3


def test_parquet_without_the_tables_extra_names_it(
    ready: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    cases = tmp_path / "cases.parquet"
    pq.write_table(pa.Table.from_pylist(applicants(2)), cases)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # as if not installed
    code, _, err = keel("decide", FLOW, "--file", str(cases), "-p", str(ready))
    assert code == 2 and "error [missing_extra]" in err and "pip install 'keel[tables]'" in err


def test_typed_cells() -> None:
    assert typed_cell("integer", "3") == 3 and typed_cell("integer", "2.5") == 2.5
    assert typed_cell("number", "1e3") == 1000.0 and typed_cell("number", "1_000") == "1_000"
    assert typed_cell("boolean", "TRUE") is True and typed_cell("boolean", "no") is False
    assert typed_cell("boolean", "maybe") == "maybe" and typed_cell("string", "07") == "07"


def test_progress_bar_on_a_terminal_only(ready: Path, tmp_path: Path) -> None:
    cases = write_csv(tmp_path / "cases.csv", applicants(4))
    command = [sys.executable, "-m", "keel.cli", "decide", FLOW, "--file", str(cases)]
    leader, follower = pty.openpty()  # standard error is a terminal
    env = {**os.environ, "COLUMNS": "100", "TERM": "xterm"}
    run = subprocess.run(
        [*command, "-p", str(ready)], stderr=follower, stdout=subprocess.PIPE, env=env,
        timeout=120, check=False,
    )  # fmt: skip
    os.close(follower)
    shown = _drain(leader)
    assert run.returncode == 0 and "deciding" in shown
    quiet = subprocess.run(
        [*command, "--quiet", "-p", str(ready)], capture_output=True, text=True, timeout=120,
        check=False,
    )  # fmt: skip
    assert quiet.returncode == 0 and "deciding" not in quiet.stderr
    assert quiet.stdout.startswith("decided 4 cases")


def _drain(fd: int) -> str:
    chunks = []
    while True:
        try:
            data = os.read(fd, 4096)
        except OSError:
            break
        if not data:
            break
        chunks.append(data)
    os.close(fd)
    return b"".join(chunks).decode("utf-8", "replace")
