"""Reasons people give for governance acts (reviews, policy changes, autonomy, rollouts)."""

from __future__ import annotations

from typing import Any

from keel.errors import InputError
from keel.text import free_text

MAX_REASON = 2000


def required_reason(reason: Any, act: str) -> str:
    """The reason, stripped; ``InputError`` when it is missing, blank or too long.

    ``act`` names what needs it, as in "a review needs a reason, in words".
    """
    text = reason.strip() if isinstance(reason, str) else ""
    if not text:
        raise InputError(f"{act} needs a reason, in words", {"field": "reason"})
    if len(text) > MAX_REASON:
        raise InputError(
            f"the reason for {act} is at most {MAX_REASON} characters", {"field": "reason"}
        )
    return free_text(text, "reason")
