"""Knowledge collections over HTTP, on a real engine and store (SQLite, and PostgreSQL with
pgvector): two readers with different access see different documents, a withdrawal or a
revocation is out of the next search, and bad input gets a clear 4xx."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from keel import Engine, open_engine
from keel.api import create_app
from keel.api.app import MAX_DOCUMENT_BYTES
from keel.security.apikeys import create_key
from keel.security.audit import AuditLog
from keel.security.roles import Grant, Role
from tests.conftest import fresh_pgvector_database

LEAVE = b"# Leave\n\nEvery employee has 25 days of paid annual leave a year.\n"
EXPENSES = b"# Expenses\n\nTravel expenses are refunded within 30 days of the receipt.\n"
SALARY = b"# Salary bands\n\nBand C pays between 52,000 and 61,000 euros a year.\n"


@pytest.fixture(params=["sqlite", "postgres"])
def engine(request: pytest.FixtureRequest, project: Path) -> Iterator[Engine]:
    with contextlib.ExitStack() as stack:
        environ: dict[str, str] = {}
        if request.param == "postgres":
            environ["KEEL_DATABASE_URL"] = stack.enter_context(fresh_pgvector_database())
        yield stack.enter_context(open_engine(project, environ=environ))


@pytest.fixture
def client(engine: Engine) -> Iterator[TestClient]:
    audit = AuditLog(engine.db)
    with TestClient(create_app(engine, audit), raise_server_exceptions=False) as c:
        yield c
    audit.close()


def key(engine: Engine, owner: str, *grants: Grant, groups: tuple[str, ...] = ()) -> dict[str, str]:
    _, text = create_key(
        engine.db, owner, owner, list(grants), "tests", engine.clock(), groups=groups
    )
    return {"Authorization": f"Bearer {text}"}


def handbook(engine: Engine, client: TestClient) -> dict[str, str]:
    """Collection ``handbook`` (readers read what inherits) with three documents; returns
    a curator's headers."""
    admin = key(engine, "olga", Grant(Role.ADMIN))
    made = client.post(
        "/v1/collections",
        headers=admin,
        json={
            "name": "handbook",
            "owner": "Olga",
            "classification": "internal",
            "default_access": ["role:reader"],
            "reason": "the staff handbook",
        },
    )
    assert made.status_code == 201, made.text
    assert made.json()["default_access"] == ["role:reader"]
    curator = key(engine, "carl", Grant(Role.CURATOR, collection="handbook"))
    for name, data in (("leave.md", LEAVE), ("expenses.md", EXPENSES), ("salary.md", SALARY)):
        added = client.post(
            "/v1/collections/handbook/documents",
            headers=curator,
            files={"file": (name, data, "text/markdown")},
        )
        assert added.status_code == 201, added.text
        assert added.json()["status"] == "new"
    return curator


def doc_id(client: TestClient, headers: dict[str, str], name: str) -> str:
    """The document a search for its own text finds (as a caller who may read it)."""
    for hit in search(client, headers, "leave expenses salary band", k=20)["hits"]:
        if hit["source_uri"] == name:
            return str(hit["document_id"])
    raise AssertionError(f"{name} not found")


def search(client: TestClient, headers: dict[str, str], query: str, k: int = 10) -> Any:
    found = client.post(
        "/v1/collections/handbook/search", headers=headers, json={"query": query, "k": k}
    )
    assert found.status_code == 200, found.text
    return found.json()


def sources(client: TestClient, headers: dict[str, str], query: str) -> set[str]:
    return {h["source_uri"] for h in search(client, headers, query)["hits"]}


def test_two_readers_see_what_their_access_allows_and_withdrawal_takes_effect(
    engine: Engine, client: TestClient
) -> None:
    curator = handbook(engine, client)
    alice = key(engine, "alice", Grant(Role.READER, collection="handbook"), groups=("hr",))
    bob = key(engine, "bob", Grant(Role.READER, collection="handbook"), groups=("engineering",))
    # The curator holds no reader role: the documents inherit role:reader, so they see none.
    assert sources(client, curator, "salary band") == set()
    salary = doc_id(client, alice, "salary.md")

    restricted = client.put(
        f"/v1/collections/handbook/documents/{salary}/access",
        headers=curator,
        json={"access": ["group:hr"], "reason": "pay is confidential"},
    )
    assert restricted.status_code == 200, restricted.text
    assert "salary.md" in sources(client, alice, "salary band")
    assert sources(client, bob, "salary band") == {"leave.md", "expenses.md"}

    result = search(client, alice, "How many days of annual leave?", k=1)
    hit = result["hits"][0]
    assert hit["source_uri"] == "leave.md" and hit["rank"] == 1
    assert hit["citation"] == f"[1] leave.md §{hit['start']}-{hit['end']}"
    assert LEAVE.decode()[hit["start"] : hit["end"]] == hit["text"]
    assert hit["fused"] > 0 and hit["vector_score"] is not None
    assert len(hit["version"]) == 64
    recorded = engine.ctx.entry(result["record_id"])
    assert recorded.kind == "knowledge_searched"
    assert json.loads(recorded.record)["body"]["results"][0]["chunk"] == hit["chunk_id"]

    leave = hit["document_id"]
    gone = client.delete(
        f"/v1/collections/handbook/documents/{leave}",
        headers=curator,
        params={"reason": "replaced by the 2027 policy"},
    )
    assert gone.status_code == 200, gone.text
    assert gone.json()["chunks_removed"] >= 1
    assert "leave.md" not in sources(client, alice, "annual leave days")
    document = client.get(f"/v1/collections/handbook/documents/{leave}", headers=curator).json()
    assert document["state"] == "withdrawn" and document["version"] is None
    versions = client.get(
        f"/v1/collections/handbook/documents/{leave}/versions", headers=curator
    ).json()
    assert [v["state"] for v in versions] == ["withdrawn"]
    listed = client.get("/v1/collections/handbook/documents", headers=curator).json()
    assert [d["source_uri"] for d in listed] == ["expenses.md", "salary.md"]
    listed = client.get(
        "/v1/collections/handbook/documents",
        headers=curator,
        params={"include_withdrawn": "true"},
    ).json()
    assert [(d["source_uri"], d["state"]) for d in listed] == [
        ("expenses.md", "live"), ("leave.md", "withdrawn"), ("salary.md", "live"),
    ]  # fmt: skip
    denied = client.get("/v1/collections/handbook/documents", headers=alice)
    assert denied.status_code == 403

    back = client.put(
        f"/v1/collections/handbook/documents/{salary}/access",
        headers=curator,
        json={"access": "inherit"},
    )
    assert back.status_code == 200
    assert "salary.md" in sources(client, bob, "salary band")


def test_new_version_revocation_and_collection_changes(engine: Engine, client: TestClient) -> None:
    curator = handbook(engine, client)
    admin = key(engine, "olga", Grant(Role.ADMIN))
    alice = key(engine, "alice", Grant(Role.READER, collection="handbook"))
    salary = doc_id(client, alice, "salary.md")
    client.put(
        f"/v1/collections/handbook/documents/{salary}/access",
        headers=curator,
        json={"access": ["person:alice", "role:curator"]},
    )
    changed = client.post(
        "/v1/collections/handbook/documents",
        headers=curator,
        files={"file": ("salary.md", SALARY + b"\nBand D starts at 61,000 euros.\n")},
        data={"reason": "2027 bands"},
    )
    assert changed.status_code == 201, changed.text
    assert changed.json()["status"] == "changed"
    assert changed.json()["previous_version"] is not None
    versions = client.get(
        f"/v1/collections/handbook/documents/{salary}/versions", headers=curator
    ).json()
    assert [(v["revision"], v["state"]) for v in versions] == [(1, "superseded"), (2, "live")]

    revoked = client.post(
        "/v1/collections/handbook/revocations",
        headers=admin,
        json={"person": "Alice", "reason": "left the company"},
    )
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["documents"] == [salary]
    assert "salary.md" not in sources(client, alice, "salary band")
    document = client.get(f"/v1/collections/handbook/documents/{salary}", headers=curator).json()
    assert document["access"] == ["role:curator"]

    patched = client.patch(
        "/v1/collections/handbook",
        headers=admin,
        json={"default_access": ["group:staff"], "classification": "confidential"},
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["classification"] == "confidential"
    assert patched.json()["owner"] == "olga"  # kept, as stored
    # The inheriting documents now need group:staff, which alice's key does not carry.
    assert sources(client, alice, "annual leave expenses") == set()
    listed = client.get("/v1/collections", headers=alice).json()
    assert [c["name"] for c in listed] == ["handbook"]
    assert client.get("/v1/collections", headers=curator).json()[0]["name"] == "handbook"


def test_bad_requests_get_clear_4xx(engine: Engine, client: TestClient) -> None:
    curator = handbook(engine, client)
    admin = key(engine, "olga", Grant(Role.ADMIN))
    reader = key(engine, "alice", Grant(Role.READER, collection="handbook"))
    elsewhere = key(engine, "erin", Grant(Role.READER, collection="finance"))

    def status(response: Any) -> tuple[int, str]:
        return response.status_code, response.json()["code"]

    collection = {
        "name": "finance",
        "owner": "Olga",
        "classification": "internal",
        "default_access": ["role:reader"],
    }
    assert status(client.post("/v1/collections", headers=reader, json=collection)) == (
        403,
        "forbidden",
    )
    for bad in (
        {"name": "Has Spaces"},
        {"default_access": ["alice"]},
        {"classification": "secret"},
        {"retention_days": 0},
        {"embedder": {"kind": "no-such-model"}},
        {"owner": "bell\x07"},
    ):
        response = client.post("/v1/collections", headers=admin, json={**collection, **bad})
        assert response.status_code == 422, (bad, response.text)
    assert status(
        client.post("/v1/collections", headers=admin, json={**collection, "name": "handbook"})
    ) == (409, "conflict")
    assert status(client.get("/v1/collections/nowhere", headers=admin)) == (404, "not_found")
    assert status(client.get("/v1/collections/handbook", headers=elsewhere)) == (403, "forbidden")
    assert status(
        client.post("/v1/collections/handbook/search", headers=elsewhere, json={"query": "x"})
    ) == (403, "forbidden")
    assert status(
        client.patch("/v1/collections/handbook", headers=admin, json={"owner": None})
    ) == (422, "invalid_input")

    upload = "/v1/collections/handbook/documents"
    assert status(client.post(upload, headers=reader, files={"file": ("a.md", LEAVE)})) == (
        403,
        "forbidden",
    )
    assert (
        status(client.post(upload, headers=curator, files={"file": ("tool.exe", b"MZ\x90\x00")}))[0]
        == 422
    )
    assert status(
        client.post(
            upload, headers=curator, files={"file": ("a.md", LEAVE)}, data={"metadata": "[1]"}
        )
    ) == (422, "invalid_input")
    assert (
        status(
            client.post(
                upload, headers=curator, files={"file": ("a.md", LEAVE)}, data={"access": "alice"}
            )
        )[0]
        == 422
    )
    assert status(client.post(upload, headers=curator, data={"reason": "no file"}))[0] == 422
    for fields in (
        {"metadata": "[" * 100_000},
        {"metadata": '{"a": ' * 5_000 + "1" + "}" * 5_000},
        {"valid_from": "2027-13-01T00:00:00Z"},
        {"valid_until": "next week"},
        {"owner": "Ann\x1b[31m"},
    ):
        response = client.post(
            upload, headers=curator, files={"file": ("a.md", LEAVE)}, data=fields
        )
        assert status(response) == (422, "invalid_input"), (fields, response.text)
    too_large = client.post(
        upload,
        headers=curator,
        files={"file": ("big.txt", b"a" * (MAX_DOCUMENT_BYTES + 1))},
    )
    assert status(too_large) == (413, "request_too_large")
    # Past the 1 MiB of other bodies, an upload still reaches the service (which reads no .exe).
    large = client.post(upload, headers=curator, files={"file": ("big.exe", b"a" * 2_000_000)})
    assert status(large)[0] == 422

    unknown = "/v1/collections/handbook/documents/doc_nothing"
    assert status(client.get(unknown, headers=curator)) == (404, "not_found")
    assert status(client.delete(unknown, headers=curator)) == (404, "not_found")
    assert status(client.delete(f"{unknown}/versions/abc", headers=curator)) == (404, "not_found")
    assert status(client.get(unknown, headers=reader)) == (403, "forbidden")
    for body in ({"query": ""}, {"query": "leave", "k": 0}, {"query": "leave", "k": 1001}, {}):
        response = client.post("/v1/collections/handbook/search", headers=reader, json=body)
        assert response.status_code == 422, (body, response.text)
    assert (
        status(client.put(f"{unknown}/access", headers=curator, json={"access": "everyone"}))[0]
        == 422
    )


def test_an_upload_carries_its_fields(engine: Engine, client: TestClient) -> None:
    curator = handbook(engine, client)
    added = client.post(
        "/v1/collections/handbook/documents",
        headers=curator,
        files={"file": ("pensions.txt", b"Pensions\n\nThe employer pays 8% of salary.\n")},
        data={
            "source_uri": "https://intranet.example.com/hr/pensions",
            "document_id": "hr-pensions",
            "owner": "Paula",
            "classification": "confidential",
            "access": ["group:hr", "person:paula"],
            "valid_from": "2027-01-01T00:00:00Z",
            "subjects": ["emp-17"],
            "metadata": json.dumps({"team": "benefits", "pages": 1}),
            "reason": "new pension scheme",
        },
    )
    assert added.status_code == 201, added.text
    assert added.json()["document_id"] == "hr-pensions"
    document = client.get("/v1/collections/handbook/documents/hr-pensions", headers=curator)
    assert document.status_code == 200
    assert document.json() | {"version": None} == {
        "document_id": "hr-pensions",
        "collection": "handbook",
        "source_uri": "https://intranet.example.com/hr/pensions",
        "owner": "paula",
        "classification": "confidential",
        "access": ["group:hr", "person:paula"],
        "valid_from": "2027-01-01T00:00:00.000000Z",
        "valid_until": None,
        "subjects": ["emp-17"],
        "metadata": {"team": "benefits", "pages": 1},
        "version": None,
        "revision": 1,
        "state": "live",
    }
    again = client.post(
        "/v1/collections/handbook/documents",
        headers=curator,
        files={"file": ("pensions.txt", b"Pensions\n\nThe employer pays 8% of salary.\n")},
        data={
            "source_uri": "https://intranet.example.com/hr/pensions",
            "document_id": "hr-pensions",
        },
    )
    assert again.status_code == 201 and again.json()["status"] == "unchanged"
    assert again.json()["record_id"] is None


@pytest.fixture
def sqlite_client(project: Path) -> Iterator[tuple[Engine, TestClient]]:
    """The new cases need no second backend: the service they call is tested on both."""
    with open_engine(project) as engine:
        audit = AuditLog(engine.db)
        with TestClient(create_app(engine, audit), raise_server_exceptions=True) as c:
            yield engine, c
        audit.close()


def test_search_as_of_an_instant_finds_the_version_live_then(
    sqlite_client: tuple[Engine, TestClient],
) -> None:
    engine, client = sqlite_client
    curator = handbook(engine, client)
    reader = key(engine, "alice", Grant(Role.READER, collection="handbook"))
    changed = client.post(
        "/v1/collections/handbook/documents",
        headers=curator,
        files={"file": ("leave.md", b"# Leave\n\nEvery employee has 30 days of leave.\n")},
    )
    assert changed.status_code == 201 and changed.json()["status"] == "changed", changed.text
    leave = changed.json()["document_id"]
    versions = client.get(f"/v1/collections/handbook/documents/{leave}/versions", headers=curator)
    first = versions.json()[0]
    assert first["state"] == "superseded"
    start, end = (datetime.fromisoformat(first[f]) for f in ("created_at", "ended_at"))
    then = (start + (end - start) / 2).isoformat()

    def texts(body: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
        found = client.post("/v1/collections/handbook/search", headers=reader, json=body)
        assert found.status_code == 200, found.text
        out = found.json()
        return out, [h["text"] for h in out["hits"] if h["source_uri"] == "leave.md"]

    now, hits = texts({"query": "days of leave"})
    assert now["as_of"] is None and hits and all("30 days" in t for t in hits)
    space = client.get("/v1/collections/handbook", headers=reader).json()["space_id"]
    assert now["space_id"] == space
    past, hits = texts({"query": "days of leave", "as_of": then})
    assert hits and all("25 days" in t for t in hits)
    assert past["as_of"] is not None and past["as_of"].startswith(then[:19])
    assert past["space_id"] == space
    before, _ = texts({"query": "days of leave", "as_of": "2000-01-01T00:00:00Z"})
    assert before["hits"] == []

    for bad in ("yesterday", "2026-13-01T00:00:00Z", "", 1764500000):
        refused = client.post(
            "/v1/collections/handbook/search",
            headers=reader,
            json={"query": "leave", "as_of": bad},
        )
        assert refused.status_code == 422, (bad, refused.text)


def test_reindex_over_http_moves_the_collection_to_a_new_space(
    sqlite_client: tuple[Engine, TestClient],
) -> None:
    engine, client = sqlite_client
    curator = handbook(engine, client)
    admin = key(engine, "olga", Grant(Role.ADMIN))
    owner = key(engine, "kim", Grant(Role.KNOWLEDGE_OWNER, collection="handbook"))
    reader = key(engine, "alice", Grant(Role.READER, collection="handbook"))
    path = "/v1/collections/handbook/reindex"
    before = client.get("/v1/collections/handbook", headers=owner).json()["space_id"]

    assert client.get(path, headers=owner).json()["state"] == "none"
    for headers in (reader, curator):
        assert client.get(path, headers=headers).status_code == 403
        denied = client.post(path, headers=headers, json={"embedder": {"max_tokens": 128}})
        assert denied.status_code == 403, denied.text
    assert client.get("/v1/collections/nowhere/reindex", headers=admin).status_code == 404
    missing = client.post(
        "/v1/collections/nowhere/reindex", headers=admin, json={"embedder": {"max_tokens": 128}}
    )
    assert missing.status_code == 404, missing.text
    for bad in ({"embedder": {"kind": "no-such-model"}}, {"embedder": "onnx"}, {}):
        refused = client.post(path, headers=owner, json=bad)
        assert refused.status_code == 422, (bad, refused.text)
    assert client.get(path, headers=owner).json()["state"] == "none"

    started = client.post(
        path,
        headers=owner,
        json={"embedder": {"kind": "onnx-int8", "max_tokens": 128}, "reason": "shorter chunks"},
    )
    assert started.status_code == 202, started.text
    assert started.json()["from_space"] == before
    new_space = started.json()["to_space"]
    assert new_space != before and started.json()["started"]
    status = engine.knowledge.reindex_wait(engine.operator, "handbook", timeout=120)
    assert status.state == "completed", status
    shown = client.get(path, headers=owner).json()
    assert shown["state"] == "completed" and shown["done"] == shown["total"] == 3
    assert client.get("/v1/collections/handbook", headers=owner).json()["space_id"] == new_space
    found = search(client, reader, "days of paid annual leave")
    assert found["space_id"] == new_space
    assert "leave.md" in {h["source_uri"] for h in found["hits"]}
