"""The options of a replay or a rollout, checked together: a caller who got three of them
wrong hears of all three at once, not one per try.

``OptionProblems`` gathers problems by option; ``raise_any`` refuses them in one
``InputError`` whose ``detail.errors`` lists ``{field, error}`` for each, as an invalid
input does. ``replay_window`` checks a replay's candidate and time range.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from keel.errors import InputError
from keel.ledger.records import parse_instant

T = TypeVar("T")


class OptionProblems:
    """Every problem with one request's options, each naming its option."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str]] = []

    def add(self, field: str, message: str) -> None:
        self.items.append((field, message))

    def check(self, field: str, step: Callable[[], T]) -> T | None:
        """``step()``'s result, or None with its ``InputError`` noted against ``field``."""
        try:
            return step()
        except InputError as exc:
            self.add(field, exc.message)
            return None

    def raise_any(self) -> None:
        """Refuse the options, naming every problem, if there is one. One problem reads as
        itself; several are counted and listed, each after its option's name."""
        if not self.items:
            return
        errors = [{"field": field, "error": message} for field, message in self.items]
        if len(errors) == 1:
            raise InputError(errors[0]["error"], {"field": errors[0]["field"], "errors": errors})
        listed = "; ".join(f"{e['field']}: {e['error']}" for e in errors)
        raise InputError(f"{len(errors)} problems with the options: {listed}", {"errors": errors})


def _instant(problems: OptionProblems, name: str, text: str | None) -> str | None:
    if text is None:
        problems.add(name, f"give {name} as an ISO 8601 time")
        return None
    return problems.check(name, lambda: parse_instant(name, text))


def replay_window(
    candidate: str | None,
    document: bool,
    since: str | None,
    until: str | None,
    document_option: str = "document",
) -> tuple[str, str]:
    """The replay range ``[since, until)`` as the ledger writes times, after checking every
    option at once: exactly one of a candidate and a policy document (``document_option``
    names how the caller gives one), both ends given as ISO 8601 times, and ``since`` before
    ``until``."""
    problems = OptionProblems()
    if (candidate is None) == (not document):
        problems.add(
            "candidate",
            f"give either a candidate (a change or version) or {document_option}, not both"
            if document
            else f"give a candidate (a change or version) or {document_option}",
        )
    start = _instant(problems, "since", since)
    end = _instant(problems, "until", until)
    if start is not None and end is not None and start >= end:
        problems.add("until", f"the range is empty: since {start} is not before until {end}")
    problems.raise_any()
    return start or "", end or ""
