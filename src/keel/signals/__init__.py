"""Signals: what models say about a case, with model name, version and latency."""

from keel.signals.adapters import Model, ModelOutput
from keel.signals.loading import load_model
from keel.signals.runner import SignalResult, SignalRunner

__all__ = ["Model", "ModelOutput", "SignalResult", "SignalRunner", "load_model"]
