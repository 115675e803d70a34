"""A local stand-in for Slack: the Web API calls the bot makes, `response_url` replies, and signed clicks.

Run by the local stack on 127.0.0.1. It answers `chat.postMessage` and `chat.update` as Slack does (Bearer
token, `ok`/`error` JSON, a `ts` per message, the 50-block limit), keeps every message's latest version, and
appends every call to `<record dir>/calls.jsonl` so `make run` can show the digests it would have posted.
Admin endpoints (tests): `GET /_admin/messages`, `GET /_admin/responses`, `POST /_admin/fail`
(`{"method", "status", "times"}`: answer that HTTP status that many times) and `POST /_admin/missing`
(`{"channel"}`: answer `channel_not_found`).

`click()` plays a tutor pressing a button of a recorded message: the block_actions payload Slack would send,
signed with the app's signing secret, POSTed to the interactions endpoint.
"""

from __future__ import annotations

import argparse
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
        self.failures: dict[str, list[int]] = {}  # method -> statuses still to answer
        self.missing: set[str] = set()
        self.counter = itertools.count(1)
        self.posts = 0

    def log(self, entry: dict[str, Any]) -> None:
        with self.record.open("a", encoding="utf-8") as f:
            f.write(json.dumps(entry, ensure_ascii=False) + "\n")


class Handler(BaseHTTPRequestHandler):
    server: StandinServer

    def log_message(self, format: str, *args: Any) -> None:
        return

    def _send(self, status: int, body: Any) -> None:
        data = json.dumps(body, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

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
            else:
                self._send(404, {"ok": False, "error": "unknown_method"})

    def do_POST(self) -> None:
        state = self.server.state
        body = self._body()
        if self.path == "/_admin/fail":
            with state.lock:
                state.failures.setdefault(body["method"], []).extend([int(body["status"])] * int(body["times"]))
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
                state.responses.append({"url_path": self.path, "body": body})
                state.log({"kind": "response", "body": body, "at": time.time()})
            self._send(200, {"ok": True})
            return
        if not self.path.startswith("/api/"):
            self._send(404, {"ok": False, "error": "unknown_method"})
            return
        method = self.path.removeprefix("/api/")
        with state.lock:
            pending = state.failures.get(method)
            if pending:
                self._send(pending.pop(0), {"ok": False, "error": "service_unavailable"})
                return
            self._send(*self._api(state, method, body))

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

    def fail(self, method: str, status: int, times: int) -> None:
        body = {"method": method, "status": status, "times": times}
        requests.post(f"{self.base_url}/_admin/fail", json=body, timeout=10).raise_for_status()

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
