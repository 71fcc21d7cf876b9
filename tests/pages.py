"""Reading HTML in tests with the standard library's parser, not string splitting."""

from __future__ import annotations

from html.parser import HTMLParser


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.attrs: list[tuple[str, dict[str, str | None]]] = []
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.attrs.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag in {"td", "th"} and self.rows:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in {"td", "th"} and self._cell is not None:
            self.rows[-1].append(" ".join("".join(self._cell).split()))
            self._cell = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    page.close()
    return page


def table_rows(html: str) -> list[list[str]]:
    """The text of every table cell (td and th), row by row."""
    return _parse(html).rows


def attribute_values(html: str, tag: str, attribute: str) -> list[str]:
    """The values of one attribute on every element with that tag, in document order."""
    return [attrs[attribute] or "" for name, attrs in _parse(html).attrs if name == tag and attribute in attrs]


class _Elements(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, dict[str, str | None], list[str]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs), []))

    def handle_data(self, data: str) -> None:
        if self.elements and self.elements[-1][0] in {"script", "style"}:
            self.elements[-1][2].append(data)


def tags(html: str) -> list[tuple[str, dict[str, str | None], str]]:
    """Every element: its tag, attributes, and (for script and style) its text."""
    parser = _Elements()
    parser.feed(html)
    parser.close()
    return [(tag, attrs, "".join(text)) for tag, attrs, text in parser.elements]
