"""The command line through Typer's runner, on a real project and database."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app

runner = CliRunner()


def keel(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_init_validate_decide_explain_whatif_verify(tmp_path: Path) -> None:
    project = tmp_path / "p"
    code, out, _ = keel("init", str(project))
    assert code == 0 and "Created Keel project" in out
    code, out, _ = keel("validate", "--project", str(project))
    assert code == 0 and "ok  flow credit_limit" in out
    example = project / "examples" / "low_risk.json"
    code, out, _ = keel(
        "decide", "credit_limit", "--input", f"@{example}", "--subject", "c-1", "-p", str(project)
    )
    assert code == 0, out
    decision = json.loads(out)
    assert decision["action"] == "approve" and decision["subject_id"] == "c-1"
    code, out, _ = keel("explain", decision["id"], "-p", str(project))
    assert code == 0 and "Decision: approve" in out
    code, out, _ = keel(
        "what-if", decision["id"], "--set", "debt_to_income=0.7", "-p", str(project)
    )
    assert code == 0 and json.loads(out)["after"]["action"] == "decline"
    code, out, _ = keel("ledger", "show", "-p", str(project))
    assert code == 0 and "policy_registered" in out and "decision" in out
    cp = tmp_path / "cp.json"
    code, out, _ = keel("ledger", "checkpoint", "--out", str(cp), "-p", str(project))
    assert code == 0 and cp.exists()
    code, out, _ = keel("ledger", "verify", "--checkpoint", str(cp), "-p", str(project))
    assert code == 0 and "ok: 5 entries verified" in out and "matches checkpoint" in out
    assert "checkpoint signer: unverified" in out
    key = json.loads(cp.read_text())["public_key"]
    code, out, _ = keel(
        "ledger", "verify", "--checkpoint", str(cp), "--public-key", key, "-p", str(project)
    )
    assert code == 0 and "checkpoint signer: verified" in out
    with sqlite3.connect(project / "keel.db") as conn:
        conn.execute(
            "update ledger set record = replace(record, 'approve', 'decline') where seq = 4"
        )
    code, _, err = keel("ledger", "verify", "-p", str(project))
    assert code == 1 and "FAILED at entry 4" in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("decide", "credit_limit", "--input", "{bad json"), "not valid JSON"),
        (("decide", "credit_limit", "--input", "{}"), "required field is missing"),
        (("decide", "nope", "--input", "{}"), "unknown flow 'nope'"),
        (("decide", "credit_limit", "--input", "@missing.json"), "cannot read input file"),
        (("explain", "dec_unknown"), "no decision with id"),
        (("what-if", "dec_unknown", "--set", "novalue"), "must look like name=value"),
    ],
)
def test_errors_are_clear_and_exit_2(project: Path, args: tuple[str, ...], message: str) -> None:
    code, _, err = keel(*args, "--project", str(project))
    assert code == 2 and message in err


def test_no_project_here(tmp_path: Path) -> None:
    code, _, err = keel("validate", "--project", str(tmp_path))
    assert code == 2 and "keel.yaml is missing" in err


def test_init_refuses_non_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    code, _, err = keel("init", str(tmp_path))
    assert code == 2 and "not empty" in err


def test_unreadable_database(project: Path) -> None:
    (project / "keel.db").write_bytes(b"this is not sqlite" * 100)
    code, _, err = keel("ledger", "verify", "--project", str(project))
    assert code == 2 and "cannot read database" in err and "not a database" in err
    code, _, err = keel("validate", "--project", str(project))
    assert code == 0  # definitions are fine; only the database is bad
    code, _, err = keel("decide", "credit_limit", "--input", "{}", "--project", str(project))
    assert code == 2 and "cannot open database" in err and "not a database" in err


def test_ledger_commands_need_only_the_database(project: Path) -> None:
    code, _, err = keel("ledger", "verify", "--project", str(project))
    assert code == 2 and "no Keel ledger" in err
    assert not (project / "keel.db").exists() or (project / "keel.db").stat().st_size == 0
    example = project / "examples" / "low_risk.json"
    assert keel("decide", "credit_limit", "--input", f"@{example}", "-p", str(project))[0] == 0
    (project / "models" / "default_risk.skops").write_bytes(
        b"broken"
    )  # the project no longer loads
    code, out, _ = keel("ledger", "verify", "--project", str(project))
    assert code == 0 and "ok: 4 entries verified" in out
    code, out, _ = keel("ledger", "show", "--json", "--project", str(project))
    assert code == 0 and [json.loads(line)["kind"] for line in out.splitlines()] == [
        "policy_registered",
        "policy_activated",
        "autonomy_changed",
        "decision",
    ]


def test_ledger_export_writes_every_entry_from_a_sequence_number_on(project: Path) -> None:
    from keel import open_engine
    from keel.ledger.reader import entries_from
    from keel.store.database import Database

    example = project / "examples" / "low_risk.json"
    for _ in range(3):
        assert keel("decide", "credit_limit", "--input", f"@{example}", "-p", str(project))[0] == 0
    code, shown, _ = keel("ledger", "show", "--json", "--limit", "100", "-p", str(project))
    out = project / "ledger.jsonl"
    code, _, err = keel("ledger", "export", "--out", str(out), "-p", str(project))
    assert code == 0 and "6 entries written" in err
    assert out.read_text(encoding="utf-8") == shown  # the same lines as show, every one
    code, tail, _ = keel("ledger", "export", "--from-seq", "5", "--kind", "decision",
                         "-p", str(project))  # fmt: skip
    assert code == 0 and [json.loads(line)["seq"] for line in tail.splitlines()] == [5, 6]
    code, _, err = keel("ledger", "export", "--from-seq", "0", "-p", str(project))
    assert code == 2 and "from-seq" in err
    with open_engine(project) as engine:
        db: Database = engine.db
        assert [e.seq for e in entries_from(db, 2, batch=2)] == [2, 3, 4, 5, 6]  # in pages
        assert [e.kind for e in entries_from(db, 1, kind="decision", batch=1)] == ["decision"] * 3


def all_commands() -> list[str]:
    """Every command of the CLI, read from the app itself so the list cannot go stale."""
    import typer.main

    root = typer.main.get_command(app)
    found = []
    for name, command in root.commands.items():  # type: ignore[attr-defined]
        if hasattr(command, "commands"):
            found.extend(f"{name} {sub}" for sub in command.commands)
        else:
            found.append(name)
    return sorted(found)


def test_every_command_has_help_with_an_example() -> None:
    """(The command-line reference page lists them all: tests/test_docs.py.)"""
    commands = all_commands()
    assert {"decide", "ledger verify", "keys create", "serve"} <= set(commands)
    for command in commands:
        code, out, _ = keel(*command.split(), "--help")
        assert code == 0 and "Example:" in out, command


def test_review_queue_from_the_command_line(project: Path, tmp_path: Path) -> None:
    case = json.loads((project / "examples" / "low_risk.json").read_text())
    case["credit_history_years"] = 0.5  # approve, to be confirmed by a person
    source = tmp_path / "case.json"
    source.write_text(json.dumps(case))
    ids = []
    for _ in range(2):
        code, out, err = keel("decide", "credit_limit", "-i", f"@{source}", "-p", str(project))
        assert code == 0, err
        ids.append(json.loads(out)["id"])
    code, out, err = keel("review", "list", "--state", "open", "-p", str(project))
    assert code == 0 and all(i in out for i in ids) and "2 reviews" in err
    code, out, _ = keel("review", "claim", ids[0], "-p", str(project))
    assert code == 0 and json.loads(out)["claimed_by"].startswith("local:")
    code, _, err = keel("review", "resolve", ids[0], "approve", "-p", str(project))
    assert code == 2 and "--reason" in err  # a reason is required
    code, _, err = keel("review", "resolve", ids[0], "change", "-r", "x", "-p", str(project))
    assert code == 2 and "'change' needs the action to take" in err
    code, out, _ = keel(
        "review", "resolve", ids[0], "change", "--action", "approve", "--value", "900",
        "-r", "Start lower.", "-p", str(project),
    )  # fmt: skip
    review = json.loads(out)
    assert code == 0 and review["value"] == 900.0 and review["reviewer"]["role"] == "admin"
    code, out, _ = keel("review", "resolve", ids[1], "reject", "-r", "No.", "-p", str(project))
    assert code == 0 and json.loads(out)["action"] == "refer"
    code, out, _ = keel("review", "list", "--json", "-p", str(project))
    listing = json.loads(out)
    assert [r["state"] for r in listing["reviews"]] == ["resolved", "resolved"]
    assert listing["total"] == 2 and listing["next"] is None
    code, _, err = keel("review", "list", "--flow", "nope", "-p", str(project))
    assert code == 2 and "unknown flow 'nope'" in err
    code, _, err = keel("review", "sweep", "-p", str(project))
    assert code == 0 and "0 deadline breaches recorded" in err


HEAVY = ("numpy", "scipy", "sqlalchemy", "fastapi", "pyarrow", "cel", "keel.engine")


def test_help_imports_nothing_heavy() -> None:
    """`keel --help` stays fast: the CLI imports the engine and its libraries in commands."""
    import subprocess
    import sys

    script = (
        "import json, sys, keel.cli\n"
        "try:\n"
        "    keel.cli.app(['--help'])\n"
        "except SystemExit:\n"
        "    pass\n"
        f"heavy = {HEAVY!r}\n"
        "loaded = [m for m in sys.modules if any(m == h or m.startswith(h + '.') for h in heavy)]\n"
        "print(json.dumps(sorted(loaded)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = json.loads(done.stdout.splitlines()[-1])
    assert loaded == [], f"importing keel.cli loaded {loaded}"
