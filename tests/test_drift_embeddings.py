"""Embedding drift: mean distance, a domain classifier's AUC, the share of drifted
components — from Parquet list columns, through stored profiles, into the report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from keel.errors import InputError
from keel.monitor.embeddings import SEED, EmbeddingSample, embedding_drift
from keel.monitor.profile import ProfileStore, build_profile, compare
from keel.monitor.stats import SortedPair
from tests.test_cli import keel

ROWS, DIMS = 3000, 16


def vectors(seed: int, moved: int = 0, shift: float = 0.6) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = rng.normal(size=(ROWS, DIMS)).astype(np.float32)
    out[:, :moved] += shift
    return out


def parquet(path: Path, matrix: np.ndarray, fixed: bool = True, null_rows: int = 0) -> Path:
    rows: list[list[float] | None] = [list(map(float, r)) for r in matrix]
    rows[:null_rows] = [None] * null_rows
    kind = pa.list_(pa.float32(), DIMS) if fixed else pa.list_(pa.float32())
    table = pa.table({"embedding": pa.array(rows, type=kind), "score": matrix[:, 0] * 1.0})
    pq.write_table(table, path)
    return path


def test_each_statistic_is_its_formula() -> None:
    ref, cur = vectors(1), vectors(2, moved=4)
    a, b = EmbeddingSample.of("e", ref), EmbeddingSample.of("e", cur)
    found = {s.method: s for s in embedding_drift("e", a, b)}
    # Distance between the means, over every row.
    expected = np.linalg.norm(
        ref.mean(axis=0, dtype=np.float64) - cur.mean(axis=0, dtype=np.float64)
    )
    assert found["mean_distance"].value == pytest.approx(expected, rel=1e-12)
    # Out-of-fold AUC of a scaled logistic regression, two seeded stratified folds.
    x = np.vstack([ref, cur]).astype(np.float64)
    y = np.concatenate([np.zeros(ROWS), np.ones(ROWS)])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1_000))
    folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=SEED)
    scores = cross_val_predict(model, x, y, cv=folds, method="predict_proba")[:, 1]
    assert found["domain_classifier"].value == pytest.approx(roc_auc_score(y, scores), rel=1e-12)
    # Components whose Wasserstein distance over the reference's std is at least 0.1.
    share = np.mean([
        SortedPair(np.sort(ref[:, j]), np.sort(cur[:, j])).wasserstein() / np.std(ref[:, j]) >= 0.1
        for j in range(DIMS)
    ])  # fmt: skip
    assert found["drifted_components"].value == share == 4 / 16
    assert all(s.drift for s in found.values())
    calm = {s.method: s for s in embedding_drift("e", a, EmbeddingSample.of("e", vectors(3)))}
    assert calm["domain_classifier"].value < 0.55 and not any(s.drift for s in calm.values())


def test_profiles_keep_a_seeded_sample_and_compare_the_same_after_storing(tmp_path: Path) -> None:
    big = np.random.default_rng(5).normal(size=(12_000, DIMS))
    profile = build_profile({"embedding": big}, "big")
    kept = profile.columns["embedding"]
    assert isinstance(kept, EmbeddingSample) and kept.sample.shape == (5_000, DIMS)
    assert kept.sample.dtype == np.float32 and kept.rows == 12_000
    assert build_profile({"embedding": big}, "again").id == profile.id  # content-named
    store = ProfileStore(tmp_path)
    store.save(profile)
    loaded = store.load(profile.id)
    current = {"embedding": vectors(7, moved=2)}
    assert [s.value for s in compare(loaded, current).statistics] == [
        s.value for s in compare(profile, current).statistics
    ]


def test_report_from_parquet_list_columns(tmp_path: Path) -> None:
    reference = parquet(tmp_path / "train.parquet", vectors(1), null_rows=30)
    current = parquet(tmp_path / "week.parquet", vectors(2, moved=6), fixed=False)
    out = tmp_path / "drift"
    code, stdout, err = keel("drift", "report", "--reference", str(reference), "--current",
                             str(current), "--out", str(out), "--profiles", str(tmp_path / "p"))  # fmt: skip
    assert code == 1, err
    assert "embedding" in stdout
    column = json.loads((out / "report.json").read_text())["columns"]["embedding"]
    assert column["type"] == "embedding" and column["method"] == "domain_classifier"
    assert column["drift"] is True
    assert column["missing_share_change"] == pytest.approx(-30 / ROWS)
    methods = [s["method"] for s in column["statistics"]]
    assert methods == ["missing_share", "mean_distance", "domain_classifier", "drifted_components"]
    assert column["histogram"]["projection"] is True
    assert "projected on the line between the two means" in (out / "report.html").read_text()
    code, _, _ = keel("drift", "report", "--reference", str(reference), "--current", str(current),
                      "--out", str(out), "--method", "mean_distance", "--method", "ks",
                      "--profiles", str(tmp_path / "p"))  # fmt: skip
    data = json.loads((out / "report.json").read_text())["columns"]
    assert data["embedding"]["method"] == "mean_distance" and data["score"]["method"] == "ks"
    # Evidently-compatible mode leaves embeddings to Keel's methods, with a verdict.
    code, _, _ = keel("drift", "report", "--reference", str(reference), "--current", str(current),
                      "--out", str(out), "--compat", "evidently", "--profiles", str(tmp_path / "p"))  # fmt: skip
    data = json.loads((out / "report.json").read_text())["columns"]
    assert data["embedding"]["drift"] is True


def test_bad_embeddings_are_named_not_guessed(tmp_path: Path) -> None:
    ragged = pa.array([[1.0, 2.0], [1.0, 2.0, 3.0]], type=pa.list_(pa.float64()))
    with pytest.raises(InputError, match="vectors of 2 different lengths"):
        build_profile({"e": ragged}, "ragged")
    with pytest.raises(InputError, match="holds no vectors"):
        build_profile({"e": pa.array([None, None], type=pa.list_(pa.float64()))}, "empty")
    profile = build_profile({"e": vectors(1), "x": np.arange(ROWS, dtype=float)}, "ref")
    narrower = compare(profile, {"e": vectors(2)[:, :8], "x": np.arange(ROWS, dtype=float)})
    assert any("16 components in the reference and 8" in p for p in narrower.problems)
    flat = compare(profile, {"e": np.arange(ROWS, dtype=float)})
    assert any("an embedding in the reference but not in the current" in p for p in flat.problems)
    swapped = compare(profile, {"x": vectors(2)})
    assert any("an embedding in the current data but not in the reference" in p
               for p in swapped.problems)  # fmt: skip
    assert not narrower.drifted and not flat.drifted and not swapped.drifted
    one = compare(profile, {"e": vectors(2)[:1]})
    notes = {s.method: s.note for s in one.statistics if s.column == "e"}
    assert notes["domain_classifier"] == "fewer than 2 vectors in the current data"
