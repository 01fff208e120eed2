"""Reference profiles: what drift is measured against, computed once and stored by hash.

A profile holds, per column, exactly what the statistics need — for a numeric column its
finite values sorted with the counts of missing and infinite ones, for a categorical column
the count per category and of missing values — so comparing a new window never rereads or
re-sorts the reference. A profile is named by the SHA-256 of the data it was built from
(and of this format's version): building it again from the same data finds the stored one.

Profiles live as compressed NumPy archives (``<id>.npz``) in a folder of the project
(``.keel/profiles`` by default).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from keel.errors import InputError
from keel.monitor.stats import (
    CATEGORICAL_METHODS,
    NUMERIC_METHODS,
    CategoricalSample,
    NumericSample,
    Statistic,
    categorical_drift,
    numeric_drift,
)

PROFILE_FORMAT = 1


@dataclass(frozen=True)
class Profile:
    id: str
    source: str
    rows: int
    columns: dict[str, NumericSample | CategoricalSample]

    def kind(self, column: str) -> str:
        return "numeric" if isinstance(self.columns[column], NumericSample) else "categorical"


def _numeric(values: np.ndarray) -> bool:
    return values.dtype.kind in "iuf"


def build_profile(table: Mapping[str, Sequence[Any] | np.ndarray], source: str) -> Profile:
    """A profile of ``table`` (column name → values); numbers (not booleans) are numeric,
    everything else categorical."""
    if not table:
        raise InputError(f"{source}: no columns to profile", {"source": source})
    lengths = {len(v) for v in table.values()}
    if len(lengths) != 1:
        raise InputError(f"{source}: columns of different lengths", {"source": source})
    digest = hashlib.sha256(f"keel-profile-{PROFILE_FORMAT}".encode())
    columns: dict[str, NumericSample | CategoricalSample] = {}
    for name in sorted(table):
        values = np.asarray(table[name])
        digest.update(name.encode() + b"\0" + str(values.dtype).encode() + b"\0")
        if _numeric(values):
            digest.update(np.ascontiguousarray(values, dtype=np.float64).tobytes())
            columns[name] = NumericSample.of(name, values.astype(np.float64))
        else:
            digest.update(json.dumps([_text(v) for v in values.tolist()]).encode())
            columns[name] = CategoricalSample.of(values.tolist())
    return Profile(digest.hexdigest(), source, lengths.pop(), columns)


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class ProfileStore:
    """Profiles on disk, one compressed archive each, found by id."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def path(self, profile_id: str) -> Path:
        return self.folder / f"{profile_id}.npz"

    def save(self, profile: Profile) -> Path:
        arrays: dict[str, np.ndarray] = {}
        manifest: dict[str, Any] = {"id": profile.id, "source": profile.source,
                                    "rows": profile.rows, "columns": {}}  # fmt: skip
        for i, (name, sample) in enumerate(profile.columns.items()):
            if isinstance(sample, NumericSample):
                arrays[f"c{i}"] = sample.values
                entry = {"kind": "numeric", "missing": sample.missing,
                         "infinite": sample.infinite}  # fmt: skip
            else:
                entry = {"kind": "categorical", "missing": sample.missing,
                         "counts": sample.counts}  # fmt: skip
            manifest["columns"][name] = {"index": i, "rows": sample.rows, **entry}
        arrays["manifest"] = np.frombuffer(json.dumps(manifest).encode(), dtype=np.uint8)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.path(profile.id)
        partial = target.with_suffix(".tmp.npz")
        np.savez_compressed(partial, **arrays)  # type: ignore[arg-type]
        partial.replace(target)
        return target

    def load(self, profile_id: str) -> Profile:
        path = self.path(profile_id)
        if not path.is_file():
            raise InputError(f"no stored profile {profile_id}", {"profile": profile_id})
        with np.load(path) as archive:
            manifest = json.loads(archive["manifest"].tobytes())
            columns: dict[str, NumericSample | CategoricalSample] = {}
            for name, entry in manifest["columns"].items():
                if entry["kind"] == "numeric":
                    columns[name] = NumericSample(
                        archive[f"c{entry['index']}"], entry["missing"], entry["infinite"],
                        entry["rows"],
                    )  # fmt: skip
                else:
                    columns[name] = CategoricalSample(
                        dict(entry["counts"]), entry["missing"], entry["rows"]
                    )
        return Profile(manifest["id"], manifest["source"], manifest["rows"], columns)

    def profile(self, table: Mapping[str, Sequence[Any] | np.ndarray], source: str) -> Profile:
        """The stored profile of this data, built and stored the first time."""
        built = build_profile(table, source)
        if self.path(built.id).is_file():
            return self.load(built.id)
        self.save(built)
        return built


def compare(
    reference: Profile,
    current: Mapping[str, Sequence[Any] | np.ndarray],
    methods: Sequence[str] | None = None,
) -> list[Statistic]:
    """Every statistic that applies to each reference column (or only ``methods``), against
    the current data; a column missing from the current data is an error naming it."""
    missing = [c for c in reference.columns if c not in current]
    if missing:
        raise InputError(
            f"the current data lacks column{'s' if len(missing) > 1 else ''} "
            f"{', '.join(missing)} of reference profile {reference.id[:12]}",
            {"missing": missing},
        )
    out: list[Statistic] = []
    for name, sample in reference.columns.items():
        values = current[name]
        if isinstance(sample, NumericSample):
            chosen = [m for m in methods or NUMERIC_METHODS if m in NUMERIC_METHODS]
            out += numeric_drift(name, sample, values, chosen)
        else:
            chosen = [m for m in methods or CATEGORICAL_METHODS if m in CATEGORICAL_METHODS]
            out += categorical_drift(name, sample, values, chosen)
    return out
