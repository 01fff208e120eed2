"""Autonomy levels: how much a flow may do on its own, lowest to highest (see DESIGN.md)."""

from __future__ import annotations

from enum import StrEnum


class Autonomy(StrEnum):
    SHADOW = "shadow"
    ADVISORY = "advisory"
    SUPERVISED = "supervised"
    AUTONOMOUS = "autonomous"
