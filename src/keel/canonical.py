"""Canonical JSON (Keel canonical form v1): the bytes that hashes and signatures cover.

Rules: UTF-8; object keys sorted by code point and unique strings; no insignificant
whitespace; integers in decimal; floats in Python's shortest round-trip form (``repr``);
``-0.0`` written as ``0.0``; NaN and infinities rejected; tuples written as arrays;
``True``/``False``/``None`` as ``true``/``false``/``null``. Two values that are equal as
JSON data produce the same bytes, and the bytes parse back to an equal value.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

from keel.errors import KeelError

CANONICAL_FORM_VERSION = 1


class CanonicalFormError(KeelError):
    code = "not_canonicalisable"


def _normalise(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise CanonicalFormError(
                f"{path or 'value'} is {value!r}; NaN and infinity have no canonical JSON form",
                {"path": path},
            )
        return 0.0 if value == 0 else value
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise CanonicalFormError(
                    f"{path or 'value'} has a non-string key {key!r}", {"path": path}
                )
            out[key] = _normalise(item, f"{path}.{key}" if path else key)
        return out
    if isinstance(value, list | tuple):
        return [_normalise(item, f"{path}[{i}]") for i, item in enumerate(value)]
    # NumPy scalars and similar number-likes reach here from model outputs.
    if hasattr(value, "item"):
        return _normalise(value.item(), path)
    raise CanonicalFormError(
        f"{path or 'value'} has type {type(value).__name__}, which has no canonical JSON form",
        {"path": path},
    )


def canonical_json(value: Any) -> str:
    """Return the canonical JSON text of ``value``."""
    return json.dumps(
        _normalise(value, ""),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def canonical_bytes(value: Any) -> bytes:
    return canonical_json(value).encode("utf-8")


def sha256_hex(value: Any) -> str:
    """SHA-256 of the canonical form, as lowercase hex."""
    return hashlib.sha256(canonical_bytes(value)).hexdigest()
