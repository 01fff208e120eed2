"""Case files: cases to decide read from CSV or Parquet, and decisions written to one.

A case file has one column per input field of the flow, and optionally a column of subject
ids. CSV cells are text, so each is typed by its field's type (integer, number, boolean,
string); an empty cell is a missing value. Parquet columns keep their own types. Rows are
read in chunks, so a file of millions of cases never sits in memory at once, and every row
carries its number as the user sees it: the line in a CSV file (the header is line 1), the
row in a Parquet file (the first is row 1).

A decision file has one row per decided case (``OUTPUT_COLUMNS``, then one
``<signal>_score`` column per signal of the flow), written chunk by chunk as the chunks are
recorded.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from keel.errors import InputError, MissingExtraError

if TYPE_CHECKING:
    from keel.decide.record import Decision
    from keel.flows.flow import FieldSpec

SUFFIXES = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_SUBJECT_COLUMN = "subject_id"
TRUE = frozenset({"true", "yes", "1"})
FALSE = frozenset({"false", "no", "0"})
OUTPUT_COLUMNS = (
    "row",  # the case's row in the input file
    "subject_id",
    "decision_id",
    "seq",  # the decision's position in the ledger
    "action",
    "value",
    "status",
    "rule",
    "reason",
    "fallback",
    "recorded_at",
)


@dataclass
class Chunk:
    """Consecutive cases of a file: their rows, inputs and subjects, and the rows that could
    not even be read as cases (a CSV line with too many cells)."""

    rows: list[int] = field(default_factory=list)
    cases: list[dict[str, Any]] = field(default_factory=list)
    subjects: list[str | None] = field(default_factory=list)
    unreadable: list[tuple[int, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.rows) + len(self.unreadable)


def file_format(path: Path, what: str) -> str:
    """``csv`` or ``parquet``, from the file name; anything else is refused by name."""
    found = SUFFIXES.get(path.suffix.lower())
    if found is None:
        raise InputError(
            f"{path.name}: {what} files are .csv or .parquet, not '{path.suffix or 'no suffix'}'",
            {"path": str(path)},
        )
    return found


def _pyarrow_parquet() -> Any:
    try:
        import pyarrow.parquet as pq  # noqa: PLC0415 - optional extra
    except ImportError:
        raise MissingExtraError("tables", "reading and writing Parquet case files") from None
    return pq


class CaseFile:
    """A CSV or Parquet file of cases for one flow, read chunk by chunk (as often as asked)."""

    def __init__(
        self, path: Path, fields: Mapping[str, FieldSpec], subject_column: str | None = None
    ) -> None:
        if not path.is_file():
            raise InputError(f"no case file at {path}", {"path": str(path)})
        self.path = path
        self.format = file_format(path, "case")
        self._fields = fields
        self._pq = _pyarrow_parquet() if self.format == "parquet" else None
        self.columns = self._header()
        self.subject_column = self._subject_column(subject_column)
        self._check_columns()

    # ---- columns ---------------------------------------------------------------------------

    def _header(self) -> list[str]:
        if self._pq is not None:
            try:
                return list(self._pq.ParquetFile(self.path).schema_arrow.names)
            except Exception as exc:  # noqa: BLE001 - pyarrow raises several types for a bad file
                raise self._unreadable(f"not a readable Parquet file ({exc})") from None
        with self._open_csv() as handle:
            try:
                header = next(csv.reader(handle), [])
            except (csv.Error, UnicodeDecodeError) as exc:
                raise self._unreadable(f"not a readable CSV file ({exc})") from None
        return [name.strip() for name in header]

    def _subject_column(self, asked: str | None) -> str | None:
        if asked is not None:
            if asked not in self.columns:
                raise InputError(
                    f"{self.path.name}: no column '{asked}' for the subject ids "
                    f"(columns: {', '.join(self.columns)})",
                    {"path": str(self.path), "column": asked},
                )
            return asked
        return DEFAULT_SUBJECT_COLUMN if DEFAULT_SUBJECT_COLUMN in self.columns else None

    def _check_columns(self) -> None:
        names = [c for c in self.columns if c != self.subject_column]
        duplicated = sorted({c for c in names if names.count(c) > 1})
        unknown = [c for c in names if c not in self._fields]
        missing = [s.name for s in self._fields.values() if s.required and s.name not in names]
        parts = []
        if duplicated:
            parts.append(f"repeated columns {', '.join(duplicated)}")
        if unknown:
            parts.append(f"columns that are not inputs of the flow: {', '.join(unknown)}")
        if missing:
            parts.append(f"missing columns for required inputs: {', '.join(missing)}")
        if parts:
            raise InputError(
                f"{self.path.name}: {'; '.join(parts)} (inputs: {', '.join(self._fields)}; "
                f"subject ids: --subject-column, default '{DEFAULT_SUBJECT_COLUMN}')",
                {"path": str(self.path), "unknown": unknown, "missing": missing},
            )

    # ---- rows ------------------------------------------------------------------------------

    def chunks(self, size: int) -> Iterator[Chunk]:
        """The file's cases, ``size`` at a time, in file order."""
        rows = self._parquet_rows(size) if self._pq is not None else self._csv_rows()
        chunk = Chunk()
        for row, values, problem in rows:
            if problem:
                chunk.unreadable.append((row, problem))
            else:
                subject = values.pop(self.subject_column, None) if self.subject_column else None
                chunk.rows.append(row)
                chunk.cases.append(values)
                chunk.subjects.append(_subject(subject))
            if len(chunk) >= size:
                yield chunk
                chunk = Chunk()
        if len(chunk):
            yield chunk

    def _csv_rows(self) -> Iterator[tuple[int, dict[str, Any], str]]:
        width = len(self.columns)
        with self._open_csv() as handle:
            reader = csv.reader(handle)
            try:
                next(reader, None)  # the header
                line = reader.line_num + 1  # where the next record starts
                for cells in reader:
                    start, line = line, reader.line_num + 1
                    if not cells:
                        continue  # a blank line is no case
                    if len(cells) != width:
                        yield start, {}, f"{len(cells)} cells for {width} columns"
                        continue
                    yield start, self._typed(cells), ""
            except (csv.Error, UnicodeDecodeError) as exc:
                raise self._unreadable(f"not a readable CSV file ({exc})") from None

    def _typed(self, cells: Sequence[str]) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, cell in zip(self.columns, cells, strict=True):
            text = cell.strip()
            if not text:
                continue  # an empty cell is a missing value
            spec = self._fields.get(name)
            values[name] = text if spec is None else typed_cell(spec.type, text)
        return values

    def _parquet_rows(self, size: int) -> Iterator[tuple[int, dict[str, Any], str]]:
        row = 0
        parquet = self._pq.ParquetFile(self.path)  # type: ignore[union-attr]
        for batch in parquet.iter_batches(batch_size=size):
            for values in batch.to_pylist():
                row += 1
                yield row, {k: v for k, v in values.items() if v is not None}, ""

    def _open_csv(self) -> Any:
        return self.path.open(encoding="utf-8-sig", newline="")

    def _unreadable(self, why: str) -> InputError:
        return InputError(f"{self.path.name}: {why}", {"path": str(self.path)})


def typed_cell(kind: str, text: str) -> Any:
    """A CSV cell as its field's type; text that is not of the type is kept as text, so the
    flow's validation names the problem in its own words."""
    if kind == "integer":
        try:
            return int(text)
        except ValueError:
            return _number(text)
    if kind == "number":
        return _number(text)
    if kind == "boolean":
        lowered = text.lower()
        return True if lowered in TRUE else False if lowered in FALSE else text
    return text


def _number(text: str) -> Any:
    try:
        return float(text) if "_" not in text else text  # float() reads "1_000": a typo here
    except ValueError:
        return text


def _subject(value: Any) -> str | None:
    """A subject id as text: Parquet files often hold them as integers."""
    if value is None or value == "":
        return None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return value if isinstance(value, str) else repr(value)


# ---- decision files --------------------------------------------------------------------


class DecisionSink(Protocol):
    def write(self, rows: Sequence[int], decided: Sequence[Decision]) -> None: ...

    def close(self) -> None: ...


def output_columns(signals: Sequence[str]) -> list[str]:
    return [*OUTPUT_COLUMNS, *(f"{name}_score" for name in signals)]


def output_row(row: int, decision: Decision, signals: Sequence[str]) -> dict[str, Any]:
    """One decided case as a decision file holds it."""
    out: dict[str, Any] = {
        "row": row,
        "subject_id": decision.subject_id,
        "decision_id": decision.id,
        "seq": decision.seq,
        "action": decision.action,
        "value": decision.value,
        "status": decision.status,
        "rule": decision.rule,
        "reason": decision.reason,
        "fallback": decision.fallback,
        "recorded_at": decision.recorded_at,
    }
    for name in signals:
        signal = decision.signals.get(name)  # a failed signal has no score
        out[f"{name}_score"] = signal.get("score") if isinstance(signal, Mapping) else None
    return out


def open_sink(path: Path, signals: Sequence[str]) -> DecisionSink:
    """A new decision file at ``path`` (``.csv`` or ``.parquet``); an existing file is never
    overwritten: it may hold the only list of an earlier run's decision ids."""
    kind = file_format(path, "decision")
    if path.exists():
        raise InputError(
            f"{path} already exists: choose another --out file, or remove it first",
            {"path": str(path)},
        )
    if not path.parent.is_dir():
        raise InputError(f"no folder {path.parent} for {path.name}", {"path": str(path)})
    if kind == "parquet":
        return _ParquetSink(path, signals)
    return _CsvSink(path, signals)


class _CsvSink:
    def __init__(self, path: Path, signals: Sequence[str]) -> None:
        self._signals = list(signals)
        self._handle = path.open("w", encoding="utf-8", newline="")
        self._writer = csv.DictWriter(self._handle, output_columns(self._signals))
        self._writer.writeheader()

    def write(self, rows: Sequence[int], decided: Sequence[Decision]) -> None:
        self._writer.writerows(
            output_row(r, d, self._signals) for r, d in zip(rows, decided, strict=True)
        )
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


class _ParquetSink:
    def __init__(self, path: Path, signals: Sequence[str]) -> None:
        pq = _pyarrow_parquet()
        import pyarrow as pa  # noqa: PLC0415 - optional extra, present once pq is

        self._pa = pa
        self._signals = list(signals)
        text, number, whole = pa.string(), pa.float64(), pa.int64()
        types = {"row": whole, "seq": whole, "value": number}
        self._schema = pa.schema(
            [(c, types.get(c, text)) for c in OUTPUT_COLUMNS]
            + [(f"{s}_score", number) for s in self._signals]
        )
        self._writer = pq.ParquetWriter(path, self._schema)

    def write(self, rows: Sequence[int], decided: Sequence[Decision]) -> None:
        out = [output_row(r, d, self._signals) for r, d in zip(rows, decided, strict=True)]
        self._writer.write_table(self._pa.Table.from_pylist(out, schema=self._schema))

    def close(self) -> None:
        self._writer.close()
