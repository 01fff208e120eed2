"""Chunking with all-MiniLM-L6-v2's real tokenizer: exact spans, limits, overlap, sections,
pages, determinism and deduplication."""

from __future__ import annotations

import hashlib
import io
import itertools
from pathlib import Path

import docx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keel.errors import InputError
from keel.knowledge.chunking import Chunk, chunk
from keel.knowledge.documents import ExtractedText, heading_label, read_document
from tests.minilm_tokens import MINILM_MAX_TOKENS, MiniLMTokens

FIXTURES = Path(__file__).parent / "fixtures" / "documents"
TOKENS = MiniLMTokens()


def read_fixture(name: str) -> ExtractedText:
    return read_document((FIXTURES / name).read_bytes(), name)


def docx_document() -> ExtractedText:
    document = docx.Document()
    document.add_heading("Complaints", level=1)
    document.add_paragraph(
        " ".join(f"A complaint of kind {i} is answered within {i + 2} weeks." for i in range(12))
    )
    document.add_paragraph("Escalate to the ombudsman", style="List Number")
    document.add_paragraph("Keep the written reply", style="List Number")
    out = io.BytesIO()
    document.save(out)
    return read_document(out.getvalue(), "complaints.docx")


ALL_FIXTURES = ["handbook.md", "intranet.html", "handbook.pdf"]


def assert_valid(extracted: ExtractedText, chunks: list[Chunk], max_tokens: int) -> None:
    assert [c.ordinal for c in chunks] == list(range(len(chunks)))
    for c in chunks:
        assert c.text == extracted.text[c.start : c.end]
        assert c.text == c.text.strip() and c.text
        assert c.token_count == len(TOKENS.spans(c.text)) <= max_tokens
        assert c.content_hash == hashlib.sha256(c.text.encode()).hexdigest()


def doc_tokens(extracted: ExtractedText, start: int, end: int) -> int:
    return len(TOKENS.spans(extracted.text[start:end]))


@pytest.mark.parametrize("name", ALL_FIXTURES)
@pytest.mark.parametrize(("max_tokens", "overlap"), [(MINILM_MAX_TOKENS, 0), (24, 6), (8, 2)])
def test_spans_are_exact_and_limits_hold(name: str, max_tokens: int, overlap: int) -> None:
    extracted = read_fixture(name)
    chunks = chunk(extracted, TOKENS, max_tokens, overlap)
    assert_valid(extracted, chunks, max_tokens)
    # every word of every block is in some chunk (repeats, such as a table's "|---|" row
    # cut small, are kept at each place when deduplication is off)
    covered = set()
    for c in chunk(extracted, TOKENS, max_tokens, overlap, deduplicate=False):
        covered.update(range(c.start, c.end))
    for block in extracted.blocks:
        for i in range(block.start, block.end):
            assert i in covered or extracted.text[i].isspace(), (block, i)


def test_sections_that_fit_are_one_chunk_each() -> None:
    extracted = read_fixture("handbook.md")
    chunks = chunk(extracted, TOKENS, MINILM_MAX_TOKENS, 0)
    assert [c.heading_path for c in chunks] == [
        "Staff handbook",
        "Staff handbook › Leave policy",
        "Staff handbook › Leave policy › Parental leave",
        "Staff handbook › Leave policy › Sick leave",
        "Staff handbook › Expenses",
        "Staff handbook › Security",
    ]
    assert chunks[2].text.startswith("### Parental leave\n\nParents are entitled")
    assert chunks[2].text.endswith("restarts the entitlement.")
    table = next(b for b in extracted.blocks if b.kind == "table")
    assert chunks[4].start < table.start and table.end < chunks[4].end  # the table kept whole


@pytest.mark.parametrize("name", ALL_FIXTURES)
def test_no_chunk_crosses_a_heading(name: str) -> None:
    extracted = read_fixture(name)
    for max_tokens, overlap in [(MINILM_MAX_TOKENS, 0), (20, 5)]:
        for c in chunk(extracted, TOKENS, max_tokens, overlap):
            inside = [b for b in extracted.blocks if b.start < c.end and c.start < b.end]
            assert {heading_label(b.heading_path) for b in inside} == {c.heading_path}
            # a heading can only open a chunk
            assert all(b.start == c.start for b in inside if b.kind == "heading")


def test_a_heading_without_text_joins_the_section_under_it() -> None:
    extracted = read_document(
        b"# Policies\n\n## Leave\n\nTake leave.\n\n## Pay\n\nMonthly.\n", "p.md"
    )
    chunks = chunk(extracted, TOKENS, 64, 0)
    assert [(c.heading_path, c.text) for c in chunks] == [
        ("Policies › Leave", "# Policies\n\n## Leave\n\nTake leave."),
        ("Policies › Pay", "## Pay\n\nMonthly."),
    ]


def test_consecutive_chunks_of_a_section_overlap_by_the_configured_tokens() -> None:
    extracted = docx_document()
    overlaps = []
    chunks = chunk(extracted, TOKENS, 40, 10)
    assert_valid(extracted, chunks, 40)
    assert len(chunks) >= 4
    for previous, current in itertools.pairwise(chunks):
        if previous.heading_path == current.heading_path:
            assert current.start < previous.end
            overlaps.append(doc_tokens(extracted, current.start, previous.end))
    # the overlap starts at a word, so it may be a little under the configured 10 tokens
    assert overlaps and all(7 <= n <= 10 for n in overlaps), overlaps
    assert any(n == 10 for n in overlaps)
    without = chunk(extracted, TOKENS, 40, 0)
    assert all(b.start >= a.end for a, b in itertools.pairwise(without))


def test_long_text_is_cut_between_sentences_then_at_words() -> None:
    sentence = "The applicant's income is verified against three recent payslips. "
    extracted = read_document((sentence * 6).encode(), "s.txt")
    chunks = chunk(extracted, TOKENS, 30, 0)
    assert all(c.text.endswith("payslips.") for c in chunks), [c.text for c in chunks]
    word = read_document(("interoperability " * 40).encode(), "w.txt")
    pieces = chunk(word, TOKENS, 16, 0, deduplicate=False)
    assert_valid(word, pieces, 16)
    assert all(p.text.startswith("interoperability") for p in pieces)
    assert all(p.text.endswith("interoperability") for p in pieces)


def test_large_tables_are_cut_between_rows() -> None:
    rows = "\n".join(f"| Branch {i} | EUR {i * 100} | Manager {i} |" for i in range(40))
    source = f"# Limits\n\n| Branch | Limit | Approver |\n|---|---|---|\n{rows}\n"
    extracted = read_document(source.encode(), "limits.md")
    chunks = chunk(extracted, TOKENS, 48, 0)
    assert len(chunks) > 3
    for c in chunks[1:]:
        assert c.text.startswith("| Branch ") and c.text.endswith(" |")
        assert all(line.startswith("|") and line.endswith("|") for line in c.text.split("\n"))


def test_pdf_chunks_keep_their_page() -> None:
    extracted = read_fixture("handbook.pdf")
    for max_tokens in (MINILM_MAX_TOKENS, 16):
        chunks = chunk(extracted, TOKENS, max_tokens, max_tokens // 4)
        pages = {c.text.split("\n")[0]: c.page for c in chunks}
        assert (pages["Lending handbook"], pages["Affordability"], pages["Appeals"]) == (1, 2, 3)
        for c in chunks:
            assert "\f" not in c.text and c.page == c.page_end
            assert extracted.text.count("\f", 0, c.start) == c.page - 1
    assert len(chunk(extracted, TOKENS, MINILM_MAX_TOKENS, 0)) == 3


def test_chunks_outside_a_pdf_have_no_page() -> None:
    chunks = chunk(read_fixture("intranet.html"), TOKENS, MINILM_MAX_TOKENS, 0)
    assert {(c.page, c.page_end) for c in chunks} == {(None, None)}


def test_chunking_is_deterministic() -> None:
    first = chunk(read_fixture("handbook.md"), TOKENS, 32, 8)
    again = chunk(read_fixture("handbook.md"), MiniLMTokens(), 32, 8)
    assert first == again
    assert len({c.content_hash for c in first}) == len(first)


def test_identical_chunks_in_a_document_collapse_into_the_first() -> None:
    footer = "Confidential: for Northwind Credit staff only, do not forward outside the bank."
    parts = [footer, "Leave is booked two weeks ahead.", footer, "Claims need a receipt.", footer]
    extracted = read_document("\n\n".join(parts).encode(), "memo.txt")
    chunks = chunk(extracted, TOKENS, 20, 0)
    assert [(c.ordinal, c.text, c.duplicates) for c in chunks] == [
        (0, footer, 2),
        (1, parts[1], 0),
        (2, parts[3], 0),
    ]
    assert chunks[0].start == 0
    assert len(chunk(extracted, TOKENS, 20, 0, deduplicate=False)) == 5


@pytest.mark.parametrize(
    ("max_tokens", "overlap", "pattern"),
    [
        (0, 0, "chunk size 0 tokens is out of range"),
        (MINILM_MAX_TOKENS + 1, 0, "model's limit of 254 tokens"),
        (100, 51, r"chunk overlap 51 tokens is out of range: .* half the chunk size \(50\)"),
        (100, -1, "chunk overlap -1 tokens is out of range"),
    ],
)
def test_sizes_out_of_range_are_refused(max_tokens: int, overlap: int, pattern: str) -> None:
    with pytest.raises(InputError, match=pattern):
        chunk(read_fixture("handbook.md"), TOKENS, max_tokens, overlap)


def test_an_empty_document_has_no_chunks() -> None:
    assert chunk(read_document(b"\n \n", "empty.txt"), TOKENS, 64, 0) == []


WORDS = st.sampled_from(
    ["leave", "pay", "the", "approval", "Ω", "naïve", "e-mail", "x" * 30, "3.5%", "dr.", "ok!"]
)
LINE = st.one_of(
    st.lists(WORDS, min_size=1, max_size=30).map(" ".join),
    st.tuples(st.integers(1, 4), st.lists(WORDS, min_size=1, max_size=4)).map(
        lambda h: "#" * h[0] + " " + " ".join(h[1])
    ),
    st.lists(WORDS, min_size=1, max_size=12).map(lambda w: "- " + " ".join(w)),
    st.lists(WORDS, min_size=2, max_size=4).map(lambda w: "| " + " | ".join(w) + " |"),
    st.just("|---|---|"),
    st.just("```"),
    st.just(""),
    st.just("   "),
)


@settings(max_examples=150, deadline=None)
@given(
    lines=st.lists(LINE, max_size=40),
    max_tokens=st.integers(4, 80),
    overlap_share=st.floats(0, 0.5),
    name=st.sampled_from(["doc.md", "doc.txt"]),
)
def test_chunks_cover_the_text_and_respect_the_limits(
    lines: list[str], max_tokens: int, overlap_share: float, name: str
) -> None:
    extracted = read_document("\n".join(lines).encode(), name)
    overlap = min(int(max_tokens * overlap_share), max_tokens // 2)
    every = chunk(extracted, TOKENS, max_tokens, overlap, deduplicate=False)
    covered = set()
    for c in every:
        assert c.text == extracted.text[c.start : c.end]
        assert 0 < c.token_count == len(TOKENS.spans(c.text)) <= max_tokens
        covered.update(range(c.start, c.end))
    missing = [i for i, ch in enumerate(extracted.text) if not ch.isspace() and i not in covered]
    assert not missing, missing[:5]
    kept = chunk(extracted, TOKENS, max_tokens, overlap)
    assert_valid(extracted, kept, max_tokens)
    assert len(kept) + sum(c.duplicates for c in kept) == len(every)
    assert {c.text for c in kept} == {c.text for c in every}


class CharacterTokens:
    """A tokenizer that reads every character as a token, white space included: unlike
    MiniLM's, its count of two blocks together exceeds the sum of their counts."""

    max_tokens = 64

    def spans(self, text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i in range(len(text))]


def test_the_limit_holds_for_a_tokenizer_that_counts_white_space() -> None:
    extracted = read_fixture("handbook.md")
    chunks = chunk(extracted, CharacterTokens(), 20, 0, deduplicate=False)
    assert chunks and all(len(c.text) == c.token_count <= 20 for c in chunks)
    assert all(c.text == extracted.text[c.start : c.end] for c in chunks)
    covered = {i for c in chunks for i in range(c.start, c.end)}
    assert all(ch.isspace() or i in covered for i, ch in enumerate(extracted.text))
