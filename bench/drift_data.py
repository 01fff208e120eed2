"""The seeded data of the drift bench: a reference and a current table, written as Parquet.

20 numeric columns (normal, log-normal, uniform, exponential and integer-valued counts; five
of them shifted in the current data) and 5 categorical ones (3, 10, 50, 200 and 1,000
categories; each current table has one category the reference never had). Every column has
1% missing values; numeric columns also hold a few infinities. Only NumPy and PyArrow are
used, so both sides of the bench read the same files.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

NUMERIC = 20
CARDINALITIES = (3, 10, 50, 200, 1000)
SHIFTED = ("n00", "n04", "n08", "n12", "n16")
MISSING = 0.01
INFINITE = 0.0001


def _numeric(rng: np.random.Generator, i: int, n: int, shifted: bool) -> np.ndarray:
    kind = i % 5
    move = 0.15 if shifted else 0.0
    if kind == 0:
        values = rng.normal(move, 1.0, n)
    elif kind == 1:
        values = rng.lognormal(move, 0.5, n)
    elif kind == 2:
        values = rng.uniform(0.0 + move, 1.0 + move, n)
    elif kind == 3:
        values = rng.exponential(1.0 + move, n)
    else:
        values = rng.poisson(40.0 * (1 + move), n).astype(np.float64)
    holes = rng.random(n)
    values[holes < MISSING] = np.nan
    values[(holes >= MISSING) & (holes < MISSING + INFINITE / 2)] = np.inf
    values[(holes >= MISSING + INFINITE / 2) & (holes < MISSING + INFINITE)] = -np.inf
    return values


def _categorical(rng: np.random.Generator, k: int, n: int, current: bool) -> pa.Array:
    weights = 1.0 / np.arange(1, k + 1) ** 0.8
    names = np.array([f"c{k}_{j}" for j in range(k)] + [f"c{k}_new"], dtype=object)
    # The new category: fairly common in the current data, absent from the reference.
    weights = np.append(weights, weights[k // 2] if current else 0.0)
    codes = rng.choice(k + 1, size=n, p=weights / weights.sum())
    values = names[codes]
    values[rng.random(n) < MISSING] = None
    return pa.array(values, type=pa.string())


def table(n: int, seed: int, current: bool) -> pa.Table:
    rng = np.random.default_rng(seed)
    columns: dict[str, pa.Array | np.ndarray] = {}
    for i in range(NUMERIC):
        name = f"n{i:02d}"
        columns[name] = _numeric(rng, i, n, current and name in SHIFTED)
    for k in CARDINALITIES:
        columns[f"cat{k}"] = _categorical(rng, k, n, current)
    return pa.table(columns)


def files(folder: Path, rows: int) -> tuple[Path, Path]:
    """The reference and current files for ``rows`` rows each, written the first time."""
    folder.mkdir(parents=True, exist_ok=True)
    reference, current = folder / f"reference-{rows}.parquet", folder / f"current-{rows}.parquet"
    if not reference.exists():
        pq.write_table(table(rows, seed=1, current=False), reference)
    if not current.exists():
        pq.write_table(table(rows, seed=2, current=True), current)
    return reference, current
