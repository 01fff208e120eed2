"""The model performance section of the trust report's HTML page: the figures per model
version and bucket, a ROC curve per model version, a calibration plot and a bad-rate-per-band
chart as inline SVG, and the tables of the whole range. Self-contained like the rest of the
page."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

W, H, PAD = 760, 300, 44
FIGURES = (("auc", "AUC"), ("gini", "Gini"), ("ks", "KS"), ("brier", "Brier score"))


def _px(share: float) -> float:
    return PAD + (W - 2 * PAD) * share


def _py(share: float) -> float:
    return H - PAD - (H - 2 * PAD) * share


def _grid(x_label: str, y_label: str) -> str:
    ticks = "".join(
        f'<line x1="{PAD}" y1="{_py(q):.1f}" x2="{W - PAD}" y2="{_py(q):.1f}" stroke="#f3f4f6"/>'
        f'<text x="{PAD - 6}" y="{_py(q) + 4:.1f}" text-anchor="end">{q:.0%}</text>'
        f'<text x="{_px(q):.1f}" y="{H - PAD + 16}" text-anchor="middle">{q:.0%}</text>'
        for q in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    return (
        f'{ticks}<text x="{W / 2}" y="{H - 6}" text-anchor="middle">{escape(x_label)}</text>'
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle">'
        f"{escape(y_label)}</text>"
    )


def calibration_chart(rows: Sequence[dict[str, Any]]) -> str:
    """Observed bad rate against mean predicted probability per bin, with the diagonal of
    a perfectly calibrated model; each dot's area grows with the cases in its bin."""
    top = max((r["n"] for r in rows), default=1)
    diagonal = (
        f'<line x1="{_px(0):.1f}" y1="{_py(0):.1f}" x2="{_px(1):.1f}" y2="{_py(1):.1f}" '
        'stroke="#9ca3af" stroke-dasharray="4 4"/>'
    )
    path = " ".join(f"{_px(r['mean_predicted']):.1f},{_py(r['bad_rate']):.1f}" for r in rows)
    dots = "".join(
        f'<circle cx="{_px(r["mean_predicted"]):.1f}" cy="{_py(r["bad_rate"]):.1f}" '
        f'r="{3 + 6 * (r["n"] / top) ** 0.5:.1f}" fill="#7c3aed" fill-opacity="0.7">'
        f"<title>{r['low']:.1f}–{r['high']:.1f}: {r['n']:,} cases, predicted "
        f"{r['mean_predicted']:.1%}, observed {r['bad_rate']:.1%}</title></circle>"
        for r in rows
    )
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="Calibration plot">'
        f"{_grid('mean predicted probability', 'observed bad rate')}{diagonal}"
        f'<polyline points="{path}" fill="none" stroke="#7c3aed" stroke-width="2"/>{dots}</svg>'
    )


def roc_chart(points: Sequence[dict[str, Any]], label: str) -> str:
    """The ROC curve: the share of bad cases caught against the share of good cases caught
    as the score cut-off falls, with the diagonal of a model that guesses."""
    diagonal = (
        f'<line x1="{_px(0):.1f}" y1="{_py(0):.1f}" x2="{_px(1):.1f}" y2="{_py(1):.1f}" '
        'stroke="#9ca3af" stroke-dasharray="4 4"/>'
    )
    path = " ".join(f"{_px(p['fpr']):.1f},{_py(p['tpr']):.1f}" for p in points)
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(label)}">'
        f"{_grid('good cases at or above the cut-off', 'bad cases at or above the cut-off')}"
        f'{diagonal}<polyline points="{path}" fill="none" stroke="#2563eb" stroke-width="2"/>'
        "</svg>"
    )


def _roc_section(versions: Sequence[dict[str, Any]]) -> list[str]:
    """A ROC curve for each model version with figures."""
    parts = []
    for version in versions:
        if not version.get("roc"):
            continue
        short = version["version"].removeprefix("sha256:")[:12]
        total = version["total"]
        parts += [
            f"<h3>Version {escape(short)}: AUC {_num(total['auc'])}, "
            f"{total['scored']:,} scored outcomes</h3>",
            roc_chart(version["roc"], f"ROC curve of version {short}"),
        ]
    if not parts:
        return []
    return [
        "<h2>ROC curve</h2>",
        '<p class="meta">Each point is a score cut-off: of the cases scoring at or above it, '
        "the share of all bad cases (up) against the share of all good cases (across). The "
        "AUC is the area under the curve; the dashed diagonal is a model that guesses.</p>",
        *parts,
    ]


def bands_chart(rows: Sequence[dict[str, Any]]) -> str:
    """The bad rate of each score band, lowest scores on the left."""
    n = len(rows)
    slot = (W - 2 * PAD) / max(1, n)
    bars = "".join(
        f'<rect x="{PAD + slot * i + slot * 0.15:.1f}" y="{_py(r["bad_rate"]):.1f}" '
        f'width="{slot * 0.7:.1f}" height="{_py(0) - _py(r["bad_rate"]):.1f}" fill="#f59e0b">'
        f"<title>band {r['band']} ({r['low']:.3f}–{r['high']:.3f}): {r['n']:,} cases, "
        f"bad rate {r['bad_rate']:.1%}</title></rect>"
        f'<text x="{PAD + slot * (i + 0.5):.1f}" y="{H - PAD + 16}" text-anchor="middle">'
        f"{r['band']}</text>"
        for i, r in enumerate(rows)
    )
    grid = "".join(
        f'<line x1="{PAD}" y1="{_py(q):.1f}" x2="{W - PAD}" y2="{_py(q):.1f}" stroke="#f3f4f6"/>'
        f'<text x="{PAD - 6}" y="{_py(q) + 4:.1f}" text-anchor="end">{q:.0%}</text>'
        for q in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    label = f'<text x="{W / 2}" y="{H - 6}" text-anchor="middle">score band</text>'
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="Bad rate per score '
        f'band">{grid}{bars}{label}</svg>'
    )


def _num(value: float | None, kind: str = "figure") -> str:
    if value is None:
        return "–"
    return f"{value:.1%}" if kind == "rate" else f"{value:.3f}"


def _table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = "".join(f"<th>{escape(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _figure_row(version: str, start: str, group: dict[str, Any]) -> list[str]:
    return [
        version, start, f"{group['outcomes']:,}", f"{group['scored']:,}",
        _num(group["bad_rate"], "rate"), *(_num(group[key]) for key, _ in FIGURES),
    ]  # fmt: skip


def performance_html(perf: dict[str, Any]) -> str:
    """The section for ``keel.review.performance.model_performance``'s figures."""
    if not perf["configured"]:
        return f"<h2>Model performance</h2><p>None: {escape(perf['reason'])}.</p>"
    total = perf["total"]
    rows = []
    for version in perf["versions"]:
        short = version["version"].removeprefix("sha256:")[:12]
        for b in version["buckets"]:
            rows.append(_figure_row(short, b["start"], b))
        rows.append(_figure_row(short, "all", version["total"]))
    rows.append(_figure_row("all", "all", total))
    head = ["Version", "From", "Outcomes", "Scored", "Bad rate", *(n for _, n in FIGURES)]
    reasons = "".join(
        f"<li>{escape(name)} not given: {escape(total['reasons'][key])}</li>"
        for key, name in FIGURES
        if key in total["reasons"]
    )
    parts = [
        "<h2>Model performance</h2>",
        f'<p class="meta">Signal {escape(perf["signal"])} ({escape(perf["output"])}); bad: '
        f"{escape(', '.join(perf['positive']))}; good: {escape(', '.join(perf['negative']))}. "
        "AUC, Gini, KS and Brier score judge the score of every decision with an outcome; the "
        "outcomes per action count only decisions whose action was in force.</p>",
        _table(head, rows),
        f"<ul>{reasons}</ul>" if reasons else "",
    ]
    parts += _roc_section(perf["versions"])
    if total["calibration"]:
        parts += [
            "<h2>Calibration</h2>",
            calibration_chart(total["calibration"]),
            _table(
                ["Predicted", "Cases", "Mean predicted", "Observed bad rate"],
                [[f"{c['low']:.1f}–{c['high']:.1f}", f"{c['n']:,}", _num(c["mean_predicted"]),
                  _num(c["bad_rate"], "rate")] for c in total["calibration"]],
            ),
        ]  # fmt: skip
    if total["bands"]:
        parts += [
            "<h2>Score bands and cut-offs</h2>",
            bands_chart(total["bands"]),
            _table(
                ["Band", "Scores", "Cases", "Bad rate", "Approval rate at cut-off",
                 "Bad rate among approved"],
                [[str(b["band"]), f"{b['low']:.3f}–{b['high']:.3f}", f"{b['n']:,}",
                  _num(b["bad_rate"], "rate"), _num(c["approval_rate"], "rate"),
                  _num(c["bad_rate"], "rate")]
                 for b, c in zip(total["bands"], total["cutoffs"], strict=True)],
            ),
            '<p class="meta">A cut-off approves every case scoring at or below the band\'s '
            "highest score.</p>",
        ]  # fmt: skip
    confusion = total["confusion"]
    parts += [
        "<h2>Outcomes per action in force</h2>",
        _table(
            ["Action", "Good", "Bad", "Bad rate"],
            [[a["action"], f"{a['good']:,}", f"{a['bad']:,}", _num(a["bad_rate"], "rate")]
             for a in confusion["actions"]],
        ),
        f'<p class="meta">{confusion["not_in_force"]:,} outcomes of decisions that acted on '
        "nothing (unresolved review, advisory, shadow, deferred) are left out.</p>",
    ]  # fmt: skip
    return "".join(parts)
