"""Reading documents: every format gives one text and blocks whose spans are exact."""

from __future__ import annotations

import io
from pathlib import Path

import docx
import pytest
from pypdf import PdfReader, PdfWriter

from keel.errors import InputError
from keel.knowledge.documents import ExtractedText, heading_label, read_document

FIXTURES = Path(__file__).parent / "fixtures" / "documents"


def read_fixture(name: str) -> ExtractedText:
    return read_document((FIXTURES / name).read_bytes(), name)


def assert_exact_blocks(extracted: ExtractedText) -> None:
    """Each block's span is its content: in order, not overlapping, trimmed, not empty."""
    position = 0
    for block in extracted.blocks:
        content = extracted.text[block.start : block.end]
        assert block.start >= position, block
        position = block.end
        if block.kind == "page_break":
            assert content == "\f"
        else:
            assert content and content == content.strip(), block


def block_texts(extracted: ExtractedText, kind: str) -> list[str]:
    return [extracted.text[b.start : b.end] for b in extracted.blocks if b.kind == kind]


def docx_bytes() -> bytes:
    document = docx.Document()
    document.add_heading("Data retention", level=1)
    document.add_paragraph("Records are kept for the periods below, then erased.")
    document.add_heading("Customer records", level=2)
    document.add_paragraph("Loan files are kept for seven years after repayment.")
    document.add_paragraph("Identity documents", style="List Bullet")
    document.add_paragraph("Signed contracts", style="List Bullet")
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(
        table.rows,
        [("Record", "Period"), ("Loan file", "7 years"), ("Call recording", "1 year")],
        strict=False,
    ):
        row.cells[0].text, row.cells[1].text = cells
    document.add_heading("Staff records", level=2)
    document.add_paragraph("Payroll records are kept for ten years.")
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def test_markdown_keeps_its_source_and_finds_its_structure() -> None:
    source = (FIXTURES / "handbook.md").read_text(encoding="utf-8")
    extracted = read_fixture("handbook.md")
    assert extracted.text == source
    assert extracted.encoding == "utf-8"
    assert_exact_blocks(extracted)
    headings = [(b.level, heading_label(b.heading_path)) for b in extracted.blocks if b.level]
    assert headings == [
        (1, "Staff handbook"),
        (2, "Staff handbook › Leave policy"),
        (3, "Staff handbook › Leave policy › Parental leave"),
        (3, "Staff handbook › Leave policy › Sick leave"),
        (2, "Staff handbook › Expenses"),
        (2, "Staff handbook › Security"),
    ]
    items = block_texts(extracted, "list_item")
    assert "- Birth parents: 26 weeks at full pay." in items
    assert "- A second adoption in the same year restarts the entitlement." in items
    assert "2. Never share your password, not even with the service desk." in items
    assert block_texts(extracted, "table")[0].splitlines()[3].startswith("| Hotel night")
    assert block_texts(extracted, "code") == ["```\nkeel-support@example.com\n+31 20 555 0100\n```"]
    # a paragraph after a list is a paragraph again, under its own heading
    paragraph = next(
        b for b in extracted.blocks if extracted.text[b.start :].startswith("Claims a")
    )
    assert paragraph.kind == "paragraph"
    assert heading_label(paragraph.heading_path) == "Staff handbook › Expenses"


def test_markdown_text_outside_any_block_still_gets_a_block() -> None:
    source = "# Links\n\n[policy]: https://example.com/policy\n\nSee the [policy].\n"
    extracted = read_document(source.encode(), "links.md")
    assert_exact_blocks(extracted)
    assert block_texts(extracted, "paragraph") == [
        "[policy]: https://example.com/policy",
        "See the [policy].",
    ]


def test_html_drops_scripts_styles_and_navigation() -> None:
    extracted = read_fixture("intranet.html")
    assert_exact_blocks(extracted)
    for noise in ("analytics", "injected", "font-family", "Home", "Enable JavaScript"):
        assert noise not in extracted.text
    assert block_texts(extracted, "heading") == [
        "Travel policy",
        "Trains and flights",
        "Daily allowances",
    ]
    assert block_texts(extracted, "list_item") == [
        "Book at least 14 days ahead.",
        "Keep every receipt & boarding pass.",
    ]
    assert block_texts(extracted, "table") == [
        "City | Allowance\nAmsterdam | EUR 60\nLondon | GBP 70"
    ]
    first = block_texts(extracted, "paragraph")[0]
    assert first == (
        "Book all business travel through the travel desk. Travel must be approved by your "
        "line manager before you book."
    )
    last = extracted.blocks[-1]
    assert heading_label(last.heading_path) == "Travel policy › Daily allowances"
    assert extracted.encoding == "utf-8"


def test_pdf_pages_are_numbered_and_separated() -> None:
    extracted = read_fixture("handbook.pdf")
    assert_exact_blocks(extracted)
    assert extracted.pages == 3
    assert extracted.text.count("\f") == 2
    pages = {extracted.text[b.start : b.end].split("\n")[0]: b.page for b in extracted.blocks}
    assert pages["Lending handbook"] == 1
    assert pages["Affordability"] == 2  # the font's "ﬀ" ligature read as two letters
    assert pages["Appeals"] == 3
    paragraphs = [b for b in extracted.blocks if b.kind == "paragraph" and b.page == 2]
    assert [extracted.text[b.start : b.end][:20] for b in paragraphs] == [
        "Affordability",
        "Monthly repayments m",
        "Self-employed applic",
    ]
    for page, text in enumerate(extracted.text.split("\f"), start=1):
        page_blocks = [b for b in extracted.blocks if b.kind != "page_break" and b.page == page]
        assert "".join(extracted.text[b.start : b.end] for b in page_blocks) == "".join(
            text.split("\n\n")
        )


def test_docx_headings_lists_and_tables() -> None:
    extracted = read_document(docx_bytes(), "retention.docx")
    assert_exact_blocks(extracted)
    kinds = [(b.kind, extracted.text[b.start : b.end]) for b in extracted.blocks]
    assert kinds == [
        ("heading", "Data retention"),
        ("paragraph", "Records are kept for the periods below, then erased."),
        ("heading", "Customer records"),
        ("paragraph", "Loan files are kept for seven years after repayment."),
        ("list_item", "Identity documents"),
        ("list_item", "Signed contracts"),
        ("table", "Record | Period\nLoan file | 7 years\nCall recording | 1 year"),
        ("heading", "Staff records"),
        ("paragraph", "Payroll records are kept for ten years."),
    ]
    paths = [heading_label(b.heading_path) for b in extracted.blocks]
    assert paths[6] == "Data retention › Customer records"
    assert paths[8] == "Data retention › Staff records"
    assert [b.level for b in extracted.blocks if b.kind == "heading"] == [1, 2, 2]


@pytest.mark.parametrize(
    ("data", "encoding", "text"),
    [
        ("Café crème\r\nà la carte".encode(), "utf-8", "Café crème\nà la carte"),
        (b"\xef\xbb\xbfCaf\xc3\xa9\r\n", "utf-8-sig", "Café\n"),
        ("Café crème — €5\r".encode("cp1252"), "cp1252", "Café crème — €5\n"),
        ("Grüße".encode("utf-16"), "utf-16", "Grüße"),
    ],
)
def test_text_decoding_records_the_encoding(data: bytes, encoding: str, text: str) -> None:
    extracted = read_document(data, "note.txt")
    assert (extracted.text, extracted.encoding) == (text, encoding)
    assert_exact_blocks(extracted)


def test_text_paragraphs_are_split_at_blank_lines() -> None:
    extracted = read_document(b"First line\nstill first.\n\n \n\nSecond.\n", "a.txt")
    assert block_texts(extracted, "paragraph") == ["First line\nstill first.", "Second."]


def test_a_given_encoding_is_used_or_refused() -> None:
    assert read_document("Zürich".encode("latin-1"), "a.txt", encoding="latin-1").text == "Zürich"
    with pytest.raises(InputError, match=r"a\.txt: cannot be decoded as utf-8"):
        read_document("Zürich".encode("latin-1"), "a.txt", encoding="utf-8")


def test_binary_content_is_refused_as_text() -> None:
    with pytest.raises(InputError, match=r"blob\.txt: not text") as refused:
        read_document(b"\x00\x01\x02\x81\x8d\x00", "blob.txt")
    assert refused.value.detail["file"] == "blob.txt"


@pytest.mark.parametrize(
    ("name", "media_type", "pattern"),
    [
        ("sheet.xlsx", None, r"sheet\.xlsx: files ending in '\.xlsx' cannot be read"),
        ("README", None, r"README: files ending in '\(no suffix\)' cannot be read"),
        ("a.txt", "image/png", r"a\.txt: media type 'image/png' cannot be read"),
    ],
)
def test_unknown_formats_are_refused_with_what_is_accepted(
    name: str, media_type: str | None, pattern: str
) -> None:
    with pytest.raises(InputError, match=pattern) as refused:
        read_document(b"data", name, media_type)
    assert "accepted formats: txt, md, html, pdf, docx" in refused.value.message


def test_the_media_type_decides_over_the_name() -> None:
    extracted = read_document(b"# Title\n\nBody.", "upload.bin", "text/markdown; charset=utf-8")
    assert (extracted.format, block_texts(extracted, "heading")) == ("md", ["# Title"])


def test_encrypted_pdf_is_refused() -> None:
    writer = PdfWriter(clone_from=PdfReader(FIXTURES / "handbook.pdf"))
    writer.encrypt("secret", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(InputError, match=r"locked\.pdf: the PDF is encrypted") as refused:
        read_document(out.getvalue(), "locked.pdf")
    assert refused.value.detail["reason"] == "encrypted"


def test_pdf_encrypted_without_a_user_password_is_read() -> None:
    writer = PdfWriter(clone_from=PdfReader(FIXTURES / "handbook.pdf"))
    writer.encrypt("", owner_password="owner", algorithm="AES-256")
    out = io.BytesIO()
    writer.write(out)
    assert read_document(out.getvalue(), "open.pdf").text == read_fixture("handbook.pdf").text


@pytest.mark.parametrize("name", ["handbook.pdf", "retention.docx"])
def test_truncated_files_are_refused(name: str) -> None:
    data = (FIXTURES / name).read_bytes() if name.endswith(".pdf") else docx_bytes()
    with pytest.raises(InputError, match=rf"{name}: not a readable") as refused:
        read_document(data[: len(data) // 2], name)
    assert refused.value.detail["reason"] == "corrupt"


def test_pdf_without_text_is_refused() -> None:
    writer = PdfWriter()
    writer.add_blank_page(width=595, height=842)
    out = io.BytesIO()
    writer.write(out)
    with pytest.raises(InputError, match=r"scan\.pdf: the PDF has no extractable text"):
        read_document(out.getvalue(), "scan.pdf")


def test_html_is_decoded_as_its_meta_charset_declares() -> None:
    page = '<html><head><meta charset="iso-8859-2"></head><body><p>Łódź office</p></body></html>'
    extracted = read_document(page.encode("iso-8859-2"), "lodz.html")
    assert (extracted.text, extracted.encoding) == ("Łódź office", "iso-8859-2")
