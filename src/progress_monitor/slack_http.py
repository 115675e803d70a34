"""Requests that Slack signs (the `/turma` command, the buttons under a digest): read with a cap, verified with
the v0 signature, parsed as a form. Shared by `add_tag` and `tutors`, which import it downward."""

from __future__ import annotations

import hashlib
import hmac
import logging
import time
from typing import Any
from urllib.parse import parse_qs

from flask import Request, Response

from progress_monitor.contracts.values import parse_uint
from progress_monitor.errors import SecretUnavailableError
from progress_monitor.secrets import get_secret
from progress_monitor.settings import SLACK_SIGNING_SECRET, Settings

log = logging.getLogger("progress_monitor.slack_http")
MAX_BODY = 16 * 1024
MAX_FIELDS = 50


def read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The raw body, or None when it is longer than `limit`: read from the stream with a cap, so a chunked
    body (no Content-Length) is refused after limit + 1 bytes instead of being read whole."""
    if request.content_length is not None and request.content_length > limit:
        return None
    body = request.stream.read(limit + 1)
    return None if len(body) > limit else body


def unread(response: Response) -> Response:
    """A refusal sent without reading the rest of the body: functions-framework reads the whole request
    before any non-streamed response (to avoid connection resets), which would undo the cap. Streamed, it
    leaves the body to the server, which drops the connection."""
    response.response = iter([response.get_data()])
    return response


def parse_form(body: bytes) -> dict[str, str] | None:
    """An url-encoded body as single values (the first of each name), or None when it is not UTF-8 or has
    more than MAX_FIELDS fields."""
    try:
        fields = parse_qs(body.decode("utf-8"), max_num_fields=MAX_FIELDS)
    except ValueError:  # UnicodeDecodeError included
        return None
    return {k: v[0] for k, v in fields.items() if v}


def slack_signature_valid(secret: str, headers: Any, body: bytes, max_skew_s: int, now: float | None = None) -> bool:
    """Slack's v0 signature: HMAC-SHA256 of `v0:{timestamp}:{raw body}`, compared in constant time."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    sent_at = parse_uint(timestamp)
    if sent_at is None or not isinstance(signature, str) or not signature.startswith("v0="):
        return False
    if abs((now if now is not None else time.time()) - sent_at) > max_skew_s:
        return False
    base = b"v0:" + timestamp.encode() + b":" + body
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def verified_slack_body(request: Request, settings: Settings, limit: int = MAX_BODY) -> bytes | Response:
    """The raw body of a request Slack signed (slash command or interaction), or the refusal to send: 405, 503
    when Slack is not configured (fails closed), 413 over `limit`, 401 for a missing, wrong or stale signature."""
    if request.method != "POST":
        return Response("method not allowed", status=405)
    if (problem := settings.slack_config_error()) is not None:
        log.error("Slack request refused: %s", problem)
        return Response("not configured", status=503)
    body = read_body(request, limit)
    if body is None:
        return unread(Response("payload too large", status=413))
    try:
        secret = get_secret(settings, SLACK_SIGNING_SECRET)
    except SecretUnavailableError:
        log.error("Slack signing secret unavailable; refusing the request")
        return Response("not configured", status=503)
    if not slack_signature_valid(secret, request.headers, body, settings.slack_max_skew_s):
        log.warning("Slack request with a missing, stale or wrong signature refused")
        return Response("invalid signature", status=401)
    return body
