"""Outcomes: what really happened after a decision (the loan was repaid, the refund disputed).

A flow names the labels its outcomes may take, each with the action that would have been
right for it (``outcome.labels`` in the flow file); trust metrics compare that with what was
done, and replay with what a candidate policy would have done. Each report is an ``outcome``
entry in the ledger, with a row in the ``outcomes`` table as its index.

Reports are idempotent: the same outcome reported again changes nothing and says so.
Outcomes may arrive any time after the decision (late arrivals are normal: a default shows
after months), but never dated before it. A second report that disagrees with the first is
refused with both named — the first report stands. A bulk report (a list, a CSV or a
Parquet file) is checked as a whole first: one bad row refuses the whole file, with every
problem named by row, and nothing is recorded.
"""

from __future__ import annotations

import csv
import io
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, RowMapping, select

from keel.context import Context
from keel.errors import ConflictError, InputError, MissingExtraError, NotFoundError
from keel.events import OutcomeReported, pending
from keel.ledger.reader import decision_flow
from keel.ledger.records import iso_time, new_id
from keel.ledger.writer import Pending, WindowGate, append_in
from keel.security.roles import Permission, PermissionDeniedError, Principal, visible_to
from keel.store.schema import decisions, outcomes
from keel.text import identifier

COLUMNS = ("decision_id", "label", "value", "observed_at")
REQUIRED = ("decision_id", "label")
MAX_PROBLEMS = 20  # listed in an error message; the count gives the rest
MAX_LABEL = 64
CLOCK_SKEW_S = 300  # an outcome may be dated this far past the server's clock
_CHUNK = 500  # ids per IN (...) query, under every database's parameter limit


@dataclass(frozen=True)
class OutcomeReport:
    """One reported outcome, before it is checked against the store."""

    decision_id: str
    label: str
    value: float | None = None
    observed_at: str | None = None  # when it happened (ISO 8601); default: when reported


@dataclass(frozen=True)
class OutcomeRow:
    """A recorded outcome, as the ``outcomes`` table indexes its ledger entry."""

    decision_id: str
    flow: str
    decision_seq: int
    label: str
    value: float | None
    observed_at: str  # when it happened
    reported_at: str
    reported_by: str
    source: str  # api, cli, file:NAME
    record_id: str  # the outcome's ledger entry

    @classmethod
    def of(cls, row: Mapping[str, Any] | RowMapping) -> OutcomeRow:
        """The outcome of an ``outcomes`` row."""
        return cls(**{f.name: row[f.name] for f in fields(cls)})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ReportResult:
    row: OutcomeRow  # the outcome recorded, now or by an earlier report
    created: bool  # False when the report was a resend of it

    def to_dict(self) -> dict[str, Any]:
        return {**self.row.to_dict(), "created": self.created}


@dataclass(frozen=True)
class ImportResult:
    recorded: int  # new outcomes, each now a ledger entry
    unchanged: int  # reports identical to outcomes already recorded

    def to_dict(self) -> dict[str, int]:
        return {"recorded": self.recorded, "unchanged": self.unchanged}


def _parse_time(text: str) -> float:
    """Seconds since the epoch of an ISO 8601 time; a time without zone is UTC."""
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"observed_at {text!r} is not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _clean(report: OutcomeReport) -> OutcomeReport:
    """Type and shape checks that need no store; raises ValueError naming the problem."""
    if not isinstance(report.decision_id, str) or not report.decision_id:
        raise ValueError("decision_id is missing")
    if not isinstance(report.label, str) or not 0 < len(report.label) <= MAX_LABEL:
        raise ValueError(f"label must be a text of 1 to {MAX_LABEL} characters")
    for field in ("decision_id", "label"):
        try:
            identifier(getattr(report, field), field)
        except InputError as refused:
            raise ValueError(refused.message) from None
    value = report.value
    if value is not None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"value {value!r} is not a number")
        if not math.isfinite(value):
            raise ValueError(f"value {value!r} is not a finite number")
        value = float(value)
    observed = report.observed_at
    if observed is not None:
        if not isinstance(observed, str):
            raise ValueError(f"observed_at {observed!r} is not an ISO 8601 time")
        observed = iso_time(_parse_time(observed))
    return OutcomeReport(report.decision_id, report.label, value, observed)


class Outcomes:
    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx

    def get(self, decision_id: str, principal: Principal) -> OutcomeRow:
        """The outcome reported for a decision the caller may read (404 until there is one)."""
        flow = decision_flow(self._ctx.db, decision_id)
        visible_to(principal, Permission.READ_DECISIONS, flow, "decision", decision_id)
        with self._ctx.db.read() as conn:
            row = conn.execute(select(outcomes).where(outcomes.c.decision_id == decision_id))
            found = row.first()
        if found is None:
            raise NotFoundError(
                f"no outcome has been reported for decision '{decision_id}'",
                {"decision_id": decision_id},
            )
        return OutcomeRow.of(found._mapping)

    def report(
        self, report: OutcomeReport, principal: Principal, source: str = "api"
    ) -> ReportResult:
        """Record one outcome (``report_outcome`` on the decision's flow; a decision the
        caller may not report on does not exist for it); returns its row, and whether it
        is new."""
        try:
            clean = _clean(report)
        except ValueError as exc:
            raise InputError(str(exc), {"decision_id": report.decision_id}) from None
        recorded, rows = self._record([clean], principal, source, single=True)
        return ReportResult(rows[0], recorded == 1)

    def report_many(
        self, reports: Sequence[OutcomeReport], principal: Principal, source: str
    ) -> ImportResult:
        """Record many outcomes at once: all of them, or (on any problem) none. Decisions of
        flows the caller may not report on are unknown to it."""
        if not principal.flows_with(Permission.REPORT_OUTCOME, self._ctx.registry.flows):
            raise PermissionDeniedError(
                f"{principal.name} ({principal.id}) may not report outcomes on any flow",
                {"permission": Permission.REPORT_OUTCOME.value},
            )
        if not reports:
            raise InputError("no outcomes given", {"source": source})
        problems: list[str] = []
        clean: list[OutcomeReport] = []
        for i, report in enumerate(reports, start=1):
            try:
                clean.append(_clean(report))
            except ValueError as exc:
                problems.append(f"row {i}: {exc}")
        _refuse(problems, source)
        recorded, _ = self._record(clean, principal, source, single=False)
        return ImportResult(recorded, len(clean) - recorded)

    def import_file(self, path: Path, principal: Principal) -> ImportResult:
        """Record the outcomes in a CSV or Parquet file (columns: decision_id, label, and
        optionally value and observed_at), all or none."""
        return self.report_many(read_outcome_file(path), principal, f"file:{path.name}")

    # ---- inside the transaction --------------------------------------------------------

    def _record(
        self,
        reports: list[OutcomeReport],
        principal: Principal,
        source: str,
        single: bool,
    ) -> tuple[int, list[OutcomeRow]]:
        ctx = self._ctx
        reported_by = principal.id

        def work(conn: Connection, gate: WindowGate) -> tuple[list[OutcomeRow], list[OutcomeRow]]:
            ids = sorted({r.decision_id for r in reports})
            known = _rows_by_id(conn, decisions, decisions.c.id, ids)
            stored = {
                decision_id: OutcomeRow.of(row)
                for decision_id, row in _rows_by_id(
                    conn, outcomes, outcomes.c.decision_id, ids
                ).items()
            }
            problems: list[str] = []
            fresh: dict[str, OutcomeRow] = {}
            out: list[OutcomeRow] = []
            now = iso_time(gate.now)
            latest = gate.now + CLOCK_SKEW_S
            for i, report in enumerate(reports, start=1):
                where = "" if single else f"row {i}: "
                decision = known.get(report.decision_id)
                if decision is None or not principal.can(
                    Permission.REPORT_OUTCOME, decision["flow"]
                ):
                    if single:  # the caller may not learn which ids exist in other flows
                        raise NotFoundError(
                            f"no decision with id '{report.decision_id}'",
                            {"decision_id": report.decision_id},
                        )
                    problems.append(f"{where}no decision with id '{report.decision_id}'")
                    continue
                problem = self._check(report, decision, latest)
                if problem:
                    if single:
                        raise InputError(problem, {"decision_id": report.decision_id})
                    problems.append(where + problem)
                    continue
                row = OutcomeRow(
                    decision_id=report.decision_id,
                    flow=decision["flow"],
                    decision_seq=decision["seq"],
                    label=report.label,
                    value=report.value,
                    observed_at=report.observed_at or now,
                    reported_at=now,
                    reported_by=reported_by,
                    source=source,
                    record_id="",  # given once it is known to be new
                )
                earlier = stored.get(report.decision_id) or fresh.get(report.decision_id)
                if earlier is not None:
                    if _same(earlier, report):
                        out.append(earlier)
                        continue
                    message = (
                        f"{where}decision '{report.decision_id}' already has outcome "
                        f"{_describe(earlier)}, reported at {earlier.reported_at} by "
                        f"{earlier.reported_by}; the different report "
                        f"{_describe(row)} is refused (the first report stands)"
                    )
                    if single:
                        raise ConflictError(message, {"decision_id": report.decision_id})
                    problems.append(message)
                    continue
                row = replace(row, record_id=new_id("out", gate.now))
                fresh[report.decision_id] = row
                out.append(row)
            _refuse(problems, source)
            if fresh:
                append_in(conn, [_event(row) for row in fresh.values()], gate)
            return list(fresh.values()), out

        fresh, rows = ctx.writer.transact(work)
        for (flow, label), n in Counter((r.flow, r.label) for r in fresh).items():
            ctx.metrics.outcomes.labels(flow, label).inc(n)
        return len(fresh), rows

    def _check(self, report: OutcomeReport, decision: Mapping[str, Any], latest: float) -> str:
        """What is wrong with a report for this decision ('' when nothing)."""
        flow = self._ctx.registry.flows.get(decision["flow"])
        if flow is None:
            return f"flow '{decision['flow']}' of decision '{report.decision_id}' is not loaded"
        labels = flow.flow.outcome.labels
        if not labels:
            return (
                f"flow '{decision['flow']}' declares no outcome labels "
                "(add outcome.labels to its flow file)"
            )
        if report.label not in labels:
            return (
                f"unknown outcome label '{report.label}' for flow '{decision['flow']}' "
                f"(labels: {', '.join(labels)})"
            )
        if report.observed_at is not None:
            if report.observed_at < decision["recorded_at"]:
                return (
                    f"observed_at {report.observed_at} is before the decision was made "
                    f"({decision['recorded_at']})"
                )
            if _parse_time(report.observed_at) > latest:
                return f"observed_at {report.observed_at} is in the future"
        return ""


def _rows_by_id(
    conn: Connection, table: Any, column: Any, ids: Sequence[str]
) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        for row in conn.execute(select(table).where(column.in_(chunk))):
            mapping = dict(row._mapping)
            found[mapping.get("id") or mapping["decision_id"]] = mapping
    return found


def _same(earlier: OutcomeRow, report: OutcomeReport) -> bool:
    """Is ``report`` the outcome already recorded (a resend)? A resend may omit the time."""
    return (
        earlier.label == report.label
        and earlier.value == report.value
        and (report.observed_at is None or report.observed_at == earlier.observed_at)
    )


def _describe(row: OutcomeRow) -> str:
    value = f", value {row.value:g}" if row.value is not None else ""
    return f"'{row.label}'{value} observed {row.observed_at}"


def _event(row: OutcomeRow) -> Pending:
    reported = OutcomeReported(
        decision=row.decision_id,
        decision_seq=row.decision_seq,
        label=row.label,
        value=row.value,
        observed_at=row.observed_at,
        reported_by=row.reported_by,
        source=row.source,
    )
    return pending(reported, row.flow, 0.0, row.record_id, ((outcomes, row.to_dict()),))


def _refuse(problems: list[str], source: str) -> None:
    if not problems:
        return
    listed = "; ".join(problems[:MAX_PROBLEMS])
    more = f"; and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
    raise InputError(
        f"{len(problems)} problem{'s' if len(problems) > 1 else ''} in the outcomes from "
        f"{source}, so none was recorded: {listed}{more}",
        {"source": source, "problems": problems[:MAX_PROBLEMS], "count": len(problems)},
    )


# ---- files -----------------------------------------------------------------------------


def read_outcome_file(path: Path) -> list[OutcomeReport]:
    """Read outcome reports from a ``.csv`` or ``.parquet`` file, checking its columns."""
    if not path.is_file():
        raise InputError(f"no outcome file at {path}", {"path": str(path)})
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return _from_rows(_csv_rows(path), path)
    if suffix in (".parquet", ".pq"):
        return _from_rows(_parquet_rows(path), path)
    raise InputError(
        f"{path.name}: outcome files are .csv or .parquet, not '{suffix or 'no suffix'}'",
        {"path": str(path)},
    )


def _check_columns(columns: Iterable[str], path: Path) -> None:
    names = list(columns)
    missing = [c for c in REQUIRED if c not in names]
    unknown = [c for c in names if c not in COLUMNS]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}")
        raise InputError(
            f"{path.name}: {'; '.join(parts)} (columns: {', '.join(COLUMNS)}; "
            f"required: {', '.join(REQUIRED)})",
            {"path": str(path), "missing": missing, "unknown": unknown},
        )


def _csv_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise InputError(f"{path.name}: not a UTF-8 text (CSV) file", {"path": str(path)}) from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = [c.strip() for c in reader.fieldnames or []]
    _check_columns(columns, path)
    rows = []
    problems = []
    for i, raw in enumerate(reader, start=1):
        if None in raw:  # more cells than columns
            problems.append(f"row {i}: {len(raw) - 1 + len(raw[None])} cells for {len(columns)}")
            continue
        row: dict[str, Any] = {}
        for name, cell in zip(columns, raw.values(), strict=True):
            text = cell.strip() if isinstance(cell, str) else cell
            row[name] = text or None
        if row.get("value") is not None:
            try:
                row["value"] = float(row["value"])
            except ValueError:
                problems.append(f"row {i}: value {row['value']!r} is not a number")
                continue
        rows.append(row)
    _refuse(problems, f"file:{path.name}")
    return columns, rows


def _parquet_rows(path: Path) -> tuple[list[str], list[dict[str, Any]]]:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional extra
    except ImportError:
        raise MissingExtraError("tables", "reading Parquet outcome files") from None
    try:
        table = pq.read_table(path)
    except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise InputError(
            f"{path.name}: not a readable Parquet file ({exc})", {"path": str(path)}
        ) from None
    _check_columns(table.column_names, path)
    return table.column_names, table.to_pylist()


def _from_rows(parsed: tuple[list[str], list[dict[str, Any]]], path: Path) -> list[OutcomeReport]:
    _columns, rows = parsed
    if not rows:
        raise InputError(f"{path.name}: the file holds no outcomes", {"path": str(path)})
    out = []
    for row in rows:
        observed = row.get("observed_at")
        if isinstance(observed, datetime):  # a Parquet timestamp column
            zoned = observed if observed.tzinfo else observed.replace(tzinfo=UTC)
            observed = iso_time(zoned.timestamp())
        out.append(
            OutcomeReport(
                decision_id=row.get("decision_id") or "",
                label=row.get("label") or "",
                value=row.get("value"),
                observed_at=observed,
            )
        )
    return out
