"""The Cademi simulator: a real HTTP server on 127.0.0.1 serving a scenario's school week by week."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import math
import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlsplit

from cademi_sim import v3
from cademi_sim.scenario import Scenario, ScenarioError, last_access, parse

API_PREFIX = "/api/v1"
ADMIN_PREFIX = "/_admin"
PER_PAGE = 150
# The documented next_page_url example points at a development host; so does ours, on purpose.
DEV_HOST = "http://membros.dvp"


class SimState:
    """Mutable simulator state shared by handler threads."""

    def __init__(self, scenario: Scenario, admin_token: str, week: int = 0, seed: int = 0) -> None:
        self.scenario = scenario
        self.admin_token = admin_token
        self.week = week
        self.lock = threading.Lock()
        self.counters: Counter[str] = Counter()
        self.rng = random.Random(seed)
        self.first_at: float | None = None  # wall-clock time of the first and last API request since reset
        self.last_at: float | None = None
        self._second: deque[float] = deque()
        self._minute: deque[float] = deque()
        self.faults: list[dict[str, Any]] = [dict(f) for f in scenario.raw.get("faults", [])]
        self.fault_left: list[int] = [int(f.get("times", 1)) for f in self.faults]
        quirks = scenario.raw.get("quirks", {})
        self.per_page = int(quirks.get("per_page", PER_PAGE))
        self.quirk_tags = {
            k: set(quirks.get(k, [])) for k in ("empty_last_page", "repeat_cursor", "overlap_pages", "endless_cursor")
        }

    def admit(self, now: float) -> float | None:
        """Record an arrival; return None if within the limit, else seconds until a slot frees."""
        limit = self.scenario.rate_limit
        wall = time.time()
        with self.lock:
            self.first_at = self.first_at or wall
            self.last_at = wall
            while self._second and now - self._second[0] >= 1.0:
                self._second.popleft()
            while self._minute and now - self._minute[0] >= 60.0:
                self._minute.popleft()
            if len(self._second) >= float(limit["per_second"]):
                return 1.0 - (now - self._second[0])
            if len(self._minute) >= float(limit["per_minute"]):
                return 60.0 - (now - self._minute[0])
            self._second.append(now)
            self._minute.append(now)
            return None

    def latency_s(self) -> float:
        latency = self.scenario.raw.get("latency_ms", 0)
        if isinstance(latency, dict):
            mean, jitter = float(latency["mean"]), float(latency.get("jitter", 0))
            with self.lock:
                value = mean + self.rng.uniform(-jitter, jitter)
        else:
            value = float(latency)
        return max(0.0, value) / 1000.0

    def take_fault(self, path: str) -> dict[str, Any] | None:
        with self.lock:
            for i, fault in enumerate(self.faults):
                if self.fault_left[i] <= 0:
                    continue
                if "week" in fault and fault["week"] != self.week:
                    continue
                if "path" in fault and fault["path"] != path:
                    continue
                if "path_prefix" in fault and not path.startswith(fault["path_prefix"]):
                    continue
                self.fault_left[i] -= 1
                self.counters["faults_fired"] += 1
                return fault
        return None

    def count(self, name: str) -> None:
        with self.lock:
            self.counters[name] += 1


def _envelope(data: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "success": True,
        "code": 200,
        "data": data,
        "profiler": {"start": now, "finish": now, "process": 0},
    }


def _error(code: int, msg: str) -> dict[str, Any]:
    now = time.time()
    return {
        "success": False,
        "code": code,
        "msg": msg,
        "profiler": {"start": now, "finish": now, "process": 0},
    }


def encode_cursor(tag_id: int, offset: int) -> str:
    return base64.urlsafe_b64encode(f"{tag_id}:{offset}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    padded = cursor + "=" * (-len(cursor) % 4)
    tag, offset = base64.urlsafe_b64decode(padded.encode()).decode().split(":")
    return int(tag), int(offset)


class Handler(BaseHTTPRequestHandler):
    """Routes API and admin requests."""

    protocol_version = "HTTP/1.1"
    server: SimServer

    def log_message(self, format: str, *args: Any) -> None:  # keep stdout for the ready line only
        return

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
        arrived = time.monotonic()
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
        self._send(405, _error(405, "Método não permitido"))

    # -- admin -----------------------------------------------------------------------------------------

    def _admin(self, method: str, path: str) -> None:
        state = self.server.state
        length = int(self.headers.get("Content-Length") or 0)
        body_raw = self.rfile.read(length) if length else b""
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
        wait = state.admit(arrived)
        if wait is not None:
            self._breach(wait)
            return
        key = self.headers.get("Authorization")
        if not key:
            state.count("auth_missing")
            self._send(403, _error(403, "Header de segurança não informado"))
            return
        if not hmac.compare_digest(key.encode(), state.scenario.api_key.encode()):
            state.count("auth_invalid")
            self._send(405, _error(405, "Token inválido"))
            return
        if not path.startswith(API_PREFIX + "/"):
            self._send(404, _error(404, "Rota não encontrada"))
            return
        rel = path[len(API_PREFIX) :]
        if self._fault_answered(rel, lambda status: (status, _error(status, "Falha simulada"), {})):
            return
        status, body = self._route(rel, query)
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
        wait = state.admit(arrived)
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

    def _breach(self, wait: float) -> None:
        state = self.server.state
        state.count("breaches")
        style = state.scenario.rate_limit.get("breach", "429")
        if style == "409":
            self._send(409, _error(409, "Limite de requisições excedido"))
        elif style == "429-bare":
            self._send(429, _error(429, "Too Many Requests"))
        else:
            self._send(429, _error(429, "Too Many Requests"), {"Retry-After": str(max(1, math.ceil(wait)))})

    def _route(self, rel: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        state = self.server.state
        # Like PHP's urldecode, a raw "+" in a path reads as a space: emails must arrive %2B-encoded.
        parts = [unquote_plus(p) for p in rel.strip("/").split("/")]
        sc = state.scenario
        if parts == ["tag"]:
            state.count("tag")
            return 200, _envelope({"itens": [{"id": t["id"], "nome": t["nome"]} for t in sc.raw["tags"]]})
        if parts == ["produto"]:
            state.count("produto")
            return 200, _envelope({"itens": list(sc.raw["products"])})
        if len(parts) == 2 and parts[0] == "produto":
            state.count("produto")
            product = sc.products.get(int(parts[1])) if parts[1].isdigit() else None
            if product is None:
                return 409, _error(409, "Produto não encontrado")
            return 200, _envelope({"produto": product})
        if len(parts) == 3 and parts[:2] == ["usuario", "lista_por_tag"]:
            state.count("lista_por_tag")
            state.count(f"lista_por_tag/{parts[2][:12]}")  # which tags were listed, for the tests
            return self._list_by_tag(parts[2], query.get("cursor", [""])[0])
        if len(parts) == 4 and parts[:2] == ["usuario", "progresso_por_produto"]:
            state.count("progresso_por_produto")
            user_id = self._find_user(parts[2])
            if user_id is None:
                return 409, _error(409, "Usuário não encontrado")
            if not parts[3].isdigit() or int(parts[3]) not in sc.products:
                return 409, _error(409, "Produto não encontrado")
            served = sc.served_progress(user_id, int(parts[3]), state.week)
            if served is None:
                return 409, _error(409, "Usuário não possui acesso ao produto")
            return 200, _envelope({"progresso": {**served, "aulas": []}})
        if len(parts) == 3 and parts[:2] == ["usuario", "acesso"]:
            state.count("acesso")
            user_id = self._find_user(parts[2])
            if user_id is None:
                return 409, _error(409, "Usuário não encontrado")
            acesso = [
                {
                    "produto": {"id": p, "ordem": i + 1, "nome": sc.products[p]["nome"]},
                    "duracao_tipo": "vitalicio",
                    "comecou_em": sc.weeks[0].isoformat() + " 00:00:00",
                    "encerra_em": None,
                    "encerrado": False,
                }
                for i, p in enumerate(sc.access.get(user_id, []))
            ]
            return 200, _envelope({"usuario": self._user_view(user_id), "acesso": acesso})
        if len(parts) == 2 and parts[0] == "usuario":
            state.count("usuario")
            user_id = self._find_user(parts[1])
            if user_id is None:
                return 409, _error(409, "Usuário não encontrado")
            return 200, _envelope({"usuario": self._user_view(user_id)})
        state.count("unknown_route")
        return 404, _error(404, "Rota não encontrada")

    def _list_by_tag(self, tag_text: str, cursor: str) -> tuple[int, dict[str, Any]]:
        state = self.server.state
        if not tag_text.isdigit() or int(tag_text) not in state.scenario.tags:
            return 409, _error(409, "Tag não encontrada")
        tag_id = int(tag_text)
        offset = 0
        if cursor:
            try:
                cursor_tag, offset = decode_cursor(cursor)
            except (ValueError, UnicodeDecodeError):
                return 409, _error(409, "Cursor inválido")
            if cursor_tag != tag_id or offset < 0:
                return 409, _error(409, "Cursor inválido")
        members = state.scenario.members(tag_id, state.week)
        next_offset: int | None = None
        if tag_id in state.quirk_tags["endless_cursor"] and members:
            # A broken paginator: pages cycle through the class with a cursor that never repeats.
            start = offset % len(members)
            page = (members[start:] + members[:start])[: state.per_page]
            return 200, self._user_page(tag_id, page, offset + len(page))
        page = members[offset : offset + state.per_page]
        end = offset + len(page)
        if page and end < len(members):
            overlap = 1 if tag_id in state.quirk_tags["overlap_pages"] else 0
            next_offset = end - overlap
        elif page and tag_id in state.quirk_tags["empty_last_page"]:
            next_offset = end
        elif page and tag_id in state.quirk_tags["repeat_cursor"] and cursor:
            next_offset = offset  # points back at this very page; a client must stop
        return 200, self._user_page(tag_id, page, next_offset)

    def _user_page(self, tag_id: int, page: list[int], next_offset: int | None) -> dict[str, Any]:
        """One page of a tag's users, with the next page's URL (on the documented development host) if any."""
        next_url = None
        if next_offset is not None:
            next_url = f"{DEV_HOST}{API_PREFIX}/usuario/lista_por_tag/{tag_id}?cursor="
            next_url += encode_cursor(tag_id, next_offset)
        data = {
            "usuario": [self._user_view(u) for u in page],
            "paginator": {"perPage": self.server.state.per_page, "next_page_url": next_url, "prev_page_url": None},
        }
        return _envelope(data)

    def _find_user(self, key: str) -> int | None:
        sc = self.server.state.scenario
        if key.isdigit() and int(key) in sc.users_by_id:
            return int(key)
        return sc.users_by_email.get(key.lower()) or sc.users_by_doc.get(key)

    def _user_view(self, user_id: int) -> dict[str, Any]:
        """The user object as Cademi serves it, sensitive fields included (clients must drop them)."""
        u = self.server.state.scenario.users_by_id[user_id]
        token = hashlib.sha256(f"{user_id}:{u['email']}".encode()).hexdigest()[:24]
        return {
            "id": u["id"],
            "nome": u["nome"],
            "email": u["email"],
            "doc": u.get("doc"),
            "celular": u.get("celular"),
            "login_auto": f"https://escola.cademi.com.br/auth/login?crstk={token}",
            "gratis": False,
            "criado_em": u.get("criado_em"),
            "ultimo_acesso_em": last_access(u, self.server.state.week),
        }


class SimServer(ThreadingHTTPServer):
    """Threaded HTTP server bound to 127.0.0.1 only."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, state: SimState, port: int = 0) -> None:
        self.state = state
        super().__init__(("127.0.0.1", port), Handler)
