"""Asking an HTTP API again, written once for Cademi (v1 and v3) and Slack: which answers are worth asking
again, how long to wait first, and when to stop are a `RetryRule` (data); `retrying` is the one loop.

A rule sorts an answer by its status (rate limited, transient, or neither) and reads `Retry-After`
(delay-seconds or an HTTP date). The wait before the next attempt is the rule's exponential backoff with
jitter, never shorter than the server's Retry-After (capped); a rule without backoff (Slack) waits exactly
what the server said, and does not ask again when the server said nothing or asked for longer than the rule
waits in-process: the failure is raised, carrying the server's wait, for a later redelivery.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

import requests

from progress_monitor.errors import http_status_is_transient

T = TypeVar("T")
Sleep = Callable[[float], None]


class Transient(Exception):
    """One attempt's failure that a retry may clear. `retry_after`: the server's wait, when it said one."""

    def __init__(self, reason: str, retry_after: float | None = None, *, rate_limited: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry_after = retry_after
        self.rate_limited = rate_limited


@dataclass(frozen=True)
class RetryRule:
    """What one API's client asks again, and how long it waits first."""

    attempts: int  # every attempt, the first included
    retry_on: tuple[type[Exception], ...] = (Transient,)  # the failures asked again; any other propagates
    rate_limit_statuses: Collection[int] = frozenset({429})  # "too many calls", whatever else the body says
    transient_status: Callable[[int], bool] = http_status_is_transient  # an answer worth asking again
    backoff_base_s: float | None = 0.5  # first backoff, doubled per retry; None: wait only what the server says
    backoff_cap_s: float = 30.0  # the longest backoff, and the longest Retry-After waited when backing off
    max_retry_after_s: float = math.inf  # a longer Retry-After is not waited out: the failure is raised
    rate_limit_default_s: float | None = None  # rate limited without a usable Retry-After
    retry_after_only_when_rate_limited: bool = False  # Slack: a 5xx's Retry-After is not ours to wait
    # No answer at all, worth asking again, and the reason logged (an exception not named here propagates).
    lost: tuple[tuple[type[Exception], str], ...] = (
        (requests.Timeout, "timeout"),
        (requests.ConnectionError, "connection error"),
    )

    def failure(
        self, statuses: Collection[int], headers: Mapping[str, str], *, rate_limited: bool = False
    ) -> Transient | None:
        """The transient failure an answer is, or None. `statuses`: the HTTP status first, then any the body
        repeats (Cademi v1's `code`); `rate_limited`: the body said so (a Cademi 409 about the limit)."""
        status = next(iter(statuses))
        if rate_limited or any(s in self.rate_limit_statuses for s in statuses):
            return self.rate_limit(status, headers)
        if any(self.transient_status(s) for s in statuses):
            told = None if self.retry_after_only_when_rate_limited else retry_after_s(headers.get("Retry-After"))
            return Transient(f"HTTP {status}", told)
        return None

    def rate_limit(self, status: int, headers: Mapping[str, str]) -> Transient:
        """A rate-limited answer: the server's Retry-After, or the rule's default when it gave none."""
        told = retry_after_s(headers.get("Retry-After"))
        return Transient(
            f"rate limited ({status})", self.rate_limit_default_s if told is None else told, rate_limited=True
        )

    def lost_answer(self, exc: Exception) -> Transient | None:
        """The transient failure a request that got no answer is, or None when the rule does not retry it."""
        return next((Transient(reason) for kind, reason in self.lost if isinstance(exc, kind)), None)

    def wait(self, attempt: int, retry_after: float | None) -> float | None:
        """Seconds to wait after failed attempt number `attempt` (1-based), or None: do not ask again."""
        if attempt >= self.attempts:
            return None
        if retry_after is not None and retry_after > self.max_retry_after_s:
            return None  # longer than we wait in-process: left to the caller's redelivery
        if self.backoff_base_s is None:
            return retry_after
        # Full jitter over the upper half, so callers that failed together do not retry together.
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2 ** (attempt - 1))
        delay = random.uniform(ceiling / 2, ceiling)
        if retry_after is not None:
            delay = max(delay, min(retry_after, self.backoff_cap_s))
        return delay


OnFailure = Callable[[Exception, int, float | None], None]
"""Told of each failure the rule retries: the failure, its attempt number and the wait (None: giving up)."""


def retrying(send: Callable[[], T], rule: RetryRule, sleep: Sleep, on_failure: OnFailure | None = None) -> T:
    """`send()`, asked again as `rule` says; the last failure propagates when the rule says stop."""
    attempt = 1
    while True:
        try:
            return send()
        except rule.retry_on as exc:
            wait = rule.wait(attempt, getattr(exc, "retry_after", None))
            if on_failure is not None:
                on_failure(exc, attempt, wait)
            if wait is None:
                raise
            sleep(wait)
            attempt += 1


def retry_after_s(value: str | None, now: datetime | None = None) -> float | None:
    """A Retry-After header in seconds (delay-seconds or an HTTP date; a past date is 0), or None when absent
    or unreadable."""
    raw = (value or "").strip()
    if not raw:
        return None
    try:
        seconds = float(raw)
    except ValueError:
        try:
            when = parsedate_to_datetime(raw)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
    return seconds if math.isfinite(seconds) and seconds >= 0 else None
