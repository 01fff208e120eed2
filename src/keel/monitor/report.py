"""The trust report as one self-contained HTML page: inline SVG charts and tables, no
scripts, no external resources — it can be mailed, archived or opened offline."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape
from typing import Any

from keel.monitor.performance_report import performance_html

RATES = (
    ("automation_rate", "Automation", "#2563eb"),
    ("escalation_rate", "Escalation", "#d97706"),
    ("override_rate", "Overrides", "#dc2626"),
    ("review_agreement", "Review agreement", "#059669"),
    ("outcome_accuracy", "Outcome accuracy", "#7c3aed"),
)
COLUMNS = (
    ("volume", "Decisions", "count"),
    ("automation_rate", "Automated", "rate"),
    ("escalation_rate", "Escalated", "rate"),
    ("deferral_rate", "Deferred", "rate"),
    ("override_rate", "Overridden", "rate"),
    ("review_agreement", "Review agreement", "rate"),
    ("advisory_agreement", "Advisory agreement", "rate"),
    ("guardrail_hits", "Guardrail hits", "count"),
    ("fallbacks", "Fallbacks", "count"),
    ("outcomes_known", "Outcomes", "count"),
    ("outcome_accuracy", "Accuracy", "rate"),
)
CARDS = ("volume", "automation_rate", "override_rate", "review_agreement", "outcome_accuracy")
W, H, PAD = 760, 240, 44

# Shared by the drift report (keel.monitor.drift_report).
STYLE = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:60rem;
color:#111827;padding:0 1rem}h1{font-size:1.5rem;margin-bottom:.2rem}h2{font-size:1.1rem;
margin-top:2rem}p.meta{color:#4b5563;margin-top:0}table{border-collapse:collapse;width:100%;
font-variant-numeric:tabular-nums}th,td{padding:.3rem .5rem;border-bottom:1px solid #e5e7eb;
text-align:right}th:first-child,td:first-child{text-align:left}.cards{display:flex;gap:.8rem;
flex-wrap:wrap}.card{border:1px solid #e5e7eb;border-radius:8px;padding:.6rem .9rem;
min-width:8rem}.card b{display:block;font-size:1.3rem}.legend span{margin-right:1rem}
.legend i{display:inline-block;width:.8rem;height:.8rem;margin-right:.3rem;vertical-align:-1px}
svg text{font-size:11px;fill:#4b5563}
"""


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "–"
    if kind == "rate":
        return f"{value:.1%}"
    return f"{value:,}"


def _x(i: int, n: int) -> float:
    return PAD + (W - 2 * PAD) * (i / max(1, n - 1) if n > 1 else 0.5)


def _axis(labels: Sequence[str]) -> str:
    n = len(labels)
    step = max(1, n // 8)
    ticks = [
        f'<text x="{_x(i, n):.1f}" y="{H - 8}" text-anchor="middle">{escape(label)}</text>'
        for i, label in enumerate(labels)
        if i % step == 0 or i == n - 1
    ]
    line = f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#9ca3af"/>'
    return line + "".join(ticks)


def volume_chart(labels: Sequence[str], volumes: Sequence[int]) -> str:
    top = max(volumes, default=0) or 1
    n = len(labels)
    width = max(2.0, (W - 2 * PAD) / max(1, n) * 0.7)
    bars = []
    for i, v in enumerate(volumes):
        h = (H - 2 * PAD) * v / top
        bars.append(
            f'<rect x="{_x(i, n) - width / 2:.1f}" y="{H - PAD - h:.1f}" width="{width:.1f}" '
            f'height="{h:.1f}" fill="#93c5fd"><title>{escape(labels[i])}: {v:,}</title></rect>'
        )
    scale = f'<text x="{PAD - 6}" y="{PAD}" text-anchor="end">{top:,}</text>'
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="Decisions per bucket">'
        f"{scale}{''.join(bars)}{_axis(labels)}</svg>"
    )


def rates_chart(labels: Sequence[str], buckets: Sequence[dict[str, Any]]) -> str:
    n = len(labels)
    grid = "".join(
        f'<line x1="{PAD}" y1="{_y(q):.1f}" x2="{W - PAD}" y2="{_y(q):.1f}" stroke="#f3f4f6"/>'
        f'<text x="{PAD - 6}" y="{_y(q) + 4:.1f}" text-anchor="end">{q:.0%}</text>'
        for q in (0.0, 0.25, 0.5, 0.75, 1.0)
    )
    series = []
    for key, name, colour in RATES:
        points = [(i, b[key]) for i, b in enumerate(buckets) if b[key] is not None]
        if not points:
            continue
        path = " ".join(f"{_x(i, n):.1f},{_y(v):.1f}" for i, v in points)
        dots = "".join(
            f'<circle cx="{_x(i, n):.1f}" cy="{_y(v):.1f}" r="2.5" fill="{colour}">'
            f"<title>{escape(name)} {escape(labels[i])}: {v:.1%}</title></circle>"
            for i, v in points
        )
        series.append(
            f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>{dots}'
        )
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="Rates per bucket">'
        f"{grid}{''.join(series)}{_axis(labels)}</svg>"
    )


def _y(rate: float) -> float:
    return H - PAD - (H - 2 * PAD) * rate


def trust_html(report: dict[str, Any], generated_at: str) -> str:
    """The page for a ``trust_metrics`` report."""
    buckets = report["buckets"]
    labels = [b["start"] for b in buckets]
    total = report["total"]
    cards = "".join(
        f'<div class="card">{escape(name)}<b>{_fmt(total[key], kind)}</b></div>'
        for key, name, kind in COLUMNS
        if key in CARDS
    )
    legend = "".join(
        f'<span><i style="background:{colour}"></i>{escape(name)}</span>'
        for _, name, colour in RATES
    )
    head = "".join(f"<th>{escape(name)}</th>" for _, name, _ in COLUMNS)
    rows = "".join(
        f"<tr><td>{escape(b['start'])}</td>"
        + "".join(f"<td>{_fmt(b[key], kind)}</td>" for key, _, kind in COLUMNS)
        + "</tr>"
        for b in buckets
    )
    total_row = (
        "<tr><th>All</th>"
        + "".join(f"<th>{_fmt(total[key], kind)}</th>" for key, _, kind in COLUMNS)
        + "</tr>"
    )
    title = f"Trust report — {report['flow']}"
    performance = performance_html(report["performance"]) if "performance" in report else ""
    volumes = volume_chart(labels, [b["volume"] for b in buckets])
    charts = (
        f"<h2>Decisions per {escape(report['bucket'])}</h2>{volumes}"
        f'<h2>Rates</h2><p class="legend">{legend}</p>{rates_chart(labels, buckets)}'
        if buckets
        else "<p>No decisions in this range.</p>"
    )
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">Owner {escape(report["owner"])} · autonomy '
        f"{escape(report['autonomy'])} · {escape(report['since'])} to "
        f"{escape(report['until'])} by {escape(report['bucket'])} · generated "
        f"{escape(generated_at)} from the Keel ledger's indexes</p>"
        f'<div class="cards">{cards}</div>{charts}'
        f"<h2>Per {escape(report['bucket'])}</h2><table><thead><tr><th>From</th>{head}</tr>"
        f"</thead><tbody>{rows}</tbody><tfoot>{total_row}</tfoot></table>"
        '<p class="meta">Rates with nothing to count are shown as –. Override rate: '
        "overrides per automatic decision. Agreement: reviews that approved what the policy "
        "proposed. Accuracy: decisions whose action in force matches the action the reported "
        "outcome calls right.</p>"
        f"{performance}</body></html>\n"
    )
