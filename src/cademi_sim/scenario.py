"""Load and validate a simulator scenario (the contract in docs/scenario-format.md)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import date
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema


class ScenarioError(ValueError):
    """The scenario is malformed or inconsistent; the message names the field."""


@dataclass
class Scenario:
    """A validated scenario with lookup indexes."""

    raw: dict[str, Any]
    weeks: list[date]
    users_by_id: dict[int, dict[str, Any]] = field(default_factory=dict)
    users_by_email: dict[str, int] = field(default_factory=dict)
    users_by_doc: dict[str, int] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    tags: dict[int, dict[str, Any]] = field(default_factory=dict)
    progress: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    access: dict[int, list[int]] = field(default_factory=dict)

    @property
    def api_key(self) -> str:
        return str(self.raw["api_key"])

    @property
    def rate_limit(self) -> dict[str, Any]:
        return dict(self.raw["rate_limit"])

    def members(self, tag_id: int, week: int) -> list[int]:
        """User ids holding the tag in the given week, in scenario order, each once."""
        seen: dict[int, None] = {}
        for m in self.raw["memberships"]:
            if m["tag"] == tag_id and m["from_week"] <= week and (m.get("to_week") is None or week <= m["to_week"]):
                seen.setdefault(m["user"], None)
        return list(seen)

    def served_progress(self, user_id: int, product_id: int, week: int) -> dict[str, Any] | None:
        """What progresso_por_produto serves for the pair in the week, or None (no access)."""
        entry = self.progress.get((user_id, product_id))
        if entry is None:
            return None
        return {
            "total": entry["total"][week],
            "assistidas": entry["assistidas"][week],
            "completas": entry["completas"][week],
        }


def last_access(user: dict[str, Any], week: int) -> str | None:
    """What the listing reports as the user's last access in week `week` (null when the scenario says nothing)."""
    values = user.get("ultimo_acesso_em")
    return None if not values else values[week]


def _schema() -> dict[str, Any]:
    text = resources.files("cademi_sim").joinpath("scenario.schema.json").read_text(encoding="utf-8")
    schema: dict[str, Any] = json.loads(text)
    return schema


def load(path: str | Path) -> Scenario:
    """Read a scenario file; refuse unknown or inconsistent content with a message naming the field."""
    try:
        raw = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ScenarioError(f"{path}: cannot read scenario JSON: {exc}") from exc
    return parse(raw)


def parse(raw: Any) -> Scenario:
    """Validate a scenario object (schema, then cross-field consistency)."""
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in first.absolute_path) or "(root)"
        raise ScenarioError(f"scenario{where}: {first.message}")

    weeks = []
    for i, text in enumerate(raw["weeks"]):
        try:
            weeks.append(date.fromisoformat(text))
        except ValueError as exc:
            raise ScenarioError(f"scenario.weeks[{i}]: {text!r} is not a date") from exc
    n_weeks = len(weeks)
    sc = Scenario(raw=raw, weeks=weeks)

    def unique(items: list[dict[str, Any]], name: str) -> dict[int, dict[str, Any]]:
        out: dict[int, dict[str, Any]] = {}
        for i, item in enumerate(items):
            if item["id"] in out:
                raise ScenarioError(f"scenario.{name}[{i}].id: duplicate id {item['id']}")
            out[item["id"]] = item
        return out

    sc.products = unique(raw["products"], "products")
    sc.tags = unique(raw["tags"], "tags")
    sc.users_by_id = unique(raw["users"], "users")
    for i, u in enumerate(raw["users"]):
        if "ultimo_acesso_em" in u and len(u["ultimo_acesso_em"]) != n_weeks:
            count = len(u["ultimo_acesso_em"])
            raise ScenarioError(f"scenario.users[{i}].ultimo_acesso_em: has {count} values for {n_weeks} weeks")
        sc.users_by_email[u["email"].lower()] = u["id"]
        if u.get("doc"):
            sc.users_by_doc[u["doc"]] = u["id"]

    def check_week(value: Any, where: str) -> None:
        if value is not None and not 0 <= value < n_weeks:
            raise ScenarioError(f"{where}: week index {value} is out of range 0..{n_weeks - 1}")

    for i, m in enumerate(raw["memberships"]):
        where = f"scenario.memberships[{i}]"
        if m["user"] not in sc.users_by_id:
            raise ScenarioError(f"{where}.user: unknown user {m['user']}")
        if m["tag"] not in sc.tags:
            raise ScenarioError(f"{where}.tag: unknown tag {m['tag']}")
        check_week(m["from_week"], f"{where}.from_week")
        check_week(m.get("to_week"), f"{where}.to_week")
        if m.get("to_week") is not None and m["to_week"] < m["from_week"]:
            raise ScenarioError(f"{where}.to_week: before from_week")

    def check_user_and_product(item: dict[str, Any], where: str) -> None:
        if item["user"] not in sc.users_by_id:
            raise ScenarioError(f"{where}.user: unknown user {item['user']}")
        if item["product"] not in sc.products:
            raise ScenarioError(f"{where}.product: unknown product {item['product']}")

    for i, a in enumerate(raw.get("access", [])):
        check_user_and_product(a, f"scenario.access[{i}]")
        sc.access.setdefault(a["user"], []).append(a["product"])

    for i, p in enumerate(raw["progress"]):
        where = f"scenario.progress[{i}]"
        check_user_and_product(p, where)
        for key in ("total", "assistidas", "completas"):
            if len(p[key]) != n_weeks:
                raise ScenarioError(f"{where}.{key}: has {len(p[key])} values for {n_weeks} weeks")
        if (p["user"], p["product"]) in sc.progress:
            raise ScenarioError(f"{where}: duplicate pair user {p['user']} product {p['product']}")
        sc.progress[(p["user"], p["product"])] = p

    # Staff actions (optional): from `week` on, the pair serves the given progress although the student's last
    # access does not move (staff granted lessons or reset a course): the case carrying must catch.
    for i, a in enumerate(raw.get("staff_actions", [])):
        where = f"scenario.staff_actions[{i}]"
        check_week(a["week"], f"{where}.week")
        entry = sc.progress.get((a["user"], a["product"]))
        if entry is None:
            raise ScenarioError(f"{where}: user {a['user']} has no progress in product {a['product']}")
        changed = {key: list(entry[key]) for key in ("total", "assistidas", "completas")}
        for key, values in changed.items():
            values[a["week"] :] = [a[key]] * (n_weeks - a["week"])
        sc.progress[(a["user"], a["product"])] = {**entry, **changed}

    for i, f in enumerate(raw.get("faults", [])):
        check_week(f.get("week"), f"scenario.faults[{i}].week")
        if not any(k in f for k in ("status", "body", "delay_ms")):
            raise ScenarioError(f"scenario.faults[{i}]: needs one of status, body, delay_ms")

    registry = raw["registry"]
    track_ids = set()
    for i, t in enumerate(registry["tracks"]):
        if t["id"] in track_ids:
            raise ScenarioError(f"scenario.registry.tracks[{i}].id: duplicate track {t['id']!r}")
        track_ids.add(t["id"])
        for j, p in enumerate(t["products"]):
            if p["product"] not in sc.products:
                raise ScenarioError(f"scenario.registry.tracks[{i}].products[{j}].product: unknown product")
    for i, t in enumerate(registry["tags"]):
        if t["track"] not in track_ids:
            raise ScenarioError(f"scenario.registry.tags[{i}].track: unknown track {t['track']!r}")
        if t["tag_id"] not in sc.tags:
            raise ScenarioError(f"scenario.registry.tags[{i}].tag_id: unknown tag {t['tag_id']}")
        try:
            date.fromisoformat(t["start_date"])
        except ValueError as exc:
            raise ScenarioError(f"scenario.registry.tags[{i}].start_date: not a date") from exc
    return sc
