"""Retrieval quality on a BEIR-format set: nDCG@10, recall@100 and MRR@10 per query and on
average, for any number of named runs side by side, and paired comparisons between runs
with a bootstrap interval, so that "hybrid beats both" is stated with its uncertainty.

A BEIR folder holds ``corpus.jsonl`` (``{"_id", "title", "text"}``), ``queries.jsonl``
(``{"_id", "text"}``) and ``qrels/<split>.tsv`` (``query-id``, ``corpus-id``, ``score``;
a score above 0 is relevant, higher is more relevant).

The measures follow BEIR, which scores with trec_eval: gain is the judged score itself and
the discount ``log2(rank + 1)``; recall is over every passage judged relevant; MRR is cut at
rank 10, as BEIR's ``MRR@10``. A run is ranked by score, ties broken by document id
descending as trec_eval does, so the figures match BEIR's for the same run. They are
computed here with NumPy rather than by trec_eval itself because trec_eval leaves out the
queries a run returned nothing for, which would flatter that run (here they score 0); the
test suite checks the figures against ``pytrec_eval``.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import wilcoxon

from keel.errors import InputError

SCHEMA_VERSION = 1
NDCG_AT = 10
RECALL_AT = 100
MRR_AT = 10
# (key, heading): the measures, in the order reports show them
MEASURES = (
    ("ndcg_at_10", f"nDCG@{NDCG_AT}"),
    ("recall_at_100", f"recall@{RECALL_AT}"),
    ("mrr_at_10", f"MRR@{MRR_AT}"),
)
SPLIT_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a file name under qrels/, never a path
RESAMPLES = 10_000
CONFIDENCE = 0.95
SEED = 0
BOOTSTRAP_CELLS = 4_000_000  # indices drawn at once: 32 MB
# What `keel knowledge eval` compares: the claim that hybrid retrieval beats both others.
HYBRID_COMPARISONS = (("hybrid", "keyword"), ("hybrid", "vector"))

Ranking = Sequence[tuple[str, float]]
Run = Mapping[str, Ranking]


@dataclass(frozen=True)
class Passage:
    title: str
    text: str


@dataclass(frozen=True)
class Dataset:
    """A loaded BEIR set. ``queries`` holds only the judged queries, the ones evaluated;
    ``unjudged`` lists the others, which are skipped and reported, never silently lost."""

    name: str
    corpus: Mapping[str, Passage]
    queries: Mapping[str, str]
    qrels: Mapping[str, Mapping[str, int]]
    unjudged: tuple[str, ...] = ()
    kinds: Mapping[str, str] = field(default_factory=dict)


def _bad(path: Path, line: int | None, message: str) -> InputError:
    where = f"{path}:{line}" if line is not None else str(path)
    return InputError(f"{where}: {message}", {"file": str(path), "line": line, "reason": message})


def _jsonl(path: Path, fields: Sequence[str]) -> Iterable[tuple[int, dict[str, Any]]]:
    """Each non-blank line of a JSON-lines file with its line number, checked for
    ``fields`` (strings)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise _bad(path, None, "the file is missing: a BEIR folder needs it") from None
    except UnicodeDecodeError as exc:
        raise _bad(path, None, f"the file is not UTF-8 text ({exc.reason})") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise _bad(path, number, f"not valid JSON: {exc.msg}") from None
        if not isinstance(row, dict):
            raise _bad(path, number, "each line must be a JSON object")
        for name in fields:
            if not isinstance(row.get(name), str):
                raise _bad(path, number, f"field {name!r} is missing or not a string")
        yield number, row


def _qrels(
    path: Path, corpus: Mapping[str, Passage], queries: Mapping[str, str]
) -> dict[str, dict[str, int]]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        raise _bad(path, None, "the file is missing: a BEIR folder needs it") from None
    if not lines or lines[0].split("\t") != ["query-id", "corpus-id", "score"]:
        raise _bad(path, 1, "the header must be query-id<TAB>corpus-id<TAB>score")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        cells = line.split("\t")
        if len(cells) != 3:
            raise _bad(path, number, f"expected 3 tab-separated columns, found {len(cells)}")
        query, doc, score = cells
        if query not in queries:
            raise _bad(path, number, f"query {query!r} is not in queries.jsonl")
        if doc not in corpus:
            raise _bad(path, number, f"passage {doc!r} is not in corpus.jsonl")
        try:
            grade = int(score)
        except ValueError:
            raise _bad(path, number, f"score {score!r} is not a whole number") from None
        if grade < 0:
            raise _bad(path, number, f"score {grade} is negative")
        if doc in qrels.get(query, {}):
            raise _bad(path, number, f"query {query!r} judges {doc!r} twice")
        qrels.setdefault(query, {})[doc] = grade
    return qrels


def load_beir(folder: str | Path, split: str = "test") -> Dataset:
    """Read a BEIR folder, with the judgements of ``qrels/<split>.tsv`` (BEIR's splits are
    ``train``, ``dev`` and ``test``); every malformed line is refused with its file and line
    number. A query without a relevant judgement cannot be scored: it is listed in
    ``unjudged``."""
    if not isinstance(split, str) or not SPLIT_NAME.fullmatch(split):
        raise InputError(
            f"split {split!r} is not a name: use letters, digits, '-' or '_', such as "
            "'test' or 'dev' (it names the file qrels/<split>.tsv)",
            {"split": str(split)},
        )
    root = Path(folder)
    corpus: dict[str, Passage] = {}
    path = root / "corpus.jsonl"
    for number, row in _jsonl(path, ("_id", "text")):
        if row["_id"] in corpus:
            raise _bad(path, number, f"passage id {row['_id']!r} appears twice")
        title = row.get("title", "")
        if not isinstance(title, str):
            raise _bad(path, number, "field 'title' must be a string")
        corpus[row["_id"]] = Passage(title, row["text"])
    queries: dict[str, str] = {}
    kinds: dict[str, str] = {}
    path = root / "queries.jsonl"
    for number, row in _jsonl(path, ("_id", "text")):
        if row["_id"] in queries:
            raise _bad(path, number, f"query id {row['_id']!r} appears twice")
        queries[row["_id"]] = row["text"]
        metadata = row.get("metadata")
        if isinstance(metadata, dict) and isinstance(metadata.get("kind"), str):
            kinds[row["_id"]] = metadata["kind"]
    qrels = _qrels(root / "qrels" / f"{split}.tsv", corpus, queries)
    judged = {q for q, grades in qrels.items() if any(g > 0 for g in grades.values())}
    return Dataset(
        name=root.name,
        corpus=corpus,
        queries={q: text for q, text in queries.items() if q in judged},
        qrels={q: qrels[q] for q in queries if q in judged},
        unjudged=tuple(q for q in queries if q not in judged),
        kinds={q: kind for q, kind in kinds.items() if q in judged},
    )


def document_run(chunk_run: Run, document_of: Mapping[str, str] | Callable[[str], str]) -> Run:
    """Map a chunk-level run to a document-level one: each document takes its best chunk's
    score (the maximum), since a document is found when any of its passages is."""
    lookup = document_of.__getitem__ if isinstance(document_of, Mapping) else document_of
    out: dict[str, list[tuple[str, float]]] = {}
    for query, ranking in chunk_run.items():
        best: dict[str, float] = {}
        for chunk, score in ranking:
            try:
                doc = lookup(chunk)
            except KeyError:
                raise InputError(
                    f"query {query!r}: chunk {chunk!r} belongs to no known document",
                    {"query": query, "chunk": chunk},
                ) from None
            best[doc] = max(score, best.get(doc, -math.inf))
        out[query] = sorted(best.items(), key=lambda p: (p[1], p[0]), reverse=True)
    return out


def _finite(score: object) -> bool:
    """Whether a retriever's score is a real number (scores come from other code)."""
    return isinstance(score, int | float | np.floating) and math.isfinite(score)


def _ranked(name: str, query: str, ranking: Ranking, corpus: Mapping[str, Passage]) -> list[str]:
    """Document ids by descending score, ties by descending id (trec_eval's order)."""
    seen: set[str] = set()
    for doc, score in ranking:
        detail = {"run": name, "query": query, "document": doc}
        if doc in seen:
            raise InputError(f"run {name!r}, query {query!r}: {doc!r} is ranked twice", detail)
        if doc not in corpus:
            raise InputError(f"run {name!r}, query {query!r}: {doc!r} is not in the corpus", detail)
        if not _finite(score):
            raise InputError(f"run {name!r}, query {query!r}: {doc!r} has score {score}", detail)
        seen.add(doc)
    return [doc for doc, _ in sorted(ranking, key=lambda p: (p[1], p[0]), reverse=True)]


def ndcg(ranked: Sequence[str], grades: Mapping[str, int], k: int = NDCG_AT) -> float:
    """Normalised discounted cumulative gain at ``k``: 1.0 for an ideal ranking."""
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    gains = np.array([grades.get(doc, 0) for doc in ranked[:k]], dtype=float)
    ideal = np.array(sorted((g for g in grades.values() if g > 0), reverse=True)[:k], float)
    best = float(ideal @ discounts[: len(ideal)])
    return float(gains @ discounts[: len(gains)]) / best if best else 0.0


def recall(ranked: Sequence[str], grades: Mapping[str, int], k: int = RECALL_AT) -> float:
    """Share of the relevant passages found in the first ``k``."""
    relevant = {doc for doc, g in grades.items() if g > 0}
    return len(relevant.intersection(ranked[:k])) / len(relevant) if relevant else 0.0


def reciprocal_rank(ranked: Sequence[str], grades: Mapping[str, int], k: int = MRR_AT) -> float:
    """1 / the rank of the first relevant passage within the first ``k``, else 0."""
    for rank, doc in enumerate(ranked[:k], start=1):
        if grades.get(doc, 0) > 0:
            return 1.0 / rank
    return 0.0


@dataclass(frozen=True)
class Interval:
    """A mean with its bootstrap percentile interval."""

    mean: float
    low: float
    high: float


@dataclass(frozen=True)
class RunScores:
    """One run's measures: per query (in the dataset's query order) and on average."""

    name: str
    per_query: Mapping[str, Mapping[str, float]]
    means: Mapping[str, Interval]
    empty: int  # judged queries the run returned nothing for (they score 0)


@dataclass(frozen=True)
class Comparison:
    """``better`` against ``baseline`` on one measure, query by query: the mean paired
    difference with its bootstrap interval, the Wilcoxon signed-rank p-value, and how many
    queries went each way."""

    better: str
    baseline: str
    measure: str
    difference: Interval
    p_value: float
    wins: int
    losses: int
    ties: int

    @property
    def significant(self) -> bool:
        """Whether the whole interval lies above zero."""
        return self.difference.low > 0


@dataclass(frozen=True)
class EvalReport:
    """What ``keel knowledge eval`` shows, as HTML or JSON (``to_dict``)."""

    dataset: str
    passages: int
    queries: int
    unjudged: tuple[str, ...]
    runs: tuple[RunScores, ...]
    comparisons: tuple[Comparison, ...]
    # kind of query (queries.jsonl's metadata.kind) → its query ids, for means per kind
    kinds: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    confidence: float = CONFIDENCE
    resamples: int = RESAMPLES
    schema_version: int = SCHEMA_VERSION

    def means_by_kind(self) -> dict[str, dict[str, dict[str, float]]]:
        """kind → run → measure → mean over that kind's queries: where each retriever
        fails (keyword search on paraphrases, vector search on rare identifiers)."""
        return {
            kind: {
                run.name: {
                    key: float(np.mean([run.per_query[q][key] for q in queries]))
                    for key, _ in MEASURES
                }
                for run in self.runs
            }
            for kind, queries in self.kinds.items()
        }

    def to_dict(self) -> dict[str, Any]:
        def interval(i: Interval) -> dict[str, float]:
            return {"mean": i.mean, "low": i.low, "high": i.high}

        return {
            "schema_version": self.schema_version,
            "dataset": self.dataset,
            "passages": self.passages,
            "queries": self.queries,
            "unjudged": list(self.unjudged),
            "measures": {key: heading for key, heading in MEASURES},
            "confidence": self.confidence,
            "resamples": self.resamples,
            "runs": {
                r.name: {
                    "means": {key: interval(i) for key, i in r.means.items()},
                    "empty": r.empty,
                    "per_query": {q: dict(m) for q, m in r.per_query.items()},
                }
                for r in self.runs
            },
            "kinds": {kind: len(queries) for kind, queries in self.kinds.items()},
            "means_by_kind": self.means_by_kind(),
            "comparisons": [
                {
                    "better": c.better,
                    "baseline": c.baseline,
                    "measure": c.measure,
                    "difference": interval(c.difference),
                    "p_value": c.p_value,
                    "wins": c.wins,
                    "losses": c.losses,
                    "ties": c.ties,
                    "significant": c.significant,
                }
                for c in self.comparisons
            ],
        }


def bootstrap_mean(
    values: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> Interval:
    """The mean and its percentile bootstrap interval over queries, seeded so that the same
    runs always give the same report."""
    data = np.asarray(values, dtype=float)
    if data.size == 0:
        return Interval(0.0, 0.0, 0.0)
    rng = np.random.default_rng(seed)
    # in batches, so that a public set's thousands of queries never need a
    # resamples × queries index array at once
    batch = max(1, BOOTSTRAP_CELLS // data.size)
    means = np.concatenate(
        [
            data[rng.integers(0, data.size, (min(batch, resamples - start), data.size))].mean(1)
            for start in range(0, resamples, batch)
        ]
    )
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return Interval(float(data.mean()), float(low), float(high))


def paired_comparison(
    better: Sequence[float],
    baseline: Sequence[float],
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
    seed: int = SEED,
) -> tuple[Interval, float, tuple[int, int, int]]:
    """Per-query differences ``better - baseline``: their mean with a bootstrap interval,
    the two-sided Wilcoxon signed-rank p-value (1.0 when no query differs), and the count
    of queries won, lost and tied."""
    a, b = np.asarray(better, dtype=float), np.asarray(baseline, dtype=float)
    if a.shape != b.shape:
        raise InputError(
            f"a paired comparison needs one value per query on both sides: {a.size} "
            f"against {b.size}",
            {"better": int(a.size), "baseline": int(b.size)},
        )
    diff = a - b
    interval = bootstrap_mean(diff, resamples=resamples, confidence=confidence, seed=seed)
    p_value = float(wilcoxon(diff).pvalue) if np.any(diff != 0) else 1.0
    counts = (int(np.sum(diff > 0)), int(np.sum(diff < 0)), int(np.sum(diff == 0)))
    return interval, p_value, counts


def evaluate(
    dataset: Dataset,
    runs: Mapping[str, Run],
    comparisons: Sequence[tuple[str, str]] = (),
    *,
    resamples: int = RESAMPLES,
    confidence: float = CONFIDENCE,
) -> EvalReport:
    """Score each named run on the dataset's judged queries and compare the pairs asked
    for (``(better, baseline)``) on every measure. A judged query a run has no entry for
    scores 0 and is counted in ``empty``; a run's unjudged queries are skipped."""
    if not dataset.queries:
        raise InputError(
            f"{dataset.name}: no query has a relevant judgement, so there is nothing to score",
            {"dataset": dataset.name, "unjudged": len(dataset.unjudged)},
        )
    unknown = [q for run in runs.values() for q in run if q not in dataset.queries]
    unknown = [q for q in unknown if q not in dataset.unjudged]
    if unknown:
        raise InputError(
            f"runs name queries that are not in the dataset: {', '.join(sorted(set(unknown)))}",
            {"queries": sorted(set(unknown))},
        )
    for pair in comparisons:
        missing = [name for name in pair if name not in runs]
        if missing:
            raise InputError(
                f"cannot compare {pair[0]!r} with {pair[1]!r}: no run named "
                f"{', '.join(map(repr, missing))} (runs: {', '.join(runs)})",
                {"missing": missing, "runs": list(runs)},
            )
    scored = tuple(_score(name, run, dataset, resamples, confidence) for name, run in runs.items())
    by_name = {r.name: r for r in scored}
    compared = []
    for better, baseline in comparisons:
        for key, _ in MEASURES:
            a = [by_name[better].per_query[q][key] for q in dataset.queries]
            b = [by_name[baseline].per_query[q][key] for q in dataset.queries]
            interval, p_value, (wins, losses, ties) = paired_comparison(
                a, b, resamples=resamples, confidence=confidence
            )
            compared.append(
                Comparison(better, baseline, key, interval, p_value, wins, losses, ties)
            )
    return EvalReport(
        dataset=dataset.name,
        passages=len(dataset.corpus),
        queries=len(dataset.queries),
        unjudged=dataset.unjudged,
        runs=scored,
        comparisons=tuple(compared),
        kinds={
            kind: tuple(q for q in dataset.queries if dataset.kinds.get(q) == kind)
            for kind in sorted(set(dataset.kinds.values()))
        },
        confidence=confidence,
        resamples=resamples,
    )


def _score(name: str, run: Run, dataset: Dataset, resamples: int, confidence: float) -> RunScores:
    per_query: dict[str, dict[str, float]] = {}
    empty = 0
    for query, grades in dataset.qrels.items():
        ranked = _ranked(name, query, run.get(query, ()), dataset.corpus)
        empty += not ranked
        per_query[query] = {
            "ndcg_at_10": ndcg(ranked, grades),
            "recall_at_100": recall(ranked, grades),
            "mrr_at_10": reciprocal_rank(ranked, grades),
        }
    means = {
        key: bootstrap_mean(
            [m[key] for m in per_query.values()], resamples=resamples, confidence=confidence
        )
        for key, _ in MEASURES
    }
    return RunScores(name, per_query, means, empty)
