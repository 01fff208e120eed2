"""`keel drift profile` and `keel drift report`: files in, report.html and report.json out,
and every bad input named without a crash or a bogus verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from tests.test_cli import keel

ROWS = 4000


def frame(seed: int, shift: float = 0.0, new_region: bool = False) -> pa.Table:
    rng = np.random.default_rng(seed)
    income = rng.normal(50_000 + shift, 9_000, ROWS)
    income[:40] = np.nan
    regions = ["north", "south", "east", "west"] + (["islands"] if new_region else [])
    region = rng.choice(regions, ROWS).astype(object)
    region[:10] = None
    return pa.table(
        {
            "income": income,
            "age": rng.integers(18, 80, ROWS),
            "region": pa.array(region, type=pa.string()),
            "score": rng.uniform(0, 1, ROWS),
        }
    )


def files(tmp_path: Path) -> tuple[Path, Path]:
    reference, current = tmp_path / "train.parquet", tmp_path / "week.csv"
    pq.write_table(frame(1), reference)
    pacsv.write_csv(frame(2, shift=6_000, new_region=True), current)
    return reference, current


def test_report_from_files_writes_html_and_json(tmp_path: Path) -> None:
    reference, current = files(tmp_path)
    out = tmp_path / "drift"
    profiles = ["--profiles", str(tmp_path / "profiles")]
    code, stdout, err = keel(
        "drift", "report", "--reference", str(reference), "--current", str(current),
        "--out", str(out), *profiles,
    )  # fmt: skip
    assert code == 1, err  # a column drifted: exit 1 for scripts and CI
    assert "2 of 4 columns drifted: income, region" in stdout
    data = json.loads((out / "report.json").read_text())
    income = data["columns"]["income"]
    assert income["type"] == "numeric" and income["method"] == "wasserstein"
    assert income["drift"] is True
    methods = {s["method"] for s in income["statistics"]}
    assert methods == {"ks", "psi", "wasserstein", "jensenshannon", "missing_share"}
    ks = next(s for s in income["statistics"] if s["method"] == "ks")
    assert ks["p_value"] < 0.05 and ks["threshold"] == 0.05 and ks["drift"] is True
    region = data["columns"]["region"]
    assert region["method"] == "jensenshannon"
    new = next(s for s in region["statistics"] if s["method"] == "new_categories")
    assert new["drift"] is True and "islands" in new["note"]
    assert data["columns"]["age"]["drift"] is False and data["columns"]["score"]["drift"] is False
    assert data["summary"]["drifted"] == ["income", "region"] and data["problems"] == []
    html = (out / "report.html").read_text()
    assert html.count("<svg") == 4 and "<script" not in html and "http" not in html
    assert "islands" in html and 'id="col-income"' in html

    # The profile was stored once; the same file is found again by its hash.
    code, stdout, _ = keel("drift", "profile", str(reference), *profiles)
    profile_id = stdout.split()[0]
    assert code == 0 and "4,000 rows, 3 numeric and 1 categorical columns" in stdout
    assert len(list((tmp_path / "profiles").glob("*.npz"))) == 1
    # A stored profile can be the reference, by id or a prefix of it.
    code, stdout, err = keel(
        "drift", "report", "--reference", profile_id[:16], "--current", str(reference),
        "--out", str(out), *profiles,
    )  # fmt: skip
    assert code == 0, err
    assert "0 of 4 columns drifted" in stdout


def test_method_narrows_the_report_and_decides_the_verdict(tmp_path: Path) -> None:
    reference, current = files(tmp_path)
    out = tmp_path / "drift"
    code, _, err = keel(
        "drift", "report", "--reference", str(reference), "--current", str(current),
        "--out", str(out), "--method", "ks", "--method", "chisquare",
        "--profiles", str(tmp_path / "p"),
    )  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert code == 1, err
    assert data["columns"]["income"]["method"] == "ks"
    assert data["columns"]["region"]["method"] == "chisquare"
    assert {s["method"] for s in data["columns"]["age"]["statistics"]} == {"ks", "missing_share"}
    # Evidently-compatible: one statistic per column, Evidently's choice and verdict.
    code, _, err = keel(
        "drift", "report", "--reference", str(reference), "--current", str(current),
        "--out", str(out), "--compat", "evidently", "--profiles", str(tmp_path / "p"),
    )  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    assert data["mode"] == "evidently"
    assert data["columns"]["income"]["method"] == "wasserstein"  # more than 1,000 values
    assert data["columns"]["region"]["method"] == "jensenshannon"
    chosen = [s for s in data["columns"]["income"]["statistics"] if s["mode"] == "evidently"]
    assert len(chosen) == 1 and chosen[0]["drift"] is True


def test_schema_differences_are_named_not_guessed(tmp_path: Path) -> None:
    reference = tmp_path / "train.parquet"
    pq.write_table(frame(1), reference)
    current = tmp_path / "current.parquet"
    changed = frame(2).drop_columns(["score"])
    changed = changed.set_column(
        changed.column_names.index("region"), "region", pa.array(np.arange(ROWS) % 3)
    )
    changed = changed.append_column("brand_new", pa.array(np.zeros(ROWS)))
    pq.write_table(changed, current)
    out = tmp_path / "drift"
    code, _, err = keel(
        "drift", "report", "--reference", str(reference), "--current", str(current),
        "--out", str(out), "--profiles", str(tmp_path / "p"),
    )  # fmt: skip
    assert code == 0, err
    assert "column 'score' is missing from the current data" in err
    assert "column 'region' is categorical in the reference but numeric" in err
    assert "not in the reference, not compared: brand_new" in err
    data = json.loads((out / "report.json").read_text())
    assert data["columns"]["score"]["drift"] is None and data["columns"]["region"]["drift"] is None
    assert len(data["problems"]) == 3


def test_awkward_columns_get_notes_not_verdicts(tmp_path: Path) -> None:
    reference, current = tmp_path / "ref.csv", tmp_path / "cur.csv"
    n = 500
    base = {"constant": np.full(n, 7.0), "mostly": np.arange(n, dtype=float)}
    pacsv.write_csv(pa.table({**base, "empty": pa.array([None] * n, pa.float64())}), reference)
    empty_now = np.full(n, np.nan)
    pacsv.write_csv(pa.table({**base, "mostly": empty_now, "empty": empty_now}), current)
    out = tmp_path / "drift"
    code, _, err = keel(
        "drift", "report", "--reference", str(reference), "--current", str(current),
        "--out", str(out), "--profiles", str(tmp_path / "p"),
    )  # fmt: skip
    data = json.loads((out / "report.json").read_text())
    constant = {s["method"]: s for s in data["columns"]["constant"]["statistics"]}
    assert constant["wasserstein"]["value"] is None
    assert "constant" in constant["wasserstein"]["note"]
    assert constant["ks"]["drift"] is False  # identical values: KS still says so
    mostly = data["columns"]["mostly"]
    assert mostly["drift"] is None and mostly["missing_drift"] is True
    assert mostly["missing_share_change"] == 1.0
    assert data["columns"]["empty"]["drift"] is None
    assert code == 0, err  # no verdict is not a drift


def test_bad_files_and_options_are_refused_with_the_reason(tmp_path: Path) -> None:
    reference, current = files(tmp_path)
    out = tmp_path / "drift"
    base = ["--out", str(out), "--profiles", str(tmp_path / "p")]
    (tmp_path / "x.json").write_text("{}")
    cases = [
        (["--reference", str(tmp_path / "nope.csv"), "--current", str(current)], "no such file"),
        (["--reference", str(reference), "--current", str(tmp_path / "x.json")], "not a Parquet"),
        (["--reference", "ab" * 8, "--current", str(current)], "no stored profile abab"),
        (
            ["--reference", str(reference), "--current", str(current), "--method", "kl"],
            "unknown method 'kl'",
        ),
        (
            ["--reference", str(reference), "--current", str(current), "--compat", "other"],
            "unknown mode 'other'",
        ),
        (
            ["--reference", str(reference), "--current", str(current), "--num-method", "ks"],
            "--num-method and --cat-method belong to --compat evidently",
        ),
    ]
    for args, message in cases:
        code, _, err = keel("drift", "report", *args, *base)
        assert code == 2 and message in err, (args, err)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really")
    code, _, err = keel("drift", "report", "--reference", str(broken), "--current",
                        str(current), *base)  # fmt: skip
    assert code == 2 and "not a readable Parquet file" in err
    header_only = tmp_path / "header.csv"
    header_only.write_text("income,age\n")
    code, _, err = keel("drift", "report", "--reference", str(reference), "--current",
                        str(header_only), *base)  # fmt: skip
    assert code == 2 and "no rows" in err
    unrelated = tmp_path / "unrelated.csv"
    unrelated.write_text("colour\nred\n")
    code, _, err = keel("drift", "report", "--reference", str(reference), "--current",
                        str(unrelated), *base)  # fmt: skip
    assert code == 2 and "shares no column with reference profile" in err
    assert not out.exists()  # nothing written for a refused request
