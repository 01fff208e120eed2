"""Model files stored by content hash, so a flow version names exactly the model it runs.

A proposal that changes a flow's model stores the new file in the ``model_artifacts`` table;
activation pins it. Each process materialises a pinned file once into a local cache folder
(``.keel/models/`` beside the keys) and loads it from there on first use, checking the hash
again (see loading.py).
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import replace
from pathlib import Path

from sqlalchemy import Connection, select

from keel.errors import InputError, IntegrityError, NotFoundError
from keel.flows import SignalSpec
from keel.ledger.records import iso_time
from keel.signals.adapters import Model, file_version
from keel.signals.loading import describe_model
from keel.store.database import Database
from keel.store.schema import model_artifacts

MAX_ARTIFACT = 512 * 1024 * 1024


def pinnable(spec: SignalSpec) -> bool:
    """Model files are pinned; Python callables are code, versioned with the project."""
    return not spec.model.startswith("python:")


def store_in(conn: Connection, path: Path, now: float) -> str:
    """Store a model file (once) and return its version."""
    if not path.is_file():
        raise InputError(f"no model file at {path}", {"path": str(path)})
    if path.stat().st_size > MAX_ARTIFACT:
        raise InputError(f"{path.name} is larger than {MAX_ARTIFACT >> 20} MiB", {})
    version = file_version(path)
    exists = conn.execute(
        select(model_artifacts.c.version).where(model_artifacts.c.version == version)
    ).first()
    if not exists:
        data = path.read_bytes()
        conn.execute(
            model_artifacts.insert().values(
                version=version,
                filename=path.name,
                size=len(data),
                data=data,
                created_at=iso_time(now),
            )
        )
    return version


def materialise(db: Database, cache: Path, version: str) -> Path:
    """The pinned model file on local disk (written once, atomically, hash checked)."""
    with db.read() as conn:
        found = conn.execute(
            select(model_artifacts.c.filename).where(model_artifacts.c.version == version)
        ).scalar()
    if found is None:
        raise NotFoundError(f"model version {version} is not in the store", {"version": version})
    target = cache / f"{version.removeprefix('sha256:')}{Path(str(found)).suffix}"
    if target.is_file() and file_version(target) == version:
        return target
    with db.read() as conn:
        data = conn.execute(
            select(model_artifacts.c.data).where(model_artifacts.c.version == version)
        ).scalar()
    if data is None or "sha256:" + hashlib.sha256(data).hexdigest() != version:
        raise IntegrityError(
            f"stored model {version} does not match its hash: the file was changed outside Keel",
            {"version": version},
        )
    cache.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(target.suffix + f".{os.getpid()}.tmp")
    partial.write_bytes(data)
    partial.replace(target)
    return target


def load_pinned(db: Database, cache: Path, spec: SignalSpec, version: str) -> Model:
    """A pinned model version, described now and loaded (hash-checked again) on first use."""
    path = materialise(db, cache, version)
    return describe_model(replace(spec, model=str(path)), path.parent)
