"""The fairness report as terminal lines and as one self-contained HTML page (inline SVG,
no scripts, no external resources), from a ``fairness_report``."""

from __future__ import annotations

from html import escape
from typing import Any

from keel.monitor.report import STYLE
from keel.review.fairness import FOUR_FIFTHS

# (key, heading, kind): the per-group columns, in the terminal and on the page
COLUMNS = (
    ("n", "Decisions", "count"),
    ("selected", "Favourable", "count"),
    ("selection_rate", "Selection rate", "rate"),
    ("impact_ratio", "Impact ratio", "ratio"),
    ("outcomes", "Outcomes", "count"),
    ("true_positive_rate", "TPR", "rate"),
    ("false_positive_rate", "FPR", "rate"),
    ("mean_score", "Mean score", "rate"),
    ("bad_rate", "Bad rate", "rate"),
)
SUMMARY = (
    ("demographic_parity_difference", "parity difference", "rate"),
    ("demographic_parity_ratio", "parity ratio", "ratio"),
    ("equal_opportunity_difference", "equal opportunity difference", "rate"),
    ("equalized_odds_difference", "equalized odds difference", "rate"),
)
W, ROW, LEFT = 760, 26, 190


def _fmt(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "rate":
        return f"{value:.1%}"
    if kind == "ratio":
        return f"{value:.3f}"
    return f"{value:,}"


def _columns(report: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The columns that apply: calibration only with a score."""
    skip = set() if report["score"] else {"mean_score", "bad_rate"}
    return [c for c in COLUMNS if c[0] not in skip]


def fairness_lines(report: dict[str, Any]) -> list[str]:
    """The report as aligned terminal tables, one per protected attribute."""
    lines = [
        f"{report['flow']}: {report['since']} to {report['until']}",
        f"{report['decisions']:,} decisions, {report['in_force']:,} with an action in force "
        f"({report['not_in_force']:,} not, {report['erased']:,} erased); favourable: "
        f"{', '.join(report['favourable'])}; outcomes known: {report['outcomes_known']:,}",
    ]
    columns = _columns(report)
    for attribute in report["attributes"]:
        names = ["group"] + [name for _, name, _ in columns]
        rows = [names]
        for g in attribute["groups"]:
            cells = [_fmt(g.get(key), kind) for key, _, kind in columns]
            if g["four_fifths"]:
                i = [key for key, _, _ in columns].index("impact_ratio")
                cells[i] += " *"
            rows.append([g["group"], *cells])
        widths = [max(len(r[i]) for r in rows) for i in range(len(names))]
        lines += ["", f"{attribute['label']} ({attribute['attribute']})"]
        lines += [
            "  ".join(c.rjust(widths[i]) if i else c.ljust(widths[i]) for i, c in enumerate(r))
            for r in rows
        ]
        lines.append(
            " · ".join(f"{name} {_fmt(attribute[key], kind)}" for key, name, kind in SUMMARY)
        )
    lines.append("")
    lines.append(f"* impact ratio under {FOUR_FIFTHS:g} (the four-fifths rule)")
    lines += [f"note: {n}" for n in report["notes"]]
    return lines


def comparison_lines(
    attributes: list[dict[str, Any]], arms: tuple[str, str] = ("recorded", "candidate")
) -> list[str]:
    """Per attribute, each group's selection rate and impact ratio under both policies, as
    terminal lines (replay and shadow reports); ``*`` marks the four-fifths rule."""
    lines = []
    for attribute in attributes:
        lines.append(f"selection rate by {attribute['label']} ({arms[0]} → {arms[1]}):")
        width = max((len(g["group"]) for g in attribute["groups"]), default=0)
        for g in attribute["groups"]:
            cells = []
            for arm in arms:
                rate = _fmt(g[f"{arm}_selection_rate"], "rate")
                ratio = _fmt(g[f"{arm}_impact_ratio"], "ratio")
                flag = " *" if g[f"{arm}_four_fifths"] else ""
                cells.append(f"{rate} (impact ratio {ratio}{flag})")
            lines.append(f"  {g['group']:<{width}}  {g['n']:>7,}  {cells[0]} → {cells[1]}")
    return lines


def _bars(attribute: dict[str, Any]) -> str:
    """Selection rate per group as horizontal bars, with the four-fifths line drawn at
    0.8 times the highest group's rate."""
    groups = attribute["groups"]
    height = ROW * len(groups) + 30
    span = W - LEFT - 60
    best = max((g["selection_rate"] or 0.0 for g in groups), default=0.0)
    parts = []
    for i, g in enumerate(groups):
        rate = g["selection_rate"] or 0.0
        y = 10 + i * ROW
        colour = "#dc2626" if g["four_fifths"] else "#2563eb"
        parts.append(
            f'<text x="{LEFT - 8}" y="{y + 15}" text-anchor="end">{escape(g["group"])}</text>'
            f'<rect x="{LEFT}" y="{y + 3}" width="{span * rate:.1f}" height="{ROW - 8}" '
            f'fill="{colour}"><title>{escape(g["group"])}: {_fmt(rate, "rate")} of '
            f"{g['n']:,}</title></rect>"
            f'<text x="{LEFT + span * rate + 6:.1f}" y="{y + 15}">{_fmt(rate, "rate")}</text>'
        )
    if best:
        x = LEFT + span * best * FOUR_FIFTHS
        parts.append(
            f'<line x1="{x:.1f}" y1="6" x2="{x:.1f}" y2="{height - 18}" stroke="#6b7280" '
            f'stroke-dasharray="4 3"/><text x="{x:.1f}" y="{height - 4}" '
            f'text-anchor="middle">four fifths of the highest</text>'
        )
    label = f"Selection rate per group of {attribute['label']}"
    return (
        f'<svg viewBox="0 0 {W} {height}" width="100%" role="img" '
        f'aria-label="{escape(label)}">{"".join(parts)}</svg>'
    )


def fairness_html(report: dict[str, Any], generated_at: str) -> str:
    """The page for a ``fairness_report``."""
    columns = _columns(report)
    sections = []
    for attribute in report["attributes"]:
        head = "".join(f"<th>{escape(name)}</th>" for _, name, _ in columns)
        rows = "".join(
            f"<tr><td>{escape(g['group'])}{' ⚑' if g['four_fifths'] else ''}</td>"
            + "".join(f"<td>{_fmt(g.get(key), kind)}</td>" for key, _, kind in columns)
            + "</tr>"
            for g in attribute["groups"]
        )
        cards = "".join(
            f'<div class="card">{escape(name)}<b>{_fmt(attribute[key], kind)}</b></div>'
            for key, name, kind in SUMMARY
        )
        chart = _bars(attribute) if attribute["groups"] else "<p>No decisions in force.</p>"
        sections.append(
            f"<h2>{escape(attribute['label'])}</h2>"
            f'<div class="cards">{cards}</div>{chart}'
            f"<table><thead><tr><th>Group</th>{head}</tr></thead><tbody>{rows}</tbody></table>"
        )
    title = f"Fairness report — {report['flow']}"
    notes = "".join(f'<p class="meta">{escape(n)}</p>' for n in report["notes"])
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">Owner {escape(report["owner"])} · {escape(report["since"])} to '
        f"{escape(report['until'])} · {report['decisions']:,} decisions, "
        f"{report['in_force']:,} with an action in force · favourable: "
        f"{escape(', '.join(report['favourable']))} · generated {escape(generated_at)} "
        "from the Keel ledger</p>"
        f"{''.join(sections)}"
        f'<p class="meta">⚑ impact ratio under {FOUR_FIFTHS:g}: the group\'s selection rate '
        "is under four fifths of the highest group's (the four-fifths rule). TPR: share of "
        "good outcomes that had been given a favourable action; FPR: share of bad outcomes "
        "that had. Mean score against bad rate: calibration within the group. Rates with "
        f"nothing to count are shown as -.</p>{notes}</body></html>\n"
    )
