"""Reference profiles: built once, stored by the hash of their data, compared as raw data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from keel.errors import InputError
from keel.monitor.profile import ProfileStore, build_profile, compare, flow_categories
from keel.monitor.stats import categorical_drift, numeric_drift


def table(seed: int, shift: float = 0.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000 + shift, 9_000, 2000)
    income[:20] = np.nan
    income[20:22] = np.inf
    region = rng.choice(["north", "south", "east"], 2000).astype(object)
    region[:5] = None
    return {"income": income, "region": region, "age": rng.integers(18, 80, 2000)}


def test_a_profile_is_stored_once_and_compares_like_the_raw_data(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path / "profiles")
    reference, current = table(1), table(2, shift=4_000)
    profile = store.profile(reference, "train.parquet")
    path = store.path(profile.id)
    written = path.stat().st_mtime_ns
    again = store.profile(reference, "train.parquet")
    assert again.id == profile.id and path.stat().st_mtime_ns == written  # reused, not rebuilt
    assert build_profile(table(1, shift=1.0), "other").id != profile.id
    assert profile.kind("income") == "numeric" and profile.kind("region") == "categorical"
    loaded = store.load(profile.id)
    income = loaded.columns["income"]
    assert income.missing == 20 and income.infinite == 2 and income.rows == 2000
    from_profile = {(r.column, r.method): r for r in compare(loaded, current).statistics}
    raw = numeric_drift("income", reference["income"], current["income"])
    raw += categorical_drift("region", reference["region"], current["region"])
    for r in raw:
        got = from_profile[(r.column, r.method)]
        assert (got.value, got.p_value, got.drift) == (r.value, r.p_value, r.drift), r.method
    assert from_profile[("income", "ks")].drift is True
    only_ks = compare(loaded, current, ["ks"]).statistics
    assert {r.method for r in only_ks} == {"ks", "missing_share"}


def test_bad_profiles_and_data_are_named(tmp_path: Path) -> None:
    store = ProfileStore(tmp_path)
    profile = build_profile(table(1), "train.csv")
    partial = compare(profile, {"income": [1.0], "age": [30]})
    assert partial.problems == ["column 'region' is missing from the current data"]
    region = [s for s in partial.statistics if s.column == "region"]
    assert len(region) == 1 and region[0].value is None and region[0].drift is None
    with pytest.raises(InputError, match="shares no column with reference profile"):
        compare(profile, {"colour": ["red"]})
    with pytest.raises(InputError, match="the current data has no rows"):
        compare(profile, {"income": [], "age": [], "region": []})
    store.path("e" * 64).write_bytes(b"not an archive")
    with pytest.raises(InputError, match=r"stored profile e{12} cannot be read"):
        store.load("e" * 64)
    with pytest.raises(InputError, match="columns of different lengths"):
        build_profile({"a": [1, 2], "b": [1]}, "bad.csv")
    with pytest.raises(InputError, match="no columns to profile"):
        build_profile({}, "empty.csv")
    with pytest.raises(InputError, match="no stored profile"):
        store.load("f" * 64)


def test_a_flow_s_category_columns_are_profiled_as_the_flow_records_them() -> None:
    """Codes read from a file with blanks arrive as floats (11.0); the flow records 11. As a
    category of the flow, the column counts "11", whatever the file's number type."""
    codes = {"checking": np.array([11.0, 12.0, np.nan, 11.0]), "amount": np.arange(4.0)}
    kinds = flow_categories(codes, frozenset({"input.checking", "input.purpose"}))
    assert kinds == {"checking"}
    profile = build_profile(codes, "train.csv", categorical=kinds)
    checking = profile.columns["checking"]
    assert profile.kind("checking") == "categorical" and profile.kind("amount") == "numeric"
    assert (checking.counts, checking.missing) == ({"11": 2, "12": 1}, 1)  # type: ignore[union-attr]
    assert build_profile(codes, "train.csv").kind("checking") == "numeric"
