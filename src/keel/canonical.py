"""Canonical JSON (Keel canonical form v1): the bytes that hashes and signatures cover.

Rules: UTF-8; object keys sorted by code point (keys are strings: Keel's records never hold
others); no insignificant whitespace; integers in decimal; floats in Python's shortest
round-trip form (``repr``), so ``1`` and ``1.0`` differ and ``-0.0`` stays ``-0.0``; NaN and
infinities rejected; tuples written as arrays; NumPy scalars written as the Python number
they hold. The bytes parse back to an equal value, and equal values give equal bytes.

The work is done by the standard library's C encoder: canonicalising a decision record is
on every decision's path.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from keel.errors import KeelError


class CanonicalFormError(KeelError):
    """A value has no canonical JSON form (NaN, infinity, an unknown type), so it cannot be
    recorded; bad input is refused before it gets here (422 if it ever does)."""

    code = "not_canonicalisable"


def _default(value: Any) -> Any:
    # NumPy scalars and similar number-likes reach here from model outputs.
    if hasattr(value, "item") and not isinstance(value, dict | list | tuple):
        item = value.item()
        if isinstance(item, bool | int | float | str) or item is None:
            return item
    raise TypeError(f"type {type(value).__name__} has no canonical JSON form")


_ENCODER = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_default,
)


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value``."""
    try:
        return _ENCODER.encode(value)
    except ValueError as exc:
        raise CanonicalFormError(f"NaN and infinity have no canonical JSON form ({exc})") from exc
    except TypeError as exc:
        raise CanonicalFormError(f"value has no canonical JSON form: {exc}") from exc


def canonical_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


def sha256_hex(value: Any) -> str:
    """SHA-256 of the canonical form, as lowercase hex."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
