"""A signal's model: described when the project opens, loaded on first use.

Opening a project reads each model file once to hash it (its version, which decisions,
changes and replays compare) but deserialises nothing: importing scikit-learn, skops or
onnxruntime and loading a model takes seconds, and most commands (history, reviews,
reports, the ledger) never score a case. A ``LazyModel`` knows its name, spec, features,
kind and version at once, and loads the model the first time it is needed, once per
process, under a lock.

Loading reads the file's bytes once, checks that they hash to the version recorded at open,
and deserialises those same bytes, so there is no moment between the check and the load in
which the file could change: a file replaced after the project opened is refused with an
``IntegrityError`` naming it (what Keel acts on is what it recorded).

Whoever is about to time a model calls ``ensure_loaded`` first (the runner does), so the
first case after open never pays the load against its timeout. Python callables are code,
imported at open as before.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterable
from pathlib import Path

from keel.errors import IntegrityError
from keel.flows import SignalSpec
from keel.signals.adapters import (
    MODEL_KINDS,
    Model,
    ModelOutput,
    file_version,
    load_callable,
    load_file,
    model_file,
)
from keel.signals.rows import Rows


class LazyModel:
    """A model file described at open (its version is the file's hash) and loaded once,
    hash-checked, the first time it is used."""

    inline = True  # both file kinds compute in this process (see runner.py)

    def __init__(self, spec: SignalSpec, path: Path, version: str) -> None:
        self.name = spec.name
        self.spec = spec
        self.features = spec.features
        self.path = path
        self.version = version
        self.kind = MODEL_KINDS[path.suffix.lower()]
        self._model: Model | None = None
        self._lock = threading.Lock()

    @property
    def is_loaded(self) -> bool:
        return self._model is not None

    def load(self) -> Model:
        """The loaded model: deserialised on the first call (others wait for it), then kept.
        A failure is raised to every caller and tried again on the next call."""
        found = self._model
        if found is not None:
            return found
        with self._lock:
            if self._model is None:
                self._model = load_file(self.spec, self.path, self.version, self._verified())
            return self._model

    def _verified(self) -> bytes:
        """The file's bytes, once they hash to the version recorded when it was described."""
        try:
            data = self.path.read_bytes()
        except OSError as exc:
            raise IntegrityError(
                f"signal '{self.name}': model file {self.path} cannot be read any more "
                f"({exc.strerror}); it was there, as version {self.version[:19]}, when the "
                "project was opened. Put the file back, or reopen the project",
                {"signal": self.name, "path": str(self.path), "version": self.version},
            ) from exc
        found = "sha256:" + hashlib.sha256(data).hexdigest()
        if found != self.version:
            raise IntegrityError(
                f"signal '{self.name}': model file {self.path} changed after the project was "
                f"opened (it is now {found[:19]}, not {self.version[:19]}): Keel decides "
                "only with the model version it recorded. Put the recorded file back; a new "
                "model is a new version, which runs once the project is reopened (in "
                "production mode, once proposed, approved and activated)",
                {"signal": self.name, "path": str(self.path), "version": self.version,
                 "found": found},
            )  # fmt: skip
        return data

    def predict_many(self, rows: Rows) -> list[ModelOutput]:
        return self.load().predict_many(rows)


def describe_model(spec: SignalSpec, project_dir: Path) -> Model:
    """The model a signal names, not yet loaded (a Python callable is imported now).
    Raises ``ModelError`` when the file is missing or of an unknown format."""
    if spec.model.startswith("python:"):
        return load_callable(spec, project_dir)
    path = model_file(spec, project_dir)
    return LazyModel(spec, path, file_version(path))


def load_model(spec: SignalSpec, project_dir: Path) -> Model:
    """The model a signal names, loaded now; raise ``ModelError`` naming the file on any
    failure (for commands that exist to check a model, and for one-off uses)."""
    return loaded(describe_model(spec, project_dir))


def loaded(model: Model) -> Model:
    """``model`` itself once loaded: what it is (``SklearnModel``…) rather than its wrapper."""
    return model.load() if isinstance(model, LazyModel) else model


def ensure_loaded(models: Iterable[Model]) -> None:
    """Load every model of ``models`` that is not loaded yet (before any of them is timed)."""
    for model in models:
        loaded(model)
