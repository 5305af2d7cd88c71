"""Reading the HTML report back in tests (stdlib ``html.parser``): its tables as rows of cell texts, its
images, every tag, and its visible text with entities decoded."""

from __future__ import annotations

import base64
from dataclasses import dataclass, field
from html.parser import HTMLParser
from typing import Any


@dataclass
class Table:
    attrs: dict[str, str | None]
    rows: list[list[str]] = field(default_factory=list)
    header_rows: int = 0


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.tables: list[Table] = []
        self.text: list[str] = []
        self._table: Table | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self._in_thead = False
        self._raw: str | None = None  # inside <style>: not text
        self.pre: list[str] = []
        self._pre: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        self.tags.append((tag, a))
        if tag in ("style", "script"):
            self._raw = tag
        elif tag == "table":
            self._table = Table(a)
            self.tables.append(self._table)
        elif tag == "thead":
            self._in_thead = True
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []
        elif tag == "pre":
            self._pre = []

    def handle_endtag(self, tag: str) -> None:
        if tag == self._raw:
            self._raw = None
        elif tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join("".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None and self._table is not None:
            self._table.rows.append(self._row)
            if self._in_thead:
                self._table.header_rows += 1
            self._row = None
        elif tag == "thead":
            self._in_thead = False
        elif tag == "table":
            self._table = None
        elif tag == "pre" and self._pre is not None:
            self.pre.append("".join(self._pre))
            self._pre = None

    def handle_data(self, data: str) -> None:
        if self._raw:
            return
        self.text.append(data)
        if self._cell is not None:
            self._cell.append(data)
        if self._pre is not None:
            self._pre.append(data)


@dataclass
class Page:
    tags: list[tuple[str, dict[str, str | None]]]
    tables: list[Table]
    text: str
    pre: list[str]

    def tables_of(self, cls: str) -> list[Table]:
        return [t for t in self.tables if cls in (t.attrs.get("class") or "").split()]

    def images(self) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == "img"]

    def body_rows(self, table: Table) -> list[list[str]]:
        return table.rows[table.header_rows:]


def parse(html: str) -> Page:
    p = _Page()
    p.feed(html)
    p.close()
    return Page(p.tags, p.tables, " ".join(" ".join(p.text).split()), p.pre)


def decode_data_uri(uri: str) -> tuple[str, bytes]:
    """(media type, bytes) of a base64 ``data:`` URI; AssertionError for anything else."""
    assert uri.startswith("data:"), uri[:40]
    head, _, payload = uri[5:].partition(",")
    media, _, enc = head.partition(";")
    assert enc == "base64", head
    return media, base64.b64decode(payload, validate=True)


def is_image(media: str, data: bytes) -> bool:
    """The bytes are what the media type says: a PNG signature, or an SVG document."""
    if media == "image/png":
        return data.startswith(b"\x89PNG\r\n\x1a\n")
    if media == "image/svg+xml":
        head = data[:400].decode("utf-8", "replace")
        return "<svg" in data.decode("utf-8", "replace") and head.lstrip().startswith(("<?xml", "<svg", "<!DOCTYPE"))
    return False


def cell_number(text: str) -> Any:
    """A table cell back as the number it shows (None for the em dash; percentages as fractions)."""
    if text == "—":
        return None
    if text.endswith("%"):
        return float(text[:-1]) / 100
    return float(text)
