"""Slack's Web API, the three calls the tutors' features make: chat.postMessage, chat.update and a reply to an
interaction's `response_url`.

Failures are sorted for the retry policy: Slack down, rate limiting or a timeout is a `SlackUnavailableError`
(a TransientError: Pub/Sub redelivers with backoff); a refusal that a retry cannot fix (a channel the bot is not
in, a revoked token) is a `SlackRefusedError`, logged and recorded, never retried.
"""

from __future__ import annotations

import logging
from typing import Any

import requests

from progress_monitor.errors import (
    SLACK_TRANSIENT_CODES,
    SlackRefusedError,
    SlackUnavailableError,
    http_status_is_transient,
)

log = logging.getLogger(__name__)
MAX_BLOCKS = 50  # Block Kit's limit per message
MAX_TEXT = 3000  # a section's text limit


class SlackClient:
    """The bot's Web API client (one session per process). `base_url` is https://slack.com/api in the cloud
    and the local Slack stand-in on the local stack."""

    def __init__(self, base_url: str, token: str, timeout_s: float = 10.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout_s = timeout_s
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def call(self, method: str, payload: dict[str, Any]) -> dict[str, Any]:
        """POST `payload` as JSON to `method`; the parsed answer when Slack says ok."""
        if len(payload.get("blocks", [])) > MAX_BLOCKS:
            raise ValueError(f"{method}: more than {MAX_BLOCKS} blocks")
        try:
            response = self._session.post(f"{self.base_url}/{method}", json=payload, timeout=self.timeout_s)
        except requests.RequestException as exc:
            raise SlackUnavailableError(f"{method}: {type(exc).__name__}") from exc
        return _answer(method, response)

    def post_message(self, channel: str, text: str, blocks: list[dict[str, Any]]) -> str:
        """Post to a channel; returns the message's `ts` (its id within the channel)."""
        answer = self.call("chat.postMessage", {"channel": channel, "text": text, "blocks": blocks})
        ts = answer.get("ts")
        if not isinstance(ts, str) or not ts:
            raise SlackUnavailableError("chat.postMessage answered without a ts")
        return ts

    def update_message(self, channel: str, ts: str, text: str, blocks: list[dict[str, Any]]) -> None:
        self.call("chat.update", {"channel": channel, "ts": ts, "text": text, "blocks": blocks})


def _answer(method: str, response: requests.Response) -> dict[str, Any]:
    if http_status_is_transient(response.status_code):
        raise SlackUnavailableError(f"{method}: HTTP {response.status_code}")
    try:
        body = response.json()
    except ValueError as exc:
        raise SlackUnavailableError(f"{method}: HTTP {response.status_code} without JSON") from exc
    if not isinstance(body, dict):
        raise SlackUnavailableError(f"{method}: an answer that is not an object")
    if body.get("ok") is True:
        return body
    code = str(body.get("error") or f"http_{response.status_code}")[:60]
    if code in SLACK_TRANSIENT_CODES:
        raise SlackUnavailableError(f"{method}: {code}")
    raise SlackRefusedError(code)


def respond(response_url: str, message: dict[str, Any], timeout_s: float = 10.0) -> None:
    """Answer a slash command or an interaction through its `response_url` (valid 30 minutes, 5 uses). The
    caller has checked the URL is Slack's (`Settings.slack_response_url_ok`)."""
    try:
        response = requests.post(response_url, json=message, timeout=timeout_s)
    except requests.RequestException as exc:
        raise SlackUnavailableError(f"response_url: {type(exc).__name__}") from exc
    if http_status_is_transient(response.status_code):
        raise SlackUnavailableError(f"response_url: HTTP {response.status_code}")
    if response.status_code >= 400:
        raise SlackRefusedError(f"response_url_http_{response.status_code}")
