"""The simulator's Cademi API v1: its envelope and errors (in Portuguese, as Cademi answers), the routes, the
tag listing's cursor pages (with the scenario's pagination quirks), the user as Cademi serves it, and the
answer to a call over the rate limit. API v3 is `v3.py`; the HTTP server that dispatches to both, `server.py`."""

from __future__ import annotations

import base64
import hashlib
import math
import time
from typing import Any
from urllib.parse import unquote_plus

from cademi_sim.scenario import last_access
from cademi_sim.state import SimState

API_PREFIX = "/api/v1"
# The documented next_page_url example points at a development host; so does ours, on purpose.
DEV_HOST = "http://membros.dvp"


def envelope(data: Any) -> dict[str, Any]:
    now = time.time()
    return {
        "success": True,
        "code": 200,
        "data": data,
        "profiler": {"start": now, "finish": now, "process": 0},
    }


def error(code: int, msg: str) -> dict[str, Any]:
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


def breach(state: SimState, wait: float) -> tuple[int, dict[str, Any], dict[str, str]]:
    """The school's answer to a call over its limit, in the scenario's style (409, bare 429, 429 + Retry-After)."""
    style = state.scenario.rate_limit.get("breach", "429")
    if style == "409":
        return 409, error(409, "Limite de requisições excedido"), {}
    elif style == "429-bare":
        return 429, error(429, "Too Many Requests"), {}
    else:
        return 429, error(429, "Too Many Requests"), {"Retry-After": str(max(1, math.ceil(wait)))}


def route(state: SimState, rel: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
    """Answer one v1 API request (the path after /api/v1) from the scenario's current week."""
    # Like PHP's urldecode, a raw "+" in a path reads as a space: emails must arrive %2B-encoded.
    parts = [unquote_plus(p) for p in rel.strip("/").split("/")]
    sc = state.scenario
    if parts == ["tag"]:
        state.count("tag")
        return 200, envelope({"itens": [{"id": t["id"], "nome": t["nome"]} for t in sc.raw["tags"]]})
    if parts == ["produto"]:
        state.count("produto")
        return 200, envelope({"itens": list(sc.raw["products"])})
    if len(parts) == 2 and parts[0] == "produto":
        state.count("produto")
        product = sc.products.get(int(parts[1])) if parts[1].isdigit() else None
        if product is None:
            return 409, error(409, "Produto não encontrado")
        return 200, envelope({"produto": product})
    if len(parts) == 3 and parts[:2] == ["usuario", "lista_por_tag"]:
        state.count("lista_por_tag")
        state.count(f"lista_por_tag/{parts[2][:12]}")  # which tags were listed, for the tests
        return _list_by_tag(state, parts[2], query.get("cursor", [""])[0])
    if len(parts) == 4 and parts[:2] == ["usuario", "progresso_por_produto"]:
        state.count("progresso_por_produto")
        user_id = _find_user(state, parts[2])
        if user_id is None:
            return 409, error(409, "Usuário não encontrado")
        if not parts[3].isdigit() or int(parts[3]) not in sc.products:
            return 409, error(409, "Produto não encontrado")
        served = sc.served_progress(user_id, int(parts[3]), state.week)
        if served is None:
            return 409, error(409, "Usuário não possui acesso ao produto")
        return 200, envelope({"progresso": {**served, "aulas": []}})
    if len(parts) == 3 and parts[:2] == ["usuario", "acesso"]:
        state.count("acesso")
        user_id = _find_user(state, parts[2])
        if user_id is None:
            return 409, error(409, "Usuário não encontrado")
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
        return 200, envelope({"usuario": _user_view(state, user_id), "acesso": acesso})
    if len(parts) == 2 and parts[0] == "usuario":
        state.count("usuario")
        user_id = _find_user(state, parts[1])
        if user_id is None:
            return 409, error(409, "Usuário não encontrado")
        return 200, envelope({"usuario": _user_view(state, user_id)})
    state.count("unknown_route")
    return 404, error(404, "Rota não encontrada")


def _list_by_tag(state: SimState, tag_text: str, cursor: str) -> tuple[int, dict[str, Any]]:
    if not tag_text.isdigit() or int(tag_text) not in state.scenario.tags:
        return 409, error(409, "Tag não encontrada")
    tag_id = int(tag_text)
    offset = 0
    if cursor:
        try:
            cursor_tag, offset = decode_cursor(cursor)
        except (ValueError, UnicodeDecodeError):
            return 409, error(409, "Cursor inválido")
        if cursor_tag != tag_id or offset < 0:
            return 409, error(409, "Cursor inválido")
    members = state.scenario.members(tag_id, state.week)
    next_offset: int | None = None
    if tag_id in state.quirk_tags["endless_cursor"] and members:
        # A broken paginator: pages cycle through the class with a cursor that never repeats.
        start = offset % len(members)
        page = (members[start:] + members[:start])[: state.per_page]
        return 200, _user_page(state, tag_id, page, offset + len(page))
    page = members[offset : offset + state.per_page]
    end = offset + len(page)
    if page and end < len(members):
        overlap = 1 if tag_id in state.quirk_tags["overlap_pages"] else 0
        next_offset = end - overlap
    elif page and tag_id in state.quirk_tags["empty_last_page"]:
        next_offset = end
    elif page and tag_id in state.quirk_tags["repeat_cursor"] and cursor:
        next_offset = offset  # points back at this very page; a client must stop
    return 200, _user_page(state, tag_id, page, next_offset)


def _user_page(state: SimState, tag_id: int, page: list[int], next_offset: int | None) -> dict[str, Any]:
    """One page of a tag's users, with the next page's URL (on the documented development host) if any."""
    next_url = None
    if next_offset is not None:
        next_url = f"{DEV_HOST}{API_PREFIX}/usuario/lista_por_tag/{tag_id}?cursor="
        next_url += encode_cursor(tag_id, next_offset)
    data = {
        "usuario": [_user_view(state, u) for u in page],
        "paginator": {"perPage": state.per_page, "next_page_url": next_url, "prev_page_url": None},
    }
    return envelope(data)


def _find_user(state: SimState, key: str) -> int | None:
    sc = state.scenario
    if key.isdigit() and int(key) in sc.users_by_id:
        return int(key)
    return sc.users_by_email.get(key.lower()) or sc.users_by_doc.get(key)


def _user_view(state: SimState, user_id: int) -> dict[str, Any]:
    """The user object as Cademi serves it, sensitive fields included (clients must drop them)."""
    u = state.scenario.users_by_id[user_id]
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
        "ultimo_acesso_em": last_access(u, state.week),
    }
