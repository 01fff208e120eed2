"""Drift statistics: each equal to its reference implementation, and bad data named."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps
from scipy.spatial import distance

from keel.errors import InputError
from keel.monitor.stats import categorical_drift, numeric_drift


def by_method(results: list) -> dict:
    return {r.method: r for r in results}


def test_numeric_statistics_match_their_definitions() -> None:
    rng = np.random.default_rng(3)
    ref = rng.normal(0, 1, 5000)
    cur = rng.normal(0.3, 1.2, 4000)
    cur_with_gaps = np.concatenate([cur, [np.nan] * 40, [np.inf, -np.inf]])
    got = by_method(numeric_drift("x", ref, cur_with_gaps))
    expected = sps.ks_2samp(ref, cur)
    assert got["ks"].value == expected.statistic and got["ks"].p_value == expected.pvalue
    assert got["ks"].drift is True
    assert got["wasserstein"].value == pytest.approx(sps.wasserstein_distance(ref, cur) / ref.std())
    # PSI and Jensen–Shannon over the reference's deciles, computed here by hand.
    edges = np.quantile(ref, np.linspace(0, 1, 11)[1:-1])

    def shares(values: np.ndarray) -> np.ndarray:  # bins (-inf, e1], (e1, e2], ..., (e9, inf)
        index = (values[:, None] > edges[None, :]).sum(axis=1)
        return np.bincount(index, minlength=10) / len(values)

    r, c = shares(ref), shares(cur)
    psi = sum((ci - ri) * math.log(ci / ri) for ri, ci in zip(r, c, strict=True))
    assert got["psi"].value == pytest.approx(psi, rel=1e-9) and got["psi"].drift is True
    assert got["jensenshannon"].value == pytest.approx(distance.jensenshannon(r, c, base=2))
    missing = got["missing_share"]
    assert missing.value == pytest.approx(40 / 4042) and missing.drift is False


def test_the_same_data_shows_no_drift() -> None:
    ref = np.random.default_rng(4).normal(size=3000)
    got = by_method(numeric_drift("x", ref, ref.copy()))
    assert got["ks"].value == 0.0 and got["ks"].drift is False
    assert got["psi"].value == pytest.approx(0.0) and got["jensenshannon"].value == 0.0
    assert got["wasserstein"].value == 0.0 and not any(r.drift for r in got.values())


def test_categorical_statistics_match_their_definitions() -> None:
    ref = ["a"] * 500 + ["b"] * 300 + ["c"] * 200 + [None] * 10
    cur = ["a"] * 300 + ["b"] * 300 + ["c"] * 300 + ["z"] * 100
    got = by_method(categorical_drift("region", ref, cur))
    r = np.array([0.5, 0.3, 0.2, 0.0])
    expected = np.maximum(r, 1e-4)
    expected = expected / expected.sum() * 1000
    chi = sps.chisquare([300, 300, 300, 100], expected)
    assert got["chisquare"].value == chi.statistic and got["chisquare"].p_value == chi.pvalue
    assert got["chisquare"].drift is True
    assert got["new_categories"].value == pytest.approx(0.1) and got["new_categories"].drift
    assert "new: z" in got["new_categories"].note
    c = np.array([0.3, 0.3, 0.3, 0.1])
    assert got["jensenshannon"].value == pytest.approx(distance.jensenshannon(r, c, base=2))
    assert got["missing_share"].value == pytest.approx(-10 / 1010)


def test_awkward_columns_get_clear_answers_not_bogus_verdicts() -> None:
    with pytest.raises(InputError, match="column 'x': the current data has no rows"):
        numeric_drift("x", [1.0, 2.0], [])
    with pytest.raises(InputError, match="column 'x' is numeric in the reference but holds"):
        numeric_drift("x", [1.0, 2.0], ["a", "b"])
    with pytest.raises(InputError, match="'chisquare' is not a method for numeric columns"):
        numeric_drift("x", [1.0], [1.0], ["chisquare"])
    nulls = by_method(numeric_drift("x", [1.0, 2.0, 3.0], [None, None]))
    assert nulls["ks"].value is None and nulls["ks"].drift is None
    assert "no finite values in the current data" in nulls["ks"].note
    assert nulls["missing_share"].value == 1.0 and nulls["missing_share"].drift is True
    constant = by_method(numeric_drift("x", [5.0] * 100, [5.0] * 50 + [6.0] * 50))
    assert constant["wasserstein"].value is None and "constant" in constant["wasserstein"].note
    assert constant["ks"].value == 0.5 and constant["psi"].drift is True
    single = by_method(categorical_drift("kind", ["a"] * 5, ["a"] * 5))
    assert single["chisquare"].value is None and single["psi"].value == 0.0
    empty_cats = by_method(categorical_drift("kind", ["a", "b"], [None, None]))
    assert (
        empty_cats["chisquare"].drift is None and "every value is missing" in empty_cats["psi"].note
    )
