"""Retrieval evaluation: the frozen BEIR-format set in tests/fixtures/knowledge/eval, the
measures on hand-computed cases and against trec_eval, the loader's refusals, the
chunk-to-document mapping, paired comparisons and the HTML and JSON report."""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from keel.api.errors import STATUS
from keel.errors import InputError
from keel.knowledge.evaluation import (
    HYBRID_COMPARISONS,
    Dataset,
    EvalReport,
    Passage,
    Run,
    bootstrap_mean,
    document_run,
    evaluate,
    load_beir,
    ndcg,
    paired_comparison,
    recall,
    reciprocal_rank,
)
from keel.knowledge.evaluation_html import render_html

EVAL_SET = Path(__file__).parent / "fixtures" / "knowledge" / "eval"
LOG2_3 = math.log2(3)


def test_the_frozen_eval_set_matches_its_manifest() -> None:
    """The set was frozen before tuning: a changed file must be a deliberate new set."""
    lines = (EVAL_SET / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    manifest = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sorted(manifest) == ["corpus.jsonl", "qrels/test.tsv", "queries.jsonl"]
    for name, digest in manifest.items():
        assert hashlib.sha256((EVAL_SET / name).read_bytes()).hexdigest() == digest, name


def test_the_frozen_set_loads_with_every_query_judged() -> None:
    dataset = load_beir(EVAL_SET)
    assert (len(dataset.corpus), len(dataset.queries), dataset.unjudged) == (587, 119, ())
    assert Counter(dataset.kinds.values()) == {"paraphrase": 74, "identifier": 45}
    assert sum(len(g) for g in dataset.qrels.values()) == 219
    words = [len(p.text.split()) for p in dataset.corpus.values()]
    assert min(words) >= 50 and max(words) <= 300
    assert all(max(g.values()) == 2 for g in dataset.qrels.values())


# --- the measures on cases worked by hand -------------------------------------------------

GRADES = {"d1": 2, "d2": 1, "d9": 0}


def test_a_perfect_ranking_scores_one_on_every_measure() -> None:
    ranked = ["d1", "d2", "d3"]
    assert (ndcg(ranked, GRADES), recall(ranked, GRADES), reciprocal_rank(ranked, GRADES)) == (
        1.0,
        1.0,
        1.0,
    )


def test_the_reversed_ranking_loses_only_ndcg() -> None:
    # DCG = 1/log2(2) + 2/log2(3); ideal = 2/log2(2) + 1/log2(3)
    expected = (1 + 2 / LOG2_3) / (2 + 1 / LOG2_3)
    assert ndcg(["d2", "d1"], GRADES) == pytest.approx(expected)
    assert expected == pytest.approx(0.85972, abs=1e-5)
    assert recall(["d2", "d1"], GRADES) == 1.0
    assert reciprocal_rank(["d2", "d1"], GRADES) == 1.0


def test_graded_relevance_weighs_the_better_passage_more() -> None:
    # d3 and d9 are not relevant (d9 is judged 0): DCG = 1/log2(3) + 2/log2(4)
    ranked = ["d9", "d2", "d1"]
    assert ndcg(ranked, GRADES) == pytest.approx((1 / LOG2_3 + 1.0) / (2 + 1 / LOG2_3))
    assert ndcg(["d3", "d1"], GRADES) > ndcg(["d3", "d2"], GRADES)
    assert reciprocal_rank(ranked, GRADES) == 0.5


def test_nothing_relevant_retrieved_scores_zero() -> None:
    for ranked in (["d3", "d9", "d4"], []):
        assert (ndcg(ranked, GRADES), recall(ranked, GRADES)) == (0.0, 0.0)
        assert reciprocal_rank(ranked, GRADES) == 0.0


def test_the_cut_offs_are_10_100_and_10() -> None:
    filler = [f"x{i}" for i in range(10)]
    assert reciprocal_rank([*filler, "d1"], GRADES) == 0.0
    assert ndcg([*filler, "d1"], GRADES) == 0.0
    assert recall([*filler * 10, "d1", "d2"], GRADES) == 0.0
    assert recall([*filler * 9, "d1", "d2"], GRADES) == 1.0


def _random_case(rng: np.random.Generator) -> tuple[dict[str, dict[str, int]], dict[str, Run]]:
    docs = [f"doc{i:03d}" for i in range(150)]
    qrels = {
        f"q{q}": {
            str(d): int(g)
            for d, g in zip(rng.choice(docs, 8, replace=False), rng.integers(0, 3, 8), strict=True)
        }
        for q in range(40)
    }
    for q, grades in qrels.items():
        grades.setdefault(f"doc{int(q[1:]):03d}", 2)  # every query has a relevant passage
    runs: dict[str, Run] = {}
    for name in ("a", "b"):
        runs[name] = {
            q: [
                (str(d), float(s))  # rounded scores, so that ties are broken as trec_eval does
                for d, s in zip(
                    rng.choice(docs, 120, replace=False), np.round(rng.random(120), 1), strict=True
                )
            ]
            for q in qrels
        }
    return qrels, runs


def test_the_measures_agree_with_trec_eval() -> None:
    """Cross-check against pytrec_eval (trec_eval, what BEIR scores with) on random graded
    runs with tied scores. trec_eval has no MRR cut-off: it is given the first 10."""
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(7)
    qrels, runs = _random_case(rng)
    corpus = {d: Passage("", "") for g in qrels.values() for d in g}
    corpus |= {d: Passage("", "") for run in runs.values() for r in run.values() for d, _ in r}
    dataset = Dataset("random", corpus, {q: q for q in qrels}, qrels)
    report = evaluate(dataset, runs)
    evaluator = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.100"})
    mrr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"})
    for scores in report.runs:
        run = {q: dict(r) for q, r in runs[scores.name].items()}
        top10 = {
            q: dict(sorted(r.items(), key=lambda p: (p[1], p[0]))[-10:]) for q, r in run.items()
        }
        expected = evaluator.evaluate(run)
        first = mrr.evaluate(top10)
        for q, mine in scores.per_query.items():
            assert mine["ndcg_at_10"] == pytest.approx(expected[q]["ndcg_cut_10"], abs=1e-4)
            assert mine["recall_at_100"] == pytest.approx(expected[q]["recall_100"], abs=1e-4)
            assert mine["mrr_at_10"] == pytest.approx(first[q]["recip_rank"], abs=1e-4)
        assert len({round(m["ndcg_at_10"], 4) for m in scores.per_query.values()}) > 10


# --- loading a BEIR folder ----------------------------------------------------------------


def _write_set(root: Path, corpus: str, queries: str, qrels: str) -> Path:
    (root / "qrels").mkdir(parents=True)
    (root / "corpus.jsonl").write_text(corpus, encoding="utf-8")
    (root / "queries.jsonl").write_text(queries, encoding="utf-8")
    (root / "qrels" / "test.tsv").write_text(qrels, encoding="utf-8")
    return root


CORPUS = '{"_id": "d1", "title": "One", "text": "first"}\n{"_id": "d2", "text": "second"}\n'
QUERIES = '{"_id": "q1", "text": "one?"}\n{"_id": "q2", "text": "two?"}\n'
QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\n"


@pytest.mark.parametrize(
    ("file", "corpus", "queries", "qrels", "line", "says"),
    [
        ("corpus.jsonl", CORPUS + '{"_id": "d3", "text": \n', QUERIES, QRELS, 3, "not valid JSON"),
        ("corpus.jsonl", '{"_id": "d1"}\n', QUERIES, QRELS, 1, "'text' is missing"),
        ("corpus.jsonl", CORPUS + '["d3"]\n', QUERIES, QRELS, 3, "JSON object"),
        ("corpus.jsonl", CORPUS + CORPUS, QUERIES, QRELS, 3, "appears twice"),
        ("queries.jsonl", CORPUS, '{"_id": 1, "text": "x"}\n', QRELS, 1, "'_id' is missing"),
        ("qrels/test.tsv", CORPUS, QUERIES, QRELS + "q9\td1\t1\n", 4, "query 'q9' is not in"),
        ("qrels/test.tsv", CORPUS, QUERIES, QRELS + "q2\td7\t1\n", 4, "passage 'd7' is not"),
        ("qrels/test.tsv", CORPUS, QUERIES, QRELS + "q2\td1\thigh\n", 4, "not a whole number"),
        ("qrels/test.tsv", CORPUS, QUERIES, QRELS + "q2 d1 1\n", 4, "3 tab-separated"),
        ("qrels/test.tsv", CORPUS, QUERIES, "q1\td1\t1\n", 1, "header"),
    ],
)
def test_a_malformed_set_is_refused_naming_file_and_line(
    tmp_path: Path, file: str, corpus: str, queries: str, qrels: str, line: int, says: str
) -> None:
    root = _write_set(tmp_path / "set", corpus, queries, qrels)
    with pytest.raises(InputError) as caught:
        load_beir(root)
    assert caught.value.detail["file"] == str(root / file)
    assert caught.value.detail["line"] == line
    assert f"{root / file}:{line}: " in caught.value.message
    assert says in caught.value.message
    assert STATUS[caught.value.code] == 422


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    root = _write_set(tmp_path / "set", CORPUS, QUERIES, QRELS)
    (root / "qrels" / "test.tsv").unlink()
    with pytest.raises(InputError, match=r"test\.tsv: the file is missing"):
        load_beir(root)


def test_a_query_without_judgements_is_skipped_and_counted(tmp_path: Path) -> None:
    root = _write_set(tmp_path / "set", CORPUS, QUERIES, QRELS + "q2\td1\t0\n")
    dataset = load_beir(root)
    assert list(dataset.queries) == ["q1"] and dataset.unjudged == ("q2",)
    report = evaluate(dataset, {"r": {"q1": [("d1", 1.0)], "q2": [("d2", 1.0)]}})
    assert (report.queries, report.unjudged) == (1, ("q2",))
    assert report.to_dict()["unjudged"] == ["q2"]
    assert "1 queries without a relevant judgement skipped (q2)" in render_html(report, "now")
    nothing = load_beir(
        _write_set(tmp_path / "none", CORPUS, QUERIES, "query-id\tcorpus-id\tscore\n")
    )
    assert nothing.unjudged == ("q1", "q2")
    with pytest.raises(InputError, match="no query has a relevant judgement"):
        evaluate(nothing, {"r": {}})


def test_runs_that_name_unknown_queries_or_passages_are_refused(tmp_path: Path) -> None:
    dataset = load_beir(_write_set(tmp_path / "set", CORPUS, QUERIES, QRELS))
    with pytest.raises(InputError, match="not in the dataset: q7"):
        evaluate(dataset, {"r": {"q7": [("d1", 1.0)]}})
    with pytest.raises(InputError, match="'d5' is not in the corpus"):
        evaluate(dataset, {"r": {"q1": [("d5", 1.0)]}})
    with pytest.raises(InputError, match="'d1' is ranked twice"):
        evaluate(dataset, {"r": {"q1": [("d1", 1.0), ("d1", 0.5)]}})
    with pytest.raises(InputError, match="'d1' has score nan"):
        evaluate(dataset, {"r": {"q1": [("d1", math.nan)]}})
    with pytest.raises(InputError, match="'d1' has score high"):
        evaluate(dataset, {"r": {"q1": [("d1", "high")]}})  # type: ignore[dict-item]
    with pytest.raises(InputError, match="no run named 'hybrid'"):
        evaluate(dataset, {"keyword": {}, "vector": {}}, HYBRID_COMPARISONS)


def test_a_query_a_run_returned_nothing_for_scores_zero_and_is_counted(tmp_path: Path) -> None:
    dataset = load_beir(_write_set(tmp_path / "set", CORPUS, QUERIES, QRELS))
    (scores,) = evaluate(dataset, {"silent": {}}).runs
    assert scores.empty == 1
    assert scores.per_query["q1"] == {"ndcg_at_10": 0.0, "recall_at_100": 0.0, "mrr_at_10": 0.0}


# --- chunks to documents, comparisons, the report -----------------------------------------


def test_a_document_takes_its_best_chunk_score() -> None:
    chunks = {"q1": [("a#1", 0.2), ("b#1", 0.7), ("a#2", 0.9), ("b#2", 0.8), ("c#1", 0.1)]}
    owner = {"a#1": "a", "a#2": "a", "b#1": "b", "b#2": "b", "c#1": "c"}
    assert document_run(chunks, owner) == {"q1": [("a", 0.9), ("b", 0.8), ("c", 0.1)]}
    by_prefix = document_run(chunks, lambda chunk: chunk.split("#")[0])
    assert by_prefix == document_run(chunks, owner)
    with pytest.raises(InputError, match="chunk 'z#1' belongs to no known document"):
        document_run({"q1": [("z#1", 1.0)]}, owner)


def test_a_paired_comparison_gives_an_interval_around_the_mean_difference() -> None:
    better = [0.9, 0.8, 0.7, 0.9, 0.6, 0.8, 0.7, 0.9, 0.8, 0.7] * 3
    baseline = [
        b - d
        for b, d in zip(better, [0.2, 0.1, 0.3, 0.2, 0.1, 0.2, 0.0, 0.3, 0.2, 0.1] * 3, strict=True)
    ]
    interval, p_value, counts = paired_comparison(better, baseline)
    assert interval.mean == pytest.approx(0.17)
    assert 0 < interval.low < 0.17 < interval.high < 0.3
    assert p_value < 0.001
    assert counts == (27, 0, 3)
    same, p_same, counts_same = paired_comparison(better, better)
    assert (same.mean, same.low, same.high, p_same, counts_same) == (0.0, 0.0, 0.0, 1.0, (0, 0, 30))
    # a difference that goes both ways is not significant: its interval straddles zero
    mixed, p_mixed, _ = paired_comparison([1.0, 0.0] * 15, [0.0, 1.0] * 15)
    assert mixed.low < 0 < mixed.high and p_mixed > 0.5
    # thousands of queries are resampled in batches: the same interval, bounded memory
    rng = np.random.default_rng(3)
    many = rng.random(5000)
    interval_many = bootstrap_mean(many, resamples=2000)
    assert interval_many.mean == pytest.approx(many.mean())
    half_width = 1.96 * many.std() / math.sqrt(many.size)
    assert interval_many.high - interval_many.low == pytest.approx(2 * half_width, rel=0.1)
    assert interval_many.low < many.mean() < interval_many.high
    with pytest.raises(InputError, match="one value per query"):
        paired_comparison([1.0], [1.0, 0.0])


def _tokens(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9_]+", text.lower()))


def _overlap_run(dataset: Dataset, title_only: bool = False) -> Run:
    """A trivial retriever for the harness: score = shared word count (no index needed)."""
    docs = {
        d: _tokens(p.title if title_only else f"{p.title} {p.text}")
        for d, p in dataset.corpus.items()
    }
    run = {}
    for q, text in dataset.queries.items():
        words = _tokens(text)
        scored = [(d, float(len(words & t))) for d, t in docs.items()]
        run[q] = sorted((p for p in scored if p[1] > 0), key=lambda p: -p[1])[:100]
    return run


def test_the_harness_runs_end_to_end_on_the_frozen_set() -> None:
    """Two trivial word-overlap runs show the report: overlap on the whole passage beats
    overlap on the title alone, and the report says so with an interval."""
    dataset = load_beir(EVAL_SET)
    runs = {"text": _overlap_run(dataset), "title": _overlap_run(dataset, title_only=True)}
    report = evaluate(dataset, runs, [("text", "title")], resamples=2000)
    text, title = report.runs
    assert 0.1 < text.means["ndcg_at_10"].mean < 0.9
    assert text.means["ndcg_at_10"].low < text.means["ndcg_at_10"].mean
    assert title.empty > 0
    ndcg_comparison = report.comparisons[0]
    assert (ndcg_comparison.measure, ndcg_comparison.significant) == ("ndcg_at_10", True)

    as_json = json.loads(json.dumps(report.to_dict()))
    assert as_json["schema_version"] == 1
    assert as_json["runs"]["text"]["means"]["ndcg_at_10"]["mean"] == text.means["ndcg_at_10"].mean
    assert len(as_json["runs"]["title"]["per_query"]) == 119
    assert as_json["comparisons"][0]["significant"] is True
    assert as_json["kinds"] == {"identifier": 45, "paraphrase": 74}
    identifiers = [q for q, kind in dataset.kinds.items() if kind == "identifier"]
    by_kind = as_json["means_by_kind"]["identifier"]["text"]["mrr_at_10"]
    assert by_kind == pytest.approx(np.mean([text.per_query[q]["mrr_at_10"] for q in identifiers]))

    page = render_html(report, "2026-11-30T12:00:00Z")
    assert page.startswith("<!doctype html>") and "<svg" in page
    assert not re.search(r"(src|href)=\"?https?:", page) and "<script" not in page
    for run in report.runs:
        for interval in run.means.values():
            assert f"{interval.mean:.3f}" in page
    assert f"{ndcg_comparison.difference.mean:+.3f}" in page
    assert "587 passages · 119 judged queries" in page
    assert f"<td>identifier (45)</td><td>text</td><td>{by_kind_ndcg(report)}</td>" in page


def by_kind_ndcg(report: EvalReport) -> str:
    return f"{report.means_by_kind()['identifier']['text']['ndcg_at_10']:.3f}"


DEV_SET = EVAL_SET.parent / "eval-dev"


def test_the_frozen_dev_set_matches_its_manifest_and_shares_the_corpus() -> None:
    """The development split was frozen before fusion was tuned on it; its corpus is the
    test set's, so the two splits differ only in their queries and judgements."""
    lines = (DEV_SET / "SHA256SUMS").read_text(encoding="utf-8").splitlines()
    manifest = dict(reversed(line.split("  ", 1)) for line in lines)
    assert sorted(manifest) == ["corpus.jsonl", "qrels/dev.tsv", "queries.jsonl"]
    for name, digest in manifest.items():
        assert hashlib.sha256((DEV_SET / name).read_bytes()).hexdigest() == digest, name
    assert (DEV_SET / "corpus.jsonl").read_bytes() == (EVAL_SET / "corpus.jsonl").read_bytes()


def test_the_dev_split_loads_and_shares_no_query_with_the_test_split() -> None:
    dev, test = load_beir(DEV_SET, "dev"), load_beir(EVAL_SET)
    assert (len(dev.corpus), len(dev.queries), dev.unjudged) == (587, 74, ())
    assert Counter(dev.kinds.values()) == {"paraphrase": 48, "identifier": 26}
    assert not set(dev.queries.values()) & set(test.queries.values())
    assert sum(len(grades) for grades in dev.qrels.values()) == 135
    with pytest.raises(InputError, match=r"qrels/test\.tsv: the file is missing"):
        load_beir(DEV_SET)  # the dev folder has no test judgements: named, not guessed
