"""A local front that treats a function the way Cloud Run does, where it matters to the pipeline.

Cloud Run admits at most `max instances x concurrency` requests to a service. A request that finds every slot
busy waits in a queue for about 10 s, then gets `429 Too Many Requests` (which Pub/Sub counts as a failed
delivery attempt). functions-framework alone queues requests in its threads without limit, so locally nobody
would see it: this front sits between the Pub/Sub emulator's pushes and the function's processes ("instances")
and enforces the rule.

Cloud Run also admits a request to a private service only with a Google-signed ID token whose audience is the
service's URL, of an identity holding the service's invoker role: a Pub/Sub push carries the one its
subscription's `oidc_token` declares. With `--invoker EMAIL` (as the local stack starts it, naming the push
account) the front checks the token the local push relay attached (`devstack.push_auth`) against its own URL,
`http://127.0.0.1:<port>`, and refuses a push without one (403), whose token fails the check, a wrong audience
included (401), or whose identity is not an invoker (403), before it reaches any instance.

    python -m devstack.front --port 8080 --backend http://127.0.0.1:9001 --backend http://127.0.0.1:9002 \
        --concurrency 2 --queue-s 10

Each backend (a process of the function) gets at most `concurrency` requests at once; a request goes to the
least busy backend with a free slot. It prints one JSON line when it listens; `GET /__front/stats` answers
what it admitted, queued and refused (for capacity), and how many requests it refused as unauthenticated.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import sys
import threading
import time
from http.server import ThreadingHTTPServer

from devstack import push_auth
from devstack.quiet_http import QuietHandler

STATS_PATH = "/__front/stats"


class Slots:
    """Free request slots per backend; `take` waits up to the queue timeout for any of them."""

    def __init__(self, backends: list[str], concurrency: int) -> None:
        self.backends = backends
        self.free = dict.fromkeys(backends, concurrency)
        self.cond = threading.Condition()
        self.stats = {
            "admitted": 0,
            "queued": 0,
            "refused": 0,
            "in_flight": 0,
            "max_in_flight": 0,
            "unauthenticated": 0,
        }

    def take(self, timeout: float) -> str | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            waited = False
            while True:
                backend = max(self.backends, key=lambda b: self.free[b])
                if self.free[backend] > 0:
                    self.free[backend] -= 1
                    self.stats["admitted"] += 1
                    self.stats["in_flight"] += 1
                    self.stats["max_in_flight"] = max(self.stats["max_in_flight"], self.stats["in_flight"])
                    return backend
                if not waited:
                    self.stats["queued"] += 1
                    waited = True
                left = deadline - time.monotonic()
                if left <= 0:
                    self.stats["refused"] += 1
                    return None
                self.cond.wait(left)

    def give_back(self, backend: str) -> None:
        with self.cond:
            self.free[backend] += 1
            self.stats["in_flight"] -= 1
            self.cond.notify()


class FrontHandler(QuietHandler):
    server: FrontServer

    def _proxy(self) -> None:
        body = self._body()
        if self.path == STATS_PATH:
            with self.server.slots.cond:
                stats = dict(self.server.slots.stats)
            self._reply(200, json.dumps(stats).encode(), "application/json")
            return
        refused = None
        if self.server.invokers:
            authorization = self.headers.get("Authorization")
            refused = push_auth.refusal(authorization, [self.server.url], time.time(), self.server.invokers)
        if refused is not None:
            with self.server.slots.cond:
                self.server.slots.stats["unauthenticated"] += 1
            status, reason = refused
            self._reply(status, reason.encode())
            return
        backend = self.server.slots.take(self.server.queue_s)
        if backend is None:
            # What Cloud Run answers when no instance can take the request within its queue timeout.
            self._reply(429, b"Rate exceeded.")
            return
        try:
            answer = self._forward(backend, self.path, body, self.server.request_timeout_s)
        except (OSError, http.client.HTTPException):
            # The instance died mid-request (or never answered): Cloud Run answers 503.
            self._reply(503, b"Service Unavailable")
            return
        finally:
            self.server.slots.give_back(backend)
        self._reply(*answer)

    do_GET = _proxy
    do_POST = _proxy


class FrontServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 256

    def __init__(
        self, port: int, slots: Slots, queue_s: float, request_timeout_s: float, invokers: frozenset[str] = frozenset()
    ) -> None:
        super().__init__(("127.0.0.1", port), FrontHandler)
        self.slots = slots
        self.queue_s = queue_s
        self.request_timeout_s = request_timeout_s
        self.url = f"http://127.0.0.1:{port}"  # the service's URL: the audience a push's token must name
        self.invokers = invokers  # the identities a token must name (roles/run.invoker); empty: no token checked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.front", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--backend", action="append", required=True, help="a process of the function")
    parser.add_argument("--concurrency", type=int, required=True, help="requests at once per backend")
    parser.add_argument("--queue-s", type=float, default=10.0, help="how long a request waits for a slot")
    parser.add_argument("--request-timeout-s", type=float, default=900.0)
    parser.add_argument(
        "--invoker",
        action="append",
        default=[],
        help="admit only requests whose ID token names this front's URL and this identity (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.concurrency < 1 or args.queue_s < 0:
        parser.error("concurrency must be >= 1 and queue-s >= 0")
    slots = Slots(args.backend, args.concurrency)
    server = FrontServer(args.port, slots, args.queue_s, args.request_timeout_s, frozenset(args.invoker))
    print(json.dumps({"event": "ready", "port": args.port, "backends": args.backend}), flush=True)
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
