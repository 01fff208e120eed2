"""The retrieval evaluation report as one self-contained HTML page (inline SVG, no scripts,
no external resources), from an ``EvalReport``."""

from __future__ import annotations

from html import escape

from keel.knowledge.evaluation import MEASURES, EvalReport, Interval
from keel.monitor.report import STYLE

COLOURS = ("#2563eb", "#d97706", "#059669", "#7c3aed", "#dc2626", "#6b7280")
HEADINGS = dict(MEASURES)
W, H, PAD = 760, 260, 44


def _num(value: float) -> str:
    return f"{value:.3f}"


def _interval(i: Interval) -> str:
    return f"{_num(i.mean)} <small>({_num(i.low)}–{_num(i.high)})</small>"


def _signed(i: Interval) -> str:
    return f"{i.mean:+.3f} <small>({i.low:+.3f} to {i.high:+.3f})</small>"


def _y(value: float) -> float:
    return H - PAD - (H - 2 * PAD) * value


def means_chart(report: EvalReport) -> str:
    """Each measure's mean per run as grouped bars, with the bootstrap interval drawn as a
    whisker: bars whose whiskers overlap are not clearly different."""
    runs = report.runs
    group = (W - 2 * PAD) / len(MEASURES)
    bar = group * 0.8 / max(1, len(runs))
    parts = [
        f'<line x1="{PAD}" y1="{_y(q):.1f}" x2="{W - PAD}" y2="{_y(q):.1f}" stroke="#f3f4f6"/>'
        f'<text x="{PAD - 6}" y="{_y(q) + 4:.1f}" text-anchor="end">{q:.2f}</text>'
        for q in (0.0, 0.25, 0.5, 0.75, 1.0)
    ]
    for m, (key, heading) in enumerate(MEASURES):
        left = PAD + m * group + group * 0.1
        parts.append(
            f'<text x="{PAD + (m + 0.5) * group:.1f}" y="{H - 12}" '
            f'text-anchor="middle">{escape(heading)}</text>'
        )
        for r, run in enumerate(runs):
            i = run.means[key]
            x = left + r * bar
            colour = COLOURS[r % len(COLOURS)]
            mid = x + bar / 2
            parts.append(
                f'<rect x="{x:.1f}" y="{_y(i.mean):.1f}" width="{bar * 0.9:.1f}" '
                f'height="{_y(0) - _y(i.mean):.1f}" fill="{colour}"><title>'
                f"{escape(run.name)} {escape(heading)}: {_num(i.mean)} ({_num(i.low)}–"
                f"{_num(i.high)})</title></rect>"
                f'<line x1="{mid:.1f}" y1="{_y(i.low):.1f}" x2="{mid:.1f}" '
                f'y2="{_y(i.high):.1f}" stroke="#111827" stroke-width="1.5"/>'
            )
    return (
        f'<svg viewBox="0 0 {W} {H}" width="100%" role="img" '
        f'aria-label="Mean of each measure per run">{"".join(parts)}</svg>'
    )


def render_html(report: EvalReport, generated_at: str) -> str:
    """The page for an ``EvalReport``."""
    share = f"{report.confidence:.0%}"
    legend = "".join(
        f'<span><i style="background:{COLOURS[r % len(COLOURS)]}"></i>{escape(run.name)}</span>'
        for r, run in enumerate(report.runs)
    )
    head = "".join(f"<th>{escape(h)}</th>" for _, h in MEASURES)
    rows = "".join(
        f"<tr><td>{escape(run.name)}</td>"
        + "".join(f"<td>{_interval(run.means[key])}</td>" for key, _ in MEASURES)
        + f"<td>{run.empty:,}</td></tr>"
        for run in report.runs
    )
    compared = "".join(
        f"<tr><td>{escape(c.better)} − {escape(c.baseline)}</td>"
        f"<td>{escape(HEADINGS[c.measure])}</td><td>{_signed(c.difference)}</td>"
        f"<td>{c.wins:,} / {c.losses:,} / {c.ties:,}</td><td>{c.p_value:.3g}</td>"
        f"<td>{'yes' if c.significant else 'no'}</td></tr>"
        for c in report.comparisons
    )
    comparisons = (
        "<h2>Paired comparisons</h2><table><thead><tr><th>Runs</th><th>Measure</th>"
        f"<th>Mean difference ({share} interval)</th><th>Queries better / worse / equal"
        "</th><th>Wilcoxon p</th><th>Interval above 0</th></tr></thead>"
        f"<tbody>{compared}</tbody></table>"
        if report.comparisons
        else ""
    )
    skipped = (
        f" · {len(report.unjudged):,} queries without a relevant judgement skipped "
        f"({escape(', '.join(report.unjudged[:10]))}{'…' if len(report.unjudged) > 10 else ''})"
        if report.unjudged
        else ""
    )
    by_kind = report.means_by_kind()
    kind_rows = "".join(
        f"<tr><td>{escape(kind)} ({len(report.kinds[kind]):,})</td><td>{escape(name)}</td>"
        + "".join(f"<td>{_num(means[key])}</td>" for key, _ in MEASURES)
        + "</tr>"
        for kind, runs in by_kind.items()
        for name, means in runs.items()
    )
    kinds = (
        "<h2>Per kind of query</h2><table><thead><tr><th>Kind (queries)</th><th>Run</th>"
        f"{head}</tr></thead><tbody>{kind_rows}</tbody></table>"
        if kind_rows
        else ""
    )
    title = f"Retrieval evaluation — {report.dataset}"
    chart = means_chart(report) if report.runs else "<p>No runs to show.</p>"
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{STYLE}</style></head><body>"
        f"<h1>{escape(title)}</h1>"
        f'<p class="meta">{report.passages:,} passages · {report.queries:,} judged queries'
        f"{skipped} · generated {escape(generated_at)}</p>"
        f'<h2>Means per run</h2><p class="legend">{legend}</p>{chart}'
        f"<table><thead><tr><th>Run</th>{head}<th>Empty</th></tr></thead>"
        f"<tbody>{rows}</tbody></table>{kinds}{comparisons}"
        f'<p class="meta">Each figure is the mean over the judged queries, with its {share} '
        f"bootstrap interval ({report.resamples:,} resamples of the queries) in brackets. "
        f"nDCG@10: how close the first 10 results are to the ideal order, graded relevance "
        "counting; recall@100: share of the relevant passages found in the first 100; "
        "MRR@10: 1 / the rank of the first relevant result, 0 if none is in the first 10. "
        "Empty: queries the run returned nothing for (they score 0). Per kind of query: "
        "the means over the queries of each kind the set marks (queries.jsonl's "
        "metadata.kind). A paired comparison "
        "takes the difference query by query; when its interval lies above 0 the first run "
        "is better on this set beyond the spread between queries.</p></body></html>\n"
    )
