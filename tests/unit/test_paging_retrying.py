"""The mechanics Cademi v1, v3 and Slack share: the page loop with its paginators, and the retry rules."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from progress_monitor.platform.paging import JsonCursor, NextUrlCursor, Page, paged
from progress_monitor.platform.retrying import RetryRule, Transient, retry_after_s, retrying


class Endless(Exception):
    pass


def v1_page(items: list[int], next_url: str | None) -> dict[str, Any]:
    return {"usuario": items, "paginator": {"perPage": 2, "next_page_url": next_url}}


def follow(pages: list[dict[str, Any]], cursor: Any) -> tuple[list[list[int]], list[Mapping[str, str] | None]]:
    asked: list[Mapping[str, str] | None] = []

    def fetch(query: dict[str, str] | None) -> Page:
        asked.append(query)
        return pages[len(asked) - 1]

    got = list(paged(fetch, cursor, lambda page: list(page["usuario"]), Endless, "/list"))
    return got, asked


def test_v1_cursor_keeps_only_the_cursor_and_stops_on_a_repeat() -> None:
    pages = [v1_page([1, 2], "https://dev.example/x?cursor=A"), v1_page([3], "http://h/?cursor=A"), v1_page([9], None)]
    got, asked = follow(pages, NextUrlCursor(("paginator", "next_page_url"), 10))
    assert got == [[1, 2], [3]]
    assert asked == [None, {"cursor": "A"}]


def test_an_empty_page_ends_the_list_without_reading_its_cursor() -> None:
    pages = [v1_page([1], "?cursor=A"), v1_page([], "?cursor=B"), v1_page([5], None)]
    got, asked = follow(pages, NextUrlCursor(("paginator", "next_page_url"), 10))
    assert got == [[1]] and len(asked) == 2


def test_a_cursor_that_never_ends_is_cut_at_the_page_cap() -> None:
    pages = [v1_page([i], f"?cursor=C{i}") for i in range(5)]
    with pytest.raises(Endless, match="/list: more than 3 pages; the cursor never ends"):
        follow(pages, NextUrlCursor(("paginator", "next_page_url"), 3))


def test_v3_cursor_sends_its_fixed_parameters_on_every_page() -> None:
    cursor = JsonCursor(("page", "next_cursor"), 10, fixed={"tag_id[]": "tag_7", "limit": "200"})
    pages = [{"data": [1], "page": {"next_cursor": "n1"}}, {"data": [2], "page": {"next_cursor": ""}}]
    asked: list[Mapping[str, str] | None] = []

    def fetch(query: dict[str, str] | None) -> Page:
        asked.append(query)
        return pages[len(asked) - 1]

    assert list(paged(fetch, cursor, lambda page: list(page["data"]), Endless, "/users")) == [[1], [2]]
    assert asked == [{"tag_id[]": "tag_7", "limit": "200"}, {"tag_id[]": "tag_7", "limit": "200", "cursor": "n1"}]


CADEMI = RetryRule(attempts=4, backoff_base_s=0.5, backoff_cap_s=4.0)
SLACK = RetryRule(attempts=3, backoff_base_s=None, max_retry_after_s=10.0, rate_limit_default_s=1.0)


def test_backoff_doubles_with_jitter_up_to_its_cap_and_never_undercuts_retry_after() -> None:
    for attempt, ceiling in ((1, 0.5), (2, 1.0), (3, 2.0)):
        delay = CADEMI.wait(attempt, None)
        assert delay is not None and ceiling / 2 <= delay <= ceiling
    assert CADEMI.wait(1, 3.0) == 3.0
    assert CADEMI.wait(1, 120.0) == 4.0  # a Retry-After is honoured up to the cap
    assert CADEMI.wait(4, None) is None  # attempts spent


def test_without_backoff_only_the_servers_wait_is_waited() -> None:
    assert SLACK.wait(1, 3.0) == 3.0 and SLACK.wait(2, 0.0) == 0.0
    assert SLACK.wait(1, None) is None  # nothing said: not asked again in-process
    assert SLACK.wait(1, 11.0) is None  # longer than the rule waits: raised with it
    assert SLACK.wait(3, 1.0) is None


@pytest.mark.parametrize(
    ("statuses", "headers", "limited", "reason", "retry_after"),
    [
        ((429, 429), {"Retry-After": "2"}, False, "rate limited (429)", 2.0),
        ((200, 429), {}, False, "rate limited (200)", None),  # v1's body code says 429
        ((409, 409), {}, True, "rate limited (409)", None),  # a 409 about the limit
        ((503, 503), {"Retry-After": "5"}, False, "HTTP 503", 5.0),
        ((200, 500), {}, False, "HTTP 200", None),
    ],
)
def test_answers_are_sorted_by_the_rule(
    statuses: tuple[int, int], headers: dict[str, str], limited: bool, reason: str, retry_after: float | None
) -> None:
    failure = CADEMI.failure(statuses, headers, rate_limited=limited)
    assert failure is not None and (failure.reason, failure.retry_after) == (reason, retry_after)
    assert failure.rate_limited == reason.startswith("rate")


def test_refusals_are_answers_and_slacks_5xx_carries_no_wait() -> None:
    assert CADEMI.failure((409, 409), {}) is None and CADEMI.failure((403, 403), {}) is None
    slack = RetryRule(attempts=3, backoff_base_s=None, retry_after_only_when_rate_limited=True)
    failure = slack.failure((503,), {"Retry-After": "1"})
    assert failure is not None and failure.retry_after is None
    assert SLACK.rate_limit(200, {}).retry_after == 1.0  # rate limited without a Retry-After: the default


def test_the_loop_retries_what_the_rule_says_then_raises_the_last_failure() -> None:
    slept: list[float] = []
    calls: list[int] = []

    def send() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise Transient("rate limited (429)", 0.25, rate_limited=True)
        return "ok"

    assert retrying(send, SLACK, slept.append) == "ok" and slept == [0.25, 0.25]

    def always() -> str:
        raise Transient("HTTP 503", 1.0)

    with pytest.raises(Transient):
        retrying(always, SLACK, slept.append)
    assert slept == [0.25, 0.25, 1.0, 1.0]

    def refused() -> str:
        raise ValueError("not transient")

    with pytest.raises(ValueError):
        retrying(refused, SLACK, slept.append)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("3", 3.0), ("0", 0.0), ("-1", None), ("inf", None), ("soon", None), (None, None)]
)
def test_retry_after_is_read_as_seconds_or_nothing(raw: str | None, seconds: float | None) -> None:
    assert retry_after_s(raw) == seconds
    assert retry_after_s("Mon, 01 Jan 2001 00:00:00 GMT") == 0.0  # a past date: ask now
