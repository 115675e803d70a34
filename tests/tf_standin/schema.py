"""The providers' full schemas (types, required / optional / computed, nesting), offline, for the stand-in.

tests/tf_schema.py reads only what a block may hold. A provider must also say each attribute's type and
which attributes the provider computes, so that Terraform can type-check the configuration and leave computed
values unknown in a plan. The prebuilt CDK bindings carry both in their jsii assemblies:
- a resource's `...Config` interface lists its arguments (`optional` unless required), with their types; a
  struct-typed argument documented as "x block." is a nested block (a list of them, or one);
- the resource class (and each block's `...OutputReference` class) has a getter for every attribute; a
  getter with no `<name>Input` twin is computed only (`url`, `service_config[0].uri`).

What the bindings do not say, and the stand-in assumes:
- whether an optional argument is also computed (a default the provider fills in): every optional argument is
  taken as optional *and computed*, so an unset one is unknown in a plan, as the strictest provider would
  leave it (a `for_each` over it fails here as it might in a first apply);
- list or set: every collection and every repeated block is a list;
- a computed-only attribute's name comes from its getter (`outputBase64Sha256` reads `output_base64_sha256`,
  where the provider says `output_base64sha256`), and a computed value of a complex type is `dynamic`.

    python -m tests.tf_standin.schema <venv> <out.json>     the schemas of every binding installed in <venv>
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

from tests.tf_schema import _snake, _struct_fqn

LINK = re.compile(r"/(hashicorp/[a-z-]+)/([0-9.]+)/docs/(resources|data-sources)/(\w+)#(\w+)")
META = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection", "alias"}
SCALARS = {"string": "string", "number": "number", "boolean": "bool", "date": "string", "any": "dynamic"}
CDKTN_MAPS = {
    "cdktn.StringMap": ["map", "string"],
    "cdktn.NumberMap": ["map", "number"],
    "cdktn.BooleanMap": ["map", "bool"],
    "cdktn.AnyMap": ["map", "dynamic"],
    "cdktn.StringMapList": ["list", ["map", "string"]],
    "cdktn.NumberMapList": ["list", ["map", "number"]],
    "cdktn.BooleanMapList": ["list", ["map", "bool"]],
    "cdktn.AnyMapList": ["list", ["map", "dynamic"]],
}
Block = dict[str, Any]  # {"attributes": {name: {"type", "required", "optional", "computed"}},
#                          "blocks": {name: {"min_items", "max_items", "block"}}}


def cty_type(ref: dict[str, Any]) -> Any:
    """The Terraform (cty JSON) type of a jsii type reference; `dynamic` where the binding hides it."""
    if "primitive" in ref:
        return SCALARS.get(ref["primitive"], "dynamic")
    if "collection" in ref:
        kind = "list" if ref["collection"]["kind"] == "array" else "map"
        return [kind, cty_type(ref["collection"]["elementtype"])]
    if "union" in ref:
        options = [o for o in ref["union"]["types"] if o.get("fqn") != "cdktn.IResolvable"]
        return cty_type(options[0]) if len(options) == 1 else "dynamic"
    return CDKTN_MAPS.get(ref.get("fqn", ""), "dynamic")


def _computed_only(types: dict[str, Any], cls: str, arguments: set[str]) -> dict[str, Any]:
    """{terraform name: type} of the getters of `cls` that have no `Input` twin and are not arguments."""
    spec = types.get(cls, {})
    getters = {p["name"]: p for p in spec.get("properties", []) if not p.get("static")}
    out: dict[str, Any] = {}
    for name, prop in getters.items():
        if name.endswith("Input") or f"{name}Input" in getters or name in ("internalValue", "fqn"):
            continue
        tf_name = _snake(name)
        if tf_name in arguments or tf_name in META:
            continue
        out[tf_name] = cty_type(prop["type"])
    return out


def block(types: dict[str, Any], fqn: str, output_class: str | None, seen: tuple[str, ...] = ()) -> Block:
    """A struct's (or Config's) arguments and nested blocks, and the computed attributes of `output_class`."""
    result: Block = {"attributes": {}, "blocks": {}}
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        link = LINK.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
        name = link.group(5) if link else _snake(prop["name"])
        if name in META and fqn.endswith("Config"):
            continue
        required = not prop.get("optional", False)
        struct, is_list = _struct_fqn(prop["type"])
        if struct is not None and docs.get("summary", "").endswith("block.") and struct not in seen:
            nested = block(types, struct, f"{struct}OutputReference", (*seen, fqn))
            result["blocks"][name] = {"min_items": int(required), "max_items": 0 if is_list else 1, "block": nested}
        else:
            kind = cty_type(prop["type"]) if struct is None else "dynamic"
            # `id` is in every Config, optional: the provider sets it.
            result["attributes"][name] = {"type": kind, "required": required, "optional": not required}
            result["attributes"][name]["computed"] = not required
    if output_class is not None:
        arguments = set(result["attributes"]) | set(result["blocks"])
        for name, kind in _computed_only(types, output_class, arguments).items():
            result["attributes"][name] = {"type": kind, "required": False, "optional": False, "computed": True}
    return result


def _configs(types: dict[str, Any]) -> list[tuple[str, str]]:
    """(Config interface, its resource or data source class) of every type in one assembly."""
    out = []
    for fqn, spec in types.items():
        if fqn.endswith("Config") and "cdktn.TerraformMetaArguments" in spec.get("interfaces", []):
            out.append((fqn, fqn[: -len("Config")]))
    return out


def provider_schema(assembly: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """("hashicorp/<name>", {"version", "provider", "resource", "data"}) from one binding's assembly."""
    types = assembly["types"]
    found: dict[str, Any] = {"version": None, "provider": {"attributes": {}, "blocks": {}}, "resource": {}, "data": {}}
    source = None
    for config, cls in _configs(types):
        sample = next(
            (m for p in types[config].get("properties", []) if (m := LINK.search(json.dumps(p.get("docs", {}))))),
            None,
        )
        if sample is None:
            continue
        source, found["version"] = sample.group(1), sample.group(2)
        section = "resource" if sample.group(3) == "resources" else "data"
        tf_type = sample.group(4)
        prefix = source.split("/")[1].split("-")[0]  # google-beta's types are google_*
        if not tf_type.startswith(f"{prefix}_"):
            tf_type = f"{prefix}_{tf_type}"
        found[section].setdefault(tf_type, block(types, config, cls))
    assert source is not None, "an assembly without a single resource"
    suffix = f".provider.{_provider_class(types)}Config"
    provider_config = next((f for f in types if f.endswith(suffix)), None)
    if provider_config is not None:
        found["provider"] = block(types, provider_config, None)
        for attribute in found["provider"]["attributes"].values():
            attribute["computed"] = False  # a provider's arguments are never computed
    return source, found


def _provider_class(types: dict[str, Any]) -> str:
    for fqn, spec in types.items():
        if ".provider." in fqn and spec.get("base") == "cdktn.TerraformProvider":
            return str(fqn.rsplit(".", 1)[1])
    return "-"


def build(archives: list[Path]) -> dict[str, Any]:
    """{"hashicorp/google": {"version", "provider", "resource": {type: Block}, "data": {...}}, ...}."""
    schemas: dict[str, Any] = {}
    for archive in archives:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None, f"{archive} holds no jsii assembly"
            source, schema = provider_schema(json.load(member))
        schemas[source] = schema
    return schemas


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    venv, out = Path(argv[1]), Path(argv[2])
    archives = sorted(venv.glob("lib/python*/site-packages/cdktn_provider_*/_jsii/*.jsii.tgz"))
    schemas = build(archives)
    out.write_text(json.dumps(schemas, separators=(",", ":")))
    for source, schema in sorted(schemas.items()):
        print(f"{out}: {source} {schema['version']}: {len(schema['resource'])} resources, {len(schema['data'])} data")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
