"""Reading documents: a file's bytes become one plain text and the structural blocks in it.

Every format comes out the same way, as an :class:`ExtractedText`: the document's text as one
string, and a list of :class:`Block` s (heading, paragraph, list item, table, code, page
break) whose ``start``/``end`` are character offsets into that string, so that
``text[block.start:block.end]`` is the block exactly. Chunking cuts along these blocks, and
a citation shows a chunk's span in place.

- Plain text (``.txt``) and Markdown (``.md``) keep their source as the text (newlines
  normalised): a Markdown citation shows the lines as the author wrote them, and its offsets
  are offsets into the file. Markdown is parsed with markdown-it-py (CommonMark + tables).
- HTML, PDF and DOCX have no readable source, so their text is built from the structure:
  blocks separated by a blank line, table rows on lines with cells joined by `` | ``, and in a
  PDF the pages separated by a form feed (``\\f``), each page's blocks marked with its number.

Anything else, and anything that cannot be read (undecodable text, an encrypted or corrupt
PDF or DOCX), is refused with an :class:`~keel.errors.InputError` naming the file.
"""

from __future__ import annotations

import io
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any, Literal

from keel.errors import InputError, MissingExtraError

BlockKind = Literal["heading", "paragraph", "list_item", "table", "code", "rule", "page_break"]

HEADING_SEPARATOR = " › "

# file suffix -> format, and media type -> format; a media type, when given, wins
SUFFIXES = {
    ".txt": "txt",
    ".text": "txt",
    ".md": "md",
    ".markdown": "md",
    ".html": "html",
    ".htm": "html",
    ".pdf": "pdf",
    ".docx": "docx",
}
MEDIA_TYPES = {
    "text/plain": "txt",
    "text/markdown": "md",
    "text/x-markdown": "md",
    "text/html": "html",
    "application/xhtml+xml": "html",
    "application/pdf": "pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": "docx",
}
ACCEPTED = "txt, md, html, pdf, docx"

# a paragraph break in plain text and in a PDF page's text
BLANK_LINE = re.compile(r"\n[ \t\f\v]*\n\s*")

# the encodings tried, in order, for text without a byte-order mark; cp1252 is the usual
# encoding of text files written on Windows, and (unlike latin-1) it refuses some bytes
TEXT_ENCODINGS = ("utf-8", "cp1252")

# HTML elements whose text is never part of the document
HTML_DROPPED = ("script", "style", "nav", "noscript", "template", "head", "svg", "iframe")
HTML_HEADINGS = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
HTML_TEXT_BLOCKS = {"p", "pre", "dt", "dd", "caption", "figcaption", "address", "summary"}
HTML_CONTAINERS = {
    "html", "body", "main", "article", "section", "div", "header", "footer", "aside",
    "blockquote", "ul", "ol", "dl", "figure", "details", "form", "fieldset", "center",
}  # fmt: skip


@dataclass(frozen=True)
class Block:
    """One structural element of a document: ``text[start:end]`` is its content."""

    kind: BlockKind
    start: int
    end: int
    heading_path: tuple[str, ...]  # the headings it sits under; a heading's path ends with it
    page: int | None = None  # PDF: 1-based page number
    level: int | None = None  # headings: 1 for a title, 2 for its sections, ...


@dataclass(frozen=True)
class ExtractedText:
    """A document read into one plain text and the blocks in it."""

    name: str
    format: str  # one of ACCEPTED
    text: str
    blocks: tuple[Block, ...]
    encoding: str | None = None  # text formats: the encoding the bytes were decoded with
    pages: int | None = None  # PDF: the number of pages


def read_document(
    data: bytes, name: str, media_type: str | None = None, encoding: str | None = None
) -> ExtractedText:
    """Read a document's bytes into its text and blocks.

    The format comes from ``media_type`` when given, else from the suffix of ``name``.
    ``encoding`` forces the decoding of a text or Markdown file; without it a byte-order mark
    decides, then UTF-8, then cp1252, and the encoding used is recorded in the result.
    """
    fmt = document_format(name, media_type)
    if fmt == "txt":
        text, used = _decode(data, name, encoding)
        return ExtractedText(name, fmt, text, tuple(_text_blocks(text)), encoding=used)
    if fmt == "md":
        text, used = _decode(data, name, encoding)
        return ExtractedText(name, fmt, text, tuple(_markdown_blocks(text)), encoding=used)
    if fmt == "html":
        return _read_html(data, name)
    if fmt == "pdf":
        return _read_pdf(data, name)
    return _read_docx(data, name)


def document_format(name: str, media_type: str | None = None) -> str:
    """The format of a document, from its media type or the suffix of its name."""
    if media_type:
        base = media_type.split(";", 1)[0].strip().lower()
        if base in MEDIA_TYPES:
            return MEDIA_TYPES[base]
        raise InputError(
            f"{name}: media type {base!r} cannot be read; accepted formats: {ACCEPTED}",
            {"file": name, "media_type": base, "accepted": sorted(MEDIA_TYPES)},
        )
    suffix = PurePath(name).suffix.lower()
    if suffix in SUFFIXES:
        return SUFFIXES[suffix]
    raise InputError(
        f"{name}: files ending in {suffix or '(no suffix)'!r} cannot be read; "
        f"accepted formats: {ACCEPTED}",
        {"file": name, "suffix": suffix, "accepted": sorted(SUFFIXES)},
    )


def heading_label(path: Iterable[str]) -> str:
    """A heading path as one label: ``Leave policy › Parental leave``."""
    return HEADING_SEPARATOR.join(path)


# --- text and Markdown ------------------------------------------------------------------


def _decode(data: bytes, name: str, encoding: str | None) -> tuple[str, str]:
    if encoding is not None:
        try:
            return _normalise(data.decode(encoding)), encoding
        except (LookupError, UnicodeDecodeError) as exc:
            raise InputError(
                f"{name}: cannot be decoded as {encoding} ({exc})",
                {"file": name, "encoding": encoding},
            ) from None
    if data.startswith(b"\xef\xbb\xbf"):
        candidates: tuple[str, ...] = ("utf-8-sig",)
    elif data.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ("utf-16",)
    else:
        candidates = TEXT_ENCODINGS
    for candidate in candidates:
        try:
            text = data.decode(candidate)
        except UnicodeDecodeError:
            continue
        if "\x00" not in text:
            return _normalise(text), candidate
    raise InputError(
        f"{name}: not text in {' or '.join(candidates)} (binary content, or another "
        "encoding): give the encoding explicitly, or convert the file to UTF-8",
        {"file": name, "tried": list(candidates)},
    )


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _text_blocks(text: str) -> list[Block]:
    """Paragraphs separated by blank lines."""
    return [
        Block("paragraph", start, end, ())
        for start, end in text_spans(text, BLANK_LINE, 0, len(text))
    ]


def text_spans(
    text: str, separator: re.Pattern[str], start: int, end: int
) -> list[tuple[int, int]]:
    """The stripped, non-empty spans of ``text[start:end]`` between matches of ``separator``."""
    spans = []
    position = start
    for match in separator.finditer(text, start, end):
        spans.append((position, match.start()))
        position = match.end()
    spans.append((position, end))
    return [s for s in (stripped(text, a, b) for a, b in spans) if s[0] < s[1]]


def stripped(text: str, start: int, end: int) -> tuple[int, int]:
    """The span ``(start, end)`` of ``text`` without white space at either end."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


class _Headings:
    """The stack of headings a document is under at the current position."""

    def __init__(self) -> None:
        self._stack: list[tuple[int, str]] = []

    def enter(self, level: int, title: str) -> tuple[str, ...]:
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        return self.path

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(title for _, title in self._stack)


def _markdown_blocks(text: str) -> list[Block]:
    try:
        from markdown_it import MarkdownIt  # noqa: PLC0415 - optional extra
    except ImportError:
        raise MissingExtraError("knowledge", "reading Markdown documents") from None
    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    line_starts = [0] + [m.end() for m in re.finditer("\n", text)]

    def span(lines: list[int]) -> tuple[int, int]:
        first, last = lines
        end = line_starts[last] if last < len(line_starts) else len(text)
        return stripped(text, line_starts[first], end)

    headings = _Headings()
    blocks: list[Block] = []
    list_depth = table_depth = 0
    for i, token in enumerate(tokens):
        if token.type == "table_open":
            table_depth += 1
            if table_depth == 1 and token.map:
                blocks.append(Block("table", *span(token.map), headings.path))
        elif token.type == "table_close":
            table_depth -= 1
        elif token.type == "list_item_open":
            list_depth += 1
        elif token.type == "list_item_close":
            list_depth -= 1
        elif table_depth or not token.map:
            continue
        elif token.type == "heading_open":
            level = int(token.tag[1:])
            title = _inline_text(tokens[i + 1].children or [])
            path = headings.enter(level, title)
            blocks.append(Block("heading", *span(token.map), path, level=level))
        elif token.type in ("paragraph_open", "html_block"):
            kind: BlockKind = "list_item" if list_depth else "paragraph"
            blocks.append(Block(kind, *span(token.map), headings.path))
        elif token.type in ("fence", "code_block"):
            blocks.append(Block("code", *span(token.map), headings.path))
        elif token.type == "hr":
            blocks.append(Block("rule", *span(token.map), headings.path))
    return _fill_gaps(text, blocks)


def _inline_text(children: list[Any]) -> str:
    """A heading's inline tokens as plain text: emphasis and link markup dropped."""
    parts = [
        " " if c.type in ("softbreak", "hardbreak") else c.content
        for c in children
        if c.type in ("text", "code_inline", "html_inline", "softbreak", "hardbreak")
    ]
    return _collapse("".join(parts))


def _fill_gaps(text: str, blocks: list[Block]) -> list[Block]:
    """Blocks for any text the parser left outside a block (link definitions, front matter),
    so that every character of the document can be cited."""
    blocks = sorted(blocks, key=lambda b: b.start)
    filled: list[Block] = []
    position = 0
    path: tuple[str, ...] = ()
    for block in [*blocks, None]:
        end = block.start if block is not None else len(text)
        for start, stop in text_spans(text, BLANK_LINE, position, end):
            filled.append(Block("paragraph", start, stop, path))
        if block is not None:
            filled.append(block)
            position = max(position, block.end)
            path = block.heading_path
    return filled


# --- documents without a readable source: the text is built from their structure -----------


class _TextBuilder:
    """Builds a document's text block by block, recording each block's span."""

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._length = 0
        self.blocks: list[Block] = []
        self.headings = _Headings()
        self.page: int | None = None

    def add(self, kind: BlockKind, content: str, level: int | None = None) -> None:
        content = content.strip()
        if not content:
            return
        if kind == "heading" and level is not None:
            path = self.headings.enter(level, re.sub(r"\s+", " ", content))
        else:
            path = self.headings.path
        if self._parts and not self._parts[-1].endswith("\f"):
            self._append("\n\n")
        start = self._length
        self._append(content)
        self.blocks.append(Block(kind, start, self._length, path, self.page, level))

    def page_break(self) -> None:
        start = self._length
        self._append("\f")
        self.blocks.append(Block("page_break", start, self._length, self.headings.path, self.page))

    def _append(self, part: str) -> None:
        self._parts.append(part)
        self._length += len(part)

    @property
    def text(self) -> str:
        return "".join(self._parts)


def _collapse(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip()


def _read_html(data: bytes, name: str) -> ExtractedText:
    try:
        from bs4 import BeautifulSoup  # noqa: PLC0415 - optional extra
        from bs4.element import NavigableString, Tag  # noqa: PLC0415
    except ImportError:
        raise MissingExtraError("knowledge", "reading HTML documents") from None
    soup = BeautifulSoup(data, "html.parser")
    if "\x00" in soup.get_text():
        raise InputError(f"{name}: binary content, not an HTML page", {"file": name})
    for dropped in soup.find_all(HTML_DROPPED):
        dropped.decompose()
    builder = _TextBuilder()

    def table(element: Tag) -> None:
        rows = []
        for row in element.find_all("tr"):
            cells = [_collapse(c.get_text()) for c in row.find_all(("th", "td"))]
            if any(cells):
                rows.append(" | ".join(cells))
        builder.add("table", "\n".join(rows))

    def walk(node: Tag, in_list: bool) -> None:
        inline: list[str] = []

        def flush() -> None:
            builder.add("list_item" if in_list else "paragraph", _collapse("".join(inline)))
            inline.clear()

        for child in node.children:
            if isinstance(child, NavigableString):
                if type(child) is NavigableString:  # not a comment, doctype or CDATA
                    inline.append(str(child))
                continue
            if not isinstance(child, Tag):
                continue
            tag = child.name
            if tag in HTML_HEADINGS:
                flush()
                builder.add("heading", _collapse(child.get_text()), HTML_HEADINGS[tag])
            elif tag == "table":
                flush()
                table(child)
            elif tag == "pre":
                flush()
                builder.add("code", _normalise(child.get_text()))
            elif tag in HTML_TEXT_BLOCKS:
                flush()
                builder.add("list_item" if in_list else "paragraph", _collapse(child.get_text()))
            elif tag == "li":
                flush()
                walk(child, in_list=True)
            elif tag in HTML_CONTAINERS:
                flush()
                walk(child, in_list)
            elif tag == "br":
                inline.append("\n")
            else:
                inline.append(child.get_text())
        flush()

    walk(soup, in_list=False)
    return ExtractedText(
        name, "html", builder.text, tuple(builder.blocks), encoding=soup.original_encoding
    )


def _read_pdf(data: bytes, name: str) -> ExtractedText:
    try:
        from pypdf import PdfReader  # noqa: PLC0415 - optional extra
    except ImportError:
        raise MissingExtraError("knowledge", "reading PDF documents") from None
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise InputError(
                f"{name}: the PDF is encrypted with a password; give an unencrypted copy",
                {"file": name, "reason": "encrypted"},
            )
        pages = [page.extract_text(extraction_mode="layout") or "" for page in reader.pages]
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - pypdf raises many types for a damaged file
        raise InputError(
            f"{name}: not a readable PDF ({type(exc).__name__}: {exc})",
            {"file": name, "reason": "corrupt"},
        ) from None
    builder = _TextBuilder()
    for number, page_text in enumerate(pages, start=1):
        if number > 1:
            builder.page_break()
        builder.page = number
        text = _normalise(page_text)
        for start, end in text_spans(text, BLANK_LINE, 0, len(text)):
            builder.add("paragraph", _pdf_paragraph(text[start:end]))
    if not any(b.kind != "page_break" for b in builder.blocks):
        raise InputError(
            f"{name}: the PDF has no extractable text (a scan needs OCR before it is ingested)",
            {"file": name, "reason": "no_text", "pages": len(pages)},
        )
    return ExtractedText(name, "pdf", builder.text, tuple(builder.blocks), pages=len(pages))


def _pdf_paragraph(text: str) -> str:
    """One paragraph of a PDF page as plain text: the layout's runs of spaces go, and
    compatibility characters (the ligatures "ﬁ", "ﬀ") become the letters a search matches."""
    text = re.sub(r"[ \t]*\n[ \t]*", "\n", re.sub(r"[ \t]{2,}", " ", text)).strip()
    return unicodedata.normalize("NFKC", text)


def _read_docx(data: bytes, name: str) -> ExtractedText:
    try:
        import docx  # noqa: PLC0415 - optional extra
        from docx.table import Table  # noqa: PLC0415
        from docx.text.paragraph import Paragraph  # noqa: PLC0415
    except ImportError:
        raise MissingExtraError("knowledge", "reading DOCX documents") from None
    try:
        document = docx.Document(io.BytesIO(data))
        body = list(document.element.body.iterchildren())
    except Exception as exc:  # noqa: BLE001 - python-docx raises many types for a bad file
        raise InputError(
            f"{name}: not a readable DOCX document ({type(exc).__name__}: {exc}); "
            "an encrypted document must be saved without a password first",
            {"file": name, "reason": "corrupt"},
        ) from None
    builder = _TextBuilder()
    for element in body:
        tag = element.tag.rsplit("}", 1)[-1]
        if tag == "p":
            _docx_paragraph(builder, Paragraph(element, document))
        elif tag == "tbl":
            rows = []
            for row in Table(element, document).rows:
                cells = [_collapse(cell.text) for cell in row.cells]
                if any(cells):
                    rows.append(" | ".join(cells))
            builder.add("table", "\n".join(rows))
    return ExtractedText(name, "docx", builder.text, tuple(builder.blocks))


def _docx_paragraph(builder: _TextBuilder, paragraph: Any) -> None:
    style = paragraph.style.name if paragraph.style is not None else ""
    text = _normalise(paragraph.text)
    heading = re.fullmatch(r"Heading (\d)", style)
    if style == "Title":
        builder.add("heading", text, level=1)
    elif heading:
        builder.add("heading", text, level=int(heading.group(1)))
    elif style.startswith("List") or _numbered(paragraph):
        builder.add("list_item", text)
    else:
        builder.add("paragraph", text)


def _numbered(paragraph: Any) -> bool:
    properties = paragraph._p.pPr
    return properties is not None and properties.numPr is not None
