"""Fairness per protected attribute: how a flow's decisions fall on each group of people.

A flow marks input fields ``protected: true`` (age, sex, nationality…) and names the
actions favourable to the person decided on (``fairness.favourable``). For each protected
attribute, over the decisions of a time range whose action is in force — a final decision's
action, or the action a resolved review left (cases still waiting for review, advisory cases
nobody decided, deferred and shadow decisions are counted apart, not judged) — the figures
per group are:

- ``n`` and ``selection_rate`` — decisions, and the share whose action is favourable;
- ``impact_ratio`` — the group's selection rate over the highest group's (adverse impact
  ratio); ``four_fifths`` flags a ratio under 0.8, the four-fifths rule;
- from reported outcomes (``outcome.positive`` names the bad labels; every other label is a
  good outcome): ``true_positive_rate`` — the share of good outcomes that had been given a
  favourable action — and ``false_positive_rate`` — the share of bad outcomes that had;
- calibration within the group: the mean score of ``fairness.score``'s signal against the
  observed bad rate, over the decisions with both.

And per attribute: ``demographic_parity_difference`` (highest selection rate minus lowest)
and ``demographic_parity_ratio`` (lowest over highest), ``equal_opportunity_difference``
(the spread of true positive rates) and ``equalized_odds_difference`` (the larger of the
spreads of true and false positive rates). They are fairlearn's figures on ``y_pred`` =
favourable, ``y_true`` = good outcome and the groups as ``sensitive_features``, with one
difference: a rate with nothing to count (a group without good outcomes has no true
positive rate) is ``None`` here, where fairlearn gives 0; the differences skip it.

A number attribute is grouped by its ``groups`` edges; others by value, shown by their
``labels``. An optional attribute a case left out is the group ``not given``. Decisions
whose personal inputs were erased are counted (``erased``) and left out. A flow without
protected attributes or favourable actions gets the counts alone, with notes that say what
to add to the flow.
"""

from __future__ import annotations

import json
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import text

from keel.context import Context
from keel.errors import ErasedDataError, InputError
from keel.flows import FieldSpec, Flow
from keel.flows.monitoring import FairnessLimits
from keel.protect import Sealed
from keel.security.roles import Permission, Principal

FOUR_FIFTHS = 0.8
NOT_GIVEN = "not given"

_ROWS = """
SELECT d.id, d.status, l.record, p.key_id, p.nonce, p.ciphertext, r.final_action, o.label
FROM decisions d
JOIN ledger l ON l.seq = d.seq
LEFT JOIN protected_values p ON p.record_id = d.id
LEFT JOIN reviews r ON r.decision_id = d.id AND r.state = 'resolved'
LEFT JOIN outcomes o ON o.decision_id = d.id
WHERE d.flow = :flow AND d.recorded_at >= :since AND d.recorded_at < :until
ORDER BY d.seq
"""


# ---- groups -----------------------------------------------------------------------------


def _number(x: float) -> str:
    return f"{x:g}"


def group_of(spec: FieldSpec, value: Any) -> str:
    """The group a value of a protected field falls in, by its display name."""
    if value is None:
        return NOT_GIVEN
    edges = spec.groups
    if edges is not None:
        i = bisect_right(edges, value)
        if i == 0:
            return f"under {_number(edges[0])}"
        if i == len(edges):
            return f"{_number(edges[-1])} or over"
        return f"{_number(edges[i - 1])} to under {_number(edges[i])}"
    return spec.value_label(value)


def group_order(spec: FieldSpec, seen: Iterable[str]) -> list[str]:
    """The groups seen, in the field's own order (edges, allowed values), others after."""
    known: list[str] = []
    if spec.groups is not None:
        edges = spec.groups
        known = [group_of(spec, edges[0] - 1), *(group_of(spec, e) for e in edges)]
    elif spec.allowed is not None:
        known = [spec.value_label(v) for v in spec.allowed]
    present = set(seen)
    return [g for g in known if g in present] + sorted(present - set(known))


# ---- figures from arrays ------------------------------------------------------------------


def _share(part: int, whole: int) -> float | None:
    return part / whole if whole else None


def _spread(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return max(known) - min(known) if known else None


def attribute_figures(
    groups: np.ndarray,
    favourable: np.ndarray,
    good: np.ndarray,
    score: np.ndarray | None = None,
    order: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The fairness figures of one attribute from arrays of one row per decision: its group,
    whether the action was favourable, whether the outcome was good (1), bad (0) or is
    unknown (NaN), and the score (NaN: none)."""
    favourable = np.asarray(favourable, dtype=bool)
    good = np.asarray(good, dtype=float)
    known = ~np.isnan(good)
    is_good, is_bad = known & (good == 1.0), known & (good == 0.0)
    scored = known if score is None else known & ~np.isnan(np.asarray(score, dtype=float))
    names = list(order) if order is not None else sorted({str(g) for g in groups})
    rows = []
    for name in names:
        member = groups == name
        n = int(member.sum())
        selected = int((favourable & member).sum())
        goods, bads = int((is_good & member).sum()), int((is_bad & member).sum())
        row: dict[str, Any] = {
            "group": name,
            "n": n,
            "selected": selected,
            "selection_rate": _share(selected, n),
            "outcomes": goods + bads,
            "good": goods,
            "bad": bads,
            "true_positive_rate": _share(int((favourable & is_good & member).sum()), goods),
            "false_positive_rate": _share(int((favourable & is_bad & member).sum()), bads),
        }
        if score is not None:
            m = scored & member
            count = int(m.sum())
            mean = float(np.mean(np.asarray(score, dtype=float)[m])) if count else None
            bad_rate = _share(int((is_bad & m).sum()), count)
            row["scored"] = count
            row["mean_score"] = mean
            row["bad_rate"] = bad_rate
            row["calibration_gap"] = None if mean is None or bad_rate is None else mean - bad_rate
        rows.append(row)
    rates = [r["selection_rate"] for r in rows if r["selection_rate"] is not None]
    best = max(rates, default=None)
    for row in rows:
        rate = row["selection_rate"]
        row["impact_ratio"] = rate / best if rate is not None and best else None
        row["four_fifths"] = row["impact_ratio"] is not None and row["impact_ratio"] < FOUR_FIFTHS
    tpr = _spread([r["true_positive_rate"] for r in rows])
    fpr = _spread([r["false_positive_rate"] for r in rows])
    return {
        "groups": rows,
        "demographic_parity_difference": _spread(rates),
        "demographic_parity_ratio": min(rates) / best if rates and best else None,
        "equal_opportunity_difference": tpr,
        "equalized_odds_difference": None if tpr is None and fpr is None else max(
            v for v in (tpr, fpr) if v is not None
        ),
        "four_fifths_flagged": [r["group"] for r in rows if r["four_fifths"]],
    }  # fmt: skip


# ---- reading a flow's decisions ----------------------------------------------------------


@dataclass
class FairnessData:
    """The in-force decisions of a range as columns: a group per protected attribute,
    favourable, good outcome (1/0/NaN) and score (NaN: none)."""

    decisions: int = 0
    not_in_force: int = 0
    erased: int = 0
    groups: dict[str, list[str]] = field(default_factory=dict)
    favourable: list[bool] = field(default_factory=list)
    good: list[float] = field(default_factory=list)
    score: list[float] = field(default_factory=list)


def fairness_spec(flow: Flow) -> tuple[tuple[str, ...], str | None, list[str]]:
    """The flow's protected attributes, the signal judged for calibration, and what the
    flow lacks for the figures, said with what to add."""
    lacking = []
    if not flow.protected_attributes:
        lacking.append(
            f"flow '{flow.name}' has no protected attributes: mark the input fields that "
            "hold them `protected: true` to report fairness per group"
        )
    if not flow.fairness.favourable:
        lacking.append(
            f"flow '{flow.name}' does not say which actions are favourable: add "
            "`fairness: {favourable: [ACTION, ...]}` to the flow"
        )
    score = flow.fairness.score
    if score is None and len(flow.signals) == 1:
        score = next(iter(flow.signals))
    return flow.protected_attributes, score, lacking


def in_force(status: str, reviewed: str | None, action: str) -> str | None:
    """The action in force: a resolved review's, else a final decision's; else none."""
    if reviewed is not None:
        return reviewed
    return action if status == "final" else None


def read_fairness(ctx: Context, flow: Flow, since: str, until: str) -> FairnessData:
    """The columns of ``flow``'s decisions recorded in ``[since, until)``."""
    attributes, score, _ = fairness_spec(flow)
    favourable = set(flow.fairness.favourable)
    positive = set(flow.outcome.positive)
    data = FairnessData(groups={a: [] for a in attributes})
    params = {"flow": flow.name, "since": since, "until": until}
    with ctx.db.read() as conn:
        rows = conn.execute(text(_ROWS), params)
        for decision_id, status, record, key_id, nonce, ciphertext, reviewed, label in rows:
            data.decisions += 1
            body = json.loads(record)["body"]
            action = in_force(status, reviewed, body["action"])
            if action is None:
                data.not_in_force += 1
                continue
            sealed = Sealed(decision_id, key_id, nonce, ciphertext) if key_id else None
            try:
                inputs = ctx.protector.join(decision_id, body["inputs"], sealed)
            except ErasedDataError:
                data.erased += 1
                continue
            for a in attributes:
                data.groups[a].append(group_of(flow.fields[a], inputs.get(a)))
            data.favourable.append(action in favourable)
            data.good.append(_good(label, positive))
            value = body["signals"].get(score, {}).get("score") if score else None
            data.score.append(float(value) if isinstance(value, int | float) else np.nan)
    return data


def _good(label: str | None, positive: set[str]) -> float:
    if label is None or not positive:
        return np.nan
    return 0.0 if label in positive else 1.0


def fairness_report(ctx: Context, flow_name: str, since: str, until: str) -> dict[str, Any]:
    """The fairness figures of ``flow_name`` over ``[since, until)``, per protected
    attribute and group."""
    if since >= until:
        raise InputError(
            f"the range is empty: since {since} is not before until {until}",
            {"since": since, "until": until},
        )
    flow = ctx.registry.current(flow_name).flow
    attributes, score, notes = fairness_spec(flow)
    if notes:  # nothing to judge: the counts alone, and what the flow must add
        attributes = ()
    data = read_fairness(ctx, flow, since, until)
    favourable = np.array(data.favourable, dtype=bool)
    good = np.array(data.good, dtype=float)
    scores = np.array(data.score, dtype=float) if score else None
    out = []
    for a in attributes:
        spec = flow.fields[a]
        groups = np.array(data.groups[a], dtype=object)
        order = group_order(spec, data.groups[a])
        figures = attribute_figures(groups, favourable, good, scores, order)
        out.append({"attribute": a, "label": spec.display, **figures})
    if not flow.outcome.positive:
        notes.append(
            "outcome.positive names no bad outcome label: true and false positive rates, "
            "equal opportunity, equalized odds and calibration are not computed"
        )
    return {
        "flow": flow.name,
        "owner": flow.owner.email,
        "since": since,
        "until": until,
        "favourable": list(flow.fairness.favourable),
        "positive": list(flow.outcome.positive),
        "score": score,
        "decisions": data.decisions,
        "in_force": len(data.favourable),
        "not_in_force": data.not_in_force,
        "erased": data.erased,
        "outcomes_known": int((~np.isnan(good)).sum()),
        "selection_rate": (
            float(favourable.mean()) if favourable.size and flow.fairness.favourable else None
        ),
        "attributes": out,
        "notes": notes,
    }


class Fairness:
    """Fairness figures for those who may read a flow's decisions: only figures per group
    leave, never a person's protected value."""

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def report(self, principal: Principal, flow: str, since: str, until: str) -> dict[str, Any]:
        self._ctx.registry.permitted(flow, principal, Permission.READ_DECISIONS)
        return fairness_report(self._ctx, flow, since, until)


# ---- the fairness monitor -----------------------------------------------------------------


def judge_fairness(
    ctx: Context, flow: str, since: str, until: str, limits: FairnessLimits, clear_below: float
) -> dict[str, Any]:
    """The fairness monitor's verdict on one window: ``breach`` when an attribute's lowest
    judged selection rate is under ``min_impact_ratio`` of its highest, or they differ by
    more than ``max_parity_difference``; ``clean`` when both are inside ``clear_below`` of
    their limits; ``band`` between; ``unjudged`` when no attribute has two groups of
    ``min_group_size`` decisions in force."""
    report = fairness_report(ctx, flow, since, until)
    judged_any, breached, clean = False, False, True
    attributes = []
    for attribute in report["attributes"]:
        groups = [
            {k: g[k] for k in ("group", "n", "selection_rate")}
            for g in attribute["groups"]
            if g["n"] >= limits.min_group_size
        ]
        if len(groups) < 2:
            continue
        judged_any = True
        rates = [g["selection_rate"] for g in groups]
        best, low = max(rates), min(rates)
        ratio = low / best if best else None
        difference = best - low
        short = ratio is not None and ratio < limits.min_impact_ratio
        wide = (
            limits.max_parity_difference is not None and difference > limits.max_parity_difference
        )
        breached = breached or short or wide
        within = ratio is None or (1 - ratio) < (1 - limits.min_impact_ratio) * clear_below
        if limits.max_parity_difference is not None:
            within = within and difference < limits.max_parity_difference * clear_below
        clean = clean and within
        lowest = min(groups, key=lambda g: g["selection_rate"])
        highest = max(groups, key=lambda g: g["selection_rate"])
        attributes.append({
            "attribute": attribute["attribute"], "label": attribute["label"], "groups": groups,
            "impact_ratio": ratio, "parity_difference": difference, "breached": short or wide,
            "lowest": lowest["group"], "highest": highest["group"],
        })  # fmt: skip
    verdict = "unjudged" if not judged_any else "breach" if breached else (
        "clean" if clean else "band"
    )  # fmt: skip
    return {
        "verdict": verdict,
        "attributes": attributes,
        "limit": limits.min_impact_ratio,
        "max_parity_difference": limits.max_parity_difference,
        "min_group_size": limits.min_group_size,
        "in_force": report["in_force"],
    }


def fairness_summary(evidence: Mapping[str, Any]) -> str:
    """One line for an alarm: the attributes that breached, with their figures."""
    parts = []
    for a in evidence.get("attributes", []):
        if not a.get("breached"):
            continue
        ratio = a["impact_ratio"]
        shown = "-" if ratio is None else f"{ratio:.2f}"
        parts.append(
            f"{a['label']}: impact ratio {shown} ({a['lowest']} against {a['highest']}), "
            f"parity difference {a['parity_difference']:.1%}"
        )
    limit = evidence.get("limit", FOUR_FIFTHS)
    return "; ".join(parts) + f" (limit: impact ratio {limit:g})"


# ---- a candidate beside the recorded policy (replay, shadow) ------------------------------


@dataclass
class GroupTally:
    """Per protected attribute and group: decisions, and how many the recorded and the
    candidate policy decided favourably. Slices of a replay merge."""

    counts: dict[tuple[str, str], list[int]] = field(default_factory=dict)

    def add(self, flow: Flow, inputs: Mapping[str, Any], recorded: str, candidate: str) -> None:
        favourable = flow.fairness.favourable
        if not favourable:
            return
        for a in flow.protected_attributes:
            key = (a, group_of(flow.fields[a], inputs.get(a)))
            c = self.counts.setdefault(key, [0, 0, 0])
            c[0] += 1
            c[1] += recorded in favourable
            c[2] += candidate in favourable

    def merge(self, other: GroupTally) -> None:
        for key, (n, was, now) in other.counts.items():
            c = self.counts.setdefault(key, [0, 0, 0])
            c[0] += n
            c[1] += was
            c[2] += now

    def report(
        self, flow: Flow, arms: tuple[str, str] = ("recorded", "candidate")
    ) -> list[dict[str, Any]]:
        """Per attribute, each group's selection rate and impact ratio under the recorded
        (or active) and the candidate policy, side by side, the columns named by ``arms``."""
        out = []
        for a in flow.protected_attributes:
            mine = {g: c for (attr, g), c in self.counts.items() if attr == a}
            order = group_order(flow.fields[a], mine)
            groups: list[dict[str, Any]] = [{"group": g, "n": mine[g][0]} for g in order]
            for arm, i in ((arms[0], 1), (arms[1], 2)):
                rates = [_share(mine[g][i], mine[g][0]) for g in order]
                best = max((r for r in rates if r is not None), default=None)
                for row, rate in zip(groups, rates, strict=True):
                    ratio = rate / best if rate is not None and best else None
                    row[f"{arm}_selection_rate"] = rate
                    row[f"{arm}_impact_ratio"] = ratio
                    row[f"{arm}_four_fifths"] = ratio is not None and ratio < FOUR_FIFTHS
            out.append({"attribute": a, "label": flow.fields[a].display, "groups": groups})
        return out


_SHADOW = """
SELECT d.id, d.action, d.shadow_action, l.record, p.key_id, p.nonce, p.ciphertext
FROM decisions d
JOIN ledger l ON l.seq = d.seq
LEFT JOIN protected_values p ON p.record_id = d.id
WHERE d.rollout = :id AND d.shadow_action IS NOT NULL
ORDER BY d.seq
"""


def shadow_groups(ctx: Context, flow: Flow, rollout_id: str) -> list[dict[str, Any]]:
    """A shadow rollout's selection rate and impact ratio per group: the active policy's
    action against the shadow candidate's, on the same cases. Empty for a flow without
    protected attributes or favourable actions."""
    tally = GroupTally()
    if not flow.protected_attributes or not flow.fairness.favourable:
        return []
    with ctx.db.read() as conn:
        rows = conn.execute(text(_SHADOW), {"id": rollout_id})
        for decision_id, action, shadow, record, key_id, nonce, ciphertext in rows:
            body = json.loads(record)["body"]
            sealed = Sealed(decision_id, key_id, nonce, ciphertext) if key_id else None
            try:
                inputs = ctx.protector.join(decision_id, body["inputs"], sealed)
            except ErasedDataError:
                continue  # erased on request: no group to count it in
            tally.add(flow, inputs, action, shadow)
    return tally.report(flow, ("active", "candidate"))
