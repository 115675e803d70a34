"""Who is calling: Google IAP identity (verified in code too) or the explicit local development identity;
CSRF tokens for the form; Slack request signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
import time
from pathlib import Path
from typing import Any

import requests

from progress_monitor.contracts import parse_uint
from progress_monitor.settings import Settings

IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"
IAP_HEADER = "X-Goog-IAP-JWT-Assertion"
CSRF_TTL_S = 4 * 3600

_keys_lock = threading.Lock()
_keys: tuple[float, dict[str, str]] | None = None


class Unauthenticated(Exception):
    """No verifiable identity: the request is refused."""


class Forbidden(Exception):
    """A verified identity that is not on the staff allow-list."""


def _iap_keys(settings: Settings) -> dict[str, str]:
    """IAP's public keys by key id (PEM): from a file locally, from Google (cached an hour) in the cloud."""
    global _keys
    if settings.iap_public_keys_file:
        keys: dict[str, str] = json.loads(Path(settings.iap_public_keys_file).read_text())
        return keys
    with _keys_lock:
        if _keys is None or time.monotonic() - _keys[0] > 3600:
            response = requests.get(IAP_KEYS_URL, timeout=5)
            response.raise_for_status()
            _keys = (time.monotonic(), response.json())
        return _keys[1]


def staff_identity(settings: Settings, headers: Any) -> str:
    """The verified email of the caller, or Unauthenticated / Forbidden (`headers`: any mapping-like)."""
    claims: dict[str, Any] = {}
    if settings.form_auth == "dev":
        email = settings.form_dev_user.lower()  # explicit local identity; settings refuse it outside emulators
    else:
        if not settings.iap_audience:  # fail closed: without it a token of any IAP app would be accepted
            raise Unauthenticated("IAP_AUDIENCE is not set")
        token = headers.get(IAP_HEADER)
        if not token:
            raise Unauthenticated("missing IAP assertion")
        from google.auth import jwt

        try:
            claims = jwt.decode(  # type: ignore[no-untyped-call]
                token, certs=_iap_keys(settings), audience=settings.iap_audience
            )
        except (ValueError, KeyError) as exc:
            raise Unauthenticated(f"invalid IAP assertion: {exc}") from exc
        if claims.get("iss") != IAP_ISSUER or not isinstance(claims.get("email"), str):
            raise Unauthenticated("IAP assertion has the wrong issuer or no email")
        email = claims["email"].lower()
    domain = settings.form_allowed_domain.lower().lstrip("@")
    # A domain admits only that Workspace's accounts: IAP's `hd` claim names it (a consumer Google account with
    # an address at the domain has none). The local dev identity has no claims and is checked by address.
    workspace = settings.form_auth == "dev" or claims.get("hd") == domain
    if email in settings.allowed_emails or (domain and email.endswith("@" + domain) and workspace):
        return email
    raise Forbidden(email)


def csrf_token(secret: str, identity: str, now: float | None = None) -> str:
    """A stateless token bound to the identity and the time it was issued."""
    issued = str(int(now if now is not None else time.time()))
    mac = hmac.new(secret.encode(), f"{identity}|{issued}".encode(), hashlib.sha256).hexdigest()
    return base64.urlsafe_b64encode(f"{issued}.{mac}".encode()).decode()


def csrf_valid(secret: str, identity: str, token: Any, now: float | None = None) -> bool:
    if not isinstance(token, str) or len(token) > 200:
        return False
    try:
        issued, mac = base64.urlsafe_b64decode(token.encode()).decode().split(".", 1)
    except (ValueError, UnicodeDecodeError):
        return False
    issued_at = parse_uint(issued)
    if issued_at is None:
        return False
    age = (now if now is not None else time.time()) - issued_at
    if not 0 <= age <= CSRF_TTL_S:
        return False
    expected = hmac.new(secret.encode(), f"{identity}|{issued}".encode(), hashlib.sha256).hexdigest()
    return hmac.compare_digest(mac, expected)


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
