"""``keel knowledge`` through Typer's runner, on a real project and store (SQLite, and
PostgreSQL with pgvector): a collection synced from a folder, searched as two people (two
API keys in ``KEEL_API_KEY``), a restricted document, a withdrawal, and bad input."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel import open_engine
from keel.cli import app
from keel.security.apikeys import create_key
from keel.security.roles import Grant, Role
from tests.conftest import fresh_pgvector_database

runner = CliRunner()
FILES = {
    "leave.md": "# Leave\n\nEvery employee has 25 days of paid annual leave a year.\n",
    "expenses.md": "# Expenses\n\nTravel expenses are refunded within 30 days.\n",
    "salary-bands.md": "# Salary bands\n\nBand C pays between 52,000 and 61,000 euros.\n",
}


@pytest.fixture(params=["sqlite", "postgres"])
def env(request: pytest.FixtureRequest) -> Iterator[dict[str, str]]:
    with contextlib.ExitStack() as stack:
        if request.param == "postgres":
            yield {"KEEL_DATABASE_URL": stack.enter_context(fresh_pgvector_database())}
        else:
            yield {}


def keel(project: Path, env: dict[str, str], *args: str, key: str = "") -> tuple[int, str, str]:
    result = runner.invoke(app, [*args, "-p", str(project)], env={**env, "KEEL_API_KEY": key})
    return result.exit_code, result.stdout, result.stderr


def reader_key(project: Path, env: dict[str, str], person: str) -> str:
    with open_engine(project, environ=env) as engine:
        grant = Grant(Role.READER, collection="handbook")
        _, text = create_key(engine.db, person, person, [grant], "tests", engine.clock())
    return text


def test_sync_search_as_two_people_restrict_and_withdraw(
    project: Path, env: dict[str, str], tmp_path: Path
) -> None:
    folder = tmp_path / "handbook"
    folder.mkdir()
    for name, text in FILES.items():
        (folder / name).write_text(text, encoding="utf-8")
    (folder / "broken.pdf").write_bytes(b"not a pdf at all")
    (folder / "logo.png").write_bytes(b"\x89PNG")

    code, out, err = keel(
        project, env, "knowledge", "create", "handbook", "--owner", "hr@example.com",
        "--classification", "internal", "--access", "role:reader",
        "--source-folder", str(folder), "--reason", "the staff handbook",
    )  # fmt: skip
    assert code == 0, err
    assert "Created collection handbook (internal, owner hr@example.com)" in out
    assert "inherit role:reader" in out

    code, out, err = keel(project, env, "knowledge", "sync", "handbook")
    assert code == 1, err  # broken.pdf failed; the others went in
    assert "3 new, 0 changed, 0 unchanged, 0 removed, 1 failed" in out
    assert "failed     broken.pdf" in out and "skipped    logo.png" in out
    assert "new        salary-bands.md  doc_" in out

    extra = tmp_path / "pensions.md"
    extra.write_text("# Pensions\n\nThe employer pays 8% of salary.\n", encoding="utf-8")
    code, out, err = keel(
        project, env, "knowledge", "add", "handbook", str(extra), "--access", "group:hr"
    )
    assert code == 0, err
    assert out.startswith(f"new        {extra}  doc_") and "v1 (1 chunks, 1 embedded)" in out
    code, out, _ = keel(project, env, "knowledge", "documents", "handbook", str(extra))
    assert json.loads(out)["access"] == ["group:hr"]

    code, out, _ = keel(project, env, "knowledge", "list")
    assert code == 0 and out.startswith("handbook") and "default access role:reader" in out

    alice, bob = reader_key(project, env, "alice"), reader_key(project, env, "bob")
    salary = str(folder / "salary-bands.md")
    code, out, err = keel(
        project, env, "knowledge", "access", "handbook", salary, "person:alice",
        "--reason", "pay is confidential",
    )  # fmt: skip
    assert code == 0, err
    assert "may be read by person:alice" in out

    def found(key: str, query: str) -> set[str]:
        code, out, err = keel(
            project, env, "knowledge", "search", "handbook", query, "-k", "10", "--json", key=key
        )
        assert code == 0, err
        return {Path(h["source_uri"]).name for h in json.loads(out)["hits"]}

    assert "salary-bands.md" in found(alice, "salary band")
    assert found(bob, "salary band") == {"leave.md", "expenses.md"}

    code, out, err = keel(
        project, env, "knowledge", "search", "handbook", "How many days of leave?", "-k", "1",
        key=bob,
    )  # fmt: skip
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].startswith("[1] leave.md §") and "fused " in lines[0]
    assert "25 days of paid annual leave" in lines[2]
    assert lines[-1].startswith("1 hits; search recorded in the ledger as evt_")

    code, out, err = keel(
        project, env, "knowledge", "withdraw", "handbook", str(folder / "leave.md"),
        "--reason", "replaced by the 2027 policy",
    )  # fmt: skip
    assert code == 0, err and "chunks out of the index" in out
    assert "leave.md" not in found(bob, "annual leave days")
    code, out, _ = keel(project, env, "knowledge", "versions", "handbook", str(folder / "leave.md"))
    assert code == 0 and " withdrawn " in out

    code, out, _ = keel(project, env, "knowledge", "documents", "handbook", salary)
    assert code == 0 and json.loads(out)["access"] == ["person:alice"]
    code, out, _ = keel(project, env, "knowledge", "documents", "handbook")
    listed = out.splitlines()
    assert code == 0 and listed[-1] == "3 documents"  # expenses, pensions, salary bands
    assert [line.split()[-2] for line in listed[:-1]] == [  # by source URI
        "expenses.md", "salary-bands.md", "pensions.md",
    ]  # fmt: skip
    assert listed[1].split()[:4] == ["live", "v1", listed[1].split()[2], "person:alice"]
    code, out, _ = keel(project, env, "knowledge", "documents", "handbook", "--withdrawn")
    assert code == 0 and "withdrawn" in out and "leave.md" in out and "4 documents" in out

    # A file left in the folder would come back with the next sync: remove it there too.
    (folder / "leave.md").unlink()
    (folder / "expenses.md").unlink()
    code, out, _ = keel(project, env, "knowledge", "sync", "handbook")
    assert "0 new, 0 changed, 1 unchanged, 1 removed, 1 failed" in out
    assert found(bob, "travel expenses") == set()

    code, out, err = keel(
        project, env, "knowledge", "change", "handbook", "--access", "role:reader",
        "--access", "group:hr", "--classification", "confidential",
    )  # fmt: skip
    assert code == 0, err
    changed = json.loads(out)
    assert changed["default_access"] == ["group:hr", "role:reader"]
    assert changed["classification"] == "confidential"

    code, out, err = keel(project, env, "knowledge", "revoke", "handbook", "--person", "Alice")
    assert code == 0, err and "1 documents' lists" in out
    assert "salary-bands.md" not in found(alice, "salary band")


def test_bad_input_exits_2_with_a_clear_message(project: Path, env: dict[str, str]) -> None:
    code, _, err = keel(
        project, env, "knowledge", "create", "Hand Book", "--owner", "hr",
        "--classification", "internal", "--access", "role:reader",
    )  # fmt: skip
    assert code == 2 and "error [invalid_input]" in err and "not a collection name" in err
    code, _, err = keel(
        project, env, "knowledge", "create", "handbook", "--owner", "hr",
        "--classification", "internal", "--access", "reader",
    )  # fmt: skip
    assert code == 2 and "is not an access key" in err
    code, _, err = keel(project, env, "knowledge", "show", "nowhere")
    assert code == 2 and "error [not_found]" in err
    code, _, err = keel(project, env, "knowledge", "withdraw", "handbook", "doc_x", "-r", " ")
    assert code == 2 and "--reason is required" in err
    code, _, err = keel(project, env, "knowledge", "access", "handbook", "doc_x")
    assert code == 2 and "give the access keys, or --inherit" in err
    code, _, err = keel(project, env, "knowledge", "documents", "handbook", "no-such-file.md")
    assert code == 2 and "neither a document id" in err
    code, _, err = keel(project, env, "knowledge", "change", "handbook")
    assert code == 2 and "nothing to change" in err


def test_search_as_of_an_instant_and_the_space_searched(project: Path, tmp_path: Path) -> None:
    env: dict[str, str] = {}  # SQLite: the service's "as of" is tested on both backends
    leave = tmp_path / "leave.md"
    leave.write_text(FILES["leave.md"], encoding="utf-8")
    code, _, err = keel(
        project, env, "knowledge", "create", "handbook", "--owner", "hr@example.com",
        "--classification", "internal", "--access", "role:reader",
    )  # fmt: skip
    assert code == 0, err
    assert keel(project, env, "knowledge", "add", "handbook", str(leave))[0] == 0
    leave.write_text("# Leave\n\nEvery employee has 30 days of leave.\n", encoding="utf-8")
    assert keel(project, env, "knowledge", "add", "handbook", str(leave))[0] == 0
    alice = reader_key(project, env, "alice")
    with open_engine(project, environ=env) as engine:
        space = engine.knowledge.collection(engine.operator, "handbook").settings.space_id
        (doc,) = engine.knowledge.documents(engine.operator, "handbook")
        first = engine.knowledge.versions(engine.operator, "handbook", doc.document_id)[0]
    assert first.ended_at is not None
    then = datetime.fromtimestamp((first.created_at + first.ended_at) / 2, UTC)
    shown = then.isoformat().replace("+00:00", "Z")

    code, out, err = keel(
        project, env, "knowledge", "search", "handbook", "leave", "--json", key=alice
    )
    assert code == 0, err
    now = json.loads(out)
    assert now["space_id"] == space and now["as_of"] is None
    assert [h["text"] for h in now["hits"]] and all("30 days" in h["text"] for h in now["hits"])

    code, out, err = keel(
        project, env, "knowledge", "search", "handbook", "leave", "--as-of", shown, "--json",
        key=alice,
    )  # fmt: skip
    assert code == 0, err
    past = json.loads(out)
    assert past["space_id"] == space and past["as_of"].startswith(shown[:19])
    assert past["hits"] and all("25 days" in h["text"] for h in past["hits"])
    code, out, err = keel(
        project, env, "knowledge", "search", "handbook", "leave", "--as-of", shown, key=alice
    )
    assert code == 0, err
    assert "25 days" in out and f"1 hits as of {shown[:19]}" in out

    for bad in ("yesterday", "2026-11-31T12:00:00Z"):
        code, _, err = keel(
            project, env, "knowledge", "search", "handbook", "leave", "--as-of", bad, key=alice
        )
        assert code == 2 and "--as-of must be an ISO 8601 time" in err, err
