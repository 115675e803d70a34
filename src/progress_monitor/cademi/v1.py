"""Cademi's REST API v1 client: envelope parsing, typed errors, retries, rate limiting and pagination."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Self
from urllib.parse import quote

import requests

from progress_monitor.cademi.ontime import OnTimeAdapter, pending
from progress_monitor.cademi.ratelimit import CallBudget
from progress_monitor.contracts.cademi import CallStats, Progress, Student, Tag
from progress_monitor.contracts.values import parse_uint
from progress_monitor.errors import (
    CademiApiError,
    CademiBusinessError,
    CademiConfigError,
    CademiError,
    CademiMalformedError,
    CademiPaginationError,
    CademiUnavailableError,
)
from progress_monitor.platform.paging import NextUrlCursor, Page, paged
from progress_monitor.platform.paging import cursor_of as cursor_of
from progress_monitor.platform.retrying import RetryRule, Transient, retry_after_s, retrying
from progress_monitor.settings import Settings

log = logging.getLogger(__name__)

# A rate-limit breach may come back as 409 with a message about the limit (behaviour unknown upstream).
_RATE_LIMIT_MSG = re.compile(r"limit|limite|too many|requisi[cç]", re.IGNORECASE)
MAX_PAGES = 200  # 30,000 students at 150 a page: far beyond any class
_SAFE_SEGMENT = re.compile(r"[0-9]+|[a-z_]*")
_PERCENT = re.compile(r"\s*([0-9]{1,3}(?:[.,][0-9]+)?)\s*%?\s*", re.ASCII)


def _int_field(item: Mapping[str, Any], key: str) -> int:
    value = item.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise CademiMalformedError(f"{key}={value!r} is not a non-negative integer")
    return value


def _opt_str(item: Mapping[str, Any], key: str) -> str | None:
    value = item.get(key)
    return value if isinstance(value, str) and value.strip() else None


def parse_total(value: Any) -> float:
    """Parse a progress total such as "41.7%" into 41.7; anything else is malformed, never 0."""
    if isinstance(value, bool):
        raise CademiMalformedError(f"total={value!r} is not a percentage")
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str) and (match := _PERCENT.fullmatch(value)):
        number = float(match.group(1).replace(",", "."))
    else:
        raise CademiMalformedError(f"total={str(value)[:40]!r} is not a percentage")
    if not 0.0 <= number <= 100.0:
        raise CademiMalformedError(f"total={number} is outside 0-100")
    return number


def parse_progress(data: Mapping[str, Any]) -> Progress:
    """Parse `data.progresso` of progresso_por_produto."""
    progresso = data.get("progresso")
    if not isinstance(progresso, dict):
        raise CademiMalformedError("data.progresso is missing or not an object")
    return Progress(
        total=parse_total(progresso.get("total")),
        assistidas=_int_field(progresso, "assistidas"),
        completas=_int_field(progresso, "completas"),
    )


def parse_student(item: Any) -> Student:
    """Keep only the fields tutors need; `doc` and `login_auto` are dropped here, at parse time."""
    if not isinstance(item, dict):
        raise CademiMalformedError("user item is not an object")
    user_id = item.get("id")
    if isinstance(user_id, str):
        user_id = parse_uint(user_id)
    if isinstance(user_id, bool) or not isinstance(user_id, int) or user_id <= 0:
        raise CademiMalformedError("user item has no positive integer id")
    return Student(
        user_id=user_id,
        nome=_opt_str(item, "nome") or "",
        email=_opt_str(item, "email") or "",
        celular=_opt_str(item, "celular"),
        criado_em=_opt_str(item, "criado_em"),
        ultimo_acesso_em=_opt_str(item, "ultimo_acesso_em"),
    )


def user_path(user: int | str) -> str:
    """A user path segment: numeric ids as they are, emails URL-encoded (`+` becomes %2B)."""
    return str(user) if isinstance(user, int) else quote(user, safe="")


class _Counters:
    """Adds to the client's stats and optionally to a caller's."""

    def __init__(self, *targets: CallStats | None) -> None:
        self._targets = [t for t in targets if t is not None]

    def add(self, name: str) -> None:
        for target in self._targets:
            target.add(name)


class CademiClient:
    """A small client over one pooled `requests.Session`; every attempt passes the shared rate limiter."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        limiter: CallBudget,
        *,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 30.0,
        max_attempts: int = 5,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        pool_size: int = 8,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if not api_key:
            raise CademiConfigError(403, "no API key configured", "(client)")
        self.base_url = base_url.rstrip("/")
        self.limiter = limiter
        self.stats = CallStats()
        self._timeout = (connect_timeout_s, read_timeout_s)
        # 429, 5xx, timeouts, lost connections and (below) non-JSON bodies are asked again, never sooner than
        # Retry-After; a 403/405, or a 409 not about the limit, is an answer (`_interpret`).
        self._rule = RetryRule(attempts=max_attempts, backoff_base_s=backoff_base_s, backoff_cap_s=backoff_cap_s)
        self._sleep = sleep
        self._session = requests.Session()
        # Its connections check the call's budget slot just before writing it (ontime.py).
        adapter = OnTimeAdapter(pool_connections=1, pool_maxsize=pool_size, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers.update({"Authorization": api_key, "Accept": "application/json"})

    @classmethod
    def from_settings(cls, settings: Settings, api_key: str, limiter: CallBudget) -> Self:
        """Build a client with the settings' timeouts and retry policy, calling within `limiter`."""
        return cls(
            settings.cademi_base_url,
            api_key,
            limiter,
            connect_timeout_s=settings.cademi_connect_timeout_s,
            read_timeout_s=settings.cademi_read_timeout_s,
            max_attempts=settings.cademi_max_attempts,
            backoff_base_s=settings.cademi_backoff_base_s,
            backoff_cap_s=settings.cademi_backoff_cap_s,
            pool_size=max(settings.cademi_workers, 1) + 2,
        )

    def close(self) -> None:
        self._session.close()

    # -- endpoints -------------------------------------------------------------------------------------

    def _pages(
        self, path: str, key: str, stats: CallStats | None = None, missing_is_empty: bool = False
    ) -> Iterator[list[Any]]:
        """Each non-empty page's `data[key]`, following only the cursor of `next_page_url` on our base URL;
        stops on an empty page, a page without a next cursor, or a cursor already followed, and refuses to go
        past MAX_PAGES (a cursor that never repeats would otherwise loop until the function's timeout)."""

        def items(data: Page) -> list[Any]:
            found = data.get(key)
            if found is None and missing_is_empty:
                return []
            if not isinstance(found, list):
                raise CademiMalformedError(f"{_redact_path(path)}: data.{key} is not a list")
            return found

        cursor = NextUrlCursor(("paginator", "next_page_url"), MAX_PAGES)
        return paged(
            lambda query: self._get(path, query, stats), cursor, items, CademiPaginationError, _redact_path(path)
        )

    def iter_tag_students(self, tag_id: int, stats: CallStats | None = None) -> Iterator[Student]:
        """Every student holding the tag, across all pages, each id once."""
        pages = self._pages(f"/usuario/lista_por_tag/{int(tag_id)}", "usuario", stats, missing_is_empty=True)
        return self._unique_students(pages, parse_student, tag_id)

    def _unique_students(
        self, pages: Iterator[list[Any]], parse: Callable[[Any], Student], tag_id: int
    ) -> Iterator[Student]:
        """Parsed students of a listing's pages, each id once; an unparsable row is counted and skipped."""
        seen_ids: set[int] = set()
        for users in pages:
            for index, item in enumerate(users):
                try:
                    student = parse(item)
                except CademiMalformedError as exc:
                    # Unattributable row: counted and logged without any of its content.
                    self.stats.add("malformed_users")
                    log.warning("skipping user item %d of tag %d: %s", index, tag_id, exc)
                    continue
                if student.user_id not in seen_ids:
                    seen_ids.add(student.user_id)
                    yield student

    def progress(self, user: int | str, product_id: int, stats: CallStats | None = None) -> Progress:
        """One user's progress in one product; raises CademiBusinessError when the user has no access."""
        data = self._get(f"/usuario/progresso_por_produto/{user_path(user)}/{int(product_id)}", None, stats)
        return parse_progress(data)

    def progress_units(self, product_ids: tuple[int, ...]) -> list[tuple[int, ...]]:
        return [(p,) for p in product_ids]  # v1 answers one product per call

    def student_progress(
        self, user_id: int, product_ids: tuple[int, ...], stats: CallStats | None = None
    ) -> dict[int, Progress | CademiError]:
        answers: dict[int, Progress | CademiError] = {}
        for product_id in product_ids:
            try:
                answers[product_id] = self.progress(user_id, product_id, stats)
            except CademiConfigError:
                raise
            except CademiError as exc:
                answers[product_id] = exc
        return answers

    def list_tags(self) -> list[Tag]:
        """All tags of the school (follows a paginator if the API ever sends one)."""
        tags: dict[int, Tag] = {}
        for items in self._pages("/tag", "itens"):
            for item in items:
                if isinstance(item, dict) and isinstance(item.get("id"), int) and item["id"] > 0:
                    tags.setdefault(item["id"], Tag(item["id"], str(item.get("nome") or "")))
        return list(tags.values())

    # -- transport -------------------------------------------------------------------------------------

    def _get(
        self, path: str, params: Mapping[str, str] | None = None, stats: CallStats | None = None
    ) -> dict[str, Any]:
        """GET one path on the configured base URL; returns `data` of a success envelope.

        Counters go to the client's stats and, when given, to the caller's own (e.g. one piece's).
        """
        url = self.base_url + path
        counters = _Counters(self.stats, stats)
        attempts = self._rule.attempts

        def failed(exc: Exception, attempt: int, wait: float | None) -> None:
            counters.add("transient_failures")
            if wait is not None:
                counters.add("retries")
                log.warning(
                    "transient Cademi failure on %s (%s); retry %d/%d in %.2fs",
                    _redact_path(path),
                    exc,
                    attempt,
                    attempts - 1,
                    wait,
                )

        try:
            return retrying(lambda: self._attempt(url, path, params, counters), self._rule, self._sleep, failed)
        except Transient as exc:
            raise CademiUnavailableError(f"{_redact_path(path)} failed {attempts} times; last: {exc.reason}") from None

    def _attempt(self, url: str, path: str, params: Mapping[str, str] | None, counters: _Counters) -> dict[str, Any]:
        # Everything but the write is done before the slot is taken; the slot is checked again at the write.
        request = self._session.prepare_request(requests.Request("GET", url, params=params))
        options = self._session.merge_environment_settings(request.url, {}, None, None, None)
        slot = self.limiter.acquire()
        counters.add("requests")
        try:
            with pending(self.limiter, slot, missed=lambda: counters.add("slots_missed")):
                # Through its class: the IAM check (tests/iam_needs.py) takes `.send` on a receiver it cannot
                # resolve for every method of ours so named, Services.send included.
                response = requests.Session.send(
                    self._session, request, timeout=self._timeout, allow_redirects=False, **options
                )
        except requests.RequestException as exc:
            lost = self._rule.lost_answer(exc)
            if lost is None:
                raise
            raise lost from None
        status = response.status_code
        try:
            body = response.json()
        except ValueError:
            body = None
        code, msg = self._code_and_message(status, body)
        limit_msg = 409 in (status, code) and _RATE_LIMIT_MSG.search(msg) is not None
        failure = self._rule.failure((status, code), response.headers, rate_limited=limit_msg)
        if failure is not None and failure.rate_limited:
            counters.add("rate_limited")
            log.error("Cademi rate limit breached on %s: the client budget is too high", _redact_path(path))
            self.limiter.breached()
        if failure is not None:
            raise failure
        if not isinstance(body, dict):
            raise Transient(f"non-JSON body (HTTP {status})", retry_after_s(response.headers.get("Retry-After")))
        return self._interpret(status, code, msg, body, path)

    def _code_and_message(self, status: int, body: Any) -> tuple[int, str]:
        """v1 repeats the status in the body's `code` (and a rate-limit 409 says so in `msg`)."""
        if not isinstance(body, dict):
            return status, ""
        body_code = body.get("code")
        return (body_code if isinstance(body_code, int) else status), str(body.get("msg") or "")[:200]

    def _interpret(self, status: int, code: int, msg: str, body: dict[str, Any], path: str) -> dict[str, Any]:
        """A JSON answer that is neither a breach nor a server error: v1's envelope `{success, code, data}`."""
        if status in (403, 405) or code in (403, 405):
            raise CademiConfigError(code if code in (403, 405) else status, msg or "forbidden", path)
        if body.get("success") is not True or status >= 400:
            error = CademiBusinessError if 409 in (status, code) else CademiApiError
            raise error(code, msg or f"HTTP {status}", _redact_path(path))
        data = body.get("data")
        if not isinstance(data, dict):
            raise CademiMalformedError(f"{_redact_path(path)}: success envelope without a data object")
        return data


def _redact_path(path: str) -> str:
    """What logs and errors say of a path: never the student (by id or e-mail); the endpoint and the product
    stay (issue 30: a log line naming the id would join it to the pseudonym an erasure leaves)."""
    parts = path.split("/")
    return "/".join(
        "<user>" if (k and parts[k - 1] == "progresso_por_produto") or not _SAFE_SEGMENT.fullmatch(p) else p
        for k, p in enumerate(parts)
    )
