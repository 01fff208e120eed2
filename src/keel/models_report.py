"""A model card as Markdown or as one self-contained HTML page (inline CSS, no scripts, no
external resources), from what the inventory knows of a model version.

The sections follow "Model Cards for Model Reporting" (Mitchell et al., 2019) where Keel can
fill them truthfully: the model's details and where it ran come from the ledger, the
features from the flow, the figures from reported outcomes (with their number and window),
and the rest from the card the team wrote. What the team did not write reads "unknown";
nothing is invented.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

from keel.errors import InputError
from keel.models_inventory import ModelDetail, OutcomeFigures, Usage
from keel.monitor.report import STYLE

UNKNOWN = "Unknown: the model's card does not say."
NO_CARD = "Unknown: no card was recorded for this model version."
FORMATS = ("md", "html")
FIGURE_HEADERS = ("Flow / signal", "Outcomes", "Decided (window)", "Accuracy", "Scored", "AUC",
                  "Gini", "KS", "Brier")  # fmt: skip


@dataclass(frozen=True)
class Table:
    headers: Sequence[str]
    rows: Sequence[Sequence[str]]


Block = str | Table


def _card_text(detail: ModelDetail, key: str) -> str:
    if detail.card is None:
        return NO_CARD
    value = detail.card.fields.get(key)
    return str(value) if value else UNKNOWN


def _when(start: str | None, end: str | None) -> str:
    if start is None and end is None:
        return "–"
    return f"{(start or '?')[:19]} – {(end or 'now')[:19]}"


def _rate(value: float | None) -> str:
    return "–" if value is None else f"{value:.1%}"


def _number(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def _usages(usages: Sequence[Usage]) -> Table:
    return Table(
        ("Flow", "Signal", "Pinned (from – until)", "Decisions (first – last)", "Decisions",
         "Runs now"),
        [
            (u.flow, u.signal, _when(u.active_from, u.active_until),
             _when(u.first_used, u.last_used), f"{u.decisions:,}", "yes" if u.current else "no")
            for u in usages
        ],
    )  # fmt: skip


def _figures(figures: Sequence[OutcomeFigures]) -> list[Block]:
    rows = [
        (
            f"{f.flow} / {f.signal}",
            f"{f.with_outcomes:,}",
            _when(f.since, f.until) if f.with_outcomes else "–",
            f"{_rate(f.accuracy)} (n={f.judged:,})",
            f"{f.scored:,} ({f.bad:,} bad)",
            _number(f.auc),
            _number(f.gini),
            _number(f.ks),
            _number(f.brier),
        )
        for f in figures
    ]
    blocks: list[Block] = [
        "Outcome accuracy counts decisions whose action is in force (final, or resolved by a "
        "reviewer) and whose outcome label names a right action. AUC, Gini, KS and the Brier "
        "score compare the model's score with the outcomes the flow names as bad "
        "(outcome.positive) or good, over every decision with such an outcome: the scored "
        "cases.",
        Table(FIGURE_HEADERS, rows),
    ]
    notes = [f"{f.flow} / {f.signal}: {note}." for f in figures for note in f.notes]
    blocks.extend(notes)
    return blocks


def _features(detail: ModelDetail) -> list[Block]:
    if detail.features is None:
        return ["Unknown: no flow runs this version now, so its inputs cannot be read from it."]
    rows = [
        (
            f.name,
            f.type,
            f.label,
            ", ".join(f"{v} ({label})" if label != v else v for v, label in f.categories.items())
            or "–",
            "yes" if f.protected else "no",
        )
        for f in detail.features
    ]
    return [
        "The inputs the model reads, as the flow that runs it now defines them. A protected "
        "input is a characteristic the law protects, marked so in the flow.",
        Table(("Input", "Type", "Label", "Categories", "Protected"), rows),
    ]


def _record(detail: ModelDetail) -> list[Block]:
    if detail.card is None:
        return [NO_CARD]
    blocks: list[Block] = [
        Table(
            ("Recorded", "Flow", "Card SHA-256", "Ledger entry"),
            [(c.recorded_at[:19], c.flow, c.sha256, c.record_id) for c in detail.card_history],
        )
    ]
    if len(detail.card_history) > 1:
        blocks.append(
            f"The card was changed {len(detail.card_history) - 1} time(s) after the version "
            "was first recorded with one; this page shows the newest."
        )
    if detail.card_on_disk == "changed":
        blocks.append(
            "The card beside the model file now differs from the one recorded: it is recorded "
            "when Keel next opens the project."
        )
    return blocks


def sections(detail: ModelDetail) -> list[tuple[str, list[Block]]]:
    """The card's sections, in the paper's order, each a list of paragraphs and tables."""
    owner = _card_text(detail, "owner")
    return [
        (
            "Model details",
            [
                Table(
                    ("", ""),
                    [
                        ("Version", detail.version),
                        ("File", detail.file or "unknown"),
                        ("Owner", owner),
                        ("Description", _card_text(detail, "description")),
                    ],
                ),
                _usages(detail.usages),
            ],
        ),
        ("Intended use", [_card_text(detail, "intended_use")]),
        ("Out of scope", [_card_text(detail, "out_of_scope")]),
        ("Features", _features(detail)),
        ("Training data", [_card_text(detail, "training_data")]),
        ("Evaluation data", [_card_text(detail, "evaluation_data")]),
        ("Metrics from outcomes", _figures(detail.figures)),
        ("Ethical considerations", [_card_text(detail, "ethical_considerations")]),
        ("Limitations and recommendations", [_card_text(detail, "limitations")]),
        ("Card record", _record(detail)),
    ]


def _title(detail: ModelDetail) -> str:
    return f"Model card: {detail.file or detail.version}"


def _md_text(text: str) -> str:
    """Text the team wrote, shown as written: Markdown's HTML characters are escaped, so a
    card cannot put markup into a page rendered from it."""
    out = str(text).replace("\\", "\\\\")
    for char in "<>&":
        out = out.replace(char, "\\" + char)
    return out


def _md_cell(text: str) -> str:
    return " ".join(_md_text(text).replace("|", "\\|").split())


def card_markdown(detail: ModelDetail) -> str:
    lines = [f"# {_md_text(_title(detail))}", ""]
    for title, blocks in sections(detail):
        lines += [f"## {title}", ""]
        for block in blocks:
            if isinstance(block, Table):
                lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
                lines.append("|" + "---|" * len(block.headers))
                lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            else:
                lines.append(_md_text(block))
            lines.append("")
    return "\n".join(lines)


def _html_block(block: Block) -> str:
    if isinstance(block, Table):
        head = "".join(f"<th>{escape(h)}</th>" for h in block.headers)
        body = "".join(
            "<tr>" + "".join(f"<td>{escape(str(c))}</td>" for c in row) + "</tr>"
            for row in block.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    paragraphs = [p for p in block.split("\n\n") if p.strip()]
    return "".join(f"<p>{escape(p)}</p>" for p in paragraphs)


def card_html(detail: ModelDetail) -> str:
    parts = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{escape(_title(detail))}</title>",
        f"<style>{STYLE}td{{text-align:left;vertical-align:top}}p{{white-space:pre-line}}"
        "</style></head><body>",
        f"<h1>{escape(_title(detail))}</h1>",
    ]
    for title, blocks in sections(detail):
        parts.append(f"<h2>{escape(title)}</h2>")
        parts.extend(_html_block(b) for b in blocks)
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def render_card(detail: ModelDetail, fmt: str) -> str:
    """The card in ``fmt`` (``md`` or ``html``)."""
    if fmt not in FORMATS:
        raise InputError(f"unknown card format '{fmt}' (formats: md, html)", {"format": fmt})
    return card_html(detail) if fmt == "html" else card_markdown(detail)
