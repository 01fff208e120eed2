"""``keel knowledge eval`` through Typer's runner: a small BEIR folder cut from the shipped
set is chunked, embedded with the real int8 model, indexed in a real temporary SQLite
index and searched three ways; the report is written and printed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from keel.cli import app

EVAL_SET = Path(__file__).parent / "fixtures" / "knowledge" / "eval"
PASSAGES = 40  # the first 40 passages of the shipped set, and the queries judged on them
MEASURES = ("ndcg_at_10", "recall_at_100", "mrr_at_10")
runner = CliRunner()


def small_set(folder: Path) -> Path:
    """The first ``PASSAGES`` passages, their judgements and the queries they judge."""
    lines = (EVAL_SET / "corpus.jsonl").read_text(encoding="utf-8").splitlines()[:PASSAGES]
    ids = {json.loads(line)["_id"] for line in lines}
    qrels = (EVAL_SET / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    kept = [row for row in qrels[1:] if row.split("\t")[1] in ids]
    queries = {row.split("\t")[0] for row in kept}
    (folder / "qrels").mkdir(parents=True)
    (folder / "corpus.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    (folder / "queries.jsonl").write_text(
        "".join(
            line + "\n"
            for line in (EVAL_SET / "queries.jsonl").read_text(encoding="utf-8").splitlines()
            if json.loads(line)["_id"] in queries
        ),
        encoding="utf-8",
    )
    (folder / "qrels" / "test.tsv").write_text(
        "\n".join([qrels[0], *kept]) + "\n", encoding="utf-8"
    )
    return folder


def keel(*args: str) -> tuple[int, str, str]:
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str, str]:
    root = tmp_path_factory.mktemp("knowledge-eval")
    folder = small_set(root / "small")
    out = root / "out"
    code, stdout, stderr = keel("knowledge", "eval", str(folder), "--out", str(out))
    assert code == 0, stderr
    return folder, out, stdout, stderr


def test_the_three_runs_are_measured_and_written(evaluated: tuple[Path, Path, str, str]) -> None:
    _, out, stdout, stderr = evaluated
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert set(data["runs"]) == {"keyword", "vector", "hybrid"}
    assert data["passages"] == PASSAGES and data["queries"] == 7
    for run in data["runs"].values():
        for key in MEASURES:
            assert 0.0 <= run["means"][key]["mean"] <= 1.0
            assert run["means"][key]["low"] <= run["means"][key]["high"]
        assert run["empty"] == 0
    # hybrid against each of the others, on every measure
    pairs = {(c["better"], c["baseline"], c["measure"]) for c in data["comparisons"]}
    assert pairs == {(b, base, m) for b, base in (("hybrid", "keyword"), ("hybrid", "vector"))
                     for m in MEASURES}  # fmt: skip
    # the default fusion settings are the index's own
    assert data["settings"]["weights"] == {
        "keyword": 1.0, "vector": 1.0, "rrf_k": 5.0, "candidates": 100, "method": "rrf"
    }  # fmt: skip
    assert data["settings"]["split"] == "test"
    assert data["settings"]["depth"] == 100
    assert data["settings"]["embedding_space"]["variant"] == "onnx-int8"
    # keyword and vector are two different retrievers, not hybrid three times
    assert data["runs"]["keyword"]["per_query"] != data["runs"]["vector"]["per_query"]
    # the table shows each run's means and the comparisons
    hybrid_ndcg = data["runs"]["hybrid"]["means"]["ndcg_at_10"]["mean"]
    row = next(line for line in stdout.splitlines() if line.startswith("hybrid "))
    assert f"{hybrid_ndcg:.3f}" in row
    assert "hybrid - keyword  nDCG@10" in stdout and "hybrid - vector   MRR@10" in stdout
    assert f"wrote {out / 'report.html'}" in stderr


def test_keyword_search_finds_an_exact_identifier(evaluated: tuple[Path, Path, str, str]) -> None:
    _, out, _, _ = evaluated
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # q076 is "RWF_NOWAIT": only os.preadv names it
    assert data["runs"]["keyword"]["per_query"]["q076"]["mrr_at_10"] == 1.0


def test_the_html_report_holds_the_figures(evaluated: tuple[Path, Path, str, str]) -> None:
    _, out, _, _ = evaluated
    data = json.loads((out / "report.json").read_text(encoding="utf-8"))
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>")
    # self-contained: no scripts, nothing fetched from elsewhere
    assert "<script" not in html and "src=" not in html and "<link" not in html
    for name in ("keyword", "vector", "hybrid"):
        assert f"{data['runs'][name]['means']['ndcg_at_10']['mean']:.3f}" in html


def test_json_output_parses_and_weights_reach_the_search(
    evaluated: tuple[Path, Path, str, str], tmp_path: Path
) -> None:
    folder, _, _, _ = evaluated
    code, stdout, stderr = keel(
        "knowledge", "eval", str(folder), "--out", str(tmp_path), "--json",
        "--keyword-weight", "0", "--rrf-k", "10",
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["settings"]["weights"]["keyword"] == 0.0
    assert data["settings"]["weights"]["rrf_k"] == 10.0
    # with the keyword list switched off, hybrid is the vector run
    assert data["runs"]["hybrid"]["per_query"] == data["runs"]["vector"]["per_query"]
    assert json.loads((tmp_path / "report.json").read_text(encoding="utf-8")) == data


def test_a_malformed_folder_exits_2_naming_the_file(tmp_path: Path) -> None:
    folder = small_set(tmp_path / "bad")
    with (folder / "qrels" / "test.tsv").open("a", encoding="utf-8") as f:
        f.write("q002\tno-such-passage\t1\n")
    code, _, stderr = keel("knowledge", "eval", str(folder), "--out", str(tmp_path / "out"))
    assert code == 2
    assert "test.tsv" in stderr and "'no-such-passage' is not in corpus.jsonl" in stderr
    assert not (tmp_path / "out").exists()

    code, _, stderr = keel("knowledge", "eval", str(tmp_path / "missing"))
    assert code == 2 and "corpus.jsonl: the file is missing" in stderr


def test_bad_fusion_weights_exit_2_before_any_embedding(tmp_path: Path) -> None:
    folder = small_set(tmp_path / "set")
    code, _, stderr = keel("knowledge", "eval", str(folder), "--vector-weight", "-1")
    assert code == 2 and "fusion weights must be finite and >= 0" in stderr
    code, _, stderr = keel(
        "knowledge", "eval", str(folder), "--keyword-weight", "0", "--vector-weight", "0"
    )
    assert code == 2 and "at least one fusion weight must be above 0" in stderr


def test_split_scores_that_splits_judgements_with_the_fusion_asked_for(
    evaluated: tuple[Path, Path, str, str], tmp_path: Path
) -> None:
    folder, _, _, _ = evaluated
    rows = (folder / "qrels" / "test.tsv").read_text(encoding="utf-8").splitlines()
    dev_queries = sorted({row.split("\t")[0] for row in rows[1:]})[:3]
    dev = tmp_path / "dev-set"
    (dev / "qrels").mkdir(parents=True)
    for name in ("corpus.jsonl", "queries.jsonl"):
        (dev / name).write_bytes((folder / name).read_bytes())
    kept = [row for row in rows[1:] if row.split("\t")[0] in dev_queries]
    (dev / "qrels" / "dev.tsv").write_text("\n".join([rows[0], *kept]) + "\n", encoding="utf-8")
    code, stdout, stderr = keel(
        "knowledge", "eval", str(dev), "--split", "dev", "--fusion", "minmax",
        "--out", str(tmp_path / "out"), "--json",
    )  # fmt: skip
    assert code == 0, stderr
    data = json.loads(stdout)
    assert data["settings"]["split"] == "dev" and data["settings"]["weights"]["method"] == "minmax"
    assert sorted(data["runs"]["hybrid"]["per_query"]) == dev_queries
    assert data["queries"] == 3  # only the dev split's judged queries are scored


def test_a_bad_or_missing_split_exits_2_before_any_embedding(tmp_path: Path) -> None:
    folder = small_set(tmp_path / "set")
    out = tmp_path / "out"
    code, _, stderr = keel("knowledge", "eval", str(folder), "--split", "dev", "--out", str(out))
    assert code == 2 and "dev.tsv: the file is missing" in stderr
    code, _, stderr = keel("knowledge", "eval", str(folder), "--split", "../test")
    assert code == 2 and "split '../test' is not a name" in stderr
    code, _, stderr = keel("knowledge", "eval", str(folder), "--fusion", "cosine")
    assert code == 2 and "cosine" in stderr
    assert not out.exists()
