"""Requests that Slack signs (the `/turma` command, the buttons under a digest): read with a cap, verified with
the v0 signature, parsed as a form. Shared by `add_tag` and `tutors`, which import it downward.

The signing secret may be rotated: a well-formed, fresh signature that the cached secret does not verify is
checked once more against the secret read fresh from Secret Manager, at most once per `SECRET_REREAD_EVERY_S`
per process, so forged requests cannot make every request read Secret Manager."""

from __future__ import annotations

import hashlib
import hmac
import logging
import threading
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

from flask import Request, Response

from progress_monitor.contracts.values import parse_uint
from progress_monitor.errors import SecretUnavailableError
from progress_monitor.platform.secret_store import get_secret
from progress_monitor.settings import SLACK_SIGNING_SECRET, Settings

log = logging.getLogger("progress_monitor.slack.signing")
MAX_BODY = 16 * 1024
MAX_FIELDS = 50
SECRET_REREAD_EVERY_S = 60.0


class RereadWindow:
    """At most one fresh read of a secret per `every_s` seconds in this process (thread-safe)."""

    def __init__(self, every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.every_s = every_s
        self._clock = clock
        self._last: float | None = None
        self._lock = threading.Lock()

    def allow(self) -> bool:
        """True (and the window starts) when no fresh read happened in the last `every_s` seconds."""
        with self._lock:
            now = self._clock()
            if self._last is not None and now - self._last < self.every_s:
                return False
            self._last = now
            return True


_signing_secret_rereads = RereadWindow(SECRET_REREAD_EVERY_S)


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


def _signed(headers: Any, body: bytes, max_skew_s: int, now: float | None) -> tuple[bytes, str] | None:
    """What the signature signs and the signature sent, or None when the headers are missing, malformed or
    stale (no secret can make such a request valid)."""
    timestamp = headers.get("X-Slack-Request-Timestamp", "")
    signature = headers.get("X-Slack-Signature", "")
    sent_at = parse_uint(timestamp)
    if sent_at is None or not isinstance(signature, str) or not signature.startswith("v0="):
        return None
    if abs((now if now is not None else time.time()) - sent_at) > max_skew_s:
        return None
    return b"v0:" + timestamp.encode() + b":" + body, signature


def _signs(secret: str, signed: tuple[bytes, str]) -> bool:
    base, signature = signed
    expected = "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), signature.encode())


def slack_signature_valid(secret: str, headers: Any, body: bytes, max_skew_s: int, now: float | None = None) -> bool:
    """Slack's v0 signature: HMAC-SHA256 of `v0:{timestamp}:{raw body}`, compared in constant time."""
    signed = _signed(headers, body, max_skew_s, now)
    return signed is not None and _signs(secret, signed)


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
    signed = _signed(request.headers, body, settings.slack_max_skew_s, None)
    if signed is None or not (_signs(secret, signed) or _signs_with_fresh_secret(settings, secret, signed)):
        log.warning("Slack request with a missing, stale or wrong signature refused")
        return Response("invalid signature", status=401)
    return body


def _signs_with_fresh_secret(settings: Settings, cached: str, signed: tuple[bytes, str]) -> bool:
    """Whether the signing secret, read again from Secret Manager (it may have been rotated), verifies the
    request: at most one such read per window in this process; a read in vain changes nothing."""
    if not _signing_secret_rereads.allow():
        return False
    try:
        fresh = get_secret(settings, SLACK_SIGNING_SECRET, fresh=True)
    except SecretUnavailableError:
        log.error("Slack signing secret could not be read again after a signature mismatch")
        return False
    if fresh == cached:
        return False
    log.warning("Slack signing secret changed since it was cached; checking the signature with the new one")
    return _signs(fresh, signed)
