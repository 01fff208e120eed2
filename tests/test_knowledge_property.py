"""The property test of governed search, through the knowledge service as users reach it,
on real SQLite and on PostgreSQL with pgvector, with the real embedded embedder.

A seeded random run ingests a few dozen short documents with random access lists (person,
group and role keys, some inheriting the collection's default) and validity windows, then
interleaves revocations and changes (access lists narrowed and widened, documents and
versions withdrawn, a superseded version among them, persons revoked, the default list
changed, content re-ingested) with thousands of searches by random principals, "now" and
"as of" earlier instants. After every search, each hit is checked against a plain-Python
model of the access lists, versions, validity and withdrawals that the test keeps itself:
it never asks the service what a principal may read.

Caches: the same searches run before and after each change, on two services that each
have their own database connections (and, on SQLite, their own vector caches) on one
store; one changes, both search. Concurrency: threads search while another thread
withdraws, or takes every key from, the documents most of the searching principals read,
and a hit that a revocation removed is a failure in every search whose re-check began
after that revocation returned. (With the re-check switched off, this part fails.)

The seed is printed and named in every failure: ``KEEL_PROPERTY_SEED=<seed>`` reruns it.
"""

from __future__ import annotations

import contextlib
import copy
import os
import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from keel.engine import Engine, open_engine
from keel.index.backend import open_index
from keel.index.base import ChunkIndex
from keel.index.records import Validity
from keel.knowledge.records import SearchHit
from keel.knowledge.service import INHERIT, Knowledge
from keel.security.roles import Grant, Principal, Role
from tests.conftest import Clock, fresh_pgvector_database
from tests.knowledge_service import principal, shared_embedder

COLLECTION = "kb"
OWNER = principal("olga", Grant(Role.KNOWLEDGE_OWNER))
PERSONS = tuple(f"p{i}" for i in range(8))
GROUPS = tuple(f"g{i}" for i in range(5))
ROLES = ("reader", "curator", "knowledge_owner")
WORDS = [
    "leave",
    "salary",
    "pipeline",
    "contract",
    "patient",
    "invoice",
    "audit",
    "release",
    "signing",
    "payroll",
    "budget",
    "holiday",
    "pension",
    "claim",
    "insurance",
    "vendor",
    "policy",
    "review",
    "incident",
    "backup",
    "archive",
    "report",
    "travel",
    "expense",
    "laptop",
    "password",
    "access",
    "retention",
    "privacy",
    "consent",
    "deadline",
    "quarter",
    "forecast",
    "hiring",
    "training",
    "safety",
    "clinic",
    "dosage",
    "tariff",
    "ledger",
    "credit",
    "risk",
    "limit",
]
START = 1_800_000_000.0
K = 50  # above the chunks any principal may read here: a search returns all it may read

# The run's size: enough checks to matter, within a few minutes per backend.
DOCUMENTS = 36
ROUNDS = 50
PRINCIPALS_PER_ROUND = 5
QUERIES_PER_PRINCIPAL = 3
CONCURRENT_REVOCATIONS = 20
SEARCH_THREADS = 3
TARGET_CHECKS = 2500


# ---- the model the test keeps -------------------------------------------------------------


@dataclass
class Version:
    version: str
    paragraphs: list[str]
    live_from: float
    live_until: float | None = None
    valid_from: float | None = None
    valid_until: float | None = None
    withdrawn: bool = False


@dataclass
class Doc:
    document_id: str
    source_uri: str
    marker: str
    access: tuple[str, ...] | None  # None: the collection's default
    validity: tuple[float | None, float | None]
    revision: int = 0
    live: bool = True
    versions: list[Version] = field(default_factory=list)


@dataclass
class Model:
    default: tuple[str, ...]
    docs: dict[str, Doc] = field(default_factory=dict)

    def effective(self, doc: Doc) -> tuple[str, ...]:
        return self.default if doc.access is None else doc.access

    def readable(
        self, keys: frozenset[str], now: float, as_of: float | None
    ) -> dict[tuple[str, str], Version]:
        """The (document, version) pairs the holder of ``keys`` may read: now, the live
        versions valid now; as of an instant, the versions live and valid then. Access is
        the documents' current lists in both."""
        at = now if as_of is None else as_of
        out = {}
        for doc in self.docs.values():
            if not keys & set(self.effective(doc)):
                continue
            for v in doc.versions:
                if v.withdrawn:
                    continue
                if as_of is None:
                    if not (doc.live and v.live_until is None):
                        continue
                elif not (v.live_from <= as_of and (v.live_until is None or as_of < v.live_until)):
                    continue
                if v.valid_from is not None and at < v.valid_from:
                    continue
                if v.valid_until is not None and at >= v.valid_until:
                    continue
                out[(doc.document_id, v.version)] = v
        return out


def keys_of(who: Principal) -> frozenset[str]:
    """The access keys of ``who`` on the collection, worked out here from its fields."""
    keys = {f"person:{who.person}"} | {f"group:{g}" for g in who.groups}
    for grant in who.grants:
        if grant.collection == COLLECTION or (grant.collection is None and grant.flow is None):
            keys.add(f"role:{grant.role.value}")
    return frozenset(keys)


def _words(text: str) -> str:
    return " ".join(text.split())


# ---- the run ------------------------------------------------------------------------------


class Timed:
    """The real index of a service, with the instant each thread's last re-check began
    (the last read of access before a result leaves the service)."""

    def __init__(self, index: ChunkIndex) -> None:
        self.index = index
        self.local = threading.local()
        real = index.recheck

        def recheck(*args: Any, **kwargs: Any) -> Any:
            self.local.began = time.monotonic()
            return real(*args, **kwargs)

        index.recheck = recheck  # type: ignore[method-assign]

    def began(self) -> float:
        return float(self.local.began)


@contextlib.contextmanager
def two_services(
    backend: str, project: Path, clock: Clock
) -> Iterator[tuple[Engine, list[tuple[Knowledge, Timed]]]]:
    """Two engines on one store, each with its own database connections and index (so its
    own caches), and a knowledge service on each."""
    with contextlib.ExitStack() as stack:
        environ: dict[str, str] = {}
        if backend == "postgres":
            environ["KEEL_DATABASE_URL"] = stack.enter_context(fresh_pgvector_database())
        services = []
        first = None
        for _ in range(2):
            engine = stack.enter_context(open_engine(project, environ=environ, clock=clock))
            first = first or engine
            timed = Timed(open_index(engine.db))
            services.append(
                (Knowledge(engine.ctx, index=timed.index, embedder_for=shared_embedder), timed)
            )
        assert first is not None
        yield first, services


class Run:
    """One seeded run: the services, the clock, the model and the tallies."""

    def __init__(self, seed: int, services: list[tuple[Knowledge, Timed]], clock: Clock) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.services = services
        self.clock = clock
        self.model = Model(default=())
        self.checks = 0
        self.as_of_checks = 0
        self.revoked_checks = 0
        self.hits = 0
        self.instants: list[float] = []
        self.chunk_of: dict[str, tuple[str, str, str]] = {}  # chunk id -> doc, version, text
        self.lock = threading.Lock()

    # -- drawing --

    def fail(self, message: str) -> None:
        pytest.fail(f"{message} (seed {self.seed}: KEEL_PROPERTY_SEED={self.seed} reruns it)")

    def access_list(self) -> tuple[str, ...]:
        pool = (
            [f"person:{p}" for p in PERSONS]
            + [f"group:{g}" for g in GROUPS]
            + [f"role:{r}" for r in ROLES]
        )
        return tuple(sorted(self.rng.sample(pool, self.rng.choice((0, 1, 1, 2, 2, 3)))))

    def principal(self) -> Principal:
        rng = self.rng
        person = rng.choice(PERSONS)
        groups = tuple(sorted(rng.sample(GROUPS, rng.choice((0, 1, 1, 2)))))
        roles = rng.choice(
            ((Role.READER,), (Role.READER,), (Role.CURATOR,), (Role.READER, Role.CURATOR),
             (Role.KNOWLEDGE_OWNER,))
        )  # fmt: skip
        grants = [Grant(r, collection=COLLECTION) for r in roles]
        if rng.random() < 0.3:  # a grant elsewhere adds no key here
            grants.append(Grant(rng.choice((Role.READER, Role.CURATOR)), collection="other"))
        if rng.random() < 0.1:  # a global grant does
            grants.append(Grant(Role.READER))
        return Principal(
            f"key:{person}-{rng.random():.6f}", person, person, tuple(grants), groups=groups
        )

    def query(self) -> str:
        rng = self.rng
        docs = list(self.model.docs.values())
        parts = rng.sample(WORDS, rng.choice((1, 2, 3)))
        if docs and rng.random() < 0.6:
            parts.append(rng.choice(docs).marker)
        if rng.random() < 0.3:
            parts.append("".join(rng.choice("bcdfghjklmnpqrstvwxz") for _ in range(7)))
        rng.shuffle(parts)
        return " ".join(parts)

    def validity(self) -> tuple[float | None, float | None]:
        """A window around the run's instants (whole seconds); its ends are half-way
        between them, so no search falls on an end."""
        now = self.clock.now
        start = self.rng.choice((None, None, now - 50.5, now + self.rng.randrange(3, 60) + 0.5))
        end = self.rng.choice((None, None, now + self.rng.randrange(5, 90) + 0.5))
        if start is not None and end is not None and end <= start:
            end = start + 20.0
        return start, end

    def content(self, doc: Doc) -> list[str]:
        rng = self.rng
        tag = f"{doc.marker} rev{doc.revision}"
        count = 1 if rng.random() < 0.8 else 3
        return [
            f"{tag} "
            + " ".join(
                rng.choice(WORDS) for _ in range(rng.randrange(10, 24 if count == 1 else 120))
            )
            + "."
            for _ in range(count)
        ]

    # -- writes, mirrored in the model --

    def tick(self) -> None:
        self.clock.advance(1.0)
        self.instants.append(self.clock.now)

    def ingest(self, knowledge: Knowledge, doc: Doc, *, access: Any, validity: Any) -> None:
        self.tick()
        doc.revision += 1
        paragraphs = self.content(doc)
        result = knowledge.ingest(
            OWNER, COLLECTION, doc.source_uri, "\n\n".join(paragraphs).encode(),
            media_type="text/plain", access=access, validity=validity,
        )  # fmt: skip
        if result.status not in ("new", "changed"):
            self.fail(f"ingest of new content of {doc.document_id} was {result.status}")
        doc.document_id = result.document_id
        for v in doc.versions:
            if v.live_until is None and not v.withdrawn:
                v.live_until = self.clock.now
        doc.versions.append(
            Version(result.version, paragraphs, self.clock.now, None, *doc.validity)
        )
        doc.live = True

    def new_document(
        self, knowledge: Knowledge, n: int, wide: tuple[str, ...] | None = None
    ) -> None:
        own = None if self.rng.random() < 0.3 else self.access_list()
        if wide is not None:
            own = tuple(sorted({*wide, *self.access_list()}))
        doc = Doc("", f"kb://doc{n}", f"mark{n:03d}q", own, self.validity())
        start, end = doc.validity
        access = INHERIT if own is None else own
        self.ingest(knowledge, doc, access=access, validity=Validity(start, end))
        self.model.docs[doc.document_id] = doc

    def change(self, knowledge: Knowledge) -> str:
        """One random revocation or change through ``knowledge``, mirrored in the model;
        returns what it did."""
        rng = self.rng
        model = self.model
        live = [d for d in model.docs.values() if d.live]
        kind = rng.choice(
            ("narrow", "withdraw_document", "withdraw_version", "revoke_person", "widen",
             "reingest", "reingest", "default", "inherit", "superseded")
        )  # fmt: skip
        self.tick()
        doc = rng.choice(live) if live else None
        if kind in ("narrow", "widen", "inherit") and rng.random() < 0.3:
            # a withdrawn document keeps its list, and its superseded versions are still
            # searched "as of" their live periods under it
            doc = rng.choice(list(model.docs.values()))
        if kind == "superseded":
            candidates = [
                (d, v) for d in model.docs.values() for v in d.versions
                if not v.withdrawn and v.live_until is not None
            ]  # fmt: skip
            if not candidates:
                kind = "reingest"
            else:
                d, v = rng.choice(candidates)
                knowledge.withdraw_version(OWNER, COLLECTION, d.document_id, v.version)
                v.withdrawn = True
                return f"withdraw superseded {d.document_id}@{v.version}"
        if doc is None:
            return "nothing live"
        if kind == "narrow":
            current = model.effective(doc)
            kept = tuple(k for k in current if rng.random() < 0.4)
            knowledge.set_access(OWNER, COLLECTION, doc.document_id, list(kept))
            doc.access = kept
        elif kind == "widen":
            wider = tuple(sorted(set(model.effective(doc)) | set(self.access_list())))
            knowledge.set_access(OWNER, COLLECTION, doc.document_id, list(wider))
            doc.access = wider
        elif kind == "inherit":
            knowledge.set_access(OWNER, COLLECTION, doc.document_id, INHERIT)
            doc.access = None
        elif kind == "default":
            model.default = self.access_list()
            knowledge.change_collection(OWNER, COLLECTION, default_access=list(model.default))
        elif kind == "withdraw_document":
            knowledge.withdraw_document(OWNER, COLLECTION, doc.document_id)
            doc.live = False
            for v in doc.versions:
                v.withdrawn = True
        elif kind == "withdraw_version":
            v = doc.versions[-1]
            knowledge.withdraw_version(OWNER, COLLECTION, doc.document_id, v.version)
            v.withdrawn = True
            doc.live = False
        elif kind == "revoke_person":
            person = rng.choice(PERSONS)
            knowledge.revoke_person(OWNER, person, COLLECTION)
            key = f"person:{person}"
            model.default = tuple(k for k in model.default if k != key)
            for d in model.docs.values():
                if d.access is not None:
                    d.access = tuple(k for k in d.access if k != key)
            return f"revoke {key}"
        elif kind == "reingest":
            target = rng.choice(list(model.docs.values()))
            access: Any = None
            validity = None
            if rng.random() < 0.4:
                access = self.access_list()
                target.access = access
            if rng.random() < 0.4:
                target.validity = self.validity()
                validity = Validity(*target.validity)
            self.ingest(knowledge, target, access=access, validity=validity)
            return f"reingest {target.document_id}"
        return f"{kind} {doc.document_id}"

    def revoke_widely(self, knowledge: Knowledge, pool: list[Principal]) -> str:
        """Withdraw, or take every key from, the live document that most of ``pool`` may
        read now, so that the revocation lands in the results of searches in flight."""
        now = self.clock.now
        readers = {
            doc_id: sum(
                any(d == doc_id for d, _ in self.model.readable(keys_of(who), now, None))
                for who in pool
            )
            for doc_id, doc in self.model.docs.items()
            if doc.live
        }
        if not readers:
            return "nothing live"
        doc = self.model.docs[max(sorted(readers), key=lambda d: readers[d])]
        kind = self.rng.choice(("withdraw_document", "withdraw_version", "set_access"))
        if kind == "withdraw_document":
            knowledge.withdraw_document(OWNER, COLLECTION, doc.document_id)
            for v in doc.versions:
                v.withdrawn = True
        elif kind == "withdraw_version":
            knowledge.withdraw_version(OWNER, COLLECTION, doc.document_id, doc.versions[-1].version)
            doc.versions[-1].withdrawn = True
        else:
            knowledge.set_access(OWNER, COLLECTION, doc.document_id, [])
            doc.access = ()
        doc.live = doc.live and kind == "set_access"
        return f"{kind} {doc.document_id}"

    # -- searches, checked against the model --

    def check(
        self,
        who: Principal,
        query: str,
        hits: list[SearchHit],
        readable: dict[tuple[str, str], Version],
        what: str,
    ) -> None:
        for hit in hits:
            version = readable.get((hit.document_id, hit.version))
            if version is None:
                self.fail(
                    f"{what}: {who.person} (keys {sorted(keys_of(who))}) got chunk "
                    f"{hit.chunk_id} of {hit.document_id}@{hit.version} for {query!r}, "
                    "which the model says it may not read"
                )
            assert version is not None
            if _words(hit.text) not in _words(" ".join(version.paragraphs)):
                self.fail(f"{what}: chunk {hit.chunk_id} text is not in its version: {hit.text!r}")
            known = self.chunk_of.setdefault(hit.chunk_id, (hit.document_id, hit.version, hit.text))
            if known != (hit.document_id, hit.version, hit.text):
                self.fail(f"{what}: chunk id {hit.chunk_id} came back as {known} and as {hit}")

    def search(
        self, knowledge: Knowledge, who: Principal, query: str, as_of: float | None = None
    ) -> list[SearchHit]:
        hits = list(knowledge.search(who, COLLECTION, query, k=K, as_of=as_of).hits)
        readable = self.model.readable(keys_of(who), self.clock.now, as_of)
        what = "as of" if as_of is not None else "now"
        self.check(who, query, hits, readable, what)
        # Vector search ranks every permitted chunk, so fewer than K hits are all of them:
        # a widening that did not reach the index would show here.
        missing = set(readable) - {(h.document_id, h.version) for h in hits}
        if len(hits) < K and missing:
            self.fail(f"{what}: {who.person} did not get {sorted(missing)[0]}, which it may read")
        self.checks += 1
        self.as_of_checks += as_of is not None
        self.hits += len(hits)
        return hits

    def revoked_for(
        self, who: Principal, before: dict[tuple[str, str], Version]
    ) -> tuple[set[str], set[str]]:
        """The chunk ids and texts ``who`` could read before a change and cannot now."""
        now = self.model.readable(keys_of(who), self.clock.now, None)
        gone = set(before) - set(now)
        ids = {c for c, (d, v, _) in self.chunk_of.items() if (d, v) in gone}
        still = {t for c, (d, v, t) in self.chunk_of.items() if (d, v) in now}
        texts = {t for c, (d, v, t) in self.chunk_of.items() if (d, v) in gone} - still
        return ids, texts


def _sequential(run: Run) -> None:
    """Rounds of: searches (warming every cache), one change by the first service, the
    same searches again on both services, and targeted searches for what was revoked."""
    rng = run.rng
    for _ in range(ROUNDS):
        pairs = [
            (who, run.query())
            for who in (run.principal() for _ in range(PRINCIPALS_PER_ROUND))
            for _ in range(QUERIES_PER_PRINCIPAL)
        ]
        for i, (who, query) in enumerate(pairs):
            run.search(run.services[i % 2][0], who, query)
        before = {who.id: run.model.readable(keys_of(who), run.clock.now, None) for who, _ in pairs}
        did = run.change(run.services[0][0])
        for i, (who, query) in enumerate(pairs):
            for knowledge, _ in run.services:
                run.search(knowledge, who, query)
            ids, texts = run.revoked_for(who, before[who.id])
            if not ids:
                continue
            for doc_id, _, _ in {run.chunk_of[c] for c in ids}:
                marker = run.model.docs[doc_id].marker
                for knowledge, _ in run.services[(i % 2) :] + run.services[: (i % 2)]:
                    hits = run.search(knowledge, who, f"{marker} {query}")
                    leaked = [h for h in hits if h.chunk_id in ids or h.text in texts]
                    if leaked:
                        run.fail(f"after {did}: {who.person} still got revoked {leaked[0]}")
                    run.revoked_checks += 1
        # "as of" an earlier instant: what was live then, under today's access lists
        for _ in range(PRINCIPALS_PER_ROUND):
            instant = rng.choice(run.instants) + rng.choice((-0.5, 0.5))
            run.search(rng.choice(run.services)[0], run.principal(), run.query(), as_of=instant)


@dataclass
class Done:
    """A finished search of the concurrent phase."""

    who: Principal
    query: str
    started: float
    rechecked: float
    ended: float
    hits: list[SearchHit]


def _concurrent(run: Run) -> tuple[int, int]:
    """Threads search on both services while the first service narrows access and
    withdraws (never widens, so a chunk once revoked stays revoked). Returns the searches
    checked and those in flight across a revocation."""
    pool = [(run.principal(), run.query()) for _ in range(40)]
    for n in range(CONCURRENT_REVOCATIONS):  # documents that most of the pool may read
        run.new_document(run.services[0][0], DOCUMENTS + n, wide=("role:reader",))
    states: list[tuple[float, Model]] = [(0.0, copy.deepcopy(run.model))]
    done: list[Done] = []
    errors: list[BaseException] = []
    stop = threading.Event()

    def searcher(n: int) -> None:
        rng = random.Random(run.seed + n)
        knowledge, timed = run.services[n % 2]
        try:
            while not stop.is_set():
                who, query = rng.choice(pool)
                started = time.monotonic()
                hits = list(knowledge.search(who, COLLECTION, query, k=K).hits)
                ended = time.monotonic()
                with run.lock:
                    done.append(Done(who, query, started, timed.began(), ended, hits))
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=searcher, args=(n,)) for n in range(SEARCH_THREADS)]
    for thread in threads:
        thread.start()
    try:
        for _ in range(CONCURRENT_REVOCATIONS):
            time.sleep(0.05)  # let searches overlap the next revocation
            run.revoke_widely(run.services[0][0], [who for who, _ in pool])
            states.append((time.monotonic(), copy.deepcopy(run.model)))
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    if errors:
        raise errors[0]
    in_flight = 0
    now = run.clock.now
    for search in done:
        # the newest state whose revocation returned before this search's re-check began
        model = next(m for t, m in reversed(states) if t < search.rechecked)
        run.check(
            search.who,
            search.query,
            search.hits,
            model.readable(keys_of(search.who), now, None),
            "concurrent",
        )
        in_flight += any(search.started < t < search.ended for t, _ in states[1:])
        run.hits += len(search.hits)
    run.checks += len(done)
    return len(done), in_flight


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_no_search_returns_what_the_principal_may_not_read(backend: str, project: Path) -> None:
    seed = int(os.environ.get("KEEL_PROPERTY_SEED") or random.randrange(2**32))
    print(f"knowledge property run on {backend}: seed {seed}")
    clock = Clock(START)
    with two_services(backend, project, clock) as (_, services):
        run = Run(seed, services, clock)
        first = services[0][0]
        run.model.default = run.access_list()
        first.create_collection(
            OWNER, COLLECTION, owner="Olga", classification="internal",
            default_access=list(run.model.default),
        )  # fmt: skip
        for n in range(DOCUMENTS):
            run.new_document(first, n)
        _sequential(run)
        concurrent, in_flight = _concurrent(run)
    print(
        f"{run.checks} searches checked ({run.as_of_checks} as of an instant, "
        f"{run.revoked_checks} aimed at revoked chunks, {concurrent} concurrent, "
        f"{in_flight} in flight across a revocation), {run.hits} hits"
    )
    assert run.checks >= TARGET_CHECKS, f"only {run.checks} searches were checked"
    assert run.hits > run.checks, "the searches found too little to show anything"
    assert run.revoked_checks > 0 and run.as_of_checks > 0 and concurrent > 0


# ---- what the property run found ----------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
@pytest.mark.parametrize("change", ["set_access", "revoke_person", "default"])
def test_access_changes_reach_a_withdrawn_documents_earlier_versions(
    backend: str, change: str, project: Path
) -> None:
    """A document whose live version was withdrawn keeps its superseded versions for "as
    of" searches; an access change made after the withdrawal must reach them too, since
    an "as of" search reads the current access list."""
    clock = Clock(START)
    alice = principal("alice", Grant(Role.READER, collection=COLLECTION))
    with two_services(backend, project, clock) as (_, services):
        knowledge = services[0][0]
        default = ["person:alice"] if change == "default" else []
        knowledge.create_collection(
            OWNER, COLLECTION, owner="Olga", classification="internal", default_access=default
        )
        access: Any = INHERIT if change == "default" else ["person:alice"]
        first = knowledge.ingest(
            OWNER, COLLECTION, "kb://leave", b"Leave policy: 25 days a year.",
            media_type="text/plain", access=access,
        )  # fmt: skip
        clock.advance(10)
        second = knowledge.ingest(
            OWNER, COLLECTION, "kb://leave", b"Leave policy: 30 days a year.",
            media_type="text/plain",
        )  # fmt: skip
        clock.advance(10)
        knowledge.withdraw_version(OWNER, COLLECTION, second.document_id, second.version)
        then = START + 5
        hits = knowledge.search(alice, COLLECTION, "leave policy", as_of=then).hits
        assert [h.version for h in hits] == [first.version]  # readable before the change
        if change == "set_access":
            knowledge.set_access(OWNER, COLLECTION, first.document_id, ["person:bob"])
        elif change == "revoke_person":
            knowledge.revoke_person(OWNER, "alice", COLLECTION)
        else:
            knowledge.change_collection(OWNER, COLLECTION, default_access=["person:bob"])
        for service, _ in services:
            assert service.search(alice, COLLECTION, "leave policy", as_of=then).hits == []
