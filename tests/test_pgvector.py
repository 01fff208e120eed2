"""The test PostgreSQL server has pgvector: the knowledge index's production store is tested on
a real pgvector. Exact nearest-neighbour search (no approximate index, so a sequential scan)
must give NumPy's brute-force order, for cosine distance and inner product, with and without a
pre-filter in the WHERE clause.

The vectors travel as pgvector's text form, ``'[x,y,...]'`` cast to ``vector``: psycopg needs
no adapter for that.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import sqlalchemy as sa

from tests.conftest import fresh_pgvector_database

DIM = 384
ROWS = 60
# The pgvector that pgserver 0.1.4 (pinned in constraints.txt) bundles with PostgreSQL 16.2.
PGVECTOR_VERSION = "0.6.2"


@pytest.fixture(scope="module")
def pgvector() -> Iterator[sa.Engine]:
    with fresh_pgvector_database() as url:
        engine = sa.create_engine(url)
        yield engine
        engine.dispose()


def literal(vector: np.ndarray) -> str:
    """pgvector's text form of a vector; repr keeps every digit of the float32 value."""
    return "[" + ",".join(repr(float(x)) for x in vector) + "]"


@pytest.fixture(scope="module")
def data(pgvector: sa.Engine) -> np.ndarray:
    """ROWS random float32 vectors stored with ids 0..ROWS-1; even ids are in group 'a'."""
    vectors = np.random.default_rng(16).standard_normal((ROWS, DIM)).astype(np.float32)
    with pgvector.begin() as conn:
        conn.execute(
            sa.text(f"CREATE TABLE items (id int PRIMARY KEY, grp text, embedding vector({DIM}))")
        )
        conn.execute(
            sa.text("INSERT INTO items VALUES (:id, :grp, CAST(:v AS vector))"),
            [
                {"id": i, "grp": "a" if i % 2 == 0 else "b", "v": literal(v)}
                for i, v in enumerate(vectors)
            ],
        )
    return vectors


def nearest(engine: sa.Engine, operator: str, query: np.ndarray, where: str = "") -> list[int]:
    sql = f"SELECT id FROM items {where} ORDER BY embedding {operator} CAST(:q AS vector), id"
    with engine.connect() as conn:
        return [row[0] for row in conn.execute(sa.text(sql), {"q": literal(query)})]


def assert_exact_order(returned: list[int], scores: np.ndarray, ids: np.ndarray) -> None:
    """``returned`` ranks exactly the rows ``ids``, by ascending ``scores`` (NumPy's brute
    force). pgvector sums in single precision, NumPy here in double, so two rows whose scores
    differ by less than float32 rounding may come in either order; any other swap fails."""
    assert sorted(returned) == sorted(int(i) for i in ids)
    by_id = dict(zip((int(i) for i in ids), scores, strict=True))
    ranked = np.array([by_id[i] for i in returned])
    tolerance = 1e-5 * float(np.abs(scores).max())
    assert np.all(np.diff(ranked) >= -tolerance), f"out of order: {ranked}"
    assert returned[0] == int(ids[np.argmin(scores)])


def cosine_distance(vectors: np.ndarray, query: np.ndarray) -> np.ndarray:
    v, q = vectors.astype(np.float64), query.astype(np.float64)
    return 1.0 - (v @ q) / (np.linalg.norm(v, axis=1) * np.linalg.norm(q))


QUERIES = [3, 11, 42]


@pytest.mark.parametrize("seed", QUERIES)
def test_cosine_order_is_exact(pgvector: sa.Engine, data: np.ndarray, seed: int) -> None:
    query = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    assert_exact_order(
        nearest(pgvector, "<=>", query), cosine_distance(data, query), np.arange(ROWS)
    )


@pytest.mark.parametrize("seed", QUERIES)
def test_inner_product_order_is_exact(pgvector: sa.Engine, data: np.ndarray, seed: int) -> None:
    # <#> is the negative inner product, so that ascending order puts the largest first.
    query = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
    scores = -(data.astype(np.float64) @ query.astype(np.float64))
    assert_exact_order(nearest(pgvector, "<#>", query), scores, np.arange(ROWS))


def test_filtered_search_is_exact_over_the_permitted_rows(
    pgvector: sa.Engine, data: np.ndarray
) -> None:
    """A WHERE clause restricts the search before ranking: every permitted row is ranked, no
    other row appears (the access pre-filter the knowledge index relies on)."""
    query = np.random.default_rng(7).standard_normal(DIM).astype(np.float32)
    permitted = np.arange(0, ROWS, 2)
    returned = nearest(pgvector, "<=>", query, "WHERE grp = 'a'")
    assert_exact_order(returned, cosine_distance(data[permitted], query), permitted)


def test_distances_match_numpy(pgvector: sa.Engine, data: np.ndarray) -> None:
    query = data[5]
    with pgvector.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT id, embedding <=> CAST(:q AS vector), embedding <#> CAST(:q AS vector) "
                "FROM items ORDER BY id"
            ),
            {"q": literal(query)},
        ).all()
    cosine = np.array([r[1] for r in rows])
    inner = np.array([r[2] for r in rows])
    np.testing.assert_allclose(cosine, cosine_distance(data, query), atol=1e-5)
    expected_inner = -(data.astype(np.float64) @ query.astype(np.float64))
    np.testing.assert_allclose(inner, expected_inner, atol=1e-5 * np.abs(expected_inner).max())
    assert rows[5][1] == pytest.approx(0.0, abs=1e-6)


def test_vector_dimension_is_enforced(pgvector: sa.Engine, data: np.ndarray) -> None:
    """A vector of another dimension is refused by the column, not truncated or padded."""
    with (
        pytest.raises(sa.exc.DataError, match="expected 384 dimensions, not 3"),
        pgvector.begin() as conn,
    ):
        conn.execute(sa.text("INSERT INTO items VALUES (999, 'a', '[1,2,3]')"))


def test_server_reports_pgvector_version(pgvector: sa.Engine) -> None:
    with pgvector.connect() as conn:
        version = conn.execute(
            sa.text("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
        ).scalar_one()
        server = int(conn.execute(sa.text("SHOW server_version_num")).scalar_one())
    assert version == PGVECTOR_VERSION
    assert server >= 160000
