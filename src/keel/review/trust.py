"""Trust metrics: how far a flow can be trusted, per time bucket, from what it recorded.

Each figure comes from the store's indexes of the ledger (decisions, reviews, outcomes),
bucketed by when the decision was made:

- ``volume`` — decisions recorded;
- ``automation_rate`` — share acted on automatically (status ``final``);
- ``escalation_rate`` — share sent to review (``pending_review``); ``deferral_rate`` — share
  deferred because reviewers were at capacity;
- ``override_rate`` — overrides of final decisions per final decision;
- ``review_agreement`` — share of resolved reviews (escalations and advisory cases) that
  approved what the policy proposed; ``advisory_agreement`` — the same for advisory cases
  only: human–model agreement;
- ``guardrail_hits`` and ``fallbacks`` — decisions with at least one hit, and decided by a
  fallback;
- ``outcome_accuracy`` — among decisions with a reported outcome whose label names the
  right action, the share whose action in force (the reviewer's, where a review resolved
  it) was that action. Only decisions whose action was in force count: an unresolved
  escalation or advisory case, a shadow or a deferred decision acted on nothing, and is
  counted in ``outcomes_not_in_force`` instead.

``Trust.metrics`` adds the model's performance figures from the same outcomes
(``keel.review.performance``).

A rate whose denominator is zero is ``None`` (unknown), never 0.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import text

from keel.context import Context
from keel.errors import InputError
from keel.review.performance import ACTION_IN_FORCE, model_performance
from keel.security.roles import Permission, Principal

BUCKETS = {"hour": 13, "day": 10, "week": 10}  # ISO-time prefix length each groups on
STATUSES = ("final", "pending_review", "advisory", "deferred", "shadow")

_DECISIONS = """
SELECT substr(recorded_at, 1, :n) AS b, status, count(*),
       sum(CASE WHEN guardrail_hits > 0 THEN 1 ELSE 0 END), sum(fallback)
FROM decisions
WHERE flow = :flow AND recorded_at >= :since AND recorded_at < :until
GROUP BY 1, 2
"""
_REVIEWS = """
SELECT substr(d.recorded_at, 1, :n) AS b, r.kind, r.resolution, count(*)
FROM reviews r JOIN decisions d ON d.id = r.decision_id
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
  AND r.state = 'resolved'
GROUP BY 1, 2, 3
"""
_OUTCOMES = f"""
SELECT substr(d.recorded_at, 1, :n) AS b, o.label, {ACTION_IN_FORCE}, count(*)
FROM outcomes o JOIN decisions d ON d.id = o.decision_id
LEFT JOIN reviews r ON r.decision_id = d.id AND r.state = 'resolved'
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
GROUP BY 1, 2, 3
"""  # noqa: S608 - constants of ours, no input


def _week(day: str) -> str:
    """The Monday of an ISO day's week."""
    date = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC)
    return (date - timedelta(days=date.weekday())).strftime("%Y-%m-%d")


class _Counts:
    __slots__ = (
        "advisory_agreed",
        "advisory_resolved",
        "correct",
        "fallbacks",
        "hits",
        "known",
        "not_in_force",
        "overrides",
        "resolved",
        "reviews_agreed",
        "status",
    )

    def __init__(self) -> None:
        self.status: dict[str, int] = defaultdict(int)
        self.hits = self.fallbacks = self.overrides = 0
        self.resolved = self.reviews_agreed = 0
        self.advisory_resolved = self.advisory_agreed = 0
        self.known = self.correct = self.not_in_force = 0

    def add(self, other: _Counts) -> None:
        for status, n in other.status.items():
            self.status[status] += n
        for name in self.__slots__:
            if name != "status":
                setattr(self, name, getattr(self, name) + getattr(other, name))

    def figures(self) -> dict[str, Any]:
        volume = sum(self.status.values())
        final = self.status.get("final", 0)
        return {
            "volume": volume,
            **{s: self.status.get(s, 0) for s in STATUSES},
            "automation_rate": _rate(final, volume),
            "escalation_rate": _rate(self.status.get("pending_review", 0), volume),
            "deferral_rate": _rate(self.status.get("deferred", 0), volume),
            "overrides": self.overrides,
            "override_rate": _rate(self.overrides, final),
            "reviews_resolved": self.resolved,
            "review_agreement": _rate(self.reviews_agreed, self.resolved),
            "advisory_resolved": self.advisory_resolved,
            "advisory_agreement": _rate(self.advisory_agreed, self.advisory_resolved),
            "guardrail_hits": self.hits,
            "fallbacks": self.fallbacks,
            "outcomes_known": self.known,
            "outcomes_not_in_force": self.not_in_force,
            "outcome_accuracy": _rate(self.correct, self.known),
        }


def _rate(part: int, whole: int) -> float | None:
    return part / whole if whole else None


class Trust:
    """Trust metrics for those who may read a flow's decisions."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def metrics(
        self,
        principal: Principal,
        flow: str,
        since: str,
        until: str,
        bucket: str = "day",
        min_outcomes: int | None = None,
    ) -> dict[str, Any]:
        """The trust figures (``trust_metrics``) and the model's performance figures
        (``performance``: ``model_performance``; groups with fewer than ``min_outcomes``
        scored outcomes, by default the flow's ``monitoring.performance.min_outcomes``,
        get no figures)."""
        self._ctx.registry.permitted(flow, principal, Permission.READ_DECISIONS)
        report = trust_metrics(self._ctx, flow, since, until, bucket)
        spec = self._ctx.registry.current(flow).flow
        bucket_of = _week if bucket == "week" else None
        report["performance"] = model_performance(
            self._ctx, spec, since, until, BUCKETS[bucket], bucket_of, min_outcomes
        )
        return report


def trust_metrics(
    ctx: Context, flow: str, since: str, until: str, bucket: str = "day"
) -> dict[str, Any]:
    """The flow's trust figures per ``bucket`` (hour, day or week) over ``[since, until)``,
    and over the whole range."""
    if bucket not in BUCKETS:
        raise InputError(
            f"bucket must be one of {', '.join(BUCKETS)}, got {bucket!r}", {"field": "bucket"}
        )
    if since >= until:
        raise InputError(
            f"the range is empty: since {since} is not before until {until}",
            {"since": since, "until": until},
        )
    runtime = ctx.registry.current(flow)
    labels: Mapping[str, str | None] = runtime.flow.outcome.labels
    params = {"flow": flow, "since": since, "until": until, "n": BUCKETS[bucket]}
    counts: dict[str, _Counts] = defaultdict(_Counts)

    def key(prefix: str) -> str:
        return _week(prefix) if bucket == "week" else prefix

    with ctx.db.read() as conn:
        for b, status, n, hits, fallbacks in conn.execute(text(_DECISIONS), params):
            c = counts[key(b)]
            c.status[status] += int(n)
            c.hits += int(hits or 0)
            c.fallbacks += int(fallbacks or 0)
        for b, kind, resolution, n in conn.execute(text(_REVIEWS), params):
            c = counts[key(b)]
            if kind == "override":
                c.overrides += int(n)
                continue
            c.resolved += int(n)
            agreed = int(n) if resolution == "approve" else 0
            c.reviews_agreed += agreed
            if kind == "advisory":
                c.advisory_resolved += int(n)
                c.advisory_agreed += agreed
        for b, label, action, n in conn.execute(text(_OUTCOMES), params):
            right = labels.get(label)
            if right is None:
                continue  # a label that does not judge the action
            c = counts[key(b)]
            if action is None:  # nothing was acted on: no action to judge
                c.not_in_force += int(n)
                continue
            c.known += int(n)
            c.correct += int(n) if action == right else 0
    total = _Counts()
    buckets = []
    for start in sorted(counts):
        total.add(counts[start])
        buckets.append({"start": start, **counts[start].figures()})
    return {
        "flow": flow,
        "owner": runtime.flow.owner.email,
        "autonomy": runtime.flow.autonomy.value,
        "bucket": bucket,
        "since": since,
        "until": until,
        "buckets": buckets,
        "total": total.figures(),
    }
