"""Who is calling the form: Google IAP identity (verified in code too) or the explicit local development
identity; and the form's CSRF tokens. (Slack-signed requests: slack_http.py.)"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path
from typing import Any

import requests
from itsdangerous import BadData, TimestampSigner

from progress_monitor.settings import Settings

IAP_ISSUER = "https://cloud.google.com/iap"
IAP_KEYS_URL = "https://www.gstatic.com/iap/verify/public_key"
IAP_HEADER = "X-Goog-IAP-JWT-Assertion"
CSRF_TTL_S = 4 * 3600
CSRF_VALUE = b"add_tag"

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


class _CsrfSigner(TimestampSigner):
    """itsdangerous' timestamped HMAC (SHA-256), keyed to one identity (the salt), with a clock tests can set."""

    def __init__(self, secret: str, identity: str, now: float | None) -> None:
        super().__init__(secret, salt=f"add_tag-csrf|{identity}", digest_method=hashlib.sha256)
        self._now = now

    def get_timestamp(self) -> int:
        return int(self._now if self._now is not None else time.time())


def csrf_token(secret: str, identity: str, now: float | None = None) -> str:
    """A stateless token bound to the identity and the time it was issued (nothing of the identity in it)."""
    return _CsrfSigner(secret, identity, now).sign(CSRF_VALUE).decode()


def csrf_valid(secret: str, identity: str, token: Any, now: float | None = None) -> bool:
    """Whether `token` was issued by `csrf_token` for this identity and secret at most CSRF_TTL_S ago (a token
    issued in the future is refused too)."""
    if not isinstance(token, str) or len(token) > 200:
        return False
    try:
        return _CsrfSigner(secret, identity, now).unsign(token, max_age=CSRF_TTL_S) == CSRF_VALUE
    except BadData:
        return False
