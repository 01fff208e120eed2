"""The access pre-filter every index query is built on, and the checks on what callers pass.

The filter is one SQL fragment, ``PERMITTED_WHERE``, that every keyword and vector query
embeds in its own WHERE clause (the re-check embeds its ``READABLE_WHERE`` part): a chunk
qualifies only if it is in the given space and collections, its document version was live
at the instant searched (the live version, or the one live "as of" an earlier instant),
that version is valid at that instant, and the document's *current* access list shares a
key with the caller's permitted set. There is no other parameter a caller could pass to
widen it, and an empty permitted set matches nothing.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence

import numpy as np
from numpy.typing import NDArray
from sqlalchemy import TextClause, bindparam, text

from keel.errors import InputError
from keel.index.records import IndexedChunk, Validity, Weights

MAX_K = 1000
MAX_KEYS = 1000  # access keys in one permitted set or access list
MAX_QUERY_CHARS = 8192
MAX_ID = 128
MAX_CHUNKS = 20_000  # per version: SQLite binds at most 32,766 values in one statement
ACCESS_KEY = re.compile(r"[a-z][a-z_]*:\S.{0,300}", re.DOTALL)

# Chunk ``c`` joined to its document version ``d``: the version was live at ``:live_at``
# (``live_from <= live_at < live_until``; ``live_at`` is +infinity for "the live version
# now", so only an open period matches), it is valid at ``:now`` (the instant searched),
# and the document's current access list shares a key with ``:permitted``. Access lists
# belong to the document, not the version, so an "as of" search never sees a revoked key.
READABLE_WHERE = """
    d.live_from <= :live_at
    AND (d.live_until IS NULL OR d.live_until > :live_at)
    AND (d.valid_from IS NULL OR d.valid_from <= :now)
    AND (d.valid_until IS NULL OR d.valid_until > :now)
    AND d.document_id IN (SELECT a.document_id FROM index_access a WHERE a.key IN :permitted)
"""
# ...and restricted to one space and the collections searched.
PERMITTED_WHERE = f"""
    c.space_id = :space_id
    AND d.collection IN :collections
    AND {READABLE_WHERE}
"""
PERMITTED_FROM = """
    index_chunks c
    JOIN index_versions d ON d.document_id = c.document_id AND d.version = c.version
"""
PERMITTED_SEQS = f"SELECT c.seq FROM {PERMITTED_FROM} WHERE {PERMITTED_WHERE}"  # noqa: S608 - our constant SQL; values are bound


def permitted_query(sql: str) -> TextClause:
    """``sql`` (which embeds the permitted filter) with its list parameters expanded."""
    return text(sql).bindparams(
        bindparam("collections", expanding=True), bindparam("permitted", expanding=True)
    )


def instant_params(now: float, as_of: float | None) -> dict[str, float]:
    """The instants ``READABLE_WHERE`` binds: validity is judged at ``as_of`` when given
    (else ``now``), and the version must have been live at ``as_of`` (else be live now)."""
    if as_of is None:
        return {"now": now, "live_at": math.inf}
    return {"now": as_of, "live_at": as_of}


def filter_params(
    space_id: str,
    collections: Sequence[str],
    permitted: frozenset[str],
    now: float,
    as_of: float | None = None,
) -> dict[str, object]:
    return {
        "space_id": space_id,
        "collections": list(collections),
        "permitted": sorted(permitted),
        **instant_params(now, as_of),
    }


def check_instant(value: object, what: str) -> float:
    """An instant in epoch seconds: a finite number (NaN or infinity would match every
    period or none, silently)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(
            f"{what} must be a finite number of epoch seconds", {"value": str(value)[:64]}
        )
    return float(value)


def check_keys(keys: Iterable[str], what: str) -> frozenset[str]:
    """Access keys as a set; a malformed key is refused rather than stored or matched, so
    a typo cannot silently grant or deny."""
    if isinstance(keys, str):
        raise InputError(f"{what} must be a set of access keys, not one string")
    out = frozenset(keys)
    if len(out) > MAX_KEYS:
        raise InputError(f"{what} has {len(out)} access keys; at most {MAX_KEYS}")
    for key in out:
        if not isinstance(key, str) or not ACCESS_KEY.fullmatch(key):
            raise InputError(
                f"{what}: {key!r} is not an access key (kind:name, such as "
                "person:alice@bank.example, group:credit-risk, role:reader)",
                {"key": str(key)[:320]},
            )
    return out


def check_id(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or len(value) > MAX_ID:
        raise InputError(f"{what} must be a non-empty string of at most {MAX_ID} characters")
    return value


def check_validity(validity: Validity) -> None:
    for name in ("valid_from", "valid_until"):
        value = getattr(validity, name)
        if value is not None and not math.isfinite(value):
            raise InputError(f"{name} must be a finite number of epoch seconds")
    start, end = validity.valid_from, validity.valid_until
    if start is not None and end is not None and end <= start:
        raise InputError("valid_until must be after valid_from")


def as_vector(vector: object, dimension: int | None, what: str) -> NDArray[np.float32]:
    """``vector`` as a 1-D float32 array of the space's dimension, finite and non-zero."""
    try:
        array = np.asarray(vector, dtype=np.float32)
    except (TypeError, ValueError) as error:
        raise InputError(f"{what} is not a vector of numbers: {error}") from error
    if array.ndim != 1 or array.size == 0:
        raise InputError(f"{what} must be a non-empty one-dimensional vector")
    if dimension is not None and array.size != dimension:
        raise InputError(
            f"{what} has dimension {array.size}; the embedding space has {dimension}",
            {"dimension": int(array.size), "expected": dimension},
        )
    if not np.isfinite(array).all():
        raise InputError(f"{what} holds NaN or infinite values")
    if not array.any():
        raise InputError(f"{what} is all zeros")
    return array


def check_chunks(chunks: Sequence[IndexedChunk]) -> list[NDArray[np.float32]]:
    """The chunks' vectors, after checking every chunk; all must share one dimension."""
    if not chunks:
        raise InputError("a document version needs at least one chunk")
    if len(chunks) > MAX_CHUNKS:
        raise InputError(f"a document version may have at most {MAX_CHUNKS} chunks")
    vectors = []
    seen: set[str] = set()
    for chunk in chunks:
        check_id(chunk.chunk_id, "chunk_id")
        if chunk.chunk_id in seen:
            raise InputError(f"chunk id {chunk.chunk_id} is given twice")
        seen.add(chunk.chunk_id)
        if not chunk.text.strip():
            raise InputError(f"chunk {chunk.chunk_id} has no text")
        if chunk.ordinal < 0 or chunk.start < 0 or chunk.end < chunk.start:
            raise InputError(
                f"chunk {chunk.chunk_id}: ordinal and span must be non-negative, start <= end"
            )
        vectors.append(as_vector(chunk.vector, None, f"the vector of chunk {chunk.chunk_id}"))
    if len({v.size for v in vectors}) > 1:
        raise InputError("the chunks' vectors differ in dimension")
    return vectors


def check_search(
    collections: Sequence[str], query_text: str, has_vector: bool, k: int, weights: Weights
) -> None:
    if isinstance(collections, str) or not collections:
        raise InputError("name at least one collection to search")
    for name in collections:
        check_id(name, "collection")
    if not isinstance(query_text, str) or len(query_text) > MAX_QUERY_CHARS:
        raise InputError(f"the query text must be a string of at most {MAX_QUERY_CHARS} chars")
    if not query_text.strip() and not has_vector:
        raise InputError("the query is empty: give query text, a query vector, or both")
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= MAX_K:
        raise InputError(f"k must be an integer from 1 to {MAX_K}", {"k": str(k)})
    numbers = (weights.keyword, weights.vector, weights.rrf_k)
    if not all(math.isfinite(w) and w >= 0 for w in numbers) or weights.rrf_k <= 0:
        raise InputError("fusion weights must be finite and >= 0, and rrf_k > 0")
    if weights.keyword == 0 and weights.vector == 0:
        raise InputError("at least one fusion weight must be above 0")
    if not 1 <= weights.candidates <= MAX_K:
        raise InputError(f"candidates must be from 1 to {MAX_K}")


WORD = re.compile(r"\w+", re.UNICODE)


def query_words(query_text: str) -> list[str]:
    """The words of a query, in order and without repeats: each backend quotes them
    itself, so no operator or quote in user text reaches the keyword engine's syntax."""
    seen: dict[str, None] = {}
    for word in WORD.findall(query_text.lower()):
        seen.setdefault(word, None)
    return list(seen)[:64]
