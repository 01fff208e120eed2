"""Filtered vector search against a brute-force NumPy reference on the same permitted set.

    .venv/bin/python bench/retrieval.py [--chunks 100000|1000000] [--queries 200]
    KEEL_BENCH_POSTGRES_URL=postgresql+psycopg://… (or KEEL_TEST_POSTGRES_URL) for PostgreSQL

Synthetic unit vectors (dimension 384, seeded) in documents of 10 chunks each; every
document's access list holds ``group:d{i % 10}`` and ``group:p{i % 100}``, so a caller
holding ``group:d0`` may read 10% of the chunks and one holding ``group:p0`` 1%. Each
query goes through ``ChunkIndex.search`` (vector only, k = 10: the pre-filter in SQL,
exact scoring) and, in the same run, through NumPy on a matrix of exactly the permitted
vectors (the reference: no SQL, no filter cost), with BLAS on one thread (threadpoolctl),
its fastest on a busy machine. Printed per backend and filter: p50 and p99 latency of
both, their ratio, and recall@10 of the index against the reference, which must be 1.0
(the run fails otherwise). A hybrid query (text and vector) is timed too. SQLite is
measured twice: as it runs (a search that resolves the same permitted rows as an earlier
one scores a copy of their vectors kept from it), and with no copy kept (every search
gathers the permitted vectors again, as the first search of a new permitted set does).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import sqlalchemy as sa
from threadpoolctl import threadpool_limits

from keel.index.backend import open_index
from keel.index.base import ChunkIndex
from keel.index.records import IndexedChunk, Validity, Weights
from keel.index.sqlite import GatheredCache, SqliteIndex
from keel.store.database import Database, open_database

DIM = 384
PER_DOC = 10
NOW = 1_800_000_000.0
VECTOR_ONLY = Weights(keyword=0.0, candidates=10)
WORDS = [f"w{i}" for i in range(2000)]


def corpus(chunks: int, seed: int = 7) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((chunks, DIM), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    words = rng.integers(0, len(WORDS), (chunks, 12))
    texts = [" ".join(WORDS[w] for w in row) for row in words]
    return vectors, texts


def load(db: Database, index: ChunkIndex, vectors: np.ndarray, texts: list[str]) -> float:
    start = time.perf_counter()
    docs = len(texts) // PER_DOC
    for first in range(0, docs, 1000):
        with db.write() as conn:
            for d in range(first, min(first + 1000, docs)):
                rows = range(d * PER_DOC, (d + 1) * PER_DOC)
                chunks = [
                    IndexedChunk(
                        f"c{i}", i - d * PER_DOC, texts[i], 0, len(texts[i]), None, vectors[i]
                    )
                    for i in rows
                ]
                access = frozenset({f"group:d{d % 10}", f"group:p{d % 100}"})
                index.add_version(
                    conn, "bench", f"doc{d}", f"v{d}", "kb", access, Validity(), chunks, at=NOW
                )
    return time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.array(values), q))


def measure(
    name: str, index: ChunkIndex, vectors: np.ndarray, texts: list[str], queries: int
) -> bool:
    # BLAS on one thread: the reference's matrix-vector product is fastest so on a busy
    # machine. The index is unaffected: SQLite scores with einsum, PostgreSQL in pgvector.
    with threadpool_limits(1):
        return _measure(name, index, vectors, texts, queries)


def _measure(
    name: str, index: ChunkIndex, vectors: np.ndarray, texts: list[str], queries: int
) -> bool:
    rng = np.random.default_rng(11)
    docs = len(texts) // PER_DOC
    doc_of = np.arange(len(texts)) // PER_DOC
    ok = True
    for label, key, mask in (
        ("10%", "group:d0", doc_of % 10 == 0),
        ("1%", "group:p0", doc_of % 100 == 0),
    ):
        permitted_ids = np.flatnonzero(mask)
        matrix = np.ascontiguousarray(vectors[permitted_ids])
        index_ms, numpy_ms, hybrid_ms, recalls = [], [], [], []
        # Warm both: the first search fills the index's vector cache.
        index.search("bench", ["kb"], "", vectors[0], frozenset({key}), 10, NOW, VECTOR_ONLY)
        for _ in range(queries):
            q = rng.standard_normal(DIM).astype(np.float32)
            q /= np.linalg.norm(q)
            t0 = time.perf_counter()
            hits = index.search("bench", ["kb"], "", q, frozenset({key}), 10, NOW, VECTOR_ONLY)
            t1 = time.perf_counter()
            scores = matrix @ q
            best = np.argpartition(-scores, 9)[:10]
            reference = {f"c{i}" for i in permitted_ids[best]}
            t2 = time.perf_counter()
            index_ms.append((t1 - t0) * 1000)
            numpy_ms.append((t2 - t1) * 1000)
            recalls.append(len(reference & {h.chunk_id for h in hits}) / 10)
        for _ in range(max(queries // 4, 10)):
            q = rng.standard_normal(DIM).astype(np.float32)
            text = " ".join(WORDS[i] for i in rng.integers(0, len(WORDS), 3))
            t0 = time.perf_counter()
            index.search("bench", ["kb"], text, q, frozenset({key}), 10, NOW)
            hybrid_ms.append((time.perf_counter() - t0) * 1000)
        recall = float(np.mean(recalls))
        ok = ok and recall == 1.0
        p50, p99 = percentile(index_ms, 50), percentile(index_ms, 99)
        r50, r99 = percentile(numpy_ms, 50), percentile(numpy_ms, 99)
        print(
            f"| {name} | {len(texts):,} | {label} ({len(permitted_ids):,}) | {p50:.1f} / {p99:.1f} "
            f"| {r50:.2f} / {r99:.2f} | {p50 / r50:.0f}x | {recall:.3f} "
            f"| {percentile(hybrid_ms, 50):.1f} / {percentile(hybrid_ms, 99):.1f} |",
            flush=True,
        )
    del docs
    return ok


def run(name: str, url: str, vectors: np.ndarray, texts: list[str], queries: int) -> bool:
    db = open_database(url)
    try:
        index = open_index(db)
        seconds = load(db, index, vectors, texts)
        print(f"<!-- {name}: loaded {len(texts):,} chunks in {seconds:.0f} s -->", flush=True)
        ok = measure(name, index, vectors, texts, queries)
        if isinstance(index, SqliteIndex):
            index.gathered = GatheredCache(max_entries=0)
            ok = measure(f"{name}, no copy kept", index, vectors, texts, queries) and ok
        return ok
    finally:
        db.close()


def postgres_url() -> tuple[str, sa.Engine, str] | None:
    admin = os.environ.get("KEEL_BENCH_POSTGRES_URL") or os.environ.get("KEEL_TEST_POSTGRES_URL")
    if not admin:
        print("<!-- PostgreSQL skipped: set KEEL_BENCH_POSTGRES_URL -->")
        return None
    name = f"keel_bench_{uuid.uuid4().hex[:8]}"
    server = sa.create_engine(admin, isolation_level="AUTOCOMMIT")
    with server.connect() as conn:
        if (
            conn.exec_driver_sql(
                "SELECT 1 FROM pg_available_extensions WHERE name = 'vector'"
            ).first()
            is None
        ):
            print("<!-- PostgreSQL skipped: this server has no pgvector extension -->")
            server.dispose()
            return None
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    return admin.replace("/postgres?", f"/{name}?"), server, name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--skip-sqlite", action="store_true")
    args = parser.parse_args()
    print(f"<!-- {platform.node()} {platform.python_version()} load {os.getloadavg()} -->")
    vectors, texts = corpus(args.chunks)
    print(
        "| backend | chunks | filter keeps (chunks) | index p50 / p99 ms | NumPy reference p50 / p99 ms | ratio p50 | recall@10 | hybrid p50 / p99 ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    ok = True
    if not args.skip_sqlite:
        with tempfile.TemporaryDirectory(dir=Path(__file__).parent) as folder:
            ok = run("SQLite", f"sqlite:///{folder}/bench.db", vectors, texts, args.queries) and ok
    pg = postgres_url()
    if pg is not None:
        url, server, name = pg
        try:
            ok = run("PostgreSQL + pgvector", url, vectors, texts, args.queries) and ok
        finally:
            with server.connect() as conn:
                conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
            server.dispose()
    print(f"<!-- load after {os.getloadavg()} -->")
    if not ok:
        print("recall@10 below 1.0: the index is not exact", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
