"""Deciding a file of cases: check every row first, then decide and record chunk by chunk.

Two passes over the file. The first validates every row exactly as ``decide_many`` does and
names every bad row at once; a file with any bad row records nothing. The second decides the
rows in chunks through ``decide_many``: each chunk is recorded atomically (all its cases or
none), so if recording fails — the ledger cannot be written, a permission is withdrawn —
the chunks before it stay recorded, that chunk and the rest are not, and the error says
which rows are recorded and how to go on (``skip``: the number of cases already recorded).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keel.decide.casefile import CaseFile, Chunk, DecisionSink, open_sink
from keel.decide.decider import Decider
from keel.errors import BatchIncompleteError, InputError, KeelError
from keel.runtime import FlowRuntime
from keel.security.roles import Principal

DEFAULT_CHUNK = 1000
MAX_CHUNK = 10_000
MAX_BAD_ROWS = 1000  # bad rows an error lists in full; its count gives the rest

# Called with ("checking" | "deciding", cases done in this step, cases in all or None).
Progress = Callable[[str, int, int | None], None]


@dataclass
class BatchSummary:
    """What a file run decided: counts by action and status, and how fast."""

    file: str
    cases: int  # cases in the file
    skipped: int  # cases at the start of the file left alone (recorded by an earlier run)
    decided: int = 0
    by_action: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    seconds: float = 0.0

    @property
    def rate(self) -> float:
        return self.decided / self.seconds if self.seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "file": self.file,
            "cases": self.cases,
            "skipped": self.skipped,
            "decided": self.decided,
            "by_action": dict(self.by_action.most_common()),
            "by_status": dict(self.by_status.most_common()),
            "seconds": round(self.seconds, 3),
            "per_second": round(self.rate, 1),
        }


def decide_path(
    decider: Decider,
    principal: Principal,
    flow: str,
    path: Path,
    out: Path | None = None,
    subject_column: str | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    skip: int = 0,
    progress: Progress | None = None,
) -> BatchSummary:
    """``decide_file`` for a file at ``path``, writing the decisions to a new file at
    ``out`` (none when it is not given). When nothing was recorded, no output file is left;
    when a run stops part-way, the output file holds the rows recorded, and is complete."""
    runtime = decider.allowed(principal, flow)
    cases = CaseFile(path, runtime.flow.fields, subject_column)
    sink = open_sink(out, list(runtime.flow.signals)) if out is not None else None
    try:
        return decide_file(decider, principal, flow, cases, sink, chunk_size, skip, progress)
    except BatchIncompleteError:
        raise  # the rows recorded before the stop are in the output file
    except KeelError:  # refused before anything was recorded: leave no output file
        if sink is not None and out is not None:
            sink.close()
            sink = None
            out.unlink(missing_ok=True)
        raise
    finally:
        if sink is not None:
            sink.close()


def decide_file(
    decider: Decider,
    principal: Principal,
    flow: str,
    cases: CaseFile,
    sink: DecisionSink | None = None,
    chunk_size: int = DEFAULT_CHUNK,
    skip: int = 0,
    progress: Progress | None = None,
) -> BatchSummary:
    """Decide every case of ``cases`` after checking them all; write each decided chunk to
    ``sink``. Raises ``InputError`` naming every bad row (nothing recorded), or
    ``BatchIncompleteError`` when a chunk could not be recorded."""
    if not 1 <= chunk_size <= MAX_CHUNK:
        raise InputError(f"the chunk size must be 1 to {MAX_CHUNK:,}", {"chunk_size": chunk_size})
    if skip < 0:
        raise InputError("--skip must be 0 or more", {"skip": skip})
    report = progress or (lambda _step, _done, _total: None)
    started = time.perf_counter()
    total = check_file(decider, principal, flow, cases, chunk_size, report)
    if skip > total:
        raise InputError(
            f"{cases.path.name} holds {total:,} cases: --skip {skip:,} would skip more",
            {"skip": skip, "cases": total},
        )
    summary = BatchSummary(cases.path.name, total, skip)
    seen = 0
    first = last = 0  # the first and last row this run recorded
    for chunk in cases.chunks(chunk_size):
        if chunk.unreadable:  # every row was readable when checked: the file was changed
            row, why = chunk.unreadable[0]
            changed = KeelError(f"row {row} is no longer readable ({why}): the file changed")
            stopped = min([*chunk.rows[:1], row])
            raise _incomplete(changed, summary, cases.path, (first, last, stopped), flow)
        cut = min(len(chunk.rows), max(0, skip - seen))  # cases before the skip point
        seen += cut
        rows, inputs, subjects = chunk.rows[cut:], chunk.cases[cut:], chunk.subjects[cut:]
        if not rows:
            continue
        try:
            decided = decider.decide_many(principal, flow, inputs, subjects)
        except KeelError as error:
            where = (first, last, rows[0])
            raise _incomplete(error, summary, cases.path, where, flow) from error
        seen += len(decided)
        first, last = first or rows[0], rows[-1]
        summary.decided += len(decided)
        summary.by_action.update(d.action for d in decided)
        summary.by_status.update(d.status for d in decided)
        if sink is not None:
            try:
                sink.write(rows, decided)
            except OSError as exc:  # recorded, but the caller's list of them is incomplete
                raise BatchIncompleteError(
                    f"{cases.path.name}: rows {first}–{last} are recorded, but the output "
                    f"file could not be written ({exc}); the decisions are in the ledger. "
                    f"Go on with: keel decide {flow} --file {cases.path} --skip {seen}",
                    {"path": str(cases.path), "recorded": summary.decided, "skip": seen},
                ) from exc
        report("deciding", len(decided), total - skip)
    summary.seconds = time.perf_counter() - started
    return summary


def check_file(
    decider: Decider,
    principal: Principal,
    flow: str,
    cases: CaseFile,
    chunk_size: int,
    progress: Progress,
) -> int:
    """Validate every row of the file; raise one ``InputError`` that names every bad row
    (row, field, problem), or return how many cases the file holds."""
    runtime = decider.allowed(principal, flow)
    problems: dict[int, list[str]] = {}  # row → its problems, the first MAX_BAD_ROWS rows
    bad = total = 0
    for chunk in cases.chunks(chunk_size):
        total += len(chunk.rows)
        for row, said in _problems(decider, runtime, chunk).items():
            bad += 1
            if len(problems) < MAX_BAD_ROWS:
                problems[row] = said
        progress("checking", len(chunk), None)
    if bad:
        raise _refused(cases.path, problems, bad)
    if total == 0:
        raise InputError(f"{cases.path.name}: the file holds no cases", {"path": str(cases.path)})
    return total


def _problems(decider: Decider, runtime: FlowRuntime, chunk: Chunk) -> dict[int, list[str]]:
    """Every problem of every bad row in ``chunk``, by row, in file order."""
    found: dict[int, list[str]] = {row: [why] for row, why in chunk.unreadable}
    _clean, invalid = decider.screen(runtime, chunk.cases, chunk.subjects)
    for case in invalid:
        found[chunk.rows[case["index"]]] = [
            f"{e['field']}: {e['error']}" if e["field"] else e["error"] for e in case["errors"]
        ]
    return dict(sorted(found.items()))


def _refused(path: Path, problems: dict[int, list[str]], bad: int) -> InputError:
    listed = [f"row {row}: {'; '.join(said)}" for row, said in problems.items()]
    more = bad - len(listed)
    tail = f"\n  … and {more:,} more bad rows" if more > 0 else ""
    return InputError(
        f"{path.name}: {bad:,} bad row{'s' if bad != 1 else ''}, so no case was recorded "
        "(fix them and run again):\n  " + "\n  ".join(listed) + tail,
        {
            "path": str(path),
            "bad_rows": bad,
            "problems": [{"row": row, "errors": said} for row, said in problems.items()],
        },
    )


def _incomplete(
    error: KeelError, summary: BatchSummary, path: Path, rows: tuple[int, int, int], flow: str
) -> BatchIncompleteError:
    """The error for a chunk that could not be recorded: what is recorded, what is not, and
    the command that goes on from there."""
    first, last, stopped = rows  # first and last row recorded by this run; the chunk's first
    done = summary.skipped + summary.decided
    recorded = (
        f"rows {first}–{last} ({summary.decided:,} cases) are recorded"
        if summary.decided
        else "no case of this run was recorded"
    )
    return BatchIncompleteError(
        f"{path.name}: the chunk from row {stopped} could not be recorded "
        f"({error.message}). It and every row after it are not recorded; {recorded}. Once "
        f"the cause is fixed, go on with: keel decide {flow} --file {path} --skip {done}",
        {
            "path": str(path),
            "cause": error.code,
            "recorded": summary.decided,
            "skip": done,
            "first_unrecorded_row": stopped,
        },
    )
