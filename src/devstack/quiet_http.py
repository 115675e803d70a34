"""The request handler the local stack's own HTTP stand-ins share (the fronts, the push relay): HTTP/1.1, no
access log (the functions log what matters), a plain reply, and a request passed on to another server."""

from __future__ import annotations

import http.client
from collections.abc import Collection, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import urlsplit

HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}
)


class QuietHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the functions log the requests themselves."""

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _reply(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _forward(
        self,
        base: str,
        path: str,
        body: bytes,
        timeout: float,
        drop: Collection[str] = (),
        add: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes, str]:
        """This request (its method, body and end-to-end headers but `drop`, plus `add`) sent to `base` at `path`;
        the answer's status, body and content type. OSError or http.client.HTTPException when it gets no answer."""
        dropped = HOP_BY_HOP | {"host"} | {name.lower() for name in drop}
        headers = {k: v for k, v in self.headers.items() if k.lower() not in dropped} | dict(add or {})
        parts = urlsplit(base)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port, timeout=timeout)
        try:
            conn.request(self.command, path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.read(), response.getheader("Content-Type") or "text/plain"
        finally:
            conn.close()
