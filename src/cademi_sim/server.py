"""The Cademi simulator: a real HTTP server on 127.0.0.1 serving a scenario's school week by week.

The handler does the HTTP plumbing, the admin endpoints, authentication, latency and faults, then answers
from `v1.py` or `v3.py`; the shared state (rate limit, faults, counters) is `state.py`.

A request's arrival, which the rate limit judges, is when its first byte reached this host: the kernel's
receive time (SO_TIMESTAMP), not when a handler thread got round to it. The simulator shares the machine with
the client it judges (two cores locally), and a busy moment made its threads stamp a request up to 64 ms
after it had arrived, which squeezed it against the next one: a breach Cademi, on its own hardware, would not
see (issue 30, 8(f)). Where the kernel gives no time, the handler's clock is used as before."""

from __future__ import annotations

import hmac
import json
import socket
import struct
import sys
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cademi_sim import v1, v3
from cademi_sim.scenario import ScenarioError, parse
from cademi_sim.state import SimState

ADMIN_PREFIX = "/_admin"
# Linux's SO_TIMESTAMP (Python's socket module does not name it): each received packet carries its arrival time.
SO_TIMESTAMP = getattr(socket, "SO_TIMESTAMP", 29 if sys.platform.startswith("linux") else None)
_TIMEVAL = struct.Struct("@ll")


class Handler(BaseHTTPRequestHandler):
    """Routes API and admin requests."""

    protocol_version = "HTTP/1.1"
    rbufsize = 0  # unbuffered: the next request's first byte is still in the socket, where its time is read
    server: SimServer
    arrived = 0.0  # time.monotonic() of the current request's arrival (handle_one_request)

    def log_message(self, format: str, *args: Any) -> None:  # keep stdout for the ready line only
        return

    def setup(self) -> None:
        super().setup()
        self._kernel_times = False
        if SO_TIMESTAMP is not None:
            try:
                self.connection.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMP, 1)
                self._kernel_times = True
            except OSError:
                pass

    def handle_one_request(self) -> None:
        self._take_arrival()
        super().handle_one_request()

    def _take_arrival(self) -> None:
        """Wait for the next request's first byte; `arrived` is when the kernel received it (monotonic clock)."""
        received: float | None = None
        if self._kernel_times:
            try:
                _, ancillary, _, _ = self.connection.recvmsg(1, socket.CMSG_SPACE(_TIMEVAL.size), socket.MSG_PEEK)
            except OSError:
                ancillary = []
            for level, kind, value in ancillary:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMP and len(value) >= _TIMEVAL.size:
                    seconds, micros = _TIMEVAL.unpack(value[: _TIMEVAL.size])
                    received = seconds + micros / 1e6
        now, wall = time.monotonic(), time.time()
        self.arrived = now - (0.0 if received is None else max(0.0, wall - received))

    # -- plumbing --------------------------------------------------------------------------------------

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None, raw: str | None = None) -> None:
        payload = (raw if raw is not None else json.dumps(body, ensure_ascii=False)).encode("utf-8")
        try:
            self.send_response(status)
            content_type = "text/html" if raw is not None else "application/json"
            self.send_header("Content-Type", f"{content_type}; charset=utf-8")
            self.send_header("Content-Length", str(len(payload)))
            for key, value in (headers or {}).items():
                self.send_header(key, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (e.g. its read timeout fired during a delay fault)

    def do_GET(self) -> None:
        arrived = self.arrived
        split = urlsplit(self.path)
        if split.path.startswith(ADMIN_PREFIX):
            self._admin("GET", split.path)
            return
        self._api(arrived, split.path, parse_qs(split.query))

    def do_POST(self) -> None:
        split = urlsplit(self.path)
        if split.path.startswith(ADMIN_PREFIX):
            self._admin("POST", split.path)
            return
        self._send(405, v1.error(405, "Método não permitido"))

    # -- admin -----------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body_raw = b""
        while len(body_raw) < length:  # the socket file is unbuffered: a read may return part of the body
            chunk = self.rfile.read(length - len(body_raw))
            if not chunk:
                break
            body_raw += chunk
        if path == f"{ADMIN_PREFIX}/health":
            self._send(200, {"ok": True, "week": state.week})
            return
        token = self.headers.get("X-Admin-Token", "")
        if not hmac.compare_digest(token.encode(), state.admin_token.encode()):
            self._send(401, {"error": "admin token required"})
            return
        try:
            body = json.loads(body_raw) if body_raw else {}
        except ValueError:
            self._send(400, {"error": "body is not JSON"})
            return
        if method == "GET" and path == f"{ADMIN_PREFIX}/counters":
            with state.lock:
                counters = dict(state.counters)
                window = {"first": state.first_at, "last": state.last_at}
            self._send(200, {"week": state.week, "counters": counters, "window": window})
        elif method == "GET" and path == f"{ADMIN_PREFIX}/arrivals":
            with state.lock:
                arrivals = [
                    {"at": at, "path": p, "admitted": ok, "taken_up_after_s": after}
                    for at, p, ok, after in state.arrivals
                ]
            self._send(200, {"arrivals": arrivals})
        elif method == "POST" and path == f"{ADMIN_PREFIX}/week":
            week = body.get("week")
            if isinstance(week, str):
                dates = [d.isoformat() for d in state.scenario.weeks]
                week = dates.index(week) if week in dates else None
            if not isinstance(week, int) or not 0 <= week < len(state.scenario.weeks):
                self._send(400, {"error": f"week must be an index 0..{len(state.scenario.weeks) - 1} or a date"})
                return
            with state.lock:
                state.week = week
            self._send(200, {"week": week, "date": state.scenario.weeks[week].isoformat()})
        elif method == "POST" and path == f"{ADMIN_PREFIX}/reset":
            with state.lock:
                state.counters.clear()
                state.arrivals.clear()
                state.first_at = state.last_at = None
            self._send(200, {"ok": True})
        elif method == "POST" and path == f"{ADMIN_PREFIX}/faults":
            faults = body.get("faults")
            if not isinstance(faults, list):
                self._send(400, {"error": "faults must be a list"})
                return
            try:
                parse({**state.scenario.raw, "faults": faults})
            except ScenarioError as exc:
                self._send(400, {"error": str(exc)})
                return
            with state.lock:
                state.faults.extend(dict(f) for f in faults)
                state.fault_left.extend(int(f.get("times", 1)) for f in faults)
            self._send(200, {"added": len(faults)})
        else:
            self._send(404, {"error": "unknown admin endpoint"})

    # -- API -------------------------------------------------------------------------------------------

    def _api(self, arrived: float, path: str, query: dict[str, list[str]]) -> None:
        state = self.server.state
        state.count("requests_total")
        if path.startswith(v3.PREFIX + "/"):
            self._api_v3(arrived, path[len(v3.PREFIX) :], query)
            return
        wait = state.admit(arrived, path, time.monotonic() - arrived)
        if wait is not None:
            state.count("breaches")
            self._send(*v1.breach(state, wait))
            return
        key = self.headers.get("Authorization")
        if not key:
            state.count("auth_missing")
            self._send(403, v1.error(403, "Header de segurança não informado"))
            return
        if not hmac.compare_digest(key.encode(), state.scenario.api_key.encode()):
            state.count("auth_invalid")
            self._send(405, v1.error(405, "Token inválido"))
            return
        if not path.startswith(v1.API_PREFIX + "/"):
            self._send(404, v1.error(404, "Rota não encontrada"))
            return
        rel = path[len(v1.API_PREFIX) :]
        if self._fault_answered(rel, lambda status: (status, v1.error(status, "Falha simulada"), {})):
            return
        status, body = v1.route(state, rel, query)
        self._send(status, body)

    def _fault_answered(self, rel: str, failure: Callable[[int], tuple[int, Any, dict[str, str]]]) -> bool:
        """Apply the latency and the first matching fault (delay, status or body); True if a fault answered."""
        state = self.server.state
        latency = state.latency_s()
        fault = state.take_fault(rel)
        if fault and "delay_ms" in fault:
            latency += float(fault["delay_ms"]) / 1000.0
        if latency:
            time.sleep(latency)
        if fault and "status" in fault:
            self._send(*failure(int(fault["status"])))
            return True
        if fault and "body" in fault:
            self._send(200, None, raw=str(fault["body"]))
            return True
        return False

    def _api_v3(self, arrived: float, rel: str, query: dict[str, list[str]]) -> None:
        """The same school through API v3 (cademi_sim/v3.py): its key, its error envelope, its 429."""
        state = self.server.state
        wait = state.admit(arrived, v3.PREFIX + rel, time.monotonic() - arrived)
        if wait is not None:
            state.count("breaches")
            self._send(*v3.breach(wait))
            return
        ok = v3.authorised(self.headers, v3.settings_of(state.scenario.raw)["api_key"])
        if not ok:
            state.count("auth_missing" if ok is None else "auth_invalid")
            self._send(*v3.error(401, "unauthenticated", "a valid ck_ key is required"))
            return
        if self._fault_answered(rel, lambda status: v3.error(status, "internal_error", "simulated failure")):
            return
        status, body, headers = v3.route(state, rel, query)
        self._send(status, body, headers)


class SimServer(ThreadingHTTPServer):
    """Threaded HTTP server bound to 127.0.0.1 only."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: SimState, port: int = 0) -> None:
        self.state = state
        super().__init__(("127.0.0.1", port), Handler)
