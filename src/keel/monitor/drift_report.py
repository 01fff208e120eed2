"""Drift reports: ``report.json`` with every figure and ``report.html``, one self-contained
page (inline SVG, no scripts, no external resources) with a chart per column.

A column's verdict follows one method: the one asked for (``--method``, the first that
applies to the column's type), or in Keel's mode ``wasserstein`` for numeric columns and
``jensenshannon`` for categorical ones — distances that, unlike the tests' p-values, do not
call every trivial change significant once samples reach millions of rows. In
Evidently-compatible mode the verdict is Evidently's. ``missing_share`` is reported beside
the verdict, never folded into it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from html import escape
from pathlib import Path
from typing import Any

import numpy as np

from keel.errors import InputError
from keel.monitor.embeddings import EMBEDDING_METHODS, EmbeddingSample, projections
from keel.monitor.profile import Comparison, Profile, Sample
from keel.monitor.report import STYLE
from keel.monitor.stats import CATEGORICAL_METHODS, NUMERIC_METHODS, NumericSample, Statistic

PRIMARY = {
    "numeric": "wasserstein",
    "categorical": "jensenshannon",
    "embedding": "domain_classifier",
}
FORMATS = (".parquet", ".csv")
BARS = 24
TOP_CATEGORIES = 12


def read_table(path: Path) -> dict[str, Any]:
    """The columns of a Parquet or CSV file, as Arrow arrays (needs ``keel[tables]``)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file", {"path": str(path)})
    suffix = path.suffix.lower()
    if suffix not in FORMATS:
        raise InputError(
            f"{path}: not a Parquet or CSV file (name it .parquet or .csv)", {"path": str(path)}
        )
    try:
        import pyarrow.csv as pacsv  # noqa: PLC0415 - optional extra
        import pyarrow.parquet as pq  # noqa: PLC0415
    except ImportError:
        raise InputError(
            "reading data files needs PyArrow: pip install 'keel[tables]'", {"path": str(path)}
        ) from None
    try:
        table = pq.read_table(path) if suffix == ".parquet" else pacsv.read_csv(path)
    except Exception as exc:  # noqa: BLE001 - PyArrow raises several types for a bad file
        kind = "Parquet" if suffix == ".parquet" else "CSV"
        raise InputError(
            f"{path}: not a readable {kind} file ({exc})", {"path": str(path)}
        ) from None
    if table.num_columns == 0:
        raise InputError(f"{path}: no columns", {"path": str(path)})
    if table.num_rows == 0:
        raise InputError(f"{path}: no rows", {"path": str(path)})
    return {name: table.column(name) for name in table.column_names}


def verdict_method(
    kind: str, mode: str, methods: Sequence[str] | None, statistics: Sequence[Statistic]
) -> Statistic | None:
    """The statistic whose verdict is the column's."""
    if kind == "embedding":  # Keel's methods in either mode: Evidently's differ
        chosen = next((m for m in methods or () if m in EMBEDDING_METHODS), None)
        method = chosen if methods else PRIMARY[kind]
        return next((s for s in statistics if s.method == method), None)
    if mode == "evidently":
        return next((s for s in statistics if s.mode == "evidently"), None)
    applicable = NUMERIC_METHODS if kind == "numeric" else CATEGORICAL_METHODS
    chosen = next((m for m in methods or () if m in applicable), None)
    method = chosen if methods else PRIMARY[kind]
    return next((s for s in statistics if s.method == method and s.mode == "keel"), None)


def _histogram(reference: Sample, current: Sample) -> dict[str, Any]:
    """Shares of both samples in common bins, for the chart (an embedding: its rows
    projected on the line between the two means)."""
    if isinstance(reference, EmbeddingSample) and isinstance(current, EmbeddingSample):
        return {**_histogram(*projections(reference, current)), "projection": True}
    if isinstance(reference, NumericSample) and isinstance(current, NumericSample):
        ref_values, cur_values = reference.values, current.values
        if len(ref_values) == 0 or len(cur_values) == 0:
            return {"labels": [], "reference": [], "current": []}
        both = [a[int(q * (len(a) - 1))] for a in (ref_values, cur_values) for q in (0.005, 0.995)]
        low, high = float(min(both)), float(max(both))
        if low == high:
            edges = np.array([low - 0.5, high + 0.5])
        else:
            edges = np.linspace(low, high, BARS + 1)

        def shares(values: np.ndarray) -> list[float]:
            inner = np.searchsorted(values, edges[1:-1], side="left")
            counts = np.diff(np.concatenate([[0], inner, [len(values)]]))
            return [round(float(x), 6) for x in counts / len(values)]

        labels = [f"{edges[i]:.4g}" for i in range(len(edges) - 1)]
        return {
            "labels": labels,
            "reference": shares(ref_values),
            "current": shares(cur_values),
            "numeric": True,
        }
    ref_counts = getattr(reference, "counts", {})
    cur_counts = getattr(current, "counts", {})
    ref_n, cur_n = max(1, sum(ref_counts.values())), max(1, sum(cur_counts.values()))
    keys = sorted(
        ref_counts.keys() | cur_counts.keys(),
        key=lambda k: (-max(ref_counts.get(k, 0) / ref_n, cur_counts.get(k, 0) / cur_n), k),
    )
    top, rest = keys[:TOP_CATEGORIES], keys[TOP_CATEGORIES:]
    r: list[float] = [ref_counts.get(k, 0) / ref_n for k in top]
    c: list[float] = [cur_counts.get(k, 0) / cur_n for k in top]
    if rest:
        top = [*top, f"({len(rest)} others)"]
        r.append(sum(ref_counts.get(k, 0) for k in rest) / ref_n)
        c.append(sum(cur_counts.get(k, 0) for k in rest) / cur_n)
    return {
        "labels": top,
        "reference": [round(x, 6) for x in r],
        "current": [round(x, 6) for x in c],
        "numeric": False,
    }


def _label_categories(histogram: dict[str, Any], labels: Mapping[str, str]) -> None:
    """Show each category by its label; ``categories`` keeps the values themselves."""
    if histogram.get("numeric") is not False or not labels:
        return
    histogram["categories"] = list(histogram["labels"])
    histogram["labels"] = [labels.get(str(k), k) for k in histogram["labels"]]


def _finite(value: float | None) -> float | str | None:
    """JSON has no infinity: an infinite statistic is written as the string "inf"."""
    if value is None or math.isfinite(value):
        return value
    return "inf" if value > 0 else "-inf"


def report_data(
    profile: Profile,
    comparison: Comparison,
    *,
    current_source: str,
    current_rows: int,
    mode: str,
    methods: Sequence[str] | None,
    generated_at: str,
    charts: bool = True,
    value_labels: Mapping[str, Mapping[str, str]] | None = None,
) -> dict[str, Any]:
    """Every figure of the report (what ``report.json`` holds); ``charts`` adds each
    column's shares for its chart, with categories shown by their ``value_labels`` (per
    column, category → label) where the flow gives them."""
    by_column: dict[str, list[Statistic]] = {}
    for statistic in comparison.statistics:
        by_column.setdefault(statistic.column, []).append(statistic)
    columns: dict[str, Any] = {}
    for name, statistics in by_column.items():
        kind = profile.kind(name)
        chosen = verdict_method(kind, mode, methods, statistics)
        missing = next((s for s in statistics if s.method == "missing_share"), None)
        entry: dict[str, Any] = {
            "type": kind,
            "method": chosen.method if chosen else None,
            "drift": chosen.drift if chosen else None,
            "missing_share_change": missing.value if missing else None,
            "missing_drift": missing.drift if missing else None,
            "statistics": [
                {**s.to_dict(), "value": _finite(s.value), "p_value": _finite(s.p_value)}
                for s in statistics
            ],
        }
        if chosen is None and name in comparison.current:
            entry["note"] = f"no chosen method applies to {kind} columns"
        if charts and name in comparison.current:
            entry["histogram"] = _histogram(profile.columns[name], comparison.current[name])
            _label_categories(entry["histogram"], (value_labels or {}).get(name, {}))
        columns[name] = entry
    drifted = sorted(n for n, c in columns.items() if c["drift"])
    return {
        "generated_at": generated_at,
        "mode": mode,
        "methods": list(methods or []),
        "reference": {"profile": profile.id, "source": profile.source, "rows": profile.rows},
        "current": {"source": current_source, "rows": current_rows},
        "summary": {
            "columns": len(columns),
            "drifted": drifted,
            "drifted_share": len(drifted) / len(columns) if columns else None,
            "missing_share_changed": sorted(n for n, c in columns.items() if c["missing_drift"]),
        },
        "problems": comparison.problems,
        "columns": columns,
    }


_STYLE = (
    STYLE
    + """
body{max-width:62rem}.drift{color:#b91c1c;font-weight:600}.ok{color:#047857}
.problems{background:#fef3c7;padding:.6rem 1rem;border-radius:8px}
.legend i{margin-left:.8rem}svg text{font-size:10px}
"""
)
W, H, PAD = 760, 200, 36
REF_COLOUR, CUR_COLOUR = "#2563eb", "#f59e0b"


def _number(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if value == 0 or 1e-4 <= abs(value) < 1e6:
        return f"{value:.4f}"
    return f"{value:.3e}"


def _verdict(drift: bool | None) -> str:
    if drift is None:
        return "<span>–</span>"
    return '<span class="drift">drift</span>' if drift else '<span class="ok">no drift</span>'


def _chart(histogram: Mapping[str, Any]) -> str:
    labels = histogram.get("labels") or []
    if not labels:
        return "<p>No values to plot.</p>"
    n = len(labels)
    top = max([*histogram["reference"], *histogram["current"], 1e-9])
    slot = (W - 2 * PAD) / n
    bar = slot * 0.4
    parts = [f'<svg viewBox="0 0 {W} {H}" width="100%" role="img">']
    parts.append(
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD}" y2="{H - PAD}" stroke="#9ca3af"/>'
    )
    for i, (r, c) in enumerate(zip(histogram["reference"], histogram["current"], strict=True)):
        x = PAD + i * slot
        for offset, share, colour in ((0.1, r, REF_COLOUR), (0.5, c, CUR_COLOUR)):
            height = (H - 2 * PAD) * share / top
            parts.append(
                f'<rect x="{x + slot * offset:.1f}" y="{H - PAD - height:.1f}" width="{bar:.1f}" '
                f'height="{height:.1f}" fill="{colour}"><title>{escape(str(labels[i]))}: '
                f"{share:.2%}</title></rect>"
            )
    step = max(1, n // 8)
    for i in range(0, n, step):
        label = escape(str(labels[i]))[:14]
        parts.append(f'<text x="{PAD + i * slot:.1f}" y="{H - PAD + 14}">{label}</text>')
    parts.append(f'<text x="4" y="{PAD - 6}">{top:.1%}</text></svg>')
    return "".join(parts)


def report_html(data: Mapping[str, Any]) -> str:
    ref, cur, summary = data["reference"], data["current"], data["summary"]
    mode = "Evidently-compatible" if data["mode"] == "evidently" else "Keel"
    methods = ", ".join(data["methods"]) or "each type's default"
    out = [
        "<!doctype html><html lang=en><head><meta charset=utf-8>",
        "<title>Drift report</title>",
        f"<style>{_STYLE}</style></head><body><h1>Drift report</h1>",
        f'<p class="meta">Reference {escape(ref["source"])} ({ref["rows"]:,} rows, profile '
        f"{escape(ref['profile'][:12])}) · current {escape(cur['source'])} "
        f"({cur['rows']:,} rows) · {mode} statistics, verdict by {escape(methods)} · "
        f"generated {escape(data['generated_at'])}</p>",
        '<div class="cards">',
        f'<div class="card">Columns<b>{summary["columns"]}</b></div>',
        f'<div class="card">Drifted<b>{len(summary["drifted"])}</b></div>',
        f'<div class="card">Missing share changed<b>{len(summary["missing_share_changed"])}</b>'
        "</div>",
        f'<div class="card">Problems<b>{len(data["problems"])}</b></div></div>',
    ]
    if data["problems"]:
        items = "".join(f"<li>{escape(p)}</li>" for p in data["problems"])
        out.append(f'<div class="problems"><b>Not compared</b><ul>{items}</ul></div>')
    out.append(
        "<h2>Columns</h2><table><tr><th>Column</th><th>Type</th><th>Method</th><th>Value</th>"
        "<th>p-value</th><th>Threshold</th><th>Verdict</th><th>Missing share Δ</th></tr>"
    )
    for name, column in data["columns"].items():
        chosen = next(
            (s for s in column["statistics"] if s["method"] == column["method"]
             and (s["mode"] == data["mode"] or column["type"] == "embedding")), None,
        )  # fmt: skip
        out.append(
            f'<tr><td><a href="#col-{escape(name)}">{escape(name)}</a></td>'
            f"<td>{column['type']}</td><td>{escape(column['method'] or '–')}</td>"
            f"<td>{_number(chosen and chosen['value'])}</td>"
            f"<td>{_number(chosen and chosen['p_value'])}</td>"
            f"<td>{_number(chosen and chosen['threshold'])}</td>"
            f"<td>{_verdict(column['drift'])}</td>"
            f"<td>{_number(column['missing_share_change'])}</td></tr>"
        )
    out.append("</table>")
    for name, column in data["columns"].items():
        out.append(f'<h2 id="col-{escape(name)}">{escape(name)} · {column["type"]} · ')
        out.append(f"{_verdict(column['drift'])}</h2>")
        if "note" in column:
            out.append(f"<p>{escape(column['note'])}</p>")
        if "histogram" in column:
            what = (
                "share of rows per bin, projected on the line between the two means"
                if column["histogram"].get("projection")
                else "share of values per bin"
            )
            out.append(
                f'<p class="legend"><i style="background:{REF_COLOUR}"></i>reference'
                f'<i style="background:{CUR_COLOUR}"></i>current ({what})</p>'
            )
            out.append(_chart(column["histogram"]))
        out.append(
            "<table><tr><th>Method</th><th>Value</th><th>p-value</th><th>Threshold</th>"
            "<th>Verdict</th><th>Note</th></tr>"
        )
        for s in column["statistics"]:
            out.append(
                f"<tr><td>{escape(s['method'])}{' (Evidently)' if s['mode'] == 'evidently' else ''}"
                f"</td><td>{_number(s['value'])}</td><td>{_number(s['p_value'])}</td>"
                f"<td>{_number(s['threshold'])}</td><td>{_verdict(s['drift'])}</td>"
                f"<td>{escape(s['note'])}</td></tr>"
            )
        out.append("</table>")
    out.append("</body></html>")
    return "\n".join(out)


def write_report(data: Mapping[str, Any], folder: Path) -> tuple[Path, Path]:
    """``folder/report.json`` and ``folder/report.html``."""
    folder.mkdir(parents=True, exist_ok=True)
    json_path, html_path = folder / "report.json", folder / "report.html"
    json_path.write_text(json.dumps(data, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    html_path.write_text(report_html(data), encoding="utf-8")
    return json_path, html_path
