"""Re-indexing a collection into another embedding space, on SQLite and on PostgreSQL with
pgvector: recorded, in the background, served from the old space until the switch, never
a mixed-space result and never a gap, with documents changed meanwhile right afterwards.

The second space is the same ONNX model reading at most 128 tokens (``max_tokens``), which
the space id includes. A gate on the new space's embedder holds the re-index after it
started, so that documents can be changed while it runs.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from numpy.typing import NDArray
from sqlalchemy import text
from typer.testing import CliRunner

from keel.cli import app
from keel.embeddings.spaces import Embedder, EmbeddingSpace
from keel.embeddings.tokens import TokenCounter
from keel.engine import Engine
from keel.errors import ConflictError, InputError
from keel.knowledge.records import SearchResult
from keel.knowledge.service import Knowledge
from keel.security.roles import PermissionDeniedError
from tests.conftest import Clock
from tests.knowledge_service import (
    ALICE,
    CURATOR,
    OWNER,
    body,
    kinds,
    opened,
    shared_embedder,
)

NARROW = {"kind": "onnx-int8", "max_tokens": 128}
DOCS = {
    "leave.txt": b"Leave policy\n\nEvery employee has 25 days of paid annual leave a year.\n",
    "build.txt": b"Build guide\n\nThe release pipeline signs every artefact before upload.\n",
    "payroll.txt": b"Payroll\n\nSalaries are paid on the last working day of the month.\n",
    "travel.txt": b"Travel\n\nBook trains for trips under five hours; flights need approval.\n",
    "security.txt": b"Security\n\nLaptops lock after five minutes; badges are worn visibly.\n",
}


class Gated:
    """A real embedder whose ``embed`` waits until ``open`` is set, and can be told to fail:
    how a test holds a re-index in the middle or breaks it."""

    def __init__(self, inner: Embedder) -> None:
        self._inner = inner
        self.open = threading.Event()
        self.entered = threading.Event()
        self.fail = False

    @property
    def space(self) -> EmbeddingSpace:
        return self._inner.space

    @property
    def tokenizer(self) -> TokenCounter:
        return self._inner.tokenizer

    def embed(self, texts: list[str]) -> NDArray[np.float32]:
        self.entered.set()
        assert self.open.wait(60), "the test never opened the gate"
        if self.fail:
            raise RuntimeError("the embedding server went away")
        return self._inner.embed(texts)


Setup = tuple[Engine, Knowledge, Gated, Clock]


@pytest.fixture(params=["sqlite", "postgres"])
def setup(request: pytest.FixtureRequest, project: Path) -> Iterator[Setup]:
    """Collection ``hr`` with five documents, in the default space; a knowledge service
    whose ``NARROW`` embedder is gated, re-indexing two chunks per batch."""
    clock = Clock(time.time())
    with opened(request.param, project, clock) as (engine, _, audit):
        gate = Gated(shared_embedder(NARROW))

        def factory(spec: Mapping[str, Any]) -> Embedder:
            return gate if dict(spec) == NARROW else shared_embedder(spec)

        knowledge = Knowledge(engine.ctx, audit=audit, embedder_for=factory, reindex_batch_chunks=2)
        knowledge.create_collection(
            OWNER, "hr", owner="Olga", classification="internal", default_access=["role:reader"]
        )
        for name, data in DOCS.items():
            knowledge.ingest(CURATOR, "hr", name, data)
        yield engine, knowledge, gate, clock
        gate.open.set()
        knowledge.reindex_wait(OWNER, "hr", timeout=60)


def chunk_spaces(engine: Engine) -> dict[str, str]:
    with engine.db.read() as conn:
        rows = conn.execute(text("SELECT chunk_id, space_id FROM index_chunks")).all()
    return {str(r[0]): str(r[1]) for r in rows}


def test_a_reindex_under_live_queries_never_mixes_spaces_and_never_gaps(setup: Setup) -> None:
    engine, knowledge, gate, clock = setup
    first_ingested = clock.now
    old_space = knowledge.collection(ALICE, "hr").settings.space_id
    new_space = gate.space.id
    assert new_space != old_space
    seen_in: dict[str, str] = chunk_spaces(engine)  # every chunk id ever seen, and its space
    results: list[SearchResult] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher() -> None:
        while not stop.is_set():
            try:
                results.append(knowledge.search(ALICE, "hr", "annual leave days", k=3))
            except BaseException as error:  # reported by the test below
                errors.append(error)
                return

    threads = [threading.Thread(target=searcher) for _ in range(2)]
    for t in threads:
        t.start()
    started = knowledge.reindex(OWNER, "hr", NARROW, reason="smaller chunks")
    assert started.state == "running" and started.to_space == new_space
    assert gate.entered.wait(30)
    # meanwhile: a changed document, a new one and a withdrawn one, in the old space
    clock.advance(60)
    changed = knowledge.ingest(
        CURATOR, "hr", "leave.txt", DOCS["leave.txt"] + b"\nUnused leave carries over.\n"
    )
    added = knowledge.ingest(CURATOR, "hr", "remote.txt", b"Remote work\n\nTwo days a week.\n")
    gone = knowledge.ingest(CURATOR, "hr", "travel.txt", DOCS["travel.txt"]).document_id
    knowledge.withdraw_document(CURATOR, "hr", gone, reason="obsolete")
    assert knowledge.collection(ALICE, "hr").settings.space_id == old_space
    running = knowledge.reindex_status(OWNER, "hr")
    assert running.state == "running" and running.done < running.total
    seen_in.update(chunk_spaces(engine))
    gate.open.set()
    finished = knowledge.reindex_wait(OWNER, "hr", timeout=120)
    before_stop = len(results)
    while len(results) < before_stop + 4 and not errors:
        time.sleep(0.01)
    stop.set()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert finished.state == "completed", finished

    seen_in.update(chunk_spaces(engine))
    assert {r.space_id for r in results} == {old_space, new_space}
    for result in results:
        assert result.hits, "a search came back empty during the re-index"
        assert {seen_in[h.chunk_id] for h in result.hits} == {result.space_id}
    assert results[-1].space_id == new_space  # after the switch, only the new space

    coll = knowledge.collection(ALICE, "hr")
    assert (coll.settings.space_id, dict(coll.settings.embedder)) == (new_space, NARROW)
    spaces = chunk_spaces(engine)
    assert set(spaces.values()) == {new_space}  # the old space's chunks are gone
    after = knowledge.search(ALICE, "hr", "unused leave carries over remote work", k=20)
    versions = {h.document_id: h.version for h in after.hits}
    assert versions[changed.document_id] == changed.version
    assert added.document_id in versions and gone not in versions
    as_of = knowledge.search(ALICE, "hr", "annual leave", k=20, as_of=first_ingested)
    assert as_of.space_id == new_space and as_of.hits  # superseded versions came along

    log = kinds(engine)
    assert log.index("knowledge_reindex_started") < log.index("knowledge_reindex_completed")
    done = body(engine, str(finished.finished))
    assert done["from_space"] == old_space and done["dropped_chunks"] > 0
    assert done["versions"] == finished.done > 0
    switch = body(engine, coll.record_id)
    assert switch["changed"] == ["embedder", "space_id"]
    assert engine.verify(deep=True).ok


def test_a_failed_reindex_is_recorded_and_leaves_the_old_space_serving(setup: Setup) -> None:
    engine, knowledge, gate, _ = setup
    old_space = knowledge.collection(ALICE, "hr").settings.space_id
    knowledge.reindex(OWNER, "hr", NARROW)
    gate.fail = True
    gate.open.set()
    status = knowledge.reindex_wait(OWNER, "hr", timeout=60)
    assert status.state == "failed" and "went away" in str(status.error)
    assert knowledge.collection(ALICE, "hr").settings.space_id == old_space
    assert set(chunk_spaces(engine).values()) == {old_space}
    failed = body(engine, str(status.finished))
    assert failed["to_space"] == gate.space.id
    assert knowledge.search(ALICE, "hr", "annual leave").space_id == old_space


def test_an_interrupted_reindex_is_reported_and_resumed_by_another_process(
    setup: Setup,
) -> None:
    engine, knowledge, gate, _ = setup
    knowledge.reindex(OWNER, "hr", NARROW)
    assert gate.entered.wait(30)
    # another process (a second service on the same store) sees it unfinished
    other = Knowledge(engine.ctx, embedder_for=shared_embedder, reindex_batch_chunks=3)
    assert other.reindex_status(OWNER, "hr").state == "interrupted"
    other.reindex(OWNER, "hr", NARROW, reason="resume")
    resumed = other.reindex_wait(OWNER, "hr", timeout=120)
    assert resumed.state == "completed"
    assert knowledge.collection(ALICE, "hr").settings.space_id == gate.space.id
    gate.open.set()  # the first run wakes to find the collection moved: recorded, no harm
    first = knowledge.reindex_wait(OWNER, "hr", timeout=60)
    assert first.state == "completed" and first.started == resumed.started
    assert set(chunk_spaces(engine).values()) == {gate.space.id}
    assert kinds(engine).count("knowledge_reindex_failed") == 1
    assert knowledge.search(ALICE, "hr", "annual leave").hits


def test_a_reindex_is_refused_without_the_permission_or_to_the_same_space(
    setup: Setup,
) -> None:
    _, knowledge, gate, _ = setup
    with pytest.raises(PermissionDeniedError):
        knowledge.reindex(CURATOR, "hr", NARROW)
    with pytest.raises(PermissionDeniedError):
        knowledge.reindex_status(ALICE, "hr")
    with pytest.raises(ConflictError, match="already in embedding space"):
        knowledge.reindex(OWNER, "hr", {"kind": "onnx-int8"})
    with pytest.raises(InputError, match="max_tokens"):
        knowledge.reindex(OWNER, "hr", {"kind": "onnx-int8", "max_tokens": 9999})
    with pytest.raises(ConflictError, match="re-index"):
        knowledge.change_collection(OWNER, "hr", embedder=NARROW)
    assert knowledge.reindex_status(OWNER, "hr").state == "none"
    knowledge.reindex(OWNER, "hr", NARROW)
    with pytest.raises(ConflictError, match="already"):
        knowledge.reindex(OWNER, "hr", NARROW)
    gate.open.set()
    assert knowledge.reindex_wait(OWNER, "hr", timeout=60).state == "completed"


def test_the_cli_reindexes_waits_and_reports(project: Path) -> None:
    with opened("sqlite", project) as (_, knowledge, _audit):
        knowledge.create_collection(
            OWNER, "hr", owner="Olga", classification="internal", default_access=["role:reader"]
        )
        knowledge.ingest(CURATOR, "hr", "leave.txt", DOCS["leave.txt"])
    where = ["--project", str(project)]
    assert json.loads(cli(["reindex-status", "hr", *where], 0))["state"] == "none"
    cli(["reindex", "hr", "--embedder", "{kind", *where], 2)
    done = json.loads(cli(["reindex", "hr", "--embedder", json.dumps(NARROW), *where], 0))
    assert (done["state"], done["done"], done["total"]) == ("completed", 1, 1)
    assert done["to_space"].endswith(":128")
    status = json.loads(cli(["reindex-status", "hr", *where], 0))
    assert status == done
    cli(["reindex", "hr", "--embedder", json.dumps(NARROW), *where], 2)  # already there


def cli(args: list[str], code: int) -> str:
    result = CliRunner().invoke(app, ["knowledge", *args])
    assert result.exit_code == code, result.output
    return result.stdout


def test_an_ingest_prepared_for_the_old_space_is_prepared_again_after_the_switch(
    setup: Setup,
) -> None:
    engine, knowledge, gate, _ = setup
    gate.open.set()  # the re-index of ``knowledge`` runs freely
    held = Gated(shared_embedder({"kind": "onnx-int8"}))  # this process's ingest waits
    slow = Knowledge(
        engine.ctx, embedder_for=lambda spec: held if spec != NARROW else shared_embedder(spec)
    )
    done: list[object] = []
    ingest = threading.Thread(
        target=lambda: done.append(
            slow.ingest(CURATOR, "hr", "late.txt", b"Late\n\nParking permits renew in May.\n")
        )
    )
    ingest.start()
    assert held.entered.wait(30)  # chunked and embedding for the old space
    knowledge.reindex(OWNER, "hr", NARROW)
    assert knowledge.reindex_wait(OWNER, "hr", timeout=120).state == "completed"
    held.open.set()
    ingest.join(60)
    assert len(done) == 1
    hits = knowledge.search(ALICE, "hr", "parking permits", k=20).hits
    late = [h for h in hits if h.source_uri == "late.txt"]
    assert late and {chunk_spaces(engine)[h.chunk_id] for h in late} == {gate.space.id}


def test_a_search_that_ran_in_the_old_space_during_the_switch_runs_again_in_the_new(
    setup: Setup,
) -> None:
    engine, knowledge, gate, _ = setup
    gate.open.set()
    held = Gated(shared_embedder({"kind": "onnx-int8"}))  # this process's query waits
    slow = Knowledge(
        engine.ctx, embedder_for=lambda spec: held if spec != NARROW else shared_embedder(spec)
    )
    found: list[SearchResult] = []
    search = threading.Thread(
        target=lambda: found.append(slow.search(ALICE, "hr", "annual leave", k=3))
    )
    search.start()
    assert held.entered.wait(30)  # it read the collection in the old space
    knowledge.reindex(OWNER, "hr", NARROW)
    assert knowledge.reindex_wait(OWNER, "hr", timeout=120).state == "completed"
    held.open.set()
    search.join(60)
    assert len(found) == 1
    result = found[0]
    assert result.space_id == gate.space.id and len(result.hits) == 3
    assert result.dropped == 0  # what the switch deleted is not a re-check drop
    assert {chunk_spaces(engine)[h.chunk_id] for h in result.hits} == {gate.space.id}
