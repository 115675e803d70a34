"""A local stand-in for Slack: the Web API calls the bot makes, `response_url` replies, and signed clicks.

Run by the local stack on 127.0.0.1. It answers `chat.postMessage` and `chat.update` as Slack does (Bearer
token, `ok`/`error` JSON, a `ts` per message, the 50-block limit), keeps every message's latest version, and
appends every call to `<record dir>/calls.jsonl` so `make run` can show the digests it would have posted.
Admin endpoints (tests): `GET /_admin/messages`, `GET /_admin/responses`, `POST /_admin/fail`
(`{"method", "status", "times"}`: answer that HTTP status that many times; optional `"error"`, the body's error
code, `service_unavailable` by default, e.g. `rate_limited` with status 200, and `"retry_after"`, seconds sent as
a `Retry-After` header; `"method": "response_url"` fails `response_url` replies), `POST /_admin/missing`
(`{"channel"}`: answer `channel_not_found`), `POST /_admin/token` (`{"token"}`: the bot token accepted from now
on, as after a rotation; any other is `invalid_auth`), `POST /_admin/redirect` (`{"path", "to"}`: a
`response_url` path that answers a redirect to `to`, `"status"` 302 by default) and `GET /_admin/attempts`
(every Web API and `response_url` request in order: method, path, status, error; never the token).

`click()` plays a tutor pressing a button of a recorded message: the block_actions payload Slack would send,
signed with the app's signing secret, POSTed to the interactions endpoint.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import hmac
import itertools
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import requests

MAX_BLOCKS = 50


class State:
    def __init__(self, token: str, record_dir: Path) -> None:
        self.token = token
        self.record = record_dir / "calls.jsonl"
        record_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.responses: list[dict[str, Any]] = []
        self.failures: dict[str, list[dict[str, Any]]] = {}  # method -> answers still to give (status, error, ...)
        self.redirects: dict[str, tuple[int, str]] = {}  # response path -> (status, Location)
        self.attempts: list[dict[str, Any]] = []
        self.missing: set[str] = set()
        self.slow: dict[str, list[float]] = {}  # method -> delays of the next answers (after doing the work)
        self.counter = itertools.count(1)
        self.posts = 0

    def log(self, entry: dict[str, Any]) -> None:
        with self.record.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Handler(BaseHTTPRequestHandler):
    server: StandinServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _answer(self, state: State, method: str, status: int, body: dict[str, Any], headers: Any = None) -> None:
        """Send an answer and note it in the attempts (under `state.lock`)."""
        state.attempts.append({"method": method, "path": self.path, "status": status, "error": body.get("error")})
        self._send(status, body, headers)

    def _failure(self, state: State, method: str) -> bool:
        """Answer the next failure planned for `method` (under `state.lock`); False when none is."""
        pending = state.failures.get(method)
        if not pending:
            return False
        failure = pending.pop(0)
        retry_after = failure.get("retry_after")
        headers = {} if retry_after is None else {"Retry-After": str(retry_after)}
        self._answer(state, method, failure["status"], {"ok": False, "error": failure["error"]}, headers)
        return True

    def _body(self) -> Any:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            return json.loads(raw or b"{}")
        except ValueError:
            return None

    def do_GET(self) -> None:
        state = self.server.state
        with state.lock:
            if self.path == "/_admin/messages":
                self._send(200, list(state.messages.values()))
            elif self.path == "/_admin/responses":
                self._send(200, state.responses)
            elif self.path == "/_admin/attempts":
                self._send(200, state.attempts)
            else:
                self._send(404, {"ok": False, "error": "unknown_method"})

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if self.path == "/_admin/fail":
            failure = {"status": int(body["status"]), "error": str(body.get("error") or "service_unavailable")}
            if body.get("retry_after") is not None:
                failure["retry_after"] = body["retry_after"]
            with state.lock:
                state.failures.setdefault(body["method"], []).extend([failure] * int(body["times"]))
            self._send(200, {"ok": True})
            return
        if self.path == "/_admin/slow":
            with state.lock:
                state.slow.setdefault(str(body["method"]), []).extend([float(body["seconds"])] * int(body["times"]))
            self._send(200, {"ok": True})
            return
        if self.path == "/_admin/token":
            with state.lock:
                state.token = str(body["token"])
            self._send(200, {"ok": True})
            return
        if self.path == "/_admin/redirect":
            with state.lock:
                state.redirects[str(body["path"])] = (int(body.get("status", 302)), str(body["to"]))
            self._send(200, {"ok": True})
            return
        if self.path == "/_admin/missing":
            with state.lock:
                if body.get("missing", True):
                    state.missing.add(str(body["channel"]))
                else:
                    state.missing.discard(str(body["channel"]))
            self._send(200, {"ok": True})
            return
        if self.path.startswith("/response/"):
            with state.lock:
                if self._failure(state, "response_url"):
                    return
                if self.path in state.redirects:
                    status, location = state.redirects[self.path]
                    self._answer(state, "response_url", status, {"ok": False}, {"Location": location})
                    return
                state.responses.append({"url_path": self.path, "body": body})
                state.log({"kind": "response", "body": body, "at": time.time()})
                self._answer(state, "response_url", 200, {"ok": True})
            return
        if not self.path.startswith("/api/"):
            self._send(404, {"ok": False, "error": "unknown_method"})
            return
        method = self.path.removeprefix("/api/")
        with state.lock:
            if self._failure(state, method):
                return
            status, answer = self._api(state, method, body)
            delays = state.slow.get(method)
            pause = delays.pop(0) if delays else 0.0
            if not pause:
                self._answer(state, method, status, answer)
                return
        time.sleep(pause)  # the work is done (a post is in the channel); the answer comes after the client gave up
        with state.lock, contextlib.suppress(OSError):
            self._answer(state, method, status, answer)

    def _api(self, state: State, method: str, body: Any) -> tuple[int, dict[str, Any]]:
        if self.headers.get("Authorization") != f"Bearer {state.token}":
            return 200, {"ok": False, "error": "invalid_auth"}
        if not isinstance(body, dict):
            return 200, {"ok": False, "error": "invalid_json"}
        channel, blocks = str(body.get("channel")), body.get("blocks") or []
        if channel in state.missing:
            return 200, {"ok": False, "error": "channel_not_found"}
        if len(blocks) > MAX_BLOCKS:
            return 200, {"ok": False, "error": "invalid_blocks"}
        if method == "chat.postMessage":
            ts = f"{int(time.time())}.{next(state.counter):06d}"
            state.posts += 1
        elif method == "chat.update":
            ts = str(body.get("ts"))
            if (channel, ts) not in state.messages:
                return 200, {"ok": False, "error": "message_not_found"}
        else:
            return 200, {"ok": False, "error": "unknown_method"}
        previous = state.messages.get((channel, ts), {})
        message = {
            "channel": channel,
            "ts": ts,
            "text": body.get("text"),
            "blocks": blocks,
            "versions": previous.get("versions", 0) + 1,
        }
        state.messages[(channel, ts)] = message
        state.log({"kind": method, "channel": channel, "ts": ts, "text": body.get("text"), "blocks": blocks})
        return 200, {"ok": True, "channel": channel, "ts": ts}


class StandinServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, state: State) -> None:
        super().__init__(("127.0.0.1", port), Handler)
        self.state = state


# -- what tests and `make run` use -----------------------------------------------------------------------------


class SlackStandin:
    """A client of a running stand-in."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")

    def messages(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(f"{self.base_url}/_admin/messages", timeout=10).json()
        return found

    def responses(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(f"{self.base_url}/_admin/responses", timeout=10).json()
        return found

    def fail(
        self, method: str, status: int, times: int, error: str | None = None, retry_after: float | str | None = None
    ) -> None:
        """The next `times` calls of `method` ("response_url" for replies) answer `status` with `{"ok": false,
        "error": error}` (service_unavailable by default) and, when given, a Retry-After header (seconds or an
        HTTP date)."""
        body: dict[str, Any] = {"method": method, "status": status, "times": times}
        if error is not None:
            body["error"] = error
        if retry_after is not None:
            body["retry_after"] = retry_after
        requests.post(f"{self.base_url}/_admin/fail", json=body, timeout=10).raise_for_status()

    def slow(self, method: str, seconds: float, times: int = 1) -> None:
        """The next `times` calls of `method` do their work, then answer only after `seconds` (a read timeout)."""
        body = {"method": method, "seconds": seconds, "times": times}
        requests.post(f"{self.base_url}/_admin/slow", json=body, timeout=10).raise_for_status()

    def rotate_token(self, token: str) -> None:
        """Accept only `token` from now on (the old one is answered `invalid_auth`)."""
        requests.post(f"{self.base_url}/_admin/token", json={"token": token}, timeout=10).raise_for_status()

    def redirect(self, name: str, to: str, status: int = 302) -> None:
        """Make `response_url(name)` answer a redirect to `to`."""
        body = {"path": f"/response/{name}", "to": to, "status": status}
        requests.post(f"{self.base_url}/_admin/redirect", json=body, timeout=10).raise_for_status()

    def attempts(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = requests.get(f"{self.base_url}/_admin/attempts", timeout=10).json()
        return found

    def missing(self, channel: str, missing: bool = True) -> None:
        body = {"channel": channel, "missing": missing}
        requests.post(f"{self.base_url}/_admin/missing", json=body, timeout=10).raise_for_status()

    def response_url(self, name: str) -> str:
        return f"{self.base_url}/response/{name}"


def button(message: dict[str, Any], user_id: int, action: str) -> dict[str, Any]:
    """The button `action` next to student `user_id` in a recorded message."""
    for block in message["blocks"]:
        if block.get("type") == "actions" and block.get("block_id", "").endswith(f":{user_id}"):
            for element in block["elements"]:
                if element["action_id"] == action:
                    return dict(element, block_id=block["block_id"])
    raise LookupError(f"no {action} button for student {user_id}")


def interaction_payload(message: dict[str, Any], element: dict[str, Any], team: str, tutor: str) -> dict[str, Any]:
    """What Slack sends when `tutor` presses `element` (fields as in Slack's block_actions reference)."""
    return {
        "type": "block_actions",
        "team": {"id": team, "domain": "escola"},
        "user": {"id": tutor, "username": "tutora", "team_id": team},
        "api_app_id": "A0LOCAL",
        "container": {"type": "message", "message_ts": message["ts"], "channel_id": message["channel"]},
        "channel": {"id": message["channel"], "name": "tutores"},
        "message": {"type": "message", "ts": message["ts"], "text": message["text"], "blocks": message["blocks"]},
        "response_url": "https://hooks.slack.com/actions/T0/1/local",
        "trigger_id": "1.2.local",
        "actions": [
            {
                "type": "button",
                "block_id": element["block_id"],
                "action_id": element["action_id"],
                "value": element["value"],
                "action_ts": f"{time.time():.6f}",
            }
        ],
    }


def signed_post(
    url: str, body: str, signing_secret: str, timestamp: int | None = None, signature: str | None = None
) -> requests.Response:
    """POST a form body as Slack does, with the v0 signature (or the one given, to forge)."""
    sent_at = str(int(time.time()) if timestamp is None else timestamp)
    digest = hmac.new(signing_secret.encode(), f"v0:{sent_at}:{body}".encode(), hashlib.sha256).hexdigest()
    headers = {
        "X-Slack-Request-Timestamp": sent_at,
        "X-Slack-Signature": signature or "v0=" + digest,
        "Content-Type": "application/x-www-form-urlencoded",
    }
    return requests.post(url, data=body.encode(), headers=headers, timeout=30)


def click(
    interactions_url: str,
    signing_secret: str,
    message: dict[str, Any],
    user_id: int,
    action: str,
    team: str,
    tutor: str,
) -> requests.Response:
    """A tutor pressing a button of a digest, end to end through the interactions endpoint."""
    payload = interaction_payload(message, button(message, user_id, action), team, tutor)
    return signed_post(interactions_url, urlencode({"payload": json.dumps(payload)}), signing_secret)


def as_text(blocks: list[dict[str, Any]]) -> str:
    """A message's blocks as plain text lines (what `make run` prints)."""
    lines: list[str] = []
    for block in blocks:
        kind = block.get("type")
        if kind in ("header", "section"):
            lines.append(block["text"]["text"])
        elif kind == "context":
            lines.extend(e.get("text", "") for e in block.get("elements", []))
        elif kind == "actions":
            lines.append("    " + "  ".join(f"[{e['text']['text']}]" for e in block.get("elements", [])))
        elif kind == "divider":
            lines.append("-" * 60)
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="devstack.slack_standin", description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--record-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    token = os.environ["SLACK_STANDIN_TOKEN"]  # the bot token it accepts (never on the command line)
    server = StandinServer(args.port, State(token, args.record_dir))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
