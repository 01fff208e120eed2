"""The knowledge service through its Python API, on real SQLite and PostgreSQL with
pgvector: collections and their ledger entries, ingest and versions, folder sync, governed
search, revocation, and bad input."""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Iterator
from pathlib import Path

import docx
import pytest
from sqlalchemy import select

from keel.engine import Engine
from keel.errors import ConflictError, InputError, IntegrityError, NotFoundError
from keel.index.records import Validity
from keel.knowledge.documents import read_document
from keel.knowledge.service import INHERIT, MAX_METADATA_BYTES, Knowledge
from keel.security.audit import AuditLog
from keel.security.roles import Grant, PermissionDeniedError, Role
from keel.store.schema import audit_events
from tests.conftest import Clock, run_sql
from tests.knowledge_service import (
    ADMIN,
    ALICE,
    BOB,
    CURATOR,
    FIXTURES,
    OWNER,
    STRANGER,
    body,
    kinds,
    opened,
    principal,
)

Opened = tuple[Engine, Knowledge, AuditLog]
LEAVE = b"Leave policy\n\nEvery employee has 25 days of paid annual leave a year.\n"
BUILD = b"Build guide\n\nThe release pipeline signs every artefact before upload.\n"
PAYROLL = b"Payroll\n\nSalaries are paid on the last working day of the month.\n"


@pytest.fixture(params=["sqlite", "postgres"])
def kb(request: pytest.FixtureRequest, project: Path) -> Iterator[Opened]:
    with opened(request.param, project) as out:
        yield out


@pytest.fixture
def hr(kb: Opened) -> Opened:
    """Collection ``hr``: documents inherit ``role:reader`` unless they say otherwise."""
    _, knowledge, _ = kb
    knowledge.create_collection(
        OWNER, "hr", owner="Olga", classification="internal", default_access=["role:reader"]
    )
    return kb


def found(knowledge: Knowledge, who: object, query: str, collection: str = "hr") -> set[str]:
    """The source URIs of what ``who`` finds. The collections here are small and vector
    search ranks every permitted chunk, so this is every document ``who`` may read."""
    result = knowledge.search(who, collection, query, k=20)  # type: ignore[arg-type]
    return {h.source_uri for h in result.hits}


# ---- collections ---------------------------------------------------------------------------


def test_creating_a_collection_needs_a_global_grant_and_is_recorded(kb: Opened) -> None:
    engine, knowledge, _ = kb
    scoped_owner = principal("sue", Grant(Role.KNOWLEDGE_OWNER, collection="hr"))
    for who in (CURATOR, scoped_owner, ALICE):
        with pytest.raises(PermissionDeniedError):
            knowledge.create_collection(
                who, "hr", owner="o", classification="internal", default_access=[]
            )
    made = knowledge.create_collection(
        OWNER,
        "hr",
        owner="Olga Owner",
        classification="confidential",
        default_access=["group:hr-staff", "role:reader"],
        retention_days=365,
        reason="the HR handbook",
    )
    assert made.settings.owner == "olga owner"
    recorded = body(engine, made.record_id)
    assert recorded["collection"] == "hr" and recorded["digest"] == made.settings.digest
    assert recorded["settings"]["default_access"] == ["group:hr-staff", "role:reader"]
    assert recorded["by"]["person"] == "olga" and recorded["reason"] == "the HR handbook"
    assert kinds(engine) == ["knowledge_collection_created"]
    with pytest.raises(ConflictError, match="exists already"):
        knowledge.create_collection(
            OWNER, "hr", owner="o", classification="internal", default_access=[]
        )
    assert knowledge.collection(ALICE, "hr").settings.classification == "confidential"
    with pytest.raises(PermissionDeniedError):
        knowledge.collection(STRANGER, "hr")
    with pytest.raises(NotFoundError):
        knowledge.collection(ADMIN, "payroll")
    assert [c.name for c in knowledge.collections(ALICE)] == ["hr"]
    assert knowledge.collections(STRANGER) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"name": "HR"}, "not a collection name"),
        ({"name": "-hr"}, "not a collection name"),
        ({"classification": "secret"}, "classification must be one of"),
        ({"default_access": ["alice"]}, "is not an access key"),
        ({"default_access": "role:reader"}, "not one string"),
        ({"retention_days": 0}, "retention_days"),
        ({"sync_limit_s": -1}, "sync_limit_s"),
        ({"embedder": {"kind": "gpu"}}, "embedder kind"),
        ({"owner": " "}, "owner"),
    ],
)
def test_bad_collection_settings_are_refused(
    project: Path, change: dict[str, object], message: str
) -> None:
    with opened("sqlite", project) as (engine, knowledge, _):
        args: dict[str, object] = {
            "name": "hr",
            "owner": "olga",
            "classification": "internal",
            "default_access": ["role:reader"],
        } | change
        name = args.pop("name")
        with pytest.raises(InputError, match=message):
            knowledge.create_collection(OWNER, name, **args)  # type: ignore[arg-type]
        assert kinds(engine) == []


def test_changing_a_collection_is_permissioned_and_recorded(hr: Opened) -> None:
    engine, knowledge, _ = hr
    for who in (CURATOR, ALICE, STRANGER):
        with pytest.raises(PermissionDeniedError):
            knowledge.change_collection(who, "hr", classification="restricted")
    with pytest.raises(NotFoundError):
        knowledge.change_collection(ADMIN, "payroll", classification="restricted")
    hr_owner = principal("hana", Grant(Role.KNOWLEDGE_OWNER, collection="hr"))
    changed = knowledge.change_collection(
        hr_owner, "hr", classification="restricted", retention_days=None, reason="audit finding"
    )
    recorded = body(engine, changed.record_id)
    assert recorded["changed"] == ["classification"]
    assert recorded["previous_digest"] != recorded["digest"] == changed.settings.digest
    assert knowledge.collection(ALICE, "hr").settings.classification == "restricted"
    with pytest.raises(ConflictError, match="re-index"):
        knowledge.change_collection(
            hr_owner,
            "hr",
            embedder={"kind": "openai", "url": "http://x", "model": "m", "dimension": 8},
        )
    unchanged = knowledge.change_collection(hr_owner, "hr", classification="restricted")
    assert unchanged.record_id == changed.record_id
    assert kinds(engine) == ["knowledge_collection_created", "knowledge_collection_changed"]


def test_a_collection_row_changed_outside_keel_is_refused_and_counted(hr: Opened) -> None:
    engine, knowledge, _ = hr
    knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
    run_sql(
        engine.db.url,
        "UPDATE knowledge_collections SET settings = replace(settings, 'role:reader', 'group:all')",
    )
    for call in (
        lambda: knowledge.collection(ALICE, "hr"),
        lambda: knowledge.search(ALICE, "hr", "leave"),
        lambda: knowledge.ingest(CURATOR, "hr", "build.txt", BUILD),
    ):
        with pytest.raises(IntegrityError, match="changed outside Keel"):
            call()
    refusals = engine.metrics.knowledge_integrity_refusals.labels("hr")._value.get()
    assert refusals == 3


# ---- documents and versions ------------------------------------------------------------------


def docx_bytes() -> bytes:
    document = docx.Document()
    document.add_heading("Data retention", level=1)
    document.add_paragraph("Loan files are kept for seven years after repayment.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


@pytest.mark.parametrize(
    ("name", "query"),
    [
        ("handbook.md", "parental leave"),
        ("intranet.html", "travel desk"),
        ("handbook.pdf", "monthly repayments"),
        ("retention.docx", "loan files"),
    ],
)
def test_each_format_is_ingested_and_found(project: Path, name: str, query: str) -> None:
    with opened("sqlite", project) as (engine, knowledge, _):
        knowledge.create_collection(
            OWNER, "hr", owner="olga", classification="internal", default_access=["role:reader"]
        )
        data = docx_bytes() if name.endswith(".docx") else (FIXTURES / name).read_bytes()
        result = knowledge.ingest(CURATOR, "hr", name, data)
        assert result.status == "new" and result.chunks >= 1
        assert result.embedded == result.chunks and result.reused == 0
        text = read_document(data, name).text
        assert result.version == hashlib.sha256(text.encode()).hexdigest()
        hits = knowledge.search(ALICE, "hr", query).hits
        assert hits and hits[0].document_id == result.document_id
        assert hits[0].keyword_score is not None  # the words are in it, not only near it
        assert hits[0].text == text[hits[0].start : hits[0].end]
        assert hits[0].citation.startswith(f"[1] {name} ")
        entry = body(engine, result.record_id or "")
        assert entry["version"] == result.version and entry["chunks"] == result.chunks


def test_reingesting_is_unchanged_or_a_new_version_never_a_silent_replacement(hr: Opened) -> None:
    engine, knowledge, _ = hr
    first = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, subjects=["emp-7"])
    entries = len(kinds(engine))
    again = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
    assert again.status == "unchanged" and again.version == first.version
    assert again.record_id is None and len(kinds(engine)) == entries
    with pytest.raises(ConflictError, match="access cannot change"):
        knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, access=["group:hr-staff"])
    changed = LEAVE + b"\nCarry-over is limited to five days.\n"
    second = knowledge.ingest(CURATOR, "hr", "leave.txt", changed)
    assert second.status == "changed" and second.previous_version == first.version
    assert second.document_id == first.document_id and second.revision == 2
    versions = knowledge.versions(CURATOR, "hr", first.document_id)
    assert [(v.revision, v.version, v.state) for v in versions] == [
        (1, first.version, "superseded"),
        (2, second.version, "live"),
    ]
    document = knowledge.document(CURATOR, "hr", first.document_id)
    assert document.subjects == ("emp-7",) and document.access is None
    hits = knowledge.search(ALICE, "hr", "carry-over annual leave").hits
    assert {h.version for h in hits} == {second.version}
    assert body(engine, second.record_id or "")["previous_version"] == first.version


def test_unchanged_chunk_text_reuses_its_vector(hr: Opened) -> None:
    _, knowledge, _ = hr
    handbook = (FIXTURES / "handbook.md").read_bytes()
    first = knowledge.ingest(CURATOR, "hr", "handbook.md", handbook)
    second = knowledge.ingest(
        CURATOR, "hr", "handbook.md", handbook + b"\n\n## Pensions\n\nThe bank pays 8%.\n"
    )
    assert first.chunks >= 3 and second.reused >= first.chunks - 1
    assert second.embedded == second.chunks - second.reused >= 1


def test_ingest_file_and_curate_permission(hr: Opened, tmp_path: Path) -> None:
    _, knowledge, _ = hr
    path = tmp_path / "leave.txt"
    path.write_bytes(LEAVE)
    for target in (path, tmp_path / "missing.txt"):
        with pytest.raises(PermissionDeniedError):  # before the file is even opened
            knowledge.ingest_file(ALICE, "hr", target)
    result = knowledge.ingest_file(CURATOR, "hr", path)
    assert result.source_uri == path.resolve().as_uri()
    with pytest.raises(InputError, match="cannot be read"):
        knowledge.ingest_file(CURATOR, "hr", tmp_path / "missing.txt")


def test_folder_sync_adds_changes_and_removes(hr: Opened, tmp_path: Path) -> None:
    engine, knowledge, _ = hr
    folder = tmp_path / "handbook"
    (folder / "policies").mkdir(parents=True)
    (folder / "leave.txt").write_bytes(LEAVE)
    (folder / "policies" / "payroll.txt").write_bytes(PAYROLL)
    (folder / "broken.pdf").write_bytes(b"%PDF-1.7 not really a pdf")
    (folder / "photo.jpg").write_bytes(b"\xff\xd8")
    first = knowledge.sync(CURATOR, "hr", folder)
    assert (first.count("new"), first.removed, first.skipped) == (2, [], ["photo.jpg"])
    assert [f.file for f in first.failed] == ["broken.pdf"]
    assert body(engine, first.record_id or "")["failed"][0]["file"] == "broken.pdf"
    assert knowledge.collection(CURATOR, "hr").last_synced_at is not None

    again = knowledge.sync(CURATOR, "hr", folder)
    assert again.count("unchanged") == 2 and again.count("new") == again.count("changed") == 0

    (folder / "leave.txt").write_bytes(LEAVE + b"\nCarry-over is limited to five days.\n")
    (folder / "policies" / "payroll.txt").unlink()
    third = knowledge.sync(CURATOR, "hr", folder)
    assert third.count("changed") == 1 and len(third.removed) == 1
    assert found(knowledge, ALICE, "salaries paid month") == {(folder / "leave.txt").as_uri()}
    hits = knowledge.search(ALICE, "hr", "carry-over").hits
    assert hits[0].keyword_score is not None and "Carry-over" in hits[0].text


# ---- search and access -----------------------------------------------------------------------


def test_two_readers_see_different_documents(hr: Opened) -> None:
    _, knowledge, _ = hr
    knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, access=["group:hr-staff"])
    knowledge.ingest(CURATOR, "hr", "build.txt", BUILD, access=["group:engineering"])
    knowledge.ingest(CURATOR, "hr", "payroll.txt", PAYROLL)  # inherits role:reader
    query = "leave release pipeline salaries"
    assert found(knowledge, ALICE, query) == {"leave.txt", "payroll.txt"}
    assert found(knowledge, BOB, query) == {"build.txt", "payroll.txt"}
    with pytest.raises(PermissionDeniedError):
        knowledge.search(STRANGER, "hr", query)  # in group hr-staff, but no role on hr
    with pytest.raises(PermissionDeniedError):
        knowledge.search(ALICE, "finance", query)  # no grant: 403 whether it exists or not
    with pytest.raises(NotFoundError):
        knowledge.search(ADMIN, "finance", query)


def test_inheriting_documents_follow_the_collection_default(hr: Opened) -> None:
    engine, knowledge, _ = hr
    knowledge.ingest(CURATOR, "hr", "payroll.txt", PAYROLL)
    knowledge.ingest(CURATOR, "hr", "build.txt", BUILD, access=["role:reader"])
    query = "salaries release pipeline"
    assert found(knowledge, BOB, query) == {"payroll.txt", "build.txt"}
    changed = knowledge.change_collection(OWNER, "hr", default_access=["group:hr-staff"])
    assert body(engine, changed.record_id)["inheriting_documents"] == 1
    assert found(knowledge, BOB, query) == {"build.txt"}
    assert found(knowledge, ALICE, query) == {"payroll.txt", "build.txt"}


def test_set_access_replaces_and_inherits(hr: Opened) -> None:
    engine, knowledge, _ = hr
    doc = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
    done = knowledge.set_access(CURATOR, "hr", doc.document_id, ["group:engineering"], "moved")
    assert found(knowledge, ALICE, "annual leave") == set()
    assert found(knowledge, BOB, "annual leave") == {"leave.txt"}
    recorded = body(engine, done.record_id)
    assert recorded["previous"] is None and recorded["effective"] == ["group:engineering"]
    knowledge.set_access(CURATOR, "hr", doc.document_id, INHERIT)
    assert found(knowledge, ALICE, "annual leave") == {"leave.txt"}
    with pytest.raises(InputError, match="not an access key"):
        knowledge.set_access(CURATOR, "hr", doc.document_id, ["everyone"])
    with pytest.raises(NotFoundError):
        knowledge.set_access(CURATOR, "hr", "doc_missing", ["role:reader"])


def test_documents_outside_their_validity_are_not_returned(hr: Opened) -> None:
    engine, knowledge, _ = hr
    now = engine.clock()
    knowledge.ingest(CURATOR, "hr", "old.txt", LEAVE, validity=Validity(valid_until=now - 1))
    knowledge.ingest(CURATOR, "hr", "next.txt", BUILD, validity=Validity(valid_from=now + 3600))
    knowledge.ingest(CURATOR, "hr", "now.txt", PAYROLL, validity=Validity(now - 10, now + 10))
    query = "leave release salaries"
    assert found(knowledge, ALICE, query) == {"now.txt"}
    later = knowledge.search(ALICE, "hr", query, now=now + 7200).hits
    assert {h.source_uri for h in later} == {"next.txt"}


def test_a_search_is_recorded_by_its_digest_only(hr: Opened) -> None:
    engine, knowledge, _ = hr
    doc = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
    result = knowledge.search(ALICE, "hr", "secret words about annual leave", k=3)
    recorded = body(engine, result.record_id)
    assert (
        recorded["query_sha256"] == hashlib.sha256(b"secret words about annual leave").hexdigest()
    )
    assert recorded["person"] == "alice" and recorded["principal"] == "key:alice"
    assert recorded["results"] == [
        {"chunk": h.chunk_id, "document": doc.document_id, "version": doc.version}
        for h in result.hits
    ]
    assert "secret words" not in engine.ctx.entry(result.record_id).record
    hit = result.hits[0]
    assert hit.keyword_score is not None and hit.vector_score is not None and hit.fused > 0


# ---- revocation ------------------------------------------------------------------------------


def test_withdrawn_documents_and_versions_are_gone_at_once(hr: Opened) -> None:
    engine, knowledge, _ = hr
    leave = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
    knowledge.ingest(CURATOR, "hr", "payroll.txt", PAYROLL)
    with pytest.raises(PermissionDeniedError):
        knowledge.withdraw_document(ALICE, "hr", leave.document_id)
    done = knowledge.withdraw_document(CURATOR, "hr", leave.document_id, "out of date")
    assert done.chunks_removed >= 1
    assert found(knowledge, ALICE, "annual leave salaries") == {"payroll.txt"}
    assert body(engine, done.record_id)["reason"] == "out of date"
    with pytest.raises(ConflictError, match="withdrawn already"):
        knowledge.withdraw_document(CURATOR, "hr", leave.document_id)
    assert knowledge.document(CURATOR, "hr", leave.document_id).state == "withdrawn"
    assert [d.source_uri for d in knowledge.documents(CURATOR, "hr")] == ["payroll.txt"]
    listed = knowledge.documents(CURATOR, "hr", include_withdrawn=True)
    assert [(d.source_uri, d.state) for d in listed] == [
        ("leave.txt", "withdrawn"),
        ("payroll.txt", "live"),
    ]
    with pytest.raises(PermissionDeniedError):
        knowledge.documents(ALICE, "hr")

    payroll = knowledge.ingest(CURATOR, "hr", "payroll.txt", PAYROLL + b"\nBonus in March.\n")
    old = knowledge.versions(CURATOR, "hr", payroll.document_id)[0]
    knowledge.withdraw_version(CURATOR, "hr", payroll.document_id, old.version)
    assert found(knowledge, ALICE, "salaries bonus") == {"payroll.txt"}  # the live one stays
    live = knowledge.withdraw_version(CURATOR, "hr", payroll.document_id, payroll.version)
    assert live.chunks_removed >= 1 and body(engine, live.record_id)["was_live"] is True
    assert found(knowledge, ALICE, "salaries bonus") == set()
    states = [v.state for v in knowledge.versions(CURATOR, "hr", payroll.document_id)]
    assert states == ["withdrawn", "withdrawn"]
    with pytest.raises(NotFoundError):
        knowledge.withdraw_version(CURATOR, "hr", payroll.document_id, payroll.version)
    again = knowledge.ingest(CURATOR, "hr", "payroll.txt", PAYROLL)
    assert again.status == "changed" and again.revision == 3
    assert found(knowledge, ALICE, "salaries") == {"payroll.txt"}


def test_revoking_a_person_removes_them_everywhere(hr: Opened) -> None:
    engine, knowledge, _ = hr
    knowledge.create_collection(
        OWNER, "finance", owner="olga", classification="internal",
        default_access=["person:alice", "role:reader"],
    )  # fmt: skip
    knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, access=["person:alice", "group:x"])
    knowledge.ingest(OWNER, "finance", "payroll.txt", PAYROLL)  # inherits person:alice
    alice_everywhere = principal(
        "alice", Grant(Role.READER, collection="hr"), Grant(Role.CURATOR, collection="finance")
    )
    assert found(knowledge, alice_everywhere, "annual leave") == {"leave.txt"}
    assert found(knowledge, alice_everywhere, "salaries", "finance") == {"payroll.txt"}
    with pytest.raises(PermissionDeniedError):
        knowledge.revoke_person(CURATOR, "alice", "hr")
    revoked = knowledge.revoke_person(OWNER, "Alice", reason="left the bank")
    assert revoked.defaults_changed == ["finance"] and len(revoked.documents) == 1
    assert found(knowledge, alice_everywhere, "annual leave") == set()
    assert found(knowledge, alice_everywhere, "salaries", "finance") == set()
    assert knowledge.collection(OWNER, "finance").settings.default_access == ("role:reader",)
    recorded = body(engine, revoked.record_id)
    assert recorded["person"] == "alice" and recorded["collections"] == ["finance", "hr"]
    changes = [k for k in kinds(engine) if k != "knowledge_searched"]
    assert changes[-2:] == ["knowledge_collection_changed", "knowledge_person_revoked"]
    report = engine.verify(by=ADMIN, deep=True)
    assert report.ok, report.problem


def test_a_search_in_flight_loses_what_a_withdrawal_removed(hr: Opened) -> None:
    """The real index answers, then a real withdrawal commits before the re-check: the
    race a server sees, made to happen every time."""
    engine, knowledge, audit = hr
    leave = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
    knowledge.ingest(CURATOR, "hr", "payroll.txt", PAYROLL)
    index = knowledge.index
    real_search = index.search

    def search_then_withdraw(*args: object, **kwargs: object) -> object:
        hits = real_search(*args, **kwargs)  # type: ignore[arg-type]
        # The withdrawal commits after the index answered and before the re-check.
        knowledge.withdraw_document(CURATOR, "hr", leave.document_id)
        return hits

    index.search = search_then_withdraw  # type: ignore[method-assign]
    try:
        result = knowledge.search(ALICE, "hr", "annual leave salaries")
    finally:
        index.search = real_search  # type: ignore[method-assign]
    assert {h.source_uri for h in result.hits} == {"payroll.txt"}
    assert result.dropped >= 1
    assert body(engine, result.record_id)["dropped"] == result.dropped
    assert engine.metrics.knowledge_recheck_drops.labels("hr")._value.get() == result.dropped
    audit.flush()
    with engine.db.read() as conn:
        rows = conn.execute(
            select(audit_events.c.kind, audit_events.c.principal, audit_events.c.detail).where(
                audit_events.c.action == "knowledge_recheck_drop"
            )
        ).all()
    assert [(r[0], r[1]) for r in rows] == [("security", "key:alice")]
    assert json.loads(rows[0][2])["count"] == result.dropped


# ---- bad input -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"metadata": {"notes": "x" * MAX_METADATA_BYTES}}, InputError, "metadata is"),
        ({"metadata": {"when": object()}}, InputError, "plain JSON"),
        ({"access": ["alice"]}, InputError, "not an access key"),
        ({"access": "group:x"}, InputError, "not one string"),
        ({"subjects": "emp-7"}, InputError, "not one string"),
        ({"classification": "top"}, InputError, "classification"),
        ({"validity": Validity(10.0, 5.0)}, InputError, "valid_until"),
        ({"media_type": "image/png"}, InputError, "cannot be read"),
    ],
)
def test_bad_ingest_input_is_refused(
    project: Path, kwargs: dict[str, object], error: type[Exception], message: str
) -> None:
    with opened("sqlite", project) as (engine, knowledge, _):
        knowledge.create_collection(
            OWNER, "hr", owner="olga", classification="internal", default_access=["role:reader"]
        )
        with pytest.raises(error, match=message):
            knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, **kwargs)  # type: ignore[arg-type]
        assert kinds(engine) == ["knowledge_collection_created"]


def test_bad_search_and_document_input_is_refused(hr: Opened) -> None:
    _, knowledge, _ = hr
    for query, k in (("", 10), ("   ", 10), ("leave", 0), ("leave", 10_000), ("x" * 9000, 5)):
        with pytest.raises(InputError):
            knowledge.search(ALICE, "hr", query, k)
    with pytest.raises(NotFoundError):
        knowledge.ingest(ADMIN, "nope", "leave.txt", LEAVE)
    with pytest.raises(InputError, match="no text"):
        knowledge.ingest(CURATOR, "hr", "empty.txt", b"  \n\n ")
    with pytest.raises(InputError, match="source URI"):
        knowledge.ingest(CURATOR, "hr", "", LEAVE)
    with pytest.raises(NotFoundError):
        knowledge.withdraw_document(CURATOR, "hr", "doc_missing")
    knowledge.create_collection(
        OWNER, "finance", owner="olga", classification="internal", default_access=[]
    )
    knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, document_id="handbook-1")
    with pytest.raises(ConflictError, match="belongs to another collection"):
        knowledge.ingest(OWNER, "finance", "other.txt", BUILD, document_id="handbook-1")
    for bad in ("x" * 200, ""):
        with pytest.raises(InputError, match="document_id"):
            knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE, document_id=bad)


def test_the_engine_exposes_the_service(project: Path) -> None:
    with opened("sqlite", project) as (engine, _, _):
        service = engine.knowledge
        assert service is engine.knowledge
        service.create_collection(
            engine.operator, "hr", owner="o", classification="public", default_access=[]
        )
        assert [c.name for c in service.collections(engine.operator)] == ["hr"]


def test_a_file_that_breaks_keeps_its_last_good_version(project: Path, tmp_path: Path) -> None:
    with opened("sqlite", project) as (_, knowledge, _):
        knowledge.create_collection(
            OWNER, "hr", owner="olga", classification="internal", default_access=["role:reader"]
        )
        folder = tmp_path / "docs"
        folder.mkdir()
        (folder / ".draft.txt").write_bytes(PAYROLL)
        (folder / "handbook.pdf").write_bytes((FIXTURES / "handbook.pdf").read_bytes())
        first = knowledge.sync(CURATOR, "hr", folder)
        assert [r.status for r in first.ingested] == ["new"] and first.skipped == []
        (folder / "handbook.pdf").write_bytes(b"%PDF-1.7 truncated")
        second = knowledge.sync(CURATOR, "hr", folder)
        assert [f.file for f in second.failed] == ["handbook.pdf"] and second.removed == []
        hits = knowledge.search(ALICE, "hr", "monthly repayments").hits
        assert hits and {h.version for h in hits} == {first.ingested[0].version}


def test_version_records_are_purged_after_the_retention(project: Path) -> None:
    clock = Clock()
    with opened("sqlite", project, clock) as (engine, knowledge, _):
        knowledge.create_collection(
            OWNER, "hr", owner="olga", classification="internal",
            default_access=["role:reader"], retention_days=30,
        )  # fmt: skip
        first = knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE)
        knowledge.ingest(CURATOR, "hr", "leave.txt", LEAVE + b"\nCarry-over: five days.\n")
        gone = knowledge.ingest(CURATOR, "hr", "build.txt", BUILD)
        knowledge.withdraw_document(CURATOR, "hr", gone.document_id)
        clock.advance(29 * 86_400)
        assert knowledge.purge_versions(CURATOR, "hr").versions == []
        clock.advance(2 * 86_400)
        with pytest.raises(PermissionDeniedError):
            knowledge.purge_versions(ALICE, "hr")
        purge = knowledge.purge_versions(CURATOR, "hr")
        assert sorted(purge.versions) == sorted([(first.document_id, 1), (gone.document_id, 1)])
        recorded = body(engine, purge.record_id or "")
        assert recorded["retention_days"] == 30 and len(recorded["versions"]) == 2
        states = [v.state for v in knowledge.versions(CURATOR, "hr", first.document_id)]
        assert states == ["live"]
        assert knowledge.purge_versions(CURATOR, "hr").record_id is None
        report = engine.verify(by=ADMIN)
        assert report.ok, report.problem
