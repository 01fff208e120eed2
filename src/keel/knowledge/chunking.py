"""Chunking: a read document cut into passages that an embedding model reads whole.

Sizes are counted in the embedding model's own tokens (a :class:`TokenCounter`), because
the model reads at most so many tokens and silently ignores the rest: a chunk measured in
characters or words could lose its end without anyone seeing it.

The cuts follow the document's structure. A chunk never holds text from two sections (a
section is a heading and what follows it up to the next heading), except that a heading with
no text of its own joins the section nested under it. A PDF chunk never spans two pages.
Inside a section the text is cut, in order of preference, between paragraphs (a list,
table or code block counts as one), then between list items, then between sentences (table
and code lines), and only then between tokens, at a word start where one is near. Pieces
are then merged greedily, up to the limit, so chunks are as large as the structure allows.

Tables are kept whole when they fit and otherwise cut between rows, without repeating the
header row: a chunk's text is always exactly ``extracted.text[start:end]``, so that a
citation shows in place precisely what the model read. The chunk's heading path says where
the rows come from.

Consecutive chunks of one section (and page) overlap by up to ``overlap_tokens`` tokens: the
next chunk starts that many tokens before the previous one ends, moved forward to the start
of a word so that no chunk begins in the middle of one.

Identical chunk texts in one document collapse into the first (``duplicates`` counts the
others). Across documents the same text has the same ``content_hash``; the index keeps
each document's chunks apart, so that withdrawing one never touches another's.
"""

from __future__ import annotations

import hashlib
import itertools
import re
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from dataclasses import dataclass, replace

from keel.embeddings.tokens import TokenCounter
from keel.errors import InputError
from keel.knowledge.documents import Block, ExtractedText, heading_label, stripped, text_spans

Span = tuple[int, int]

# a sentence ends at . ! or ? (perhaps closed by a quote or bracket) followed by white space
SENTENCE_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+")
LINE_END = re.compile(r"\n\s*")
LINED_KINDS = frozenset({"table", "code"})  # cut between lines (table rows), never sentences


@dataclass(frozen=True)
class Chunk:
    """One passage of a document, with the exact span it was cut from."""

    ordinal: int  # position among the document's chunks, from 0
    text: str  # exactly ``extracted.text[start:end]``
    start: int
    end: int
    heading_path: str  # "Leave policy › Parental leave"; "" before the first heading
    token_count: int  # in the embedding model's tokens, special tokens excluded
    content_hash: str  # sha256 of the text, hex
    page: int | None = None  # PDF: the page the chunk is on
    page_end: int | None = None  # PDF: the last page it touches (the same page, by design)
    duplicates: int = 0  # later chunks of the document with the same text, collapsed into this


def chunk(
    extracted: ExtractedText,
    tokenizer: TokenCounter,
    max_tokens: int,
    overlap_tokens: int = 0,
    *,
    deduplicate: bool = True,
) -> list[Chunk]:
    """Cut a document into chunks of at most ``max_tokens`` tokens of ``tokenizer``.

    The result depends only on the text, its blocks, the tokenizer and the sizes: the same
    inputs give the same chunks and hashes. With ``deduplicate=False`` a repeated text is
    kept at each of its spans instead of being counted in the first one's ``duplicates``.
    """
    _check_sizes(tokenizer, max_tokens, overlap_tokens)
    cutter = _Cutter(extracted.text, extracted.blocks, tokenizer, max_tokens, overlap_tokens)
    chunks: list[Chunk] = []
    seen: dict[str, int] = {}
    for blocks in _segments(extracted.blocks):
        path = heading_label(blocks[-1].heading_path)
        page, page_end = blocks[0].page, blocks[-1].page
        for start, end, tokens in cutter.cut(blocks):
            text = extracted.text[start:end]
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
            if deduplicate and digest in seen:
                first = seen[digest]
                chunks[first] = replace(chunks[first], duplicates=chunks[first].duplicates + 1)
                continue
            seen[digest] = len(chunks)
            chunks.append(
                Chunk(len(chunks), text, start, end, path, tokens, digest, page, page_end)
            )
    return chunks


def _check_sizes(tokenizer: TokenCounter, max_tokens: int, overlap_tokens: int) -> None:
    if not 1 <= max_tokens <= tokenizer.max_tokens:
        raise InputError(
            f"chunk size {max_tokens} tokens is out of range: it must be between 1 and the "
            f"embedding model's limit of {tokenizer.max_tokens} tokens, which the model would "
            "silently truncate beyond",
            {"max_tokens": max_tokens, "model_max_tokens": tokenizer.max_tokens},
        )
    if not 0 <= overlap_tokens <= max_tokens // 2:
        raise InputError(
            f"chunk overlap {overlap_tokens} tokens is out of range: it must be between 0 and "
            f"half the chunk size ({max_tokens // 2}), so that each chunk is mostly new text",
            {"overlap_tokens": overlap_tokens, "max_tokens": max_tokens},
        )


def _segments(blocks: Sequence[Block]) -> list[list[Block]]:
    """The document's sections, each cut further at page changes.

    A section holding nothing but headings joins the next section when that one is nested
    under it, so that a title is chunked with the text it introduces."""
    sections: list[list[Block]] = []
    for block in blocks:
        if block.kind == "page_break":
            continue
        if block.kind == "heading" or not sections:
            sections.append([block])
        else:
            sections[-1].append(block)
    merged: list[list[Block]] = []
    for section in sections:
        if merged and all(b.kind == "heading" for b in merged[-1]):
            head, inner = merged[-1][-1].heading_path, section[0].heading_path
            if len(inner) > len(head) and inner[: len(head)] == head:
                merged[-1].extend(section)
                continue
        merged.append(section)
    segments: list[list[Block]] = []
    for section in merged:
        segments.append([section[0]])
        for block in section[1:]:
            if block.page != segments[-1][-1].page:
                segments.append([block])
            else:
                segments[-1].append(block)
    return segments


class _Cutter:
    """Cuts segments into chunk spans, counting with the document's tokens."""

    def __init__(
        self,
        text: str,
        blocks: Sequence[Block],
        tokenizer: TokenCounter,
        max_tokens: int,
        overlap_tokens: int,
    ) -> None:
        self.text = text
        self.tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.overlap = overlap_tokens
        # tokens never cross a block boundary (blocks are separated by white space), so
        # each block is tokenized on its own and its tokens placed in the document
        self.starts: list[int] = []
        self.ends: list[int] = []
        for block in sorted(blocks, key=lambda b: b.start):
            spans = tokenizer.spans(text[block.start : block.end])
            self.starts.extend([block.start + start for start, _ in spans])
            self.ends.extend([block.start + end for _, end in spans])

    def count(self, start: int, end: int) -> int:
        """The number of the document's tokens inside ``text[start:end]``."""
        return max(0, bisect_right(self.ends, end) - bisect_left(self.starts, start))

    def cut(self, blocks: list[Block]) -> list[tuple[int, int, int]]:
        """``(start, end, token_count)`` of each chunk of one segment, in order."""
        budget = self.max_tokens - self.overlap
        cores: list[Span] = []
        for group in _groups(blocks):
            if group[0].kind == "list_item":
                items = [span for block in group for span in self._block(block, budget)]
                cores.extend(self._merge(items, budget))
            else:
                cores.extend(self._block(group[0], budget))
        cores = self._merge(cores, budget)
        spans = [cores[0]] if cores else []
        for previous, core in itertools.pairwise(cores):
            spans.append((self._overlap_start(previous, core), core[1]))
        return [piece for span in spans for piece in self._verified(span)]

    def _block(self, block: Block, budget: int) -> list[Span]:
        span = (block.start, block.end)
        if self.count(*span) <= budget:
            return [span]
        separator = LINE_END if block.kind in LINED_KINDS else SENTENCE_END
        pieces: list[Span] = []
        for part in text_spans(self.text, separator, *span):
            pieces.extend([part] if self.count(*part) <= budget else self._windows(part, budget))
        return self._merge(pieces, budget)

    def _windows(self, span: Span, budget: int) -> list[Span]:
        """Cut a span between tokens, each piece at most ``budget`` tokens, preferring cuts
        before a token that starts a word."""
        first, last = bisect_left(self.starts, span[0]), bisect_right(self.ends, span[1])
        cuts = [span[0]]
        index = first
        while last - index > budget:
            cut = index + budget
            for candidate in range(cut, index + budget // 2, -1):
                if self.text[self.starts[candidate] - 1].isspace():
                    cut = candidate
                    break
            cuts.append(self.starts[cut])
            index = cut
        cuts.append(span[1])
        pieces = (stripped(self.text, a, b) for a, b in itertools.pairwise(cuts))
        return [piece for piece in pieces if piece[0] < piece[1]]

    def _merge(self, spans: list[Span], budget: int) -> list[Span]:
        """Join neighbouring spans, left to right, while the joined span fits the budget."""
        merged: list[Span] = []
        for span in spans:
            if merged and self.count(merged[-1][0], span[1]) <= budget:
                merged[-1] = (merged[-1][0], span[1])
            else:
                merged.append(span)
        return merged

    def _overlap_start(self, previous: Span, core: Span) -> int:
        """Where a chunk starts so that it repeats the end of the previous one."""
        if not self.overlap:
            return core[0]
        first = bisect_left(self.starts, previous[0])
        last = bisect_right(self.ends, previous[1])
        index = max(first, last - self.overlap)
        while index < last and index > first and not self.text[self.starts[index] - 1].isspace():
            index += 1
        return self.starts[index] if index < last else core[0]

    def _verified(self, span: Span) -> list[tuple[int, int, int]]:
        """The span with its token count from the tokenizer itself, halved until it fits.

        The count of the document's tokens inside a span can differ from the tokenizer's
        count of the span's text: when a cut falls inside a word (its rest is read as a new
        word), or with a tokenizer whose tokens hold the white space between blocks."""
        start, end = span
        tokens = self.tokenizer.spans(self.text[start:end])
        if len(tokens) <= self.max_tokens:
            return [(start, end, len(tokens))]
        middle = start + tokens[len(tokens) // 2][0]
        if not start < middle < end:  # tokens sharing one character: halve the characters
            middle = (start + end) // 2
        halves = (stripped(self.text, start, middle), stripped(self.text, middle, end))
        return [piece for half in halves if half[0] < half[1] for piece in self._verified(half)]


def _groups(blocks: list[Block]) -> list[list[Block]]:
    """Blocks as the units cut first: consecutive list items form one group (one list)."""
    groups: list[list[Block]] = []
    for block in blocks:
        if block.kind == "list_item" and groups and groups[-1][-1].kind == "list_item":
            groups[-1].append(block)
        else:
            groups.append([block])
    return groups
