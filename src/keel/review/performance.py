"""Model performance from outcomes: how well a signal's score foretold the bad event.

A flow names the outcome labels of the bad (positive) event its model predicts
(``outcome.positive``), the labels that count as good (``outcome.negative``; by default
every other label) and the signal whose score predicts it (``outcome.signal``; by default
the flow's only ``probability`` signal). For each decision with such an outcome, the
score recorded with the decision is set against whether the bad event happened, per
model version (the version recorded with the score) and per time bucket of the decision:

- ``auc`` — the area under the ROC curve: the chance that a bad case scored higher than a
  good one (ties count half); ``gini`` = 2·AUC − 1;
- ``ks`` — the Kolmogorov–Smirnov statistic: the largest distance between the score
  distributions (CDFs) of bad and good cases;
- ``brier`` — the mean squared difference between the predicted probability and the
  outcome (1 bad, 0 good); probability signals only, as is the ``calibration`` table
  (fixed bins of predicted probability: n, mean predicted, observed bad rate);
- ``bands`` — score deciles with n and bad rate, and ``cutoffs`` — for each band's upper
  score, the share approved if every case at or below it were approved, and the bad rate
  among them;
- ``confusion`` — per action in force, good and bad outcomes;
- ``roc`` — per model version with an AUC, the ROC curve its AUC is the area under.

The score figures judge the model, so they use every decision with an outcome and a
score, whatever was done with it. The confusion matrix judges what was done, so it counts
only decisions whose action was in force (``ACTION_IN_FORCE``): a final decision's action,
or the action a resolved review left; an unresolved escalation or advisory case, a shadow
or deferred decision acted on nothing and is left out, counted in ``not_in_force``.

A figure that cannot be known is ``None`` with the reason in ``reasons``, never a made-up
value: fewer than ``min_outcomes`` scored outcomes, or only one class (AUC and KS need
both). The figures equal scikit-learn's ``roc_auc_score`` and ``brier_score_loss`` and
SciPy's ``ks_2samp`` statistic (``tests/test_performance.py`` checks it); they are
computed here with NumPy so that reading them needs no scikit-learn.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text

from keel.context import Context
from keel.errors import InputError
from keel.flows.flow import Flow

# The action a decision left in force, in SQL over ``decisions d LEFT JOIN reviews r`` (a
# resolved review of the decision): the review's final action, else a final decision's
# own; NULL when nothing was acted on (unresolved review, advisory, shadow, deferred).
ACTION_IN_FORCE = (
    "CASE WHEN r.final_action IS NOT NULL THEN r.final_action "
    "WHEN d.status = 'final' THEN d.action END"
)
CALIBRATION_BINS = 10
BANDS = 10
UNVERSIONED = "unknown"  # decisions whose record names no model version for the signal
EVER = "9999"  # after every ISO 8601 time: every outcome reported so far
ROC_POINTS = 201  # the most points of a version's ROC curve in a report

_ROWS = f"""
SELECT substr(d.recorded_at, 1, :n), o.label, {ACTION_IN_FORCE}, l.record
FROM outcomes o JOIN decisions d ON d.id = o.decision_id
JOIN ledger l ON l.seq = d.seq
LEFT JOIN reviews r ON r.decision_id = d.id AND r.state = 'resolved'
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
  AND o.reported_at < :known_by
ORDER BY d.seq
"""  # noqa: S608 - constants of ours, no input


@dataclass
class OutcomeGroup:
    """Decisions with a good or bad outcome, as columns (one group: a version, a bucket)."""

    bad: list[bool] = field(default_factory=list)
    score: list[float | None] = field(default_factory=list)  # None: the signal gave none
    action: list[str | None] = field(default_factory=list)  # None: nothing in force

    def add(self, bad: bool, score: float | None, action: str | None) -> None:
        self.bad.append(bad)
        self.score.append(score)
        self.action.append(action)

    def extend(self, other: OutcomeGroup) -> None:
        self.bad += other.bad
        self.score += other.score
        self.action += other.action

    def scored(self) -> tuple[np.ndarray, np.ndarray]:
        """The scores and outcomes (1 bad, 0 good) of the decisions with a score."""
        kept = [(s, b) for s, b in zip(self.score, self.bad, strict=True) if s is not None]
        scores = np.array([s for s, _ in kept], dtype=float)
        return scores, np.array([b for _, b in kept], dtype=float)


@dataclass(frozen=True)
class Read:
    """What ``read_outcomes`` found: outcomes per (model version, bucket), and the counts of
    reports it could not use."""

    groups: Mapping[tuple[str, str], OutcomeGroup]
    models: Mapping[str, str]  # version → model name
    unjudged: int  # outcomes whose label is neither positive nor negative


def read_outcomes(
    ctx: Context,
    flow: Flow,
    since: str,
    until: str,
    prefix: int,
    known_by: str = EVER,
) -> Read:
    """The flow's decisions in ``[since, until)`` with an outcome reported before
    ``known_by``, grouped by the signal's model version and the first ``prefix``
    characters of the decision's time."""
    outcome = flow.outcome
    signal = outcome.signal or ""
    groups: dict[tuple[str, str], OutcomeGroup] = defaultdict(OutcomeGroup)
    models: dict[str, str] = {}
    unjudged = 0
    params = {"flow": flow.name, "since": since, "until": until, "n": prefix,
              "known_by": known_by}  # fmt: skip
    with ctx.db.read() as conn:
        for bucket, label, action, record in conn.execute(text(_ROWS), params):
            bad = outcome.judged(label)
            if bad is None:
                unjudged += 1
                continue
            recorded = json.loads(record)["body"]["signals"].get(signal, {})
            version = str(recorded.get("version") or UNVERSIONED)
            models.setdefault(version, str(recorded.get("model") or ""))
            score = recorded.get("score")
            groups[version, bucket].add(bad, None if score is None else float(score), action)
    return Read(groups, models, unjudged)


# ---- the figures ---------------------------------------------------------------------------


def auc(scores: np.ndarray, bad: np.ndarray) -> float:
    """The ROC AUC by the rank-sum (Mann–Whitney) form: ties count half. Needs both classes."""
    from scipy.stats import rankdata  # noqa: PLC0415

    positives = bad == 1
    n_bad, n_good = int(positives.sum()), int((~positives).sum())
    ranks = rankdata(scores)
    return float((ranks[positives].sum() - n_bad * (n_bad + 1) / 2) / (n_bad * n_good))


def ks(scores: np.ndarray, bad: np.ndarray) -> float:
    """The largest distance between the empirical score CDFs of bad and good cases (the
    two-sample Kolmogorov–Smirnov statistic). Needs both classes."""
    bads = np.sort(scores[bad == 1])
    goods = np.sort(scores[bad == 0])
    every = np.concatenate([bads, goods])
    cdf_bad = np.searchsorted(bads, every, side="right") / bads.size
    cdf_good = np.searchsorted(goods, every, side="right") / goods.size
    return float(np.max(np.abs(cdf_bad - cdf_good)))


def roc(scores: np.ndarray, bad: np.ndarray, most: int = ROC_POINTS) -> list[dict[str, Any]]:
    """The ROC curve: for each distinct score as a cut-off, highest first, the share of bad
    cases (``tpr``) and of good cases (``fpr``) scoring at or above it, from (0, 0) (no
    cut-off: ``score`` None) to (1, 1) — scikit-learn's ``roc_curve`` with
    ``drop_intermediate=False``. A curve of more than ``most`` points keeps ``most`` of
    them, evenly spaced and with both ends, for a chart. Needs both classes."""
    order = np.argsort(-scores, kind="mergesort")
    ordered, hits = scores[order], bad[order]
    ends = np.r_[np.flatnonzero(np.diff(ordered)), ordered.size - 1]
    true_pos = np.cumsum(hits)[ends]
    false_pos = ends + 1 - true_pos
    tpr = np.r_[0.0, true_pos / true_pos[-1]]
    fpr = np.r_[0.0, false_pos / false_pos[-1]]
    cut: list[float | None] = [None, *(float(x) for x in ordered[ends])]
    keep = range(tpr.size)
    if tpr.size > most:
        keep = np.unique(np.linspace(0, tpr.size - 1, most).round().astype(int)).tolist()
    return [{"score": cut[i], "fpr": float(fpr[i]), "tpr": float(tpr[i])} for i in keep]


def brier(probabilities: np.ndarray, bad: np.ndarray) -> float:
    """The mean squared difference between predicted probability and outcome."""
    return float(np.average((bad - probabilities) ** 2))


def calibration(probabilities: np.ndarray, bad: np.ndarray) -> list[dict[str, Any]]:
    """Per fixed bin of predicted probability (tenths; the last holds 1.0), the cases in it,
    their mean predicted probability and their observed bad rate. Empty bins are left out."""
    index = np.clip((probabilities * CALIBRATION_BINS).astype(int), 0, CALIBRATION_BINS - 1)
    rows = []
    for i in range(CALIBRATION_BINS):
        inside = index == i
        n = int(inside.sum())
        if n:
            rows.append({
                "low": i / CALIBRATION_BINS, "high": (i + 1) / CALIBRATION_BINS, "n": n,
                "mean_predicted": float(probabilities[inside].mean()),
                "bad_rate": float(bad[inside].mean()),
            })  # fmt: skip
    return rows


def bands(scores: np.ndarray, bad: np.ndarray) -> list[dict[str, Any]]:
    """Score deciles, lowest scores first: each band's score range, cases, bads, bad rate.
    Cases with the same score stay in one band, so there may be fewer than ten."""
    edges = np.unique(np.quantile(scores, np.linspace(0, 1, BANDS + 1))[1:-1])
    index = np.searchsorted(edges, scores, side="left")
    rows: list[dict[str, Any]] = []
    for i in np.unique(index):
        inside = index == i
        n, bads = int(inside.sum()), int(bad[inside].sum())
        rows.append({
            "band": len(rows) + 1, "low": float(scores[inside].min()),
            "high": float(scores[inside].max()), "n": n, "bad": bads, "bad_rate": bads / n,
        })  # fmt: skip
    return rows


def cutoffs(table: list[dict[str, Any]], total: int) -> list[dict[str, Any]]:
    """For each band's highest score as a cut-off: were every case scoring at or below it
    approved, the share approved and the bad rate among them (from ``bands``)."""
    rows = []
    approved = bads = 0
    for band in table:
        approved += band["n"]
        bads += band["bad"]
        rows.append({
            "cutoff": band["high"], "approved": approved, "approval_rate": approved / total,
            "bad": bads, "bad_rate": bads / approved,
        })  # fmt: skip
    return rows


def confusion(group: OutcomeGroup) -> dict[str, Any]:
    """Good and bad outcomes per action in force; decisions that acted on nothing counted."""
    table: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    left_out = 0
    for action, bad in zip(group.action, group.bad, strict=True):
        if action is None:
            left_out += 1
            continue
        table[action][int(bad)] += 1
    rows = [
        {"action": action, "good": good, "bad": bads, "n": good + bads,
         "bad_rate": bads / (good + bads)}
        for action, (good, bads) in sorted(table.items())
    ]  # fmt: skip
    return {"actions": rows, "not_in_force": left_out}


def figures(group: OutcomeGroup, probability: bool, min_outcomes: int) -> dict[str, Any]:
    """Every performance figure of one group of decisions with outcomes."""
    scores, bad = group.scored()
    n = int(scores.size)
    n_bad = int(bad.sum())
    out: dict[str, Any] = {
        "outcomes": len(group.bad),
        "scored": n,
        "bad": n_bad,
        "good": n - n_bad,
        "bad_rate": n_bad / n if n else None,
        "auc": None, "gini": None, "ks": None, "brier": None,
        "reasons": {},
        "calibration": [], "bands": [], "cutoffs": [],
        "confusion": confusion(group),
    }  # fmt: skip
    reasons: dict[str, str] = out["reasons"]
    few = n < max(1, min_outcomes)
    why_few = (
        f"{n} scored outcome{'' if n == 1 else 's'}, fewer than the {min_outcomes} the figure "
        "needs (monitoring.performance.min_outcomes)"
    )
    if few:
        reasons.update(dict.fromkeys(("auc", "gini", "ks"), why_few))
    elif n_bad in (0, n):
        only = "no good outcome" if n_bad else "no bad outcome"
        reasons.update(dict.fromkeys(("auc", "gini", "ks"), f"{only}: it needs both"))
    else:
        out["auc"] = auc(scores, bad)
        out["gini"] = 2 * out["auc"] - 1
        out["ks"] = ks(scores, bad)
    if not probability:
        reasons["brier"] = "the signal gives a score, not a probability"
    elif few:
        reasons["brier"] = why_few
    else:
        out["brier"] = brier(scores, bad)
    if n:
        if probability:
            out["calibration"] = calibration(scores, bad)
        out["bands"] = bands(scores, bad)
        out["cutoffs"] = cutoffs(out["bands"], n)
    return out


# ---- the report ----------------------------------------------------------------------------


def not_configured(flow: Flow) -> dict[str, Any] | None:
    """Why the flow has no performance figures (``None`` when it has)."""
    if not flow.outcome.positive:
        return {
            "configured": False,
            "reason": "the flow names no bad outcome labels: add outcome.positive (and "
            "outcome.signal when it has several probability signals) to its flow file",
        }
    return None


def model_performance(
    ctx: Context,
    flow: Flow,
    since: str,
    until: str,
    prefix: int,
    bucket_of: Callable[[str], str] | None = None,
    min_outcomes: int | None = None,
) -> dict[str, Any]:
    """The flow's performance figures over ``[since, until)``: in total, per model version,
    and per version and bucket (``prefix`` characters of the decision's time, mapped by
    ``bucket_of`` when given, e.g. to a week's Monday)."""
    missing = not_configured(flow)
    if missing is not None:
        return missing
    least = flow.monitoring.min_outcomes if min_outcomes is None else min_outcomes
    if isinstance(least, bool) or not isinstance(least, int) or least < 1:
        raise InputError(
            f"min_outcomes must be a whole number of at least 1, got {least!r}",
            {"field": "min_outcomes"},
        )
    signal = flow.outcome.signal or ""
    probability = flow.signals[signal].output == "probability"
    read = read_outcomes(ctx, flow, since, until, prefix)
    total = OutcomeGroup()
    versions: dict[str, dict[str, OutcomeGroup]] = defaultdict(lambda: defaultdict(OutcomeGroup))
    for (version, start), group in sorted(read.groups.items()):
        versions[version][bucket_of(start) if bucket_of else start].extend(group)
        total.extend(group)
    per_version = []
    for version, buckets in versions.items():
        whole = OutcomeGroup()
        for group in buckets.values():
            whole.extend(group)
        version_total = figures(whole, probability, least)
        per_version.append({
            "version": version, "model": read.models.get(version, ""),
            "total": version_total,
            "roc": roc(*whole.scored()) if version_total["auc"] is not None else [],
            "buckets": [{"start": start, **figures(group, probability, least)}
                        for start, group in sorted(buckets.items())],
        })  # fmt: skip
    return {
        "configured": True,
        "signal": signal,
        "output": flow.signals[signal].output,
        "positive": list(flow.outcome.positive),
        "negative": list(flow.outcome.negative),
        "min_outcomes": least,
        "unjudged_outcomes": read.unjudged,
        "total": figures(total, probability, least),
        "versions": per_version,
    }


def pooled(
    ctx: Context, flow: Flow, since: str, until: str, known_by: str
) -> tuple[dict[str, Any], list[str]]:
    """The figures over every decision in ``[since, until)`` with an outcome reported
    before ``known_by``, all model versions together, and the versions they came from:
    what the performance monitors judge."""
    read = read_outcomes(ctx, flow, since, until, 1, known_by)
    total = OutcomeGroup()
    for group in read.groups.values():
        total.extend(group)
    probability = flow.signals[flow.outcome.signal or ""].output == "probability"
    found = figures(total, probability, flow.monitoring.min_outcomes)
    return found, sorted({version for version, _ in read.groups})


# ---- per model version, over every outcome (the model inventory) --------------------------

WHOLE_TIME = 64  # characters of a decision's time to group by: all of them


def version_figures(
    ctx: Context, flow: Flow, min_outcomes: int | None = None
) -> dict[str, dict[str, Any]]:
    """Each model version's figures over every decision with a judged outcome (``figures``
    for the version's decisions), with the window they cover: ``since`` and ``until``, the
    first and last such decision's time. The figures of one version equal that version's
    total in ``model_performance`` over the same decisions. Empty when the flow names no
    bad outcome labels (``not_configured`` says why)."""
    if not_configured(flow) is not None:
        return {}
    least = flow.monitoring.min_outcomes if min_outcomes is None else min_outcomes
    probability = flow.signals[flow.outcome.signal or ""].output == "probability"
    read = read_outcomes(ctx, flow, "", EVER, WHOLE_TIME)
    groups: dict[str, OutcomeGroup] = defaultdict(OutcomeGroup)
    times: dict[str, list[str]] = defaultdict(list)
    for (version, at), group in sorted(read.groups.items()):
        groups[version].extend(group)
        times[version].append(at)
    return {
        version: {**figures(group, probability, least), "model": read.models.get(version, ""),
                  "since": min(times[version]), "until": max(times[version])}
        for version, group in groups.items()
    }  # fmt: skip
