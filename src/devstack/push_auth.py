"""Pub/Sub's authenticated push, locally: the token Pub/Sub attaches to a push, and the check Cloud Run makes.

In the cloud every push subscription declares `oidc_token { service_account_email, audience }`: Pub/Sub signs
an OpenID Connect ID token for that service account, whose `aud` is the declared audience (the push endpoint,
path included, when none is declared), and sends it as `Authorization: Bearer …`. Cloud Run admits the request
only with a valid token whose audience is the service's URL: 401 for a token that fails the check (a wrong
audience included), 403 without one. The Pub/Sub emulator keeps a subscription's `oidc_token` but sends no
token, so the local stack puts this relay between the emulator and the fronts (`devstack.front`):

    python -m devstack.push_auth --port 8090 --pubsub 127.0.0.1:8085

A push subscription's endpoint is `<relay>/<host:port>/<path>` (`relay_endpoint`); for each push the relay
reads the subscription's `oidc_token` from the emulator, mints a token with its audience (signed with a local
key, the stand-in for Google's) and forwards the push to `http://<host:port>/<path>` with it. The front refuses
the push unless the token passes `refusal` for its own URL.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import threading
import time
import urllib.request
from collections.abc import Collection
from http.server import ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

import jwt

from devstack.quiet_http import QuietHandler

# The stand-in for Google's signing keys: the relay signs with it, the fronts verify with it.
SIGNING_KEY = "local-stack-pubsub-push-id-token-signing-key"  # loopback-only, simulated pushes
ALGORITHM = "HS256"
ISSUER = "https://accounts.google.com"
LIFETIME_S = 3600


def relay_endpoint(relay_url: str, endpoint: str) -> str:
    """The push endpoint to give the emulator so that `endpoint` is reached through the relay at `relay_url`."""
    parts = urlsplit(endpoint)
    return f"{relay_url}/{parts.netloc}{parts.path}"


def target_of(relay_path: str) -> str:
    """The push endpoint a path on the relay stands for: `/<host:port>/<path>` -> `http://<host:port>/<path>`."""
    netloc, _, path = relay_path.lstrip("/").partition("/")
    return f"http://{netloc}/{path}"


def mint(audience: str, email: str, now: float) -> str:
    """An ID token as Pub/Sub signs it for a push subscription's service account."""
    claims = {
        "iss": ISSUER,
        "aud": audience,
        "email": email,
        "email_verified": True,
        "sub": email,
        "iat": int(now),
        "exp": int(now) + LIFETIME_S,
    }
    return jwt.encode(claims, SIGNING_KEY, algorithm=ALGORITHM)


def refusal(
    authorization: str | None, service_urls: Collection[str], now: float, invokers: Collection[str]
) -> tuple[int, str] | None:
    """Why Cloud Run refuses a request to a service at `service_urls` carrying this Authorization header (status,
    reason), or None when the token admits it: a valid token of an identity holding the service's invoker role
    (`invokers`: the accounts Terraform grants roles/run.invoker)."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return 403, "no identity token"
    audiences = {url.rstrip("/") for url in service_urls}
    audiences |= {f"{url}/" for url in audiences}
    try:
        claims = jwt.decode(
            token.strip(),
            SIGNING_KEY,
            algorithms=[ALGORITHM],
            audience=sorted(audiences),
            issuer=ISSUER,
            options={"require": ["aud", "exp", "iat", "iss"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.InvalidAudienceError:
        return 401, "the token's audience is not this service's URL"
    except jwt.PyJWTError as exc:
        return 401, f"invalid identity token: {type(exc).__name__}"
    if claims["exp"] <= now:
        return 401, "expired identity token"
    if claims.get("email") not in invokers:
        return 403, "the token's identity may not invoke this service"
    return None


class RelayHandler(QuietHandler):
    server: RelayServer

    def do_POST(self) -> None:
        body = self._body()
        target = target_of(self.path)
        try:
            subscription = json.loads(body)["subscription"]
            oidc = self.server.oidc_token(subscription)
        except (ValueError, KeyError, TypeError):
            self._reply(400, b"not a Pub/Sub push")
            return
        except (OSError, http.client.HTTPException):
            self._reply(503, b"the Pub/Sub emulator did not answer")
            return
        token = {}
        if oidc is not None:
            audience = oidc.get("audience") or target  # Pub/Sub's default: the push endpoint, path included
            token["Authorization"] = f"Bearer {mint(audience, oidc['serviceAccountEmail'], time.time())}"
        try:
            answer = self._forward(target, urlsplit(target).path, body, 900, drop={"authorization"}, add=token)
        except (OSError, http.client.HTTPException):
            self._reply(502, b"the push endpoint did not answer")
            return
        self._reply(*answer)


class RelayServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(self, port: int, pubsub: str) -> None:
        super().__init__(("127.0.0.1", port), RelayHandler)
        self.pubsub = pubsub
        self._declared: dict[str, dict[str, Any] | None] = {}
        self._lock = threading.Lock()

    def oidc_token(self, subscription: str) -> dict[str, Any] | None:
        """The subscription's declared `oidc_token` (service account, audience), read from the emulator once
        per subscription: the stack never changes a subscription's push config, it creates another."""
        with self._lock:
            if subscription in self._declared:
                return self._declared[subscription]
        with urllib.request.urlopen(f"http://{self.pubsub}/v1/{subscription}", timeout=30) as response:
            config = json.loads(response.read())
        token: dict[str, Any] | None = config.get("pushConfig", {}).get("oidcToken")
        with self._lock:
            self._declared[subscription] = token
        return token


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.push_auth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pubsub", required=True, help="the Pub/Sub emulator's host:port")
    args = parser.parse_args(argv)
    server = RelayServer(args.port, args.pubsub)
    print(json.dumps({"event": "ready", "port": args.port}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
