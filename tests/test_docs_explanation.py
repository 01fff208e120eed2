"""The explanation pages say what the code does: every command they name exists with the
options they give it, every performance figure comes from ``bench/RESULTS.md``, the drift
page's methods and thresholds are the ones ``keel.monitor`` applies, and its small-sample
table is what the statistics give."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import typer

from keel.cli import app
from keel.monitor import embeddings, stats

ROOT = Path(__file__).parent.parent
EXPLANATION = ROOT / "docs" / "explanation"
PAGES = sorted(EXPLANATION.glob("*.md"))


def _page(name: str) -> str:
    return (EXPLANATION / name).read_text(encoding="utf-8")


def _keel_commands() -> list[tuple[str, str]]:
    """Every inline code span that starts with ``keel `` in the explanation pages."""
    found = []
    for page in PAGES:
        for span in re.findall(r"`(keel [^`]+)`", page.read_text(encoding="utf-8")):
            found.append((page.name, span))
    return found


def _resolve(span: str) -> tuple[Any, list[str]]:
    """The Click command a span names (Typer's own copy of Click: a group is what has
    ``commands``), and the words left after the command's path."""
    command = typer.main.get_command(app)
    words = span.split()[1:]
    while hasattr(command, "commands") and words and words[0] in command.commands:
        command = command.commands[words.pop(0)]
    return command, words


def test_the_pages_name_commands() -> None:
    assert len(_keel_commands()) >= 20  # the check below has something to check


@pytest.mark.parametrize(("page", "span"), _keel_commands())
def test_every_command_named_exists_with_its_options(page: str, span: str) -> None:
    command, rest = _resolve(span)
    assert not hasattr(command, "commands"), f"{page}: `{span}` names no command"
    options = {name for param in command.params for name in param.opts}
    named = {word.strip("[]").split("=")[0] for word in rest if word.strip("[").startswith("-")}
    assert named <= options, f"{page}: `{span}`: {sorted(named - options)} are not options"


def test_every_performance_figure_is_in_the_bench_results() -> None:
    number = r"(?<![\d.,])\d+(?:,\d{3})*(?:\.\d+)?"  # 4,785 and 36.4 whole, never a part
    results = set(re.findall(number, (ROOT / "bench" / "RESULTS.md").read_text(encoding="utf-8")))
    figures = set(re.findall(number, _page("performance.md")))
    assert len(figures) > 50
    missing = sorted(figures - results)
    assert missing == [], f"performance.md quotes figures bench/RESULTS.md does not hold: {missing}"


def _statistics_table() -> dict[str, str]:
    """The drift page's table of statistics: method → its "drift when" cell."""
    table = {}
    for line in _page("drift.md").splitlines():
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]]  # not at \|
        if len(cells) == 4 and re.fullmatch(r"`\w+`", cells[0]):
            table[cells[0].strip("`")] = cells[3]
    return table


def test_the_drift_page_lists_every_method_with_its_threshold() -> None:
    table = _statistics_table()
    methods = {
        *stats.NUMERIC_METHODS,
        *stats.CATEGORICAL_METHODS,
        "missing_share",
        *embeddings.EMBEDDING_METHODS,
    }
    assert set(table) == methods
    thresholds = {**stats.THRESHOLDS, **embeddings.THRESHOLDS}
    for method, rule in table.items():
        figure = float(re.findall(r"\d+(?:\.\d+)?", rule)[-1])
        assert figure == thresholds[method], (method, rule)
    assert table["ks"].startswith("p <") and table["chisquare"].startswith("p <")
    assert table["new_categories"] == "> 0"
    page = _page("drift.md")
    assert stats.EPSILON == 0.0001 and "floored at 0.0001" in page
    assert stats.BINS == 10 and "ten bins cut at the reference's deciles" in page


NUMERIC = ("wasserstein", "psi", "jensenshannon", "ks")
CATEGORICAL = ("jensenshannon", "psi", "chisquare")
CATEGORIES = np.array(list("abcde"))
SHARES = [0.4, 0.3, 0.15, 0.1, 0.05]
TRIALS = 200


def _false_alarms(n: int) -> list[int]:
    """Percent of trials in which each statistic reports drift between two samples of one
    distribution: ``n`` current values against ``7 n`` reference ones (the drift page's
    table, in its column order)."""
    rng = np.random.default_rng([20261130, n])
    numeric = dict.fromkeys(NUMERIC, 0)
    categorical = dict.fromkeys(CATEGORICAL, 0)
    for _ in range(TRIALS):
        reference, current = rng.normal(size=7 * n), rng.normal(size=n)
        for s in stats.numeric_drift("x", reference, current, NUMERIC):
            if s.method in numeric:
                numeric[s.method] += bool(s.drift)
        reference = rng.choice(CATEGORIES, size=7 * n, p=SHARES)
        current = rng.choice(CATEGORIES, size=n, p=SHARES)
        for s in stats.categorical_drift("c", reference, current, CATEGORICAL):
            if s.method in categorical:
                categorical[s.method] += bool(s.drift)
    counts = [*numeric.values(), *categorical.values()]
    return [round(100 * c / TRIALS) for c in counts]


def _small_sample_table() -> dict[int, list[int]]:
    rows = re.findall(r"^\| ([\d,]+) \|((?: \d+% \|)+)$", _page("drift.md"), re.M)
    return {
        int(n.replace(",", "")): [int(x) for x in re.findall(r"\d+", cells)] for n, cells in rows
    }


@pytest.mark.parametrize("n", [30, 100, 300, 1000])
def test_the_small_sample_table_is_what_the_statistics_give(n: int) -> None:
    table = _small_sample_table()
    assert list(table) == [30, 100, 300, 1000, 3000]
    assert _false_alarms(n) == table[n]


def test_every_make_target_named_exists() -> None:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([\w-]+):", makefile, re.M))
    named = {t for page in PAGES for t in re.findall(r"`make ([\w-]+)`", page.read_text("utf-8"))}
    assert len(named) >= 5
    assert named <= targets, sorted(named - targets)
