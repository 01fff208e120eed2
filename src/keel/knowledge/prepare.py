"""Preparing a document version before anything is written: read the bytes, hash the text,
cut it into chunks and embed the chunks whose text is new.

This all happens outside the write transaction (embedding takes seconds; a write
transaction holds the store's write lock). The service then writes the prepared version,
its ledger entry and its index rows in one transaction.

A version is identified by the SHA-256 of its *extracted text*, not of the file's bytes:
the text is what is indexed, searched and cited (every chunk's span is an offset into it),
so a file saved again with the same text (a new PDF timestamp, another zip compression of
a DOCX) is the same version, and any change to what a reader could be shown is a new one.
The bytes' SHA-256 is recorded beside it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

import numpy as np
from numpy.typing import NDArray

from keel.embeddings.spaces import Embedder
from keel.errors import InputError
from keel.index.records import IndexedChunk
from keel.knowledge.chunking import Chunk, chunk
from keel.knowledge.documents import ExtractedText, read_document

OVERLAP_TOKENS = 32  # consecutive chunks of a section share this many tokens
MAX_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Extracted:
    """A document's bytes read into text, with the hashes that identify it."""

    text: ExtractedText
    version: str  # sha256 of the extracted text (UTF-8)
    bytes_sha256: str


@dataclass(frozen=True)
class Prepared:
    """A version ready to write: its chunks with vectors, and how many were embedded now."""

    extracted: Extracted
    chunks: list[IndexedChunk]
    embedded: int
    reused: int


def extract(data: bytes, source_uri: str, media_type: str | None) -> Extracted:
    """Read ``data`` (the format from ``media_type``, else the source's suffix)."""
    if not isinstance(data, bytes | bytearray):
        raise InputError("a document's content must be bytes")
    if len(data) > MAX_BYTES:
        raise InputError(
            f"{source_uri}: {len(data)} bytes; a document may have at most {MAX_BYTES}",
            {"source_uri": source_uri[:300], "bytes": len(data)},
        )
    name = PurePosixPath(source_uri.rstrip("/")).name or source_uri
    extracted = read_document(bytes(data), name, media_type)
    if not extracted.text.strip():
        raise InputError(
            f"{source_uri}: the document has no text to index", {"source_uri": source_uri[:300]}
        )
    return Extracted(
        extracted,
        hashlib.sha256(extracted.text.encode("utf-8")).hexdigest(),
        hashlib.sha256(bytes(data)).hexdigest(),
    )


def chunk_id(document_id: str, revision: int, ordinal: int) -> str:
    """Unique across the index: a document's revision numbers are never reused."""
    digest = hashlib.sha256(f"{document_id}\x00{revision}\x00{ordinal}".encode()).hexdigest()
    return f"ch_{digest[:40]}"


def prepare(
    extracted: Extracted,
    embedder: Embedder,
    document_id: str,
    revision: int,
    previous: Mapping[str, NDArray[np.float32]],
) -> Prepared:
    """Cut ``extracted`` into chunks of the embedder's token limit and give each a vector:
    identical texts within the version are one chunk (``chunk`` deduplicates them), and a
    text the previous version had keeps its vector from ``previous`` (by content hash)."""
    space = embedder.space
    pieces: list[Chunk] = chunk(
        extracted.text,
        embedder.tokenizer,
        space.max_tokens,
        min(OVERLAP_TOKENS, space.max_tokens // 4),
    )
    if not pieces:
        raise InputError(f"{extracted.text.name}: the document has no text to index")
    new = [p for p in pieces if p.content_hash not in previous]
    vectors: dict[str, NDArray[np.float32]] = {}
    if new:
        rows = embedder.embed([p.text for p in new])
        vectors = {p.content_hash: rows[i] for i, p in enumerate(new)}
    chunks = [
        IndexedChunk(
            chunk_id(document_id, revision, p.ordinal),
            p.ordinal,
            p.text,
            p.start,
            p.end,
            p.page,
            vectors[p.content_hash] if p.content_hash in vectors else previous[p.content_hash],
        )
        for p in pieces
    ]
    return Prepared(extracted, chunks, len(new), len(pieces) - len(new))
