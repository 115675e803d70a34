"""The local stack's own plumbing: ports for its children, proof that each child is the one listening, and the
push relay's token checked by a front as Cloud Run checks it."""

from __future__ import annotations

import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
import requests

from devstack import push_auth
from devstack.front import FrontServer, Slots
from devstack.procs import StartupError, _ephemeral_range, free_port, spawn, wait_for_port


def test_ports_are_never_handed_out_twice_and_stay_below_the_ephemeral_range() -> None:
    """A port from bind(0) lies in the ephemeral range, where any outgoing connection may take it before the
    child binds; and closing each probe socket let the same port come back twice (CI lost a stack to it)."""
    low, _ = _ephemeral_range()
    ports = [free_port() for _ in range(2000)]
    assert len(set(ports)) == len(ports)
    assert all(1024 <= p < low for p in ports)


def test_a_port_held_by_another_process_does_not_make_a_child_ready(tmp_path: Path) -> None:
    port = free_port()
    server = spawn("holder", [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"], tmp_path)
    idle = spawn("idle", [sys.executable, "-c", "import time; time.sleep(60)"], tmp_path)
    try:
        wait_for_port(server, port, timeout=20)  # the holder itself is ready
        with pytest.raises(StartupError, match="is not the process listening"):
            wait_for_port(idle, port, timeout=20)
    finally:
        server.stop()
        idle.stop()


class Backend(BaseHTTPRequestHandler):
    """A function's process: records what reached it."""

    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        Backend.received.append(self.path)
        self.send_response(204)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet."""


class DeclaredRelay(push_auth.RelayServer):
    """The push relay, with the subscriptions' declared `oidc_token`s given here instead of read from Pub/Sub."""

    declared: ClassVar[dict[str, dict[str, Any] | None]] = {}

    def oidc_token(self, subscription: str) -> dict[str, Any] | None:
        return self.declared[subscription.removeprefix("projects/p/subscriptions/")]


def serve(server: ThreadingHTTPServer) -> ThreadingHTTPServer:
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def test_the_front_admits_a_relayed_push_only_when_its_subscription_declares_the_front_url() -> None:
    """Through the relay, as Pub/Sub pushes locally: the declared audience is the service's URL -> admitted;
    Pub/Sub's default (the push endpoint with its path) or another service -> 401; no `oidc_token`, or one of an
    account that does not hold the invoker role -> 403."""
    backend = serve(ThreadingHTTPServer(("127.0.0.1", free_port()), Backend))
    front_port = free_port()
    backend_url = f"http://127.0.0.1:{backend.server_address[1]}"
    front = serve(FrontServer(front_port, Slots([backend_url], 1), 1.0, 10.0, frozenset({"pusher@p.iam"})))
    relay_port = free_port()
    relay = serve(DeclaredRelay(relay_port, "unused"))
    service = f"http://127.0.0.1:{front_port}"
    endpoint = f"{service}/projects/p/topics/t"
    DeclaredRelay.declared = {
        "declared": {"serviceAccountEmail": "pusher@p.iam", "audience": service},
        "default": {"serviceAccountEmail": "pusher@p.iam"},
        "other": {"serviceAccountEmail": "pusher@p.iam", "audience": backend_url},
        "not an invoker": {"serviceAccountEmail": "another@p.iam", "audience": service},
        "none": None,
    }
    try:
        statuses = {
            name: requests.post(
                push_auth.relay_endpoint(f"http://127.0.0.1:{relay_port}", endpoint),
                json={"message": {"data": ""}, "subscription": f"projects/p/subscriptions/{name}"},
                timeout=10,
            ).status_code
            for name in DeclaredRelay.declared
        }
        stats = requests.get(f"{service}/__front/stats", timeout=10).json()
    finally:
        for server in (relay, front, backend):
            server.shutdown()
            server.server_close()
    assert statuses == {"declared": 204, "default": 401, "other": 401, "not an invoker": 403, "none": 403}
    assert Backend.received == ["/projects/p/topics/t"]
    assert (stats["admitted"], stats["unauthenticated"]) == (1, 4)
