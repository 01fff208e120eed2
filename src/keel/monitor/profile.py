"""Reference profiles: what drift is measured against, computed once and stored by hash.

A profile holds, per column, exactly what the statistics need — for a numeric column its
finite values sorted with the counts of missing and infinite ones, for a categorical column
the count per category and of missing values — so comparing a new window never rereads or
re-sorts the reference. A profile is named by the SHA-256 of its content (and of this
format's version): the same data always gives the same id, and a stored profile is never
rebuilt. A profile built from a file is also found by the SHA-256 of the file's bytes, so a
later run hashes the file and loads the stored profile instead of reading the data again.

A column's kind comes from its values, except where a profile is built for a flow: a column
the flow declares a category (``type: string``, or ``allowed`` values) is profiled as
categories, as the flow's windows hold it, so an integer-coded field such as
``checking: 11`` is compared category by category rather than reported as not compared.

Profiles live as NumPy archives (``<id>.npz``) in a folder of the project
(``.keel/profiles`` by default), with ``sources/<file hash>`` naming the profile of each
file profiled.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from keel.errors import InputError
from keel.monitor import compat
from keel.monitor.embeddings import (
    EMBEDDING_METHODS,
    EmbeddingSample,
    embedding_drift,
    is_embedding,
)
from keel.monitor.stats import (
    CATEGORICAL_METHODS,
    NUMERIC_METHODS,
    THRESHOLDS,
    CategoricalSample,
    NumericSample,
    Statistic,
    as_array,
    categorical_drift,
    missing_share,
    numeric_drift,
)

PROFILE_FORMAT = 2
MODES = ("keel", "evidently")
Sample = NumericSample | CategoricalSample | EmbeddingSample
Column = Sequence[Any] | np.ndarray | Any  # also an Arrow array or chunked array


@dataclass(frozen=True)
class Profile:
    id: str
    source: str
    rows: int
    columns: dict[str, Sample]

    def kind(self, column: str) -> str:
        return kind_of(self.columns[column])


def kind_of(entry: Sample) -> str:
    if isinstance(entry, NumericSample):
        return "numeric"
    return "embedding" if isinstance(entry, EmbeddingSample) else "categorical"


def is_numeric(values: Column) -> bool:
    """Numbers (not booleans) are numeric; everything else is categorical."""
    arrow_type = getattr(values, "type", None)
    if arrow_type is not None and not isinstance(values, np.ndarray):
        import pyarrow.types as pat  # noqa: PLC0415 - optional extra; Arrow input means it is there

        return bool(pat.is_integer(arrow_type) or pat.is_floating(arrow_type))
    return as_array(values).dtype.kind in "iuf"


def sample(column: str, values: Column, category: bool = False) -> Sample:
    """The column's sample, its kind told by its values unless ``category`` says it is a
    category whatever its values look like."""
    if category:
        return CategoricalSample.of(as_categories(values))
    if is_embedding(values):
        return EmbeddingSample.of(column, values)
    if is_numeric(values):
        return NumericSample.of(column, values)
    return CategoricalSample.of(values)


def as_categories(values: Column) -> Column:
    """A column's values as the categories a flow's window holds them: text, a whole number
    written without a decimal point (a code read from a file with blanks arrives as 11.0;
    the flow recorded 11), missing values None."""
    if not is_numeric(values):
        return values
    return np.array([_code(v) for v in as_array(values).tolist()], dtype=object)


def _code(value: float | int) -> str | None:
    if isinstance(value, float):
        if not np.isfinite(value):
            return None if np.isnan(value) else str(value)
        if value.is_integer():
            return str(int(value))
    return str(value)


def flow_categories(columns: Iterable[str], categorical: frozenset[str]) -> frozenset[str]:
    """The columns of a table that are categories of a flow (``categorical``: its drift
    columns that are, e.g. ``input.checking``), by their own name or without ``input.``:
    a training file's ``checking`` is the flow's ``input.checking``."""
    return frozenset(c for c in columns if c in categorical or f"input.{c}" in categorical)


def _content_id(columns: Mapping[str, Sample]) -> str:
    digest = hashlib.sha256(f"keel-profile-{PROFILE_FORMAT}".encode())
    for name in sorted(columns):
        entry = columns[name]
        if isinstance(entry, NumericSample):
            head = ["numeric", name, entry.missing, entry.infinite, entry.rows, entry.integer]
            digest.update(json.dumps(head).encode())
            digest.update(np.ascontiguousarray(entry.values, dtype=np.float64).tobytes())
        elif isinstance(entry, EmbeddingSample):
            digest.update(json.dumps(["embedding", name, entry.missing, entry.rows]).encode())
            digest.update(np.ascontiguousarray(entry.mean, dtype=np.float64).tobytes())
            digest.update(np.ascontiguousarray(entry.sample, dtype=np.float32).tobytes())
        else:
            head = ["categorical", name, entry.missing, entry.rows, sorted(entry.counts.items())]
            digest.update(json.dumps(head).encode())
    return digest.hexdigest()


def _samples(
    table: Mapping[str, Column], source: str, workers: int, categorical: frozenset[str]
) -> dict[str, Sample]:
    if not table:
        raise InputError(f"{source}: no columns to profile", {"source": source})
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise InputError(f"{source}: columns of different lengths", {"source": source})
    names = sorted(table)
    with ThreadPoolExecutor(workers) as pool:  # sorting releases the GIL
        built = pool.map(lambda n: sample(n, table[n], n in categorical), names)
        return dict(zip(names, built, strict=True))


def build_profile(
    table: Mapping[str, Column],
    source: str,
    workers: int = 2,
    categorical: frozenset[str] = frozenset(),
) -> Profile:
    """A profile of ``table`` (column name → values); the columns in ``categorical`` are
    categories whatever their values, the others typed by their values."""
    columns = _samples(table, source, workers, categorical)
    rows = next(iter(columns.values())).rows
    return Profile(_content_id(columns), source, rows, columns)


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


class ProfileStore:
    """Profiles on disk, one archive each, found by id (or by the hash of a profiled file)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @classmethod
    def of_project(cls, project_dir: Path) -> ProfileStore:
        """The project's own store, ``.keel/profiles``."""
        return cls(project_dir / ".keel" / "profiles")

    def path(self, profile_id: str) -> Path:
        return self.folder / f"{profile_id}.npz"

    def save(self, profile: Profile) -> Path:
        arrays: dict[str, np.ndarray] = {}
        manifest: dict[str, Any] = {"id": profile.id, "source": profile.source,
                                    "rows": profile.rows, "format": PROFILE_FORMAT,
                                    "columns": {}}  # fmt: skip
        for i, (name, entry) in enumerate(profile.columns.items()):
            if isinstance(entry, NumericSample):
                arrays[f"c{i}"] = entry.values
                fields = {"kind": "numeric", "missing": entry.missing,
                          "infinite": entry.infinite, "integer": entry.integer}  # fmt: skip
            elif isinstance(entry, EmbeddingSample):
                arrays[f"c{i}_mean"], arrays[f"c{i}_sample"] = entry.mean, entry.sample
                fields = {"kind": "embedding", "missing": entry.missing}
            else:
                fields = {"kind": "categorical", "missing": entry.missing,
                          "counts": entry.counts}  # fmt: skip
            manifest["columns"][name] = {"index": i, "rows": entry.rows, **fields}
        arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(profile.id)
        partial = target.with_suffix(".tmp.npz")
        np.savez(partial, **arrays)  # type: ignore[arg-type]
        partial.replace(target)
        return target

    def load(self, profile_id: str) -> Profile:
        path = self.path(profile_id)
        if not path.is_file():
            raise InputError(f"no stored profile {profile_id}", {"profile": profile_id})
        try:
            with np.load(path) as archive:
                manifest = json.loads(archive["manifest"].tobytes())
                if manifest.get("format") != PROFILE_FORMAT:
                    raise InputError(
                        f"profile {profile_id[:12]} is in format {manifest.get('format', 1)}; "
                        f"this Keel reads format {PROFILE_FORMAT}: build it again",
                        {"profile": profile_id},
                    )
                columns: dict[str, Sample] = {}
                for name, entry in manifest["columns"].items():
                    if entry["kind"] == "numeric":
                        columns[name] = NumericSample(
                            archive[f"c{entry['index']}"], entry["missing"], entry["infinite"],
                            entry["rows"], entry["integer"],
                        )  # fmt: skip
                    elif entry["kind"] == "embedding":
                        columns[name] = EmbeddingSample(
                            archive[f"c{entry['index']}_mean"],
                            archive[f"c{entry['index']}_sample"], entry["missing"], entry["rows"],
                        )  # fmt: skip
                    else:
                        columns[name] = CategoricalSample(
                            dict(entry["counts"]), entry["missing"], entry["rows"]
                        )
        except (OSError, ValueError, KeyError) as exc:
            raise InputError(
                f"stored profile {profile_id[:12]} cannot be read ({exc}): delete {path} "
                "and build it again",
                {"profile": profile_id},
            ) from None
        return Profile(manifest["id"], manifest["source"], manifest["rows"], columns)

    def find(self, prefix: str) -> Profile:
        """The stored profile whose id starts with ``prefix``."""
        matches = sorted(self.folder.glob(f"{prefix}*.npz"))
        if len(matches) != 1:
            raise InputError(
                f"no stored profile {prefix}" if not matches
                else f"{prefix} names {len(matches)} profiles: give more of the id",
                {"profile": prefix},
            )  # fmt: skip
        return self.load(matches[0].stem)

    def profile(
        self, table: Mapping[str, Column], source: str, categorical: frozenset[str] = frozenset()
    ) -> Profile:
        """The stored profile of this data, stored the first time."""
        built = build_profile(table, source, categorical=categorical)
        if self.path(built.id).is_file():
            return self.load(built.id)
        self.save(built)
        return built

    def of_file(
        self,
        path: Path,
        read: Callable[[Path], Mapping[str, Column]],
        categorical: frozenset[str] = frozenset(),
    ) -> Profile:
        """The profile of a data file: found by the hash of its bytes when stored before,
        otherwise read (``read(path)``), built and stored. ``categorical`` names a flow's
        category columns (``flow_categories``): such a profile is a different one, found
        by the file's hash and those names."""
        if not path.is_file():
            raise InputError(f"{path}: no such file", {"path": str(path)})
        name = file_digest(path)
        if categorical:
            kinds = json.dumps(sorted(categorical)).encode()
            name += "-" + hashlib.sha256(kinds).hexdigest()[:16]
        pointer = self.folder / "sources" / name
        if pointer.is_file():
            profile_id = pointer.read_text().strip()
            if self.path(profile_id).is_file():
                return self.load(profile_id)
        table = read(path)
        profile = self.profile(table, str(path), flow_categories(table, categorical))
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.write_text(profile.id + "\n")
        return profile


@dataclass
class Comparison:
    """Every statistic of a comparison, and what could not be compared (and why)."""

    reference: str
    statistics: list[Statistic]
    problems: list[str] = field(default_factory=list)
    current: dict[str, Sample] = field(default_factory=dict)  # each compared column's sample

    @property
    def drifted(self) -> list[str]:
        """Columns with a drift verdict on any of their statistics but ``missing_share``
        (or on ``missing_share`` alone)."""
        return sorted({s.column for s in self.statistics if s.drift})


def _unusable(column: str, method: str, note: str, mode: str) -> Statistic:
    threshold = THRESHOLDS.get(method, compat.DEFAULT_THRESHOLDS.get(method, float("nan")))
    return Statistic(column, method, None, None, threshold, None, note, mode)


def _compare_column(
    name: str, reference: Sample, values: Column, methods: Sequence[str] | None,
    mode: str, num_method: str | None, cat_method: str | None,
) -> tuple[list[Statistic], Sample]:  # fmt: skip
    if isinstance(reference, EmbeddingSample):
        if not is_embedding(values):
            raise InputError(
                f"column '{name}' is an embedding in the reference but not in the current data",
                {"column": name},
            )
        embedded = EmbeddingSample.of(name, values)
        chosen = [m for m in methods or EMBEDDING_METHODS if m in EMBEDDING_METHODS]
        missing = missing_share(name, reference.missing, reference.rows, embedded.missing,
                                embedded.rows)  # fmt: skip
        return [missing, *embedding_drift(name, reference, embedded, chosen)], embedded
    if is_embedding(values):
        raise InputError(
            f"column '{name}' is an embedding in the current data but not in the reference",
            {"column": name},
        )
    if isinstance(reference, NumericSample):
        current = NumericSample.of(name, values)
        if mode == "evidently":
            method = methods[0] if methods else num_method
            shares = numeric_drift(name, reference, current, ())
            return [*shares, compat.numeric(name, reference, current, method)], current
        chosen = [m for m in methods or NUMERIC_METHODS if m in NUMERIC_METHODS]
        return numeric_drift(name, reference, current, chosen), current
    if is_numeric(values) and len(values) and not _all_missing(values):
        raise InputError(
            f"column '{name}' is categorical in the reference but numeric in the current data",
            {"column": name},
        )
    current_c = CategoricalSample.of(values)
    if mode == "evidently":
        method = methods[0] if methods else cat_method
        shares = categorical_drift(name, reference, current_c, ())
        return [*shares, compat.categorical(name, reference, current_c, method)], current_c
    chosen = [m for m in methods or CATEGORICAL_METHODS if m in CATEGORICAL_METHODS]
    return categorical_drift(name, reference, current_c, chosen), current_c


def _all_missing(values: Column) -> bool:
    array = as_array(values)
    return bool(array.dtype.kind == "f" and np.isnan(array).all())


def check_methods(methods: Sequence[str] | None, mode: str) -> None:
    if mode not in MODES:
        raise InputError(f"unknown mode '{mode}' (one of {', '.join(MODES)})", {"mode": mode})
    if mode == "evidently":
        if methods and len(methods) > 1:
            raise InputError(
                "Evidently-compatible mode takes one method per column type", {"methods": methods}
            )
        for method in methods or ():
            compat.check_method(method)
        return
    known = set(NUMERIC_METHODS) | set(CATEGORICAL_METHODS) | set(EMBEDDING_METHODS)
    for method in methods or ():
        if method not in known:
            raise InputError(
                f"unknown method '{method}' (one of {', '.join(sorted(known))})",
                {"method": method},
            )


def compare(
    reference: Profile,
    current: Mapping[str, Column],
    methods: Sequence[str] | None = None,
    *,
    mode: str = "keel",
    num_method: str | None = None,
    cat_method: str | None = None,
    workers: int = 2,
) -> Comparison:
    """Each reference column against the current data.

    Keel's mode gives every statistic that applies to each column's type (or only those in
    ``methods``); Evidently's mode gives one per column, ``methods[0]`` for every column or
    ``num_method``/``cat_method`` by type, or Evidently's own choice. Both add
    ``missing_share``. A column missing from the current data, or of another type there, is
    a problem named in the result (its statistics have no value and no verdict); columns
    only in the current data are named too."""
    check_methods(methods, mode)
    for method in (num_method, cat_method):
        if method is not None:
            check_methods([method], mode)
    if not current:
        raise InputError("the current data has no columns", {})
    rows = {len(v) for v in current.values()}
    if rows == {0}:
        raise InputError("the current data has no rows", {})
    problems: list[str] = []
    extra = sorted(set(current) - set(reference.columns))
    if extra:
        problems.append(f"not in the reference, not compared: {', '.join(extra)}")
    shared = [name for name in reference.columns if name in current]
    if not shared:
        raise InputError(
            f"the current data shares no column with reference profile {reference.id[:12]}",
            {"reference": sorted(reference.columns), "current": sorted(current)},
        )

    def one(name: str) -> tuple[list[Statistic], Sample] | str:
        try:
            return _compare_column(
                name, reference.columns[name], current[name], methods, mode, num_method,
                cat_method,
            )  # fmt: skip
        except InputError as exc:
            return str(exc)

    statistics: list[Statistic] = []
    samples: dict[str, Sample] = {}
    with ThreadPoolExecutor(workers) as pool:
        results = dict(zip(shared, pool.map(one, shared), strict=True))
    for name in reference.columns:
        if name not in current:
            problems.append(f"column '{name}' is missing from the current data")
            statistics.append(_unusable(name, "missing_share", "missing from the current data",
                                        "keel"))  # fmt: skip
            continue
        result = results[name]
        if isinstance(result, str):
            problems.append(result)
            statistics.append(_unusable(name, "missing_share", result, "keel"))
        else:
            statistics += result[0]
            samples[name] = result[1]
    return Comparison(reference.id, statistics, problems, samples)
