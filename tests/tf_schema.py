"""The Google provider's own schema, offline, and a check of infra/terraform's enum-like values against it.

The Terraform provider cannot be downloaded here, but the prebuilt CDK bindings on PyPI
(`cdktn-provider-google`, `cdktn-provider-google-beta`) carry its full schema in their jsii assembly: for
each resource and data source a `...Config` interface whose properties are the arguments (`optional` unless
required) and whose struct-typed properties are nested blocks ("x block."). The Terraform name of every
property is the anchor of its registry link (`docs/resources/storage_bucket#lifecycle_rule`).

    python tests/tf_schema.py build <venv> <out.json>   compact schema from the bindings installed in <venv>

`make` builds the compact file once (`.venv-tfschema/provider-schema.json`); the tests read it.
"""

from __future__ import annotations

import json
import re
import sys
import tarfile
from pathlib import Path
from typing import Any

LINK = re.compile(r"/(hashicorp/google(?:-beta)?)/([0-9.]+)/docs/(resources|data-sources)/(\w+)#(\w+)")
META_ARGUMENTS = {"count", "for_each", "depends_on", "provider", "lifecycle", "provisioner", "connection"}
Block = dict[str, Any]  # {"attributes": {name: required}, "blocks": {name: {"required", "list", "block"}},
#                          "enums": {name: [the values the provider's docs list as possible]}}
POSSIBLE = re.compile(r"Possible values: \[([^\]]*)\]")
ENUM_LITERAL = re.compile(r'"([A-Z][A-Z0-9_]+)"')


def _struct_fqn(type_ref: dict[str, Any]) -> tuple[str | None, bool]:
    """The struct a property holds (one, or a list of them), or None for a plain attribute."""
    if "fqn" in type_ref and not type_ref["fqn"].startswith("cdktn."):
        return type_ref["fqn"], False
    for option in type_ref.get("union", {}).get("types", []):
        element = option.get("collection", {}).get("elementtype", {})
        if "fqn" in element and not element["fqn"].startswith("cdktn."):
            return element["fqn"], True
    return None, False


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def _block(types: dict[str, Any], fqn: str, seen: tuple[str, ...] = ()) -> tuple[Block, re.Match[str] | None]:
    """A struct's arguments and nested blocks; also its first registry link, when it has one."""
    block: Block = {"attributes": {}, "blocks": {}, "enums": {}}
    first_link = None
    for prop in types[fqn].get("properties", []):
        docs = prop.get("docs", {})
        link = LINK.search(docs.get("remarks", "") + " " + docs.get("summary", ""))
        name = link.group(5) if link else _snake(prop["name"])
        first_link = first_link or link
        required = not prop.get("optional", False)
        struct, is_list = _struct_fqn(prop["type"])
        if struct is not None and docs.get("summary", "").endswith("block.") and struct not in seen:
            nested, _ = _block(types, struct, (*seen, fqn))
            block["blocks"][name] = {"required": required, "list": is_list, "block": nested}
        else:
            block["attributes"][name] = required
            possible = POSSIBLE.search(docs.get("summary", "") + " " + docs.get("remarks", ""))
            if possible:
                block["enums"][name] = re.findall(r'"([^"]*)"', possible.group(1))
    return block, first_link


def build(jsii_archives: list[Path]) -> dict[str, Any]:
    """{"provider_versions": {...}, "resource": {type: Block}, "data": {type: Block}} from the assemblies."""
    schema: dict[str, Any] = {"provider_versions": {}, "resource": {}, "data": {}}
    for archive in jsii_archives:
        with tarfile.open(archive) as tar:
            member = tar.extractfile("package/.jsii")
            assert member is not None, f"{archive} holds no jsii assembly"
            assembly = json.load(member)
        types = assembly["types"]
        for fqn, spec in types.items():
            if not (fqn.endswith("Config") and "cdktn.TerraformMetaArguments" in spec.get("interfaces", [])):
                continue
            block, link = _block(types, fqn)
            if link is None:
                continue
            provider, version, kind, name = link.group(1, 2, 3, 4)
            schema["provider_versions"][provider] = version
            section = "resource" if kind == "resources" else "data"
            # google-beta is a superset: a type keeps the first (GA) schema it was seen with.
            # google-beta's links already carry the prefix (`google_project_service_identity`).
            tf_type = name if name.startswith("google_") else f"google_{name}"
            schema[section].setdefault(tf_type, block | {"provider": provider})
    return schema


def _unquote(text: str) -> str:
    return text.strip('"')


def check_body(body: dict[str, Any], block: Block, where: str) -> list[str]:
    """Every enum-like literal in `body` (python-hcl2's parse of one block) that the provider's docs do not list.

    Whether an argument or block exists, is required, or is a block: Terraform itself judges that, on the
    stand-in providers' schema (tests/test_terraform_plan.py). The possible values are the provider's own
    validation, which a plan without the provider does not run: this check stands in for it."""
    errors: list[str] = []
    for raw_key, value in body.items():
        key = _unquote(raw_key)
        if key.startswith("__") or key in META_ARGUMENTS:
            continue
        if key == "dynamic":
            for dynamic in value:
                for raw_name, spec in dynamic.items():
                    nested = block["blocks"].get(_unquote(raw_name))
                    for content in spec.get("content", []) if nested else []:
                        errors += check_body(content, nested["block"], f"{where}.{_unquote(raw_name)}")
        elif key in block["blocks"] and isinstance(value, list):
            for item in value:
                if isinstance(item, dict):
                    errors += check_body(item, block["blocks"][key]["block"], f"{where}.{key}")
        elif key in block.get("enums", {}) and isinstance(value, str):
            # an enum-like literal anywhere in the value (a literal, or a lookup's/conditional's options)
            for literal in sorted(set(ENUM_LITERAL.findall(value)) - set(block["enums"][key])):
                errors.append(f"{where}: {key} = {literal!r} is not one of {block['enums'][key]}")
    return errors


def check_enums(parsed: dict[str, list[Any]], schema: dict[str, Any]) -> list[str]:
    """Every resource and data block of a parsed configuration, against the provider's possible values."""
    errors: list[str] = []
    for section in ("resource", "data"):
        for group in parsed.get(section, []):
            for raw_type, instances in group.items():
                block = schema[section].get(_unquote(raw_type))
                for raw_name, body in instances.items() if block else []:
                    errors += check_body(body, block, f"{section}.{_unquote(raw_type)}.{_unquote(raw_name)}")
    return errors


def main(argv: list[str]) -> int:
    if len(argv) != 4 or argv[1] != "build":
        print(__doc__, file=sys.stderr)
        return 2
    venv, out = Path(argv[2]), Path(argv[3])
    archives = sorted(venv.glob("lib/python*/site-packages/cdktn_provider_google*/_jsii/*.jsii.tgz"))
    if len(archives) != 2:
        print(f"expected the google and google-beta bindings in {venv}, found {archives}", file=sys.stderr)
        return 1
    # GA first: a type present in both keeps the GA schema.
    archives.sort(key=lambda p: "beta" in p.name)
    schema = build(archives)
    out.write_text(json.dumps(schema, separators=(",", ":")))
    print(
        f"{out}: {len(schema['resource'])} resources, {len(schema['data'])} data sources, {schema['provider_versions']}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv))
