"""Following a list's pages, written once for Cademi v1 and v3: `paged` is the one loop, and each API's cursor
is a small class that says what to ask for the next page and reads, from a page, where the next one is.

The guards are the loop's and the paginator's, whatever the API: an empty page ends the list, a page naming
no cursor or a cursor already followed (a server going round in a loop) ends it too, and a cursor still
going after `max_pages` pages is refused (it would otherwise spend the rate budget until the timeout).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import Any
from urllib.parse import parse_qs, urlsplit

Page = Mapping[str, Any]


class CursorPaginator:
    """A cursor read from each page and sent back as one query parameter, with `fixed` parameters on every
    page. Stateful: one per listing."""

    def __init__(self, max_pages: int, *, param: str = "cursor", fixed: Mapping[str, str] | None = None) -> None:
        self.max_pages = max_pages
        self.param = param
        self.fixed = dict(fixed or {})
        self._cursor: str | None = None
        self._seen: set[str] = set()

    def query(self) -> dict[str, str] | None:
        """The next page's query parameters (None: none at all)."""
        query = {**self.fixed, **({self.param: self._cursor} if self._cursor else {})}
        return query or None

    def advance(self, page: Page) -> bool:
        """Take the next cursor from `page`; False when it was the last page (no cursor, or a repeated one)."""
        cursor = self.cursor_in(page)
        if cursor is None or cursor in self._seen:
            return False
        self._seen.add(cursor)
        self._cursor = cursor
        return True

    def cursor_in(self, page: Page) -> str | None:
        raise NotImplementedError


class JsonCursor(CursorPaginator):
    """The cursor is a string at `path` in the page (Cademi v3: `page.next_cursor`); null or empty ends it."""

    def __init__(self, path: tuple[str, ...], max_pages: int, **options: Any) -> None:
        super().__init__(max_pages, **options)
        self.path = path

    def cursor_in(self, page: Page) -> str | None:
        value: Any = page
        for key in self.path:
            value = value.get(key) if isinstance(value, dict) else None
        return value if isinstance(value, str) and value else None


class NextUrlCursor(JsonCursor):
    """The page names the next page's URL at `path` (Cademi v1: `paginator.next_page_url`). Only its cursor
    query value is kept: the URL's host is never trusted, so the next page is asked on the client's own base
    URL and the API key never goes to a host taken from a response."""

    def cursor_in(self, page: Page) -> str | None:
        return cursor_of(super().cursor_in(page), self.param)


def cursor_of(next_page_url: Any, param: str = "cursor") -> str | None:
    """Only the `param` query value of a next-page URL; its host is never trusted."""
    if not isinstance(next_page_url, str) or not next_page_url:
        return None
    values = parse_qs(urlsplit(next_page_url).query).get(param)
    return values[0] if values and values[0] else None


def paged(
    fetch: Callable[[dict[str, str] | None], Page],
    paginator: CursorPaginator,
    items: Callable[[Page], list[Any]],
    too_many: Callable[[str], Exception],
    what: str,
) -> Iterator[list[Any]]:
    """Each non-empty page's `items`, each page asked with `fetch(query)`, until an empty page or the
    paginator's last; past `max_pages` pages raises `too_many` naming `what`."""
    for _ in range(paginator.max_pages):
        page = fetch(paginator.query())
        found = items(page)
        if not found:
            return
        yield found
        if not paginator.advance(page):
            return
    raise too_many(f"{what}: more than {paginator.max_pages} pages; the cursor never ends")
