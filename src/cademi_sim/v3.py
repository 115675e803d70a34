"""The simulator's Cademi API v3, from the same scenario as v1 (same school, same ground truth).

Shape (as `cademi-api-v3.md` has it, with the U names chosen here and published in our own
`/api/v3/openapi.json`): prefixed ids (`usr_`, `prd_`, `tag_`), `{"data": [...], "page": {"next_cursor"}}` pages of
up to 200, the error envelope `{"error": {"code", "message", "request_id"}}` with `X-Request-Id`, 429 with
`Retry-After`, `Authorization: Bearer ck_…` (or `X-API-Key`). `GET /users/{id}/progress` answers every product
the student can access, in one call; a product without access is absent. A v1 fault on a pair's path
(`/usuario/progresso_por_produto/{user}/{product}`) keeps its meaning: a short one (fewer than 1,000 times)
fails the student's whole v3 call once, which a retry clears, as on v1; a persistent one makes that product's
entry malformed on every call, so the same scenario fails the same pair on both APIs. Optional scenario
field `v3`: `api_key`, `permissions`, `openapi_renames` (ours -> served name, to plant a contract mismatch),
`endless_progress` (user ids whose progress pages cycle with a cursor that never repeats nor ends).
"""

from __future__ import annotations

import base64
import hmac
import math
import uuid
from typing import Any

from cademi_sim.scenario import last_access

PREFIX = "/api/v3"
PERSISTENT_TIMES = 1000  # a v1 pair fault at least this long is a product that never answers
MAX_LIMIT = 200
DEFAULT_LIMIT = 50
ALL_PERMISSIONS = ["users.read", "users.read_personal", "progress.read", "tags.read", "products.read"]
# The names this simulator serves (its own choice for every U field of the fact sheet).
USER_FIELDS = ["id", "name", "email", "phone", "document", "created_at", "last_access_at", "status", "tags"]
PROGRESS_FIELDS = ["product_id", "percentage", "lessons_watched", "lessons_completed", "updated_at"]


def settings_of(raw: dict[str, Any]) -> dict[str, Any]:
    v3 = raw.get("v3") or {}
    return {
        "api_key": v3.get("api_key") or f"ck_test_{raw['api_key']}",
        "permissions": list(v3.get("permissions", ALL_PERMISSIONS)),
        "renames": dict(v3.get("openapi_renames", {})),
        "endless_progress": set(v3.get("endless_progress", [])),
    }


def error(status: int, code: str, message: str, **extra: Any) -> tuple[int, dict[str, Any], dict[str, str]]:
    request_id = f"req_{uuid.uuid4().hex[:16]}"
    return (
        status,
        {"error": {"code": code, "message": message, "request_id": request_id, **extra}},
        {"X-Request-Id": request_id},
    )


def authorised(headers: Any, key: str) -> bool | None:
    """True for the school's v3 key, False for another, None when no credential was sent."""
    sent = headers.get("Authorization") or ""
    if sent.startswith("Bearer "):
        sent = sent[len("Bearer ") :]
    sent = sent or headers.get("X-API-Key") or ""
    if not sent:
        return None
    return hmac.compare_digest(sent.encode(), key.encode())


def breach(wait: float) -> tuple[int, dict[str, Any], dict[str, str]]:
    seconds = max(1, math.ceil(wait))
    status, body, headers = error(429, "rate_limited", "Too many requests", retry_after=seconds)
    return status, body, {**headers, "Retry-After": str(seconds)}


def _page(
    items: list[Any], query: dict[str, list[str]], scope: str, endless: bool = False
) -> tuple[int, dict[str, Any], dict[str, str]]:
    try:
        limit = int(query.get("limit", [str(DEFAULT_LIMIT)])[0])
    except ValueError:
        return error(400, "validation_failed", "limit must be an integer")
    if not 1 <= limit <= MAX_LIMIT:
        return error(400, "validation_failed", f"limit must be 1-{MAX_LIMIT}")
    if "offset" in query:
        return error(400, "validation_failed", "offset is not supported; use cursor")
    cursor = query.get("cursor", [""])[0]
    start = 0
    if cursor:
        try:
            cursor_scope, offset = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode().split("|")
            start = int(offset)
        except (ValueError, UnicodeDecodeError):
            return error(400, "validation_failed", "cursor is invalid")
        if cursor_scope != scope or start < 0:
            return error(400, "validation_failed", "cursor is invalid")
    if endless and items:  # a broken paginator: pages cycle through the items, the cursor never repeats
        chunk = (items[start % len(items) :] + items[: start % len(items)])[:limit]
    else:
        chunk = items[start : start + limit]
    end = start + len(chunk)
    more = end < len(items) or (endless and bool(items))
    next_cursor = base64.urlsafe_b64encode(f"{scope}|{end}".encode()).decode().rstrip("=") if more else None
    return 200, {"data": chunk, "page": {"next_cursor": next_cursor}}, {}


def route(state: Any, rel: str, query: dict[str, list[str]]) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One v3 request, after authentication, rate limit and v3-path faults."""
    sc = state.scenario
    cfg = settings_of(sc.raw)
    renames = cfg["renames"]
    parts = rel.strip("/").split("/")
    if parts == ["openapi.json"]:
        state.count("v3/openapi")
        return 200, openapi(renames), {}
    if parts == ["capabilities"]:
        state.count("v3/capabilities")
        limits = {"per_second": sc.rate_limit["per_second"], "per_minute": sc.rate_limit["per_minute"]}
        return 200, {"data": {"permissions": cfg["permissions"], "rate_limits": limits}}, {}
    if parts == ["tags"]:
        state.count("v3/tags")
        return _page([{"id": f"tag_{t['id']}", "name": t["nome"]} for t in sc.raw["tags"]], query, "tags")
    if parts == ["users"]:
        state.count("v3/users")
        wanted = query.get("tag_id[]", [])
        tag_ids = [i for i in (_unprefixed(t, "tag_") for t in wanted) if i is not None]
        if not tag_ids or len(tag_ids) != len(wanted):
            return error(400, "validation_failed", "tag_id[] must be tag ids")
        for tag_id in tag_ids:
            state.count(f"lista_por_tag/{tag_id}")
        members: dict[int, None] = {}
        for tag_id in tag_ids:
            for user_id in sc.members(tag_id, state.week):
                members.setdefault(user_id, None)
        users = [_user(state, u, cfg, renames) for u in members]
        return _page(users, query, "users:" + ",".join(map(str, tag_ids)))
    if len(parts) == 3 and parts[0] == "users" and parts[2] == "progress":
        state.count("v3/progress")
        user_id = _unprefixed(parts[1], "usr_")
        if user_id is None or user_id not in sc.users_by_id:
            return error(404, "not_found", "user not found")
        if "progress.read" not in cfg["permissions"]:
            return error(403, "permission_denied", "progress.read is required")
        items = []
        for product_id in sc.access.get(user_id, []):
            served = sc.served_progress(user_id, product_id, state.week)
            if served is None:
                continue
            item: dict[str, Any] = {
                "product_id": f"prd_{product_id}",
                "percentage": _percent(served["total"]),
                "lessons_watched": served["assistidas"],
                "lessons_completed": served["completas"],
                "updated_at": sc.weeks[state.week].isoformat() + "T06:00:00Z",
            }
            fault = state.take_fault(f"/usuario/progresso_por_produto/{user_id}/{product_id}")
            if fault and int(fault.get("times", 1)) >= PERSISTENT_TIMES:
                item["percentage"] = "erro"  # a pair v1 never answers: a malformed entry here, every time
            elif fault and int(fault.get("status", 200)) >= 500:
                return error(int(fault["status"]), "internal_error", "simulated failure")  # transient: retried
            items.append({renames.get(k, k): v for k, v in item.items()})
        return _page(items, query, f"progress:{user_id}", user_id in cfg["endless_progress"])
    state.count("unknown_route")
    return error(404, "not_found", "route not found")


def _unprefixed(text: str, prefix: str) -> int | None:
    """The number inside a prefixed v3 id (`usr_42` -> 42), or None."""
    rest = text[len(prefix) :] if text.startswith(prefix) else ""
    return int(rest) if rest.isascii() and rest.isdigit() else None


def _percent(total: Any) -> float:
    text = str(total).strip().rstrip("%").replace(",", ".")
    return float(text)


def _user(state: Any, user_id: int, cfg: dict[str, Any], renames: dict[str, str]) -> dict[str, Any]:
    u = state.scenario.users_by_id[user_id]
    view: dict[str, Any] = {
        "id": f"usr_{user_id}",
        "name": u["nome"],
        "email": u["email"],
        "created_at": u.get("criado_em"),
        "last_access_at": last_access(u, state.week),
        "status": "active",
    }
    if "users.read_personal" in cfg["permissions"]:  # CPF and phone only with this permission
        view["document"] = u.get("doc")
        view["phone"] = u.get("celular")
    return {renames.get(k, k): v for k, v in view.items()}


def openapi(renames: dict[str, str]) -> dict[str, Any]:
    """The part of an OpenAPI document the contract check reads: the schemas of what we serve."""

    def schema(names: list[str]) -> dict[str, Any]:
        return {"type": "object", "properties": {renames.get(n, n): {"type": "string"} for n in names}}

    return {
        "openapi": "3.1.0",
        "info": {"title": "Cademi API (simulator)", "version": "3.12.1-sim"},
        "components": {"schemas": {"User": schema(USER_FIELDS), "ProgressItem": schema(PROGRESS_FIELDS)}},
    }
