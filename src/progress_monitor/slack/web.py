"""Slack's Web API, the three calls the tutors' features make: chat.postMessage, chat.update and a reply to an
interaction's `response_url`.

Failures are sorted for the retry policy: Slack down, rate limiting or a timeout is a `SlackUnavailableError`
(a TransientError: Pub/Sub redelivers with backoff); a refusal that a retry cannot fix (a channel the bot is not
in, a revoked token) is a `SlackRefusedError`, logged and recorded, never retried.

Slack's own rate limit (HTTP 429, or `ok: false` with `ratelimited` / `rate_limited`) is waited out in-process
when its `Retry-After` is at most `MAX_RETRY_AFTER_S`, `RATE_LIMIT_RETRIES` times per call; beyond that the
`SlackUnavailableError` carries `retry_after` and the redelivery waits instead. A bot token Slack refuses
(`SLACK_AUTH_CODES`) is read again, fresh, once per call before the refusal is final: a renewed token works at
once, without waiting for instances to recycle.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import requests
import urllib3

from progress_monitor.errors import (
    SLACK_AUTH_CODES,
    SLACK_RATE_LIMIT_CODES,
    SLACK_TRANSIENT_CODES,
    SlackRefusedError,
    SlackUnavailableError,
)
from progress_monitor.platform.retrying import RetryRule, Sleep, Transient, retrying

log = logging.getLogger(__name__)
MAX_BLOCKS = 50  # Block Kit's limit per message
MAX_TEXT = 3000  # a section's text limit
MAX_RETRY_AFTER_S = 10.0  # longer rate-limit waits are left to Pub/Sub's redelivery (within the worker's timeout)
RATE_LIMIT_RETRIES = 2  # rate-limited answers waited out per call, at most
DEFAULT_RETRY_AFTER_S = 1.0  # rate limited without a usable Retry-After: Slack's one message a second

TokenSource = Callable[[bool], str]
"""The bot token now; called with True, read fresh (bypassing any cache: it may have been renewed)."""

# Only a rate limit is asked again in-process, after exactly the Retry-After Slack said (no backoff of ours);
# a 5xx, a timeout or a longer wait is raised for Pub/Sub's redelivery.
RULE = RetryRule(
    attempts=RATE_LIMIT_RETRIES + 1,
    retry_on=(SlackUnavailableError,),
    backoff_base_s=None,
    max_retry_after_s=MAX_RETRY_AFTER_S,
    rate_limit_default_s=DEFAULT_RETRY_AFTER_S,
    retry_after_only_when_rate_limited=True,
)


def _rule(max_wait_s: float, retries: int) -> RetryRule:
    return dataclasses.replace(RULE, attempts=retries + 1, max_retry_after_s=max_wait_s)


class SlackClient:
    """The bot's Web API client (one session per process). `base_url` is https://slack.com/api in the cloud
    and the local Slack stand-in on the local stack. `token` is the token itself or, to follow a renewed token,
    a `TokenSource` (`Services.slack` passes Secret Manager's). `sleep` waits out a rate limit (tests inject it)."""

    def __init__(
        self,
        base_url: str,
        token: str | TokenSource,
        timeout_s: float = 10.0,
        *,
        sleep: Sleep = time.sleep,
        max_wait_s: float = MAX_RETRY_AFTER_S,
        retries: int = RATE_LIMIT_RETRIES,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._token: TokenSource = token if callable(token) else _fixed(token)
        self._sleep, self._rule = sleep, _rule(max_wait_s, retries)
        self._session = requests.Session()

    def call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` as JSON to `method`; the parsed answer when Slack says ok."""
        if len(payload.get("blocks", [])) > MAX_BLOCKS:
            raise ValueError(f"{method}: more than {MAX_BLOCKS} blocks")
        token, refreshed = self._token(False), False
        while True:
            try:
                send = functools.partial(self._once, method, payload, token)
                return retrying(send, self._rule, self._sleep, _waiting)
            except SlackRefusedError as exc:
                if exc.code not in SLACK_AUTH_CODES or refreshed:
                    raise
                refreshed, renewed = True, self._token(True)
                if renewed == token:
                    raise  # the stored token is the one refused: renewing it is the fix
                log.warning("%s: Slack refused the bot token (%s); asking again with the renewed one", method, exc.code)
                token = renewed

    def _once(self, method: str, payload: dict[str, Any], token: str) -> dict[str, Any]:
        headers = {"Authorization": f"Bearer {token}"}  # per request: the token may be renewed meanwhile
        try:
            response = self._session.post(
                f"{self.base_url}/{method}", json=payload, headers=headers, timeout=self.timeout_s
            )
        except requests.RequestException as exc:
            raise SlackUnavailableError(f"{method}: {type(exc).__name__}", maybe_done=_maybe_sent(exc)) from exc
        return _answer(method, response)

    def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]]) -> str:
        """Post to a channel; returns the message's `ts` (its id within the channel)."""
        answer = self.call("chat.postMessage", {"channel": channel, "text": text, "blocks": blocks})
        ts = answer.get("ts")
        if not isinstance(ts, str) or not ts:  # Slack said ok: the message is there, we only lack its id
            raise SlackUnavailableError("chat.postMessage answered without a ts", maybe_done=True)
        return ts

    def update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self.call("chat.update", {"channel": channel, "ts": ts, "text": text, "blocks": blocks})


def _maybe_sent(exc: requests.RequestException) -> bool:
    """Whether a failed call may have reached Slack: the request went out and the answer did not come back (a
    read timeout, the connection dropped mid-answer), as opposed to never connecting."""
    if isinstance(exc, requests.ConnectTimeout):
        return False
    if isinstance(exc, requests.ReadTimeout | requests.exceptions.ChunkedEncodingError):
        return True
    cause = exc.args[0] if exc.args else None
    return isinstance(exc, requests.ConnectionError) and isinstance(cause, urllib3.exceptions.ProtocolError)


def _fixed(token: str) -> TokenSource:
    return lambda _fresh: token


def _waiting(exc: Exception, attempt: int, wait: float | None) -> None:
    if wait is not None:
        log.info("Slack rate limited the call; waiting %g s before asking again", wait)


def _unavailable(what: str, failure: Transient) -> SlackUnavailableError:
    """A transient failure as the error Pub/Sub redelivers on; only a rate limit carries Slack's wait."""
    if failure.rate_limited and failure.retry_after is not None:
        wait = failure.retry_after
        return SlackUnavailableError(f"{what}: rate limited, retry after {wait:g} s", retry_after=wait)
    return SlackUnavailableError(f"{what}: {failure.reason}")


def _check_status(what: str, response: requests.Response) -> None:
    """A 429 or a 5xx is Slack unavailable, whatever the body says."""
    failure = RULE.failure((response.status_code,), response.headers)
    if failure is not None:
        raise _unavailable(what, failure)


def _answer(method: str, response: requests.Response) -> dict[str, Any]:
    _check_status(method, response)
    try:
        body = response.json()
    except ValueError as exc:
        raise SlackUnavailableError(f"{method}: HTTP {response.status_code} without JSON") from exc
    if not isinstance(body, dict):
        raise SlackUnavailableError(f"{method}: an answer that is not an object")
    if body.get("ok") is True:
        return body
    code = str(body.get("error") or f"http_{response.status_code}")[:60]
    if code in SLACK_RATE_LIMIT_CODES:
        raise _unavailable(method, RULE.rate_limit(response.status_code, response.headers))
    if code in SLACK_TRANSIENT_CODES:
        raise SlackUnavailableError(f"{method}: {code}")
    raise SlackRefusedError(code)


def respond(
    response_url: str,
    message: dict[str, Any],
    timeout_s: float = 10.0,
    *,
    sleep: Sleep = time.sleep,
    max_wait_s: float = MAX_RETRY_AFTER_S,
    retries: int = RATE_LIMIT_RETRIES,
) -> None:
    """Answer a slash command or an interaction through its `response_url` (valid 30 minutes, 5 uses). The
    caller has checked the URL is Slack's (`Settings.slack_response_url_ok`); a redirect is never followed (it
    would take the answer elsewhere) but refused. A 429 is waited out as in `SlackClient.call`."""
    retrying(lambda: _respond_once(response_url, message, timeout_s), _rule(max_wait_s, retries), sleep, _waiting)


def _respond_once(response_url: str, message: dict[str, Any], timeout_s: float) -> None:
    try:
        response = requests.post(response_url, json=message, timeout=timeout_s, allow_redirects=False)
    except requests.RequestException as exc:
        raise SlackUnavailableError(f"response_url: {type(exc).__name__}") from exc
    _check_status("response_url", response)
    if response.status_code >= 300:
        raise SlackRefusedError(f"response_url_http_{response.status_code}")
