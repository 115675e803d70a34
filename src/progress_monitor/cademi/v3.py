"""Cademi's API v3 as a `CademiSource`: one progress call per student, whichever products the track has.

What Cademi has published (`cademi-api-v3.md`) does not name the fields of a progress item, the user's
access dates, the auth header or the rate limits (each marked U there). Every such name lives in `FIELDS`
below and nowhere else; `check_contract` reads the live `GET /openapi.json` (and `GET /capabilities`) with
the school's key and reports, field by field, whether this mapping matches, before a school switches.

Identity: v3 ids are prefixed opaque strings (`usr_42`, `prd_7`, `tag_7`). The history keeps v1's numeric
ids, so `usr_<digits>` is read as v1 user `<digits>` (the fact sheet's own example pairs them; a school
checks it once, docs/architecture.md "Cademi API v1 and v3"). An id of any other shape is refused, never
guessed: the student is skipped and counted (`malformed_users`), so two students can never be merged nor one
split.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from progress_monitor.cademi.ratelimit import CallBudget
from progress_monitor.cademi.v1 import MAX_PAGES, CademiClient, parse_total
from progress_monitor.contracts.cademi import CallStats, Progress, Student, Tag
from progress_monitor.contracts.values import parse_uint, strict
from progress_monitor.errors import (
    CademiApiError,
    CademiBusinessError,
    CademiConfigError,
    CademiError,
    CademiMalformedError,
    CademiPaginationError,
)
from progress_monitor.platform.paging import JsonCursor, Page, paged

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Schema:
    """An OpenAPI schema name and the property names we read from it (ours -> theirs)."""

    name: str
    properties: Mapping[str, str]


@dataclass(frozen=True)
class V3Fields:
    """Every v3 name the client depends on that Cademi has not documented for certain."""

    auth_header: str = "Authorization"
    auth_scheme: str = "Bearer"  # the value sent is "<scheme> <key>"
    page_size: int = 200
    user: Schema = field(
        default_factory=lambda: Schema(
            "User",
            {
                "id": "id",
                "name": "name",
                "email": "email",
                "phone": "phone",
                "created_at": "created_at",
                "last_access_at": "last_access_at",
            },
        )
    )
    progress: Schema = field(
        default_factory=lambda: Schema(
            "ProgressItem",
            {
                "product_id": "product_id",
                "percent": "percentage",  # 0-100
                "watched": "lessons_watched",
                "completed": "lessons_completed",
            },
        )
    )
    # Permissions the school's key needs: listing a class, reading progress, checking a tag exists; and the
    # phone, which tutors use, comes only with users.read_personal (CPF comes with it too; dropped at parse).
    permissions: tuple[str, ...] = ("users.read", "progress.read", "tags.read", "users.read_personal")


FIELDS = V3Fields()
# One student's progress is a page or two (200 products a page); a cursor still going after this many pages is
# a broken paginator, cut here rather than after the MAX_PAGES meant for a class's listing (each page is a
# call of the school's budget).
MAX_STUDENT_PAGES = 10
USER_ID = strict(r"usr_([1-9][0-9]{0,11})")
PRODUCT_ID = strict(r"prd_([1-9][0-9]{0,11})")
TAG_ID = strict(r"tag_([1-9][0-9]{0,11})")


def numeric_id(pattern: Any, value: Any) -> int | None:
    """The numeric id inside a prefixed v3 id (`usr_42` -> 42), or None for any other shape."""
    match = pattern.fullmatch(value) if isinstance(value, str) else None
    return parse_uint(match[1]) if match else None


def parse_user(item: Any) -> Student:
    """A listed user, keeping only what tutors need; `document` (CPF) is never read."""
    if not isinstance(item, dict):
        raise CademiMalformedError("user item is not an object")
    names = FIELDS.user.properties
    user_id = numeric_id(USER_ID, item.get(names["id"]))
    if user_id is None:
        raise CademiMalformedError("user item has no usr_<number> id")

    def text(key: str) -> str | None:
        value = item.get(names[key])
        return value.strip() if isinstance(value, str) and value.strip() else None

    return Student(
        user_id=user_id,
        nome=text("name") or "",
        email=text("email") or "",
        celular=text("phone"),
        criado_em=text("created_at"),
        ultimo_acesso_em=text("last_access_at"),
    )


def parse_progress_item(item: Mapping[str, Any]) -> Progress:
    names = FIELDS.progress.properties
    watched, completed = item.get(names["watched"]), item.get(names["completed"])
    for key, value in (("watched", watched), ("completed", completed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise CademiMalformedError(f"{names[key]}={str(value)[:20]!r} is not a count")
    assert isinstance(watched, int) and isinstance(completed, int)
    return Progress(total=parse_total(item.get(names["percent"])), assistidas=watched, completas=completed)


class CademiV3Client(CademiClient):
    """The v3 API over the same transport: the school's budget, retries, backoff and Retry-After."""

    def __init__(self, base_url: str, api_key: str, limiter: CallBudget, **options: Any) -> None:
        super().__init__(base_url, api_key, limiter, **options)
        self._session.headers.pop("Authorization", None)
        self._session.headers[FIELDS.auth_header] = f"{FIELDS.auth_scheme} {api_key}".strip()

    # -- transport: v3's error envelope {"error": {code, message, request_id}} -----------------------------

    def _code_and_message(self, status: int, body: Any) -> tuple[int, str]:
        error = body.get("error") if isinstance(body, dict) else None
        if not isinstance(error, dict):
            return status, ""
        message = f"{error.get('code') or ''}: {error.get('message') or ''}"
        request_id = error.get("request_id")
        if isinstance(request_id, str):
            message += f" (request {request_id[:40]})"  # what Cademi's support asks for
        return status, message[:300]

    def _interpret(self, status: int, code: int, msg: str, body: dict[str, Any], path: str) -> dict[str, Any]:
        if status in (401, 403):
            raise CademiConfigError(status, msg or "unauthorised", path)
        if status == 404:
            raise CademiBusinessError(status, msg or "not found", path)
        if status >= 400:
            raise CademiApiError(status, msg or f"HTTP {status}", path)
        return body

    def _v3_pages(
        self, path: str, params: dict[str, str], stats: CallStats | None = None, max_pages: int = MAX_PAGES
    ) -> Iterator[list[Any]]:
        """Each non-empty page's `data`, following `page.next_cursor` until it is empty or a cursor repeats; a
        cursor still going after `max_pages` pages raises CademiPaginationError."""

        def items(body: Page) -> list[Any]:
            found = body.get("data")
            if not isinstance(found, list):
                raise CademiMalformedError(f"{path}: page without a data list")
            return found

        cursor = JsonCursor(("page", "next_cursor"), max_pages, fixed={**params, "limit": str(FIELDS.page_size)})
        return paged(lambda query: self._get(path, query, stats), cursor, items, CademiPaginationError, path)

    # -- CademiSource ------------------------------------------------------------------------------------

    def iter_tag_students(self, tag_id: int, stats: CallStats | None = None) -> Iterator[Student]:
        pages = self._v3_pages("/users", {"tag_id[]": f"tag_{int(tag_id)}"}, stats)
        return self._unique_students(pages, parse_user, tag_id)

    def progress_units(self, product_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [product_ids]  # one call answers every product

    def student_progress(
        self, user_id: int, product_ids: tuple[int, ...], stats: CallStats | None = None
    ) -> dict[int, Progress | CademiError]:
        """A track's product absent from the answer is `no_access`; a malformed entry is that product's
        failure, never 0; a failed call, or a cursor past MAX_STUDENT_PAGES, fails every product of the student."""
        path = f"/users/usr_{int(user_id)}/progress"
        try:
            items = [i for page in self._v3_pages(path, {}, stats, MAX_STUDENT_PAGES) for i in page]
        except CademiConfigError:
            raise  # a wrong key or URL fails the whole piece
        except CademiError as exc:  # a failed call fails every product; a vanished user (404) has no access
            failed: dict[int, Progress | CademiError] = {p: exc for p in product_ids}
            return failed
        found: dict[int, Progress | CademiError] = {}
        key = FIELDS.progress.properties["product_id"]
        for item in items:
            product = numeric_id(PRODUCT_ID, item.get(key)) if isinstance(item, dict) else None
            if product is None or product not in product_ids or product in found:
                continue
            try:
                found[product] = parse_progress_item(item)
            except CademiMalformedError as exc:
                found[product] = exc
        no_access = CademiBusinessError(404, "sem acesso ao produto (ausente do progresso v3)", "/progress")
        return {p: found.get(p, no_access) for p in product_ids}

    def list_tags(self) -> list[Tag]:
        tags: dict[int, Tag] = {}
        for items in self._v3_pages("/tags", {}):
            for item in items:
                tag_id = numeric_id(TAG_ID, item.get("id")) if isinstance(item, dict) else None
                if tag_id is not None:
                    tags.setdefault(tag_id, Tag(tag_id, str(item.get("name") or "")))
        return list(tags.values())
