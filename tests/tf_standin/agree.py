"""The offline evaluator (tests/tf_eval.py) held against Terraform's own plan of the same configuration.

The mutation suite and the IAM checks run on the evaluator (fast: no process, no provider). They are worth
what its resolution is worth, so Terraform checks it: for every resource, the instances Terraform plans
(for_each keys, count) must be those the evaluator resolves, and every argument the configuration sets must
have the same value in both wherever both know it. Where only one side knows a value:
- the evaluator keeps a resource's attribute as a `Ref`, rendered as `${...}` inside a text, and a few
  expressions as unknown: not compared;
- Terraform reads data sources at plan time, the stand-in answering placeholders (`standin:...`): not
  compared, since no real value is behind them;
- a value the evaluator resolves but Terraform leaves unknown is a disagreement (the evaluator resolved
  something that depends on what only apply knows).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from tests.tf_eval import Config, Ref, Unknown

META = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection", "dynamic"}
PLACEHOLDER = "standin:"


def address(resource: str, key: str | int | None) -> str:
    """Terraform's address of one instance: `type.name`, `type.name[0]`, `type.name["key"]`."""
    return resource if key is None else f"{resource}[{json.dumps(key)}]"


def _anywhere(value: Any, leaf: Callable[[Any], bool]) -> bool:
    """Whether `leaf` holds for any value inside `value` (a dict's values, a list's items, or `value` itself)."""
    if isinstance(value, dict):
        return any(_anywhere(v, leaf) for v in value.values())
    if isinstance(value, list):
        return any(_anywhere(v, leaf) for v in value)
    return leaf(value)


def _partly_unknown(value: Any) -> bool:
    """A Ref, an unknown, or a text the evaluator rendered around a Ref (`"...${google_x.y.name}..."`)."""
    return _anywhere(value, lambda v: isinstance(v, (Ref, Unknown)) or (isinstance(v, str) and "${" in v))


def _any_true(unknown: Any) -> bool:
    """Terraform's `after_unknown`: whether any part of the value is unknown."""
    return _anywhere(unknown, lambda v: v is True)


def _placeholder(value: Any) -> bool:
    """A value read back from a stand-in's data source, which no real value is behind."""
    return _anywhere(value, lambda v: isinstance(v, str) and PLACEHOLDER in v)


def _as_terraform(value: Any, like: Any) -> Any:
    """The evaluator's value converted as Terraform converts it to the attribute's type (given Terraform's)."""
    if isinstance(like, str) and isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(like, str) and isinstance(value, (int, float)):
        return str(value)
    if isinstance(like, dict) and isinstance(value, dict):
        return {k: _as_terraform(v, like.get(k)) for k, v in value.items()}
    if isinstance(like, list) and isinstance(value, list):
        return [_as_terraform(v, like[i] if i < len(like) else None) for i, v in enumerate(value)]
    return value


def _is_block(raw: Any) -> bool:
    return isinstance(raw, list) and bool(raw) and all(isinstance(v, dict) and v.get("__is_block__") for v in raw)


def compare_body(
    config: Config, where: str, body: dict[str, Any], scope: dict[str, Any], after: Any, unknown: Any
) -> list[str]:
    """Every argument of `body` whose evaluated value differs from Terraform's planned one."""
    errors: list[str] = []
    after = after or {}
    unknown = unknown if isinstance(unknown, dict) else {}
    dynamic = {name.strip('"') for d in body.get("dynamic", []) for name in d}
    for raw_key, raw in body.items():
        key = raw_key.strip('"')
        if key.startswith("__") or key in META:
            continue
        if _is_block(raw):
            planned = after.get(key) or []
            if len(planned) != len(raw) and key not in dynamic:
                errors.append(f"{where}.{key}: {len(raw)} blocks in the configuration, {len(planned)} planned")
                continue
            unknowns = unknown.get(key) if isinstance(unknown.get(key), list) else []
            for i, block in enumerate(raw[: len(planned)]):
                inner = unknowns[i] if i < len(unknowns) else {}
                errors += compare_body(config, f"{where}.{key}[{i}]", block, scope, planned[i], inner)
            continue
        try:
            value = config.value(raw, scope)
        except Exception as error:  # the evaluator cannot read what Terraform can: a disagreement too
            errors.append(f"{where}.{key}: the evaluator fails: {type(error).__name__}: {error}")
            continue
        if _partly_unknown(value):
            continue
        if _any_true(unknown.get(key)):
            if value is not None:  # null: the provider decides (the stand-in leaves it unknown)
                errors.append(f"{where}.{key}: the evaluator resolves {value!r}, Terraform knows it only after apply")
            continue
        planned_value = after.get(key)
        if _placeholder(planned_value):
            continue
        if _as_terraform(value, planned_value) != planned_value:
            errors.append(f"{where}.{key}: the evaluator resolves {value!r}, Terraform plans {planned_value!r}")
    return errors


def disagreements(config: Config, plan: dict[str, Any]) -> list[str]:
    """Every way the evaluator's reading of `config` differs from Terraform's plan of it (empty: they agree)."""
    planned = {rc["address"]: rc for rc in plan["resource_changes"] if rc["mode"] == "managed"}
    evaluated: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    errors: list[str] = []
    for resource, body in config.resource_blocks().items():
        try:
            instances = config.instances(body)
        except Exception as error:
            errors.append(f"{resource}: the evaluator cannot expand its instances: {type(error).__name__}: {error}")
            continue
        for key, scope in instances.items():
            evaluated[address(resource, key)] = (body, scope)
    for name in sorted(set(evaluated) - set(planned)):
        errors.append(f"{name}: the evaluator resolves this instance, Terraform plans none")
    for name in sorted(set(planned) - set(evaluated)):
        errors.append(f"{name}: Terraform plans this instance, the evaluator does not resolve it")
    for name in sorted(set(evaluated) & set(planned)):
        body, scope = evaluated[name]
        change = planned[name]["change"]
        errors += compare_body(config, name, body, scope, change["after"], change["after_unknown"])
    return errors
